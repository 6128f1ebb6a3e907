"""The security application (the patent's "security software"), sans-IO: one instance per HBA port.

It drives FC-SP-2 authentication of the configured targets over the emulated-disk channel:

    GET_PORT_INFO -> GET_TARGETS -> SECURE_CONNECT per configured target -> AUTH_NEEDED
    -> IKEv2 over the AUTH_ELS relay (ELS_SEND out, ELS_RCVD in, each acked with LS_ACC)
    -> SA_UPDATE RX, SA_UPDATE_COMPL, SA_UPDATE TX, SA_UPDATE_COMPL -> AUTH_OK -> (host: PRLI, I/O)

and keeps the sessions alive: rekey by lifetime and by bytes (make-before-break: new RX, new TX, AUTH_OK,
delete old TX, delete old RX, IKE Delete of the old pair), IKE retransmission, SESSION_SHUTDOWN acks,
target/link loss and return, host reset, host loss (keepalive), APP_STOP.

`SecurityApp` is the composition: `discovery` (which targets, when to connect), `ike_driver` (IKEv2 over
the relay, rekey timers) and `installer` (the SA_UPDATE / AUTH_OK steps) share one `TargetSession` per
target; this module routes the host's messages to them and owns the channel-level timers (keepalive,
host loss, GET_STATS). It produces `edifd.proto` bodies and consumes `edifd.proto.Message`s; the channel
transport (APP_START handshake, request ids, sequences, MACs) is not its business. Wiring (docs/secapp.md §2):

    app = SecurityApp(config, clock=time.monotonic)
    def send(items):
        for item in items:
            if isinstance(item, Body): app.sent(item, client.request(item))
            else: log(item)                                 # AppEvent: state changes, no secrets
    send(app.start())                                       # after the channel handshake
    loop: send(app.on_message(msg)) for each delivered message; send(app.tick(now)) about once a second
    send(app.stop())
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from collections.abc import Callable

from edifd.fc import wwn_str
from edifd.proto import (
    AppStartAnswer,
    AppStop,
    AuthFail,
    AuthFailReason,
    AuthNeeded,
    AuthOk,
    Body,
    ElsRcvd,
    ElsSend,
    EventAck,
    EventOverflow,
    GetPortInfo,
    GetStats,
    GetTargets,
    Heartbeat,
    HostReset,
    Keepalive,
    Kind,
    LinkDown,
    LinkState,
    LinkUp,
    Message,
    PortInfo,
    PortOffline,
    PortOnline,
    PortRef,
    Response,
    Resync,
    SaUpdate,
    SaUpdateCompl,
    SecureConnect,
    SessionShutdown,
    Stats,
    Status,
    StopReason,
    TargetGone,
    TargetList,
)

from .config import SecConfig
from .discovery import TargetDiscovery
from .events import (
    AppEvent,
    AppNotice,
    ChannelLost,
    SessionDown,
    SessionFailed,
    SessionRekeyed,
    SessionSecure,
)
from .ike_driver import IkeDriver
from .installer import RETRY_LATER_DELAY, RX_DELETE_GRACE
from .relay import proto_cipher
from .session import SessionState, TargetSession

__all__ = [
    "MAX_OUTSTANDING", "RETRY_LATER_DELAY", "RX_DELETE_GRACE", "AppEvent", "AppNotice", "ChannelLost",
    "SecurityApp", "SessionDown", "SessionFailed", "SessionRekeyed", "SessionSecure", "SessionState",
    "TargetSession",
]

MAX_OUTSTANDING = 4096  # bound on requests we remember (a host that never answers must not grow us)


class SecurityApp:
    def __init__(
        self,
        config: SecConfig,
        clock: Callable[[], float],
        *,
        port_index: int = 0,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        cert_clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.config = config
        self.port_index = port_index  # for the caller; bodies carry no port index
        self._clock = clock
        self.sessions: dict[int, TargetSession] = {
            w: TargetSession(w, p) for w, p in config.peers.items() if not p.skip
        }
        self.local: PortInfo | None = None
        self.running = False
        self._out: list[Body | AppEvent] = []
        self._pending: dict[int, Body] = {}  # request id -> request
        self._last_heard = 0.0
        self._next_keepalive = 0.0
        self._next_stats = 0.0
        self._stats_busy = False
        self._unexpected = 0
        self.ike_driver = IkeDriver(self, rng=rng, cert_clock=cert_clock)
        self.installer = self.ike_driver.installer
        self.discovery = TargetDiscovery(self, self.sessions, self.ike_driver)

    def __repr__(self) -> str:
        return f"SecurityApp(running={self.running}, sessions={list(self.sessions.values())})"

    @property
    def counters(self) -> dict[str, int]:
        return {"els_rejected": self.ike_driver.els_rejected, "unexpected": self._unexpected}

    # --- public API ------------------------------------------------------------------------------------

    def start(self, answer: AppStartAnswer | None = None) -> list[Body | AppEvent]:
        """Begin (or begin again after ChannelLost): ask for the local port, then the targets.

        `answer` is the host's APP_START_ANSWER if the channel layer exposes it: child SA proposals are
        then limited to the ciphers the HBA supports (its cipher_mask), so IKE never agrees on a cipher
        the host would refuse in SA_UPDATE.
        """
        now = self._clock()
        self.ike_driver.policy = self.config.ike
        if answer is not None:
            mask = answer.cipher_mask
            usable = tuple(c for c in self.config.ike.esp_ciphers if proto_cipher(c).mask_bit & mask)
            if not usable:
                self.emit(AppNotice("the host supports none of the configured ESP ciphers"))
            else:
                self.ike_driver.policy = dataclasses.replace(self.config.ike, esp_ciphers=usable)
        self._reset_all("application start", quiet=True)
        self._pending.clear()
        self.running = True
        self._last_heard = now
        self._next_keepalive = now + self.config.keepalive_interval
        self._next_stats = now + self.config.rekey.stats_interval
        self.emit(GetPortInfo())
        return self._flush()

    def stop(self, reason: StopReason = StopReason.SHUTDOWN) -> list[Body | AppEvent]:
        """APP_STOP: the host logs every secure session out and clears their keys. We forget ours."""
        self._reset_all("application stop", quiet=True)
        self.running = False
        self.emit(AppStop(reason))
        return self._flush()

    def sent(self, body: Body, request_id: int) -> None:
        """The wire layer sent `body` (one of our outputs) as request `request_id`: its response is matched
        to it by that id. Every request body we return must be reported here."""
        self._pending[request_id] = body
        while len(self._pending) > MAX_OUTSTANDING:  # dicts keep insertion order: forget the oldest
            del self._pending[next(iter(self._pending))]

    def on_message(self, msg: Message) -> list[Body | AppEvent]:
        """A message delivered by the channel: a response to one of our requests, an event or a heartbeat."""
        self._last_heard = self._clock()
        if msg.kind is Kind.RESPONSE:
            return self.on_response(msg.request_id, msg)
        if msg.type.needs_ack:
            # Acked even when stopped: the host holds its teardown until it sees the ack (10 s in qla2xxx).
            port = getattr(msg.body, "port", None)
            self.emit(EventAck(msg.type, msg.sequence, port if isinstance(port, PortRef) else PortRef(0)))
        if self.running:
            self._on_event(msg)
        return self._flush()

    def on_response(self, request_id: int, msg: Message) -> list[Body | AppEvent]:
        request = self._pending.pop(request_id, None)
        if request is None:
            self._unexpected += 1
            self.emit(AppNotice(f"response {msg.type.name} to unknown request id {request_id}"))
        elif self.running or isinstance(request, AppStop):
            self._on_response(request, msg.body)
        return self._flush()

    def tick(self, now: float) -> list[Body | AppEvent]:
        """Timers: keepalive and host loss, IKE retransmission, backoffs, rekey by lifetime, GET_STATS."""
        if not self.running:
            return []
        c = self.config
        if c.keepalive_interval > 0:
            if now - self._last_heard > c.keepalive_interval * c.keepalive_misses:
                self._channel_lost(f"no message from the host for {now - self._last_heard:.1f} s")
                return self._flush()
            if now >= self._next_keepalive:
                self.emit(Keepalive())
                self._next_keepalive = now + c.keepalive_interval
        for s in self.sessions.values():
            self._tick_session(s, now)
        if (
            c.rekey.bytes
            and now >= self._next_stats
            and not self._stats_busy
            and any(s.state is SessionState.SECURE for s in self.sessions.values())
        ):
            self._next_stats = now + c.rekey.stats_interval
            self._stats_busy = True
            self.emit(GetStats())
        return self._flush()

    def session(self, wwpn: int) -> TargetSession | None:
        return self.sessions.get(wwpn)

    def status(self, now: float | None = None) -> dict[str, object]:
        """For `edif-agent status` and logs: states, SPIs, ages and counters. Never any key material."""
        now = self._clock() if now is None else now
        targets = {}
        for s in self.sessions.values():
            cur = s.current
            targets[wwn_str(s.wwpn)] = {
                "state": s.state.value,
                "port_id": f"{s.port.port_id:06x}" if s.port else None,
                "generation": s.port.generation if s.port else None,
                "spi_in": f"{cur.spi_in:08x}" if cur else None,
                "spi_out": f"{cur.spi_out:08x}" if cur else None,
                "cipher": cur.cipher.name if cur else None,
                "sa_age_s": round(now - cur.since, 1) if cur else None,
                "rekeying": s.incoming is not None and cur is not None,
                "failures": s.failures,
                "retry_in_s": round(s.retry_at - now, 1) if s.retry_at is not None else None,
            }
        return {
            "running": self.running,
            "local_wwpn": wwn_str(self.local.wwpn) if self.local else None,
            "targets": targets,
            "counters": dict(self.counters),
        }

    # --- AppContext: what discovery, the IKE driver and the installer call back into ------------------

    def now(self) -> float:
        return self._clock()

    def emit(self, item: Body | AppEvent) -> None:
        self._out.append(item)

    def drop(self, s: TargetSession, detail: str, *, quiet: bool = False) -> None:
        """Forget the session's IKE and SA state (the host has dropped, or will drop, its SAs)."""
        was = s.forget()
        if not quiet and was is not SessionState.IDLE:
            self.emit(SessionDown(s.wwpn, detail))

    def fail(self, s: TargetSession, reason: AuthFailReason, detail: str, *, backoff: bool = True) -> None:
        """AUTH_FAIL to the host, and a retry after the (exponential, unless `backoff` is False) pause."""
        port = s.port
        failures = s.failures + 1
        self.drop(s, detail, quiet=True)
        s.port, s.state, s.failures = port, SessionState.FAILED, failures
        c = self.config
        delay = c.reconnect_delay
        if backoff:
            delay = min(c.auth_retry_backoff * 2 ** (failures - 1), c.auth_retry_max)
        s.retry_at = self._clock() + delay
        if port is not None:
            self.emit(AuthFail(port, reason))
        self.emit(SessionFailed(s.wwpn, reason, detail))

    # --- plumbing --------------------------------------------------------------------------------------

    def _flush(self) -> list[Body | AppEvent]:
        out, self._out = self._out, []
        return out

    def _channel_lost(self, detail: str) -> None:
        self._reset_all("host lost", quiet=True)
        self.running = False
        self._pending.clear()
        self.emit(ChannelLost(detail))

    def _reset_all(self, detail: str, *, quiet: bool = False) -> None:
        for s in self.sessions.values():
            self.drop(s, detail, quiet=quiet)
            s.failures = 0
        self._stats_busy = False

    def _session_for(self, port: PortRef) -> TargetSession | None:
        return self.sessions.get(port.wwpn)

    def _tick_session(self, s: TargetSession, now: float) -> None:
        if s.retry_at is not None and now >= s.retry_at and not self.installer.resend(s):
            self.discovery.retry(s, self.local)
        if not self.ike_driver.retransmit(s, now):
            return
        if s.state is SessionState.SECURE:
            self.ike_driver.maybe_rekey(s, now)

    # --- responses -------------------------------------------------------------------------------------

    def _on_response(self, request: Body, body: Body) -> None:
        if isinstance(request, GetPortInfo) and isinstance(body, PortInfo):
            self.local = body
            if body.link is LinkState.UP:
                self.emit(GetTargets(start=0))
            return
        if isinstance(request, GetTargets) and isinstance(body, TargetList):
            self.discovery.on_targets(body)
            return
        if isinstance(request, GetStats):
            self._on_stats(body)
            return
        if isinstance(request, ElsSend):
            self.ike_driver.on_els_answer(self._session_for(request.port), request, body)
            return
        if not isinstance(body, Response):
            self.emit(AppNotice(f"{body.TYPE.name} does not answer {request.TYPE.name}"))
            return
        if isinstance(request, SecureConnect | SaUpdate | AuthOk):
            s = self._session_for(request.port)
            if s is None:
                return
            if isinstance(request, SecureConnect):
                self.discovery.on_secure_connect_answer(s, body)
            elif isinstance(request, SaUpdate):
                self.installer.on_sa_update_answer(s, request, body)
            else:
                self.installer.on_auth_ok_answer(s, request, body)
        elif body.status is not Status.OK:
            if body.status is Status.NOT_STARTED:
                self._channel_lost(f"host answered {request.TYPE.name} with NOT_STARTED")
            else:
                self.emit(AppNotice(f"{request.TYPE.name} answered {body.status.name}"))

    def _on_stats(self, body: Body) -> None:
        """GET_STATS pages: each session's byte counters, for rekey by volume."""
        self._stats_busy = False
        if not isinstance(body, Stats):
            return
        for e in body.entries:
            s = self.sessions.get(e.port.wwpn)
            if s is None:
                continue
            s.counters = (e.tx_bytes, e.rx_bytes)
            if s.current is not None and s.state is SessionState.SECURE:
                self.ike_driver.maybe_rekey(s, self._clock())
        nxt = body.start + len(body.entries)
        if body.entries and nxt < body.total:
            self._stats_busy = True
            self.emit(GetStats(start=nxt))

    # --- events ----------------------------------------------------------------------------------------

    def _on_event(self, msg: Message) -> None:
        ev = msg.body
        if isinstance(ev, Heartbeat):
            return
        if isinstance(ev, ElsRcvd):
            self.ike_driver.on_els_rcvd(self._session_for(ev.port), ev)
        elif isinstance(ev, AuthNeeded):
            self.discovery.on_auth_needed(ev.port, self.local)
        elif isinstance(ev, SaUpdateCompl):
            s = self._session_for(ev.port)
            if s is not None:
                self.installer.on_sa_compl(s, ev)
        elif isinstance(ev, SessionShutdown):
            s = self._session_for(ev.port)
            if s is not None:
                self.discovery.on_shutdown(s, ev)  # acked in on_message
        elif isinstance(ev, TargetGone | PortOffline | PortOnline):
            s = self._session_for(ev.port)
            if s is not None:
                self.discovery.on_port_event(s, ev, msg.type.name.lower())
        elif isinstance(ev, LinkDown):
            self._reset_all("link down")
            self.local = None
        elif isinstance(ev, LinkUp):
            self.emit(GetPortInfo())  # our N_Port_ID may have changed; then GET_TARGETS
        elif isinstance(ev, HostReset):
            # Every SA and login is gone (and the host may have restarted): discover afresh, so the
            # SECURE_CONNECTs name the current logins.
            self._reset_all("host reset: every SA is gone")
            self.emit(GetPortInfo())
        elif isinstance(ev, EventOverflow):
            self.emit(Resync())
            self.emit(GetTargets(start=0))
