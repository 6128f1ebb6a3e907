"""The security application (the patent's "security software"), sans-IO: one instance per HBA port.

It drives FC-SP-2 authentication of the configured targets over the emulated-disk channel:

    GET_PORT_INFO -> GET_TARGETS -> SECURE_CONNECT per configured target -> AUTH_NEEDED
    -> IKEv2 over the AUTH_ELS relay (ELS_SEND out, ELS_RCVD in, each acked with LS_ACC)
    -> SA_UPDATE RX, SA_UPDATE_COMPL, SA_UPDATE TX, SA_UPDATE_COMPL -> AUTH_OK -> (host: PRLI, I/O)

and keeps the sessions alive: rekey by lifetime and by bytes (make-before-break: new RX, new TX, AUTH_OK,
delete old TX, delete old RX, IKE Delete of the old pair), IKE retransmission, SESSION_SHUTDOWN acks,
target/link loss and return, host reset, host loss (keepalive), APP_STOP.

It produces `edifd.proto` bodies and consumes `edifd.proto.Message`s; the channel transport (APP_START
handshake, request ids, sequences, MACs) is not its business. Wiring (docs/secapp.md §2):

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
import enum
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edifd.fc import wwn_str
from edifd.ike import (
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    IkeError,
    Initiator,
    NegotiationFailed,
    Send,
    State,
)
from edifd.ike.codes import ProtocolId
from edifd.proto import (
    AppStartAnswer,
    AppStop,
    AuthFail,
    AuthFailReason,
    AuthNeeded,
    AuthOk,
    Body,
    Cipher,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
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
    RoleFlags,
    SaDirection,
    SaFlags,
    SaStatus,
    SaUpdate,
    SaUpdateCompl,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Stats,
    Status,
    StopReason,
    TargetGone,
    TargetList,
)

from .config import PeerPolicy, SecConfig
from .relay import (
    LS_ACC,
    LS_RJT_NO_AUTH,
    LS_RJT_PROTOCOL,
    RelayError,
    ike_config,
    new_tid,
    proto_cipher,
    sa_delete,
    sa_pair,
    unwrap_ike,
    wrap_ike,
)

RETRY_LATER_DELAY = 0.5  # seconds before repeating an AUTH_OK / SA_UPDATE answered RETRY_LATER
# The host keeps an old RX SA until the peer is seen on the new one (3 frames) or 20 s pass (qla2xxx); the
# next rekey waits for that removal's SA_UPDATE_COMPL, or this long, so it never needs a third RX slot.
RX_DELETE_GRACE = 30.0
MAX_OUTSTANDING = 4096  # bound on requests we remember (a host that never answers must not grow us)


# --- events for the caller (logs, status); never any key material ----------------------------------------


@dataclass(frozen=True)
class SessionSecure:
    """Both SAs are installed and AUTH_OK was accepted: PRLI and encrypted I/O proceed."""

    wwpn: int
    spi_in: int
    spi_out: int
    cipher: Cipher


@dataclass(frozen=True)
class SessionRekeyed:
    wwpn: int
    old_spi_in: int
    new_spi_in: int
    trigger: str  # "lifetime", "bytes" or "peer"


@dataclass(frozen=True)
class SessionFailed:
    wwpn: int
    reason: AuthFailReason
    detail: str


@dataclass(frozen=True)
class SessionDown:
    wwpn: int
    detail: str


@dataclass(frozen=True)
class ChannelLost:
    """The host stopped answering (keepalive) or forgot us: re-handshake, then call start() again."""

    detail: str


@dataclass(frozen=True)
class AppNotice:
    """Something was ignored or refused (unexpected response, malformed AUTH_ELS, unknown target)."""

    detail: str


AppEvent = SessionSecure | SessionRekeyed | SessionFailed | SessionDown | ChannelLost | AppNotice


class SessionState(enum.Enum):
    IDLE = "idle"  # nothing running; waiting for the target (PORT_ONLINE / GET_TARGETS) or a reconnect
    CONNECTING = "connecting"  # SECURE_CONNECT sent, waiting for AUTH_NEEDED
    NEGOTIATING = "negotiating"  # IKE_SA_INIT / IKE_AUTH in flight
    INSTALLING = "installing"  # child SA negotiated; SA_UPDATEs and AUTH_OK in progress
    SECURE = "secure"
    FAILED = "failed"  # AUTH_FAIL sent; retried after a backoff


@dataclass
class _Pair:
    spi_in: int
    spi_out: int
    cipher: Cipher
    since: float = 0.0  # when it became the pair in use (lifetime rekey)
    base: tuple[int, int] = (0, 0)  # tx/rx byte counters when it became current (volume rekey)


@dataclass
class _Step:
    """One step of an SA installation sequence. kind: 'sa' (SA_UPDATE, waits for its COMPL unless it is a
    delayed RX delete), 'auth_ok' (waits for RESPONSE OK), 'ike_delete' (INFORMATIONAL Delete of a pair)."""

    kind: str
    body: SaUpdate | None = None
    spi_in: int = 0


@dataclass
class TargetSession:
    """The application's view of one configured target."""

    wwpn: int
    policy: PeerPolicy
    state: SessionState = SessionState.IDLE
    port: PortRef | None = None
    ike: Initiator | None = field(default=None, repr=False)
    tid: int = 0
    current: _Pair | None = None
    incoming: _Pair | None = None  # negotiated, being installed
    trigger: str = ""  # why `incoming` exists
    steps: deque[_Step] = field(default_factory=deque, repr=False)
    waiting: tuple | None = None  # what the head step waits for
    retry_at: float | None = None  # IDLE/FAILED: when to SECURE_CONNECT again; else when to `resend`
    resend: Body | None = None  # an AUTH_OK / SA_UPDATE the host answered RETRY_LATER
    failures: int = 0
    deferred_needed: PortRef | None = None  # AUTH_NEEDED that arrived during the failure backoff
    retx_data: bytes | None = field(default=None, repr=False)
    retx_at: float = 0.0
    retx_count: int = 0
    rekey_blocked_until: float = 0.0
    rx_delete_pending: tuple[int, float] | None = None  # (SPI, give-up time) of an old RX SA still in the HBA
    counters: tuple[int, int] = (0, 0)  # last tx/rx seen in STATS

    def __repr__(self) -> str:
        return f"TargetSession({wwn_str(self.wwpn)}, {self.state.value})"


class SecurityApp:
    def __init__(
        self,
        config: SecConfig,
        clock: Callable[[], float],
        *,
        port_index: int = 0,
        rng: Callable[[int], bytes] = os.urandom,
        cert_clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.config = config
        self.port_index = port_index  # for the caller; bodies carry no port index
        self._clock = clock
        self._rng = rng
        self._cert_clock = cert_clock
        self.sessions: dict[int, TargetSession] = {
            w: TargetSession(w, p) for w, p in config.peers.items() if not p.skip
        }
        self.local: PortInfo | None = None
        self._policy = config.ike  # the IKE policy narrowed to what the host supports (start())
        self.running = False
        self._out: list[Body | AppEvent] = []
        self._pending: dict[int, Body] = {}  # request id -> request
        self._last_heard = 0.0
        self._next_keepalive = 0.0
        self._next_stats = 0.0
        self._stats_busy = False
        self._warned: set[int] = set()
        self.counters: dict[str, int] = {"els_rejected": 0, "unexpected": 0}

    def __repr__(self) -> str:
        return f"SecurityApp(running={self.running}, sessions={list(self.sessions.values())})"

    # --- public API ------------------------------------------------------------------------------------

    def start(self, answer: AppStartAnswer | None = None) -> list[Body | AppEvent]:
        """Begin (or begin again after ChannelLost): ask for the local port, then the targets.

        `answer` is the host's APP_START_ANSWER if the channel layer exposes it: child SA proposals are
        then limited to the ciphers the HBA supports (its cipher_mask), so IKE never agrees on a cipher
        the host would refuse in SA_UPDATE.
        """
        now = self._clock()
        self._policy = self.config.ike
        if answer is not None:
            mask = answer.cipher_mask
            usable = tuple(c for c in self.config.ike.esp_ciphers if proto_cipher(c).mask_bit & mask)
            if not usable:
                self._emit(AppNotice("the host supports none of the configured ESP ciphers"))
            else:
                self._policy = dataclasses.replace(self.config.ike, esp_ciphers=usable)
        self._reset_all("application start", quiet=True)
        self._pending.clear()
        self.running = True
        self._last_heard = now
        self._next_keepalive = now + self.config.keepalive_interval
        self._next_stats = now + self.config.rekey.stats_interval
        self._emit(GetPortInfo())
        return self._flush()

    def stop(self, reason: StopReason = StopReason.SHUTDOWN) -> list[Body | AppEvent]:
        """APP_STOP: the host logs every secure session out and clears their keys. We forget ours."""
        self._reset_all("application stop", quiet=True)
        self.running = False
        self._emit(AppStop(reason))
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
            self._emit(EventAck(msg.type, msg.sequence, port if isinstance(port, PortRef) else PortRef(0)))
        if self.running:
            self._on_event(msg)
        return self._flush()

    def on_response(self, request_id: int, msg: Message) -> list[Body | AppEvent]:
        request = self._pending.pop(request_id, None)
        if request is None:
            self.counters["unexpected"] += 1
            self._emit(AppNotice(f"response {msg.type.name} to unknown request id {request_id}"))
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
                self._emit(Keepalive())
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
            self._emit(GetStats())
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

    # --- plumbing --------------------------------------------------------------------------------------

    def _emit(self, item: Body | AppEvent) -> None:
        self._out.append(item)

    def _flush(self) -> list[Body | AppEvent]:
        out, self._out = self._out, []
        return out

    def _channel_lost(self, detail: str) -> None:
        self._reset_all("host lost", quiet=True)
        self.running = False
        self._pending.clear()
        self._emit(ChannelLost(detail))

    def _reset_all(self, detail: str, *, quiet: bool = False) -> None:
        for s in self.sessions.values():
            self._drop(s, detail, quiet=quiet)
            s.failures = 0
        self._stats_busy = False

    def _drop(self, s: TargetSession, detail: str, *, quiet: bool = False) -> None:
        """Forget the session's IKE and SA state (the host has dropped, or will drop, its SAs)."""
        was = s.state
        s.ike = None
        s.current = s.incoming = None
        s.steps.clear()
        s.waiting = None
        s.retx_data = None
        s.deferred_needed = None
        s.state = SessionState.IDLE
        s.retry_at = None
        s.resend = None
        s.rx_delete_pending = None
        s.rekey_blocked_until = 0.0
        if not quiet and was is not SessionState.IDLE:
            self._emit(SessionDown(s.wwpn, detail))

    def _session_for(self, port: PortRef) -> TargetSession | None:
        return self.sessions.get(port.wwpn)

    # --- responses -------------------------------------------------------------------------------------

    def _on_response(self, request: Body, body: Body) -> None:
        if isinstance(request, GetPortInfo) and isinstance(body, PortInfo):
            self.local = body
            if body.link is LinkState.UP:
                self._emit(GetTargets(start=0))
            return
        if isinstance(request, GetTargets) and isinstance(body, TargetList):
            self._on_targets(body)
            return
        if isinstance(request, GetStats):
            self._on_stats(body)
            return
        if isinstance(request, ElsSend):
            self._on_els_answer(request, body)
            return
        if not isinstance(body, Response):
            self._emit(AppNotice(f"{body.TYPE.name} does not answer {request.TYPE.name}"))
            return
        if isinstance(request, SecureConnect):
            self._on_secure_connect_answer(request, body)
        elif isinstance(request, SaUpdate):
            s = self._session_for(request.port)
            if s is not None and s.waiting == self._sa_key(request) and body.status is Status.RETRY_LATER:
                s.resend, s.retry_at = request, self._clock() + RETRY_LATER_DELAY
            elif body.status is not Status.OK:
                if s is not None and s.waiting == self._sa_key(request):
                    what = f"SA_UPDATE {request.direction.name} refused"
                    self._fail(s, AuthFailReason.AUTH_FAILED, f"{what}: {body.status.name}")
        elif isinstance(request, AuthOk):
            self._on_auth_ok_answer(request, body)
        elif body.status is not Status.OK:
            if body.status is Status.NOT_STARTED:
                self._channel_lost(f"host answered {request.TYPE.name} with NOT_STARTED")
            else:
                self._emit(AppNotice(f"{request.TYPE.name} answered {body.status.name}"))

    def _on_targets(self, page: TargetList) -> None:
        for e in page.entries:
            s = self.sessions.get(e.port.wwpn)
            if s is None:
                if e.port.wwpn not in self._warned and e.roles & RoleFlags.TARGET:
                    self._warned.add(e.port.wwpn)
                    policy = self.config.peers.get(e.port.wwpn)
                    why = "configured as skip" if policy is not None else "not configured"
                    self._emit(AppNotice(f"target {wwn_str(e.port.wwpn)} is {why}; not securing it"))
                continue
            if s.state is SessionState.IDLE and e.roles & RoleFlags.TARGET:
                self._connect(s, e.port)
        nxt = page.start + len(page.entries)
        if page.entries and nxt < page.total:
            self._emit(GetTargets(start=nxt))

    def _on_stats(self, body: Body) -> None:
        self._stats_busy = False
        if not isinstance(body, Stats):
            return
        for e in body.entries:
            s = self.sessions.get(e.port.wwpn)
            if s is None:
                continue
            s.counters = (e.tx_bytes, e.rx_bytes)
            if s.current is not None and s.state is SessionState.SECURE:
                self._maybe_rekey(s, self._clock())
        nxt = body.start + len(body.entries)
        if body.entries and nxt < body.total:
            self._stats_busy = True
            self._emit(GetStats(start=nxt))

    def _on_secure_connect_answer(self, request: SecureConnect, body: Response) -> None:
        s = self._session_for(request.port)
        if s is None or s.state is not SessionState.CONNECTING or body.status is Status.OK:
            return
        if body.status is Status.STALE_GENERATION:
            s.state, s.retry_at = SessionState.IDLE, None
            self._emit(GetTargets(wwpn=s.wwpn))  # learn the current login, then connect to it
        elif body.status is Status.NO_SUCH_PORT:
            s.state, s.retry_at = SessionState.IDLE, None  # wait for PORT_ONLINE / the next target list
        else:
            s.state, s.retry_at = SessionState.IDLE, self._clock() + self.config.reconnect_delay
        self._emit(AppNotice(f"SECURE_CONNECT {wwn_str(s.wwpn)}: {body.status.name}"))

    def _on_els_answer(self, request: ElsSend, body: Body) -> None:
        s = self._session_for(request.port)
        if s is None or s.ike is None:
            return
        if isinstance(body, ElsResponse):
            if body.result is ElsResult.LS_ACC:
                return
            try:
                tid = unwrap_ike(request.payload)[0]
            except RelayError:
                return
            if tid == s.tid:  # not a leftover of an earlier IKE SA
                self._fail(s, AuthFailReason.PEER_REJECTED, "peer answered our AUTH_ELS with LS_RJT")
            return
        if isinstance(body, Response) and body.status not in (Status.OK, Status.RETRY_LATER):
            # The host could not deliver it (no login, stale generation): the session is gone there.
            self._drop(s, f"AUTH_ELS not delivered: {body.status.name}")
            s.retry_at = self._clock() + self.config.reconnect_delay
        # RETRY_LATER: the retransmission timer sends it again.

    def _on_auth_ok_answer(self, request: AuthOk, body: Response) -> None:
        s = self._session_for(request.port)
        if s is None or s.waiting != ("auth_ok",):
            return
        if body.status is Status.OK:
            s.waiting = None
            s.retry_at = None
            if s.state is SessionState.INSTALLING and s.current is None:
                pair = s.incoming
                s.current, s.incoming = pair, None
                pair.since, pair.base = self._clock(), s.counters
                s.state, s.failures = SessionState.SECURE, 0
                self._emit(SessionSecure(s.wwpn, pair.spi_in, pair.spi_out, pair.cipher))
            self._advance(s)
        elif body.status is Status.RETRY_LATER:
            s.resend, s.retry_at = request, self._clock() + RETRY_LATER_DELAY
        else:
            self._fail(s, AuthFailReason.AUTH_FAILED, f"AUTH_OK refused: {body.status.name}")

    # --- events ----------------------------------------------------------------------------------------

    def _on_event(self, msg: Message) -> None:
        ev = msg.body
        if isinstance(ev, Heartbeat):
            return
        if isinstance(ev, ElsRcvd):
            self._on_els_rcvd(ev)
        elif isinstance(ev, AuthNeeded):
            self._on_auth_needed(ev.port)
        elif isinstance(ev, SaUpdateCompl):
            self._on_sa_compl(ev)
        elif isinstance(ev, SessionShutdown):
            self._on_shutdown(ev)  # acked in on_message
        elif isinstance(ev, TargetGone | PortOffline):
            s = self._session_for(ev.port)
            if s is not None and s.state is not SessionState.FAILED:  # a failed one keeps its backoff
                self._drop(s, f"{msg.type.name.lower()}")
                if isinstance(ev, PortOffline):  # it may log in again by itself; ask once after a pause
                    s.retry_at = self._clock() + self.config.reconnect_delay
        elif isinstance(ev, PortOnline):
            s = self._session_for(ev.port)
            if s is not None and s.state is SessionState.IDLE:
                self._connect(s, ev.port)
        elif isinstance(ev, LinkDown):
            self._reset_all("link down")
            self.local = None
        elif isinstance(ev, LinkUp):
            self._emit(GetPortInfo())  # our N_Port_ID may have changed; then GET_TARGETS
        elif isinstance(ev, HostReset):
            # Every SA and login is gone (and the host may have restarted): discover afresh, so the
            # SECURE_CONNECTs name the current logins.
            self._reset_all("host reset: every SA is gone")
            self._emit(GetPortInfo())
        elif isinstance(ev, EventOverflow):
            self._emit(Resync())
            self._emit(GetTargets(start=0))

    def _on_shutdown(self, ev: SessionShutdown) -> None:
        s = self._session_for(ev.port)
        if s is None:
            return
        if s.state is SessionState.FAILED:
            return  # the logout that follows our AUTH_FAIL: the backoff stays, whatever the reason
        self._drop(s, f"session shutdown: {ev.reason.name}")
        if ev.reason not in (ShutdownReason.PORT_GONE, ShutdownReason.LINK_DOWN, ShutdownReason.APP_STOP):
            s.retry_at = self._clock() + self.config.reconnect_delay

    def _connect(self, s: TargetSession, port: PortRef) -> None:
        s.port = port
        s.state = SessionState.CONNECTING
        s.retry_at = None
        self._emit(SecureConnect(port))

    def _on_auth_needed(self, port: PortRef) -> None:
        s = self._session_for(port)
        if s is None:
            policy = self.config.peers.get(port.wwpn)
            why = "configured as skip" if policy is not None else "not configured"
            self._emit(AppNotice(f"AUTH_NEEDED for {wwn_str(port.wwpn)}, which is {why}: AUTH_FAIL"))
            self._emit(AuthFail(port, AuthFailReason.POLICY))
            return
        now = self._clock()
        if s.state is SessionState.FAILED and s.retry_at is not None and now < s.retry_at:
            s.deferred_needed = port  # do not hammer the peer with a credential that just failed
            return
        serving = (SessionState.NEGOTIATING, SessionState.INSTALLING, SessionState.SECURE)
        if s.port == port and s.state in serving:
            return  # a repeat for the login we already serve (same generation); a new login restarts
        if s.state is not SessionState.IDLE:
            self._drop(s, "new login", quiet=s.state in (SessionState.CONNECTING, SessionState.FAILED))
        self._start_ike(s, port)

    def _start_ike(self, s: TargetSession, port: PortRef) -> None:
        local = self.local
        if local is None:
            self._emit(AppNotice("AUTH_NEEDED before PORT_INFO; asking for it"))
            self._emit(GetPortInfo())
            s.port, s.state, s.retry_at = port, SessionState.IDLE, self._clock() + self.config.reconnect_delay
            return
        cfg = ike_config(
            local_wwpn=local.wwpn,
            remote_wwpn=port.wwpn,
            local_port_id=local.port_id,
            remote_port_id=port.port_id,
            credentials=s.policy.credentials,
            policy=self._policy,
            rng=self._rng,
            clock=self._cert_clock,
        )
        s.port, s.ike, s.tid = port, Initiator(cfg), new_tid(self._rng)
        s.state, s.retry_at, s.deferred_needed = SessionState.NEGOTIATING, None, None
        try:
            first = s.ike.start()
        except IkeError as e:
            self._fail(s, AuthFailReason.POLICY, f"IKE: {e}")
            return
        self._send_ike(s, first)

    def _send_ike(self, s: TargetSession, data: bytes) -> None:
        assert s.port is not None and s.ike is not None
        if s.ike.retransmit() == data and s.retx_data != data:  # a new request of ours: restart its timer
            s.retx_data, s.retx_count = data, 0
            s.retx_at = self._clock() + self.config.ike.retransmit_timeout
        self._emit(ElsSend(s.port, wrap_ike(data, s.tid)))

    def _on_els_rcvd(self, ev: ElsRcvd) -> None:
        s = self._session_for(ev.port)

        def reject(rjt: bytes, why: str) -> None:
            self.counters["els_rejected"] += 1
            self._emit(ElsReply(ev.port, ev.rx_exchange, ElsReplyAction.LS_RJT, rjt))
            self._emit(AppNotice(f"AUTH_ELS from {wwn_str(ev.port.wwpn)} refused: {why}"))

        if s is None or s.ike is None:
            reject(LS_RJT_NO_AUTH, "no authentication in progress")
            return
        try:
            tid, data = unwrap_ike(ev.payload)
        except RelayError as e:
            reject(LS_RJT_PROTOCOL, str(e))
            return
        if tid != s.tid:
            reject(LS_RJT_PROTOCOL, f"transaction id {tid:#x} is not ours")
            return
        try:
            events = s.ike.receive(data)
        except IkeError as e:
            reject(LS_RJT_PROTOCOL, f"IKE: {e}")  # state unchanged; a retransmission may still come
            return
        self._emit(ElsReply(ev.port, ev.rx_exchange, ElsReplyAction.LS_ACC, LS_ACC))
        self._on_ike_events(s, events)

    def _on_ike_events(self, s: TargetSession, events: list) -> None:
        sends = [e for e in events if isinstance(e, Send)]
        for e in events:
            if s.ike is None:
                return  # failed meanwhile
            if isinstance(e, Send):
                self._send_ike(s, e.data)
            elif isinstance(e, ChildSaEstablished):
                self._on_child(s, e)
            elif isinstance(e, AuthFailed):
                # With a Send beside it we refuse the peer's AUTH (and tell it); else the peer refused ours.
                reason = AuthFailReason.AUTH_FAILED if sends else AuthFailReason.PEER_REJECTED
                self._fail(s, reason, e.reason)
            elif isinstance(e, NegotiationFailed):
                self._fail(s, AuthFailReason.POLICY, e.reason)
            elif isinstance(e, ChildSaFailed):
                if s.current is None and s.incoming is None:
                    self._fail(s, AuthFailReason.POLICY, f"no child SA: {e.reason}")
                else:  # a failed rekey: keep the current pair and try again later
                    s.rekey_blocked_until = self._clock() + self.config.auth_retry_backoff
                    s.trigger = ""
                    self._emit(AppNotice(f"rekey of {wwn_str(s.wwpn)} refused: {e.reason}"))
            elif isinstance(e, Deleted):
                if e.protocol == ProtocolId.IKE:
                    self._fail(s, AuthFailReason.PEER_REJECTED, "peer deleted the IKE SA", backoff=False)
                elif s.current is not None and e.spi_in == s.current.spi_in and s.incoming is None:
                    self._fail(s, AuthFailReason.PEER_REJECTED, "peer deleted the pair in use", backoff=False)
                # A Delete of the pair being replaced: the peer rekeyed; our steps remove it from the HBA.
        if s.ike is not None and s.ike.retransmit() is None:
            s.retx_data = None
        self._next_ike_request(s)

    def _on_child(self, s: TargetSession, child: ChildSaEstablished) -> None:
        assert s.port is not None
        pair = _Pair(child.spi_in, child.spi_out, proto_cipher(child.cipher))
        sa = sa_pair(s.port, child, rekey=s.current is not None)
        if s.current is None:
            if s.incoming is not None:
                return
            s.incoming, s.trigger, s.state = pair, "", SessionState.INSTALLING
            s.steps.extend([_Step("sa", sa.rx), _Step("sa", sa.tx), _Step("auth_ok")])
        elif child.rekeyed_spi_in == s.current.spi_in and s.incoming is None:
            old = s.current
            s.incoming = pair
            s.trigger = s.trigger or "peer"
            # make-before-break (qla2xxx): new RX, new TX, AUTH_OK, old TX out, old RX out (the host
            # keeps it until the peer uses the new SA), then tell the peer with an IKE Delete.
            s.steps.extend([
                _Step("sa", sa.rx),
                _Step("sa", sa.tx),
                _Step("auth_ok"),
                _Step("sa", sa_delete(s.port, old.spi_out, SaDirection.TX, old.cipher)),
                _Step("sa", sa_delete(s.port, old.spi_in, SaDirection.RX, old.cipher)),
                _Step("ike_delete", spi_in=old.spi_in),
            ])
        else:
            self._emit(AppNotice(f"unexpected extra child SA from {wwn_str(s.wwpn)}; not installed"))
            return
        self._advance(s)

    @staticmethod
    def _sa_key(body: SaUpdate) -> tuple:
        return ("sa", body.spi, body.direction, SaFlags.DELETE in body.flags)

    def _advance(self, s: TargetSession) -> None:
        """Run the installation steps until one has to wait."""
        while s.waiting is None and s.steps and s.port is not None:
            step = s.steps[0]
            if step.kind == "sa":
                body = step.body
                assert body is not None
                s.steps.popleft()
                self._emit(body)
                if SaFlags.DELETE in body.flags and body.direction is SaDirection.RX:
                    s.rx_delete_pending = (body.spi, self._clock() + RX_DELETE_GRACE)
                else:
                    s.waiting = self._sa_key(body)
                # The old RX goes only after the peer switched; its COMPL comes much later and is not awaited.
            elif step.kind == "auth_ok":
                s.steps.popleft()
                s.waiting = ("auth_ok",)
                self._emit(AuthOk(s.port))
                if s.current is not None and s.incoming is not None:  # rekey: the new pair is in use now
                    old, new = s.current, s.incoming
                    new.since, new.base = self._clock(), s.counters
                    s.current, s.incoming = new, None
                    self._emit(SessionRekeyed(s.wwpn, old.spi_in, new.spi_in, s.trigger))
                    s.trigger = ""
            elif step.kind == "ike_delete":
                if s.ike is None or s.ike.state is not State.ESTABLISHED:
                    s.steps.popleft()
                    continue
                if s.ike.retransmit() is not None:
                    return  # window size 1: sent when the outstanding request is answered
                s.steps.popleft()
                try:
                    self._send_ike(s, s.ike.delete_child(step.spi_in))
                except IkeError:
                    pass  # the peer already deleted it
        if not s.steps and s.waiting is None and s.state is SessionState.INSTALLING:
            s.state = SessionState.SECURE

    def _next_ike_request(self, s: TargetSession) -> None:
        if s.steps and s.steps[0].kind == "ike_delete" and s.waiting is None:
            self._advance(s)

    def _on_sa_compl(self, ev: SaUpdateCompl) -> None:
        s = self._session_for(ev.port)
        if s is None:
            return
        key = ("sa", ev.spi, ev.direction, SaFlags.DELETE in ev.flags)
        if s.rx_delete_pending and key == ("sa", s.rx_delete_pending[0], SaDirection.RX, True):
            s.rx_delete_pending = None  # the old RX slot is free: the next rekey may go
            return
        if s.waiting != key:
            return  # e.g. the delayed removal of an old RX SA
        if ev.status is not SaStatus.SUCCESS:
            self._fail(s, AuthFailReason.AUTH_FAILED,
                       f"SA_UPDATE {ev.direction.name} failed: {ev.status.name} (fw {ev.fw_status:#x})")
            return
        s.waiting = None
        self._advance(s)

    # --- failures, timers, rekey -----------------------------------------------------------------------

    def _fail(self, s: TargetSession, reason: AuthFailReason, detail: str, *, backoff: bool = True) -> None:
        port = s.port
        failures = s.failures + 1
        self._drop(s, detail, quiet=True)
        s.port, s.state, s.failures = port, SessionState.FAILED, failures
        c = self.config
        delay = c.reconnect_delay
        if backoff:
            delay = min(c.auth_retry_backoff * 2 ** (failures - 1), c.auth_retry_max)
        s.retry_at = self._clock() + delay
        if port is not None:
            self._emit(AuthFail(port, reason))
        self._emit(SessionFailed(s.wwpn, reason, detail))

    def _tick_session(self, s: TargetSession, now: float) -> None:
        if s.retry_at is not None and now >= s.retry_at:
            if s.resend is not None:
                body, s.resend, s.retry_at = s.resend, None, None
                self._emit(body)
            elif s.state in (SessionState.FAILED, SessionState.IDLE) and s.port is not None:
                needed = s.deferred_needed
                s.retry_at = None
                if needed is not None:
                    self._start_ike(s, needed)
                else:
                    # Our generation may be stale by now (the login we knew ended): 0 = whatever is current.
                    self._connect(s, dataclasses.replace(s.port, generation=0))
        if s.ike is not None and s.retx_data is not None and now >= s.retx_at:
            if s.ike.retransmit() != s.retx_data:
                s.retx_data = None
            elif s.retx_count >= self.config.ike.retransmit_tries:
                self._fail(s, AuthFailReason.TIMEOUT, "the peer did not answer the IKE request")
                return
            else:
                s.retx_count += 1
                s.retx_at = now + self.config.ike.retransmit_timeout * 2**s.retx_count
                self._emit(ElsSend(s.port, wrap_ike(s.retx_data, s.tid)))
        if s.state is SessionState.SECURE:
            self._maybe_rekey(s, now)

    def _maybe_rekey(self, s: TargetSession, now: float) -> None:
        cur, r = s.current, self.config.rekey
        if cur is None or s.ike is None or s.incoming is not None or s.steps or s.waiting is not None:
            return
        if now < s.rekey_blocked_until or s.ike.retransmit() is not None:
            return
        if s.rx_delete_pending is not None and now < s.rx_delete_pending[1]:
            return
        # Counters below the baseline were reset by the host (qla zeroes them on an SA add): count from 0.
        used = max(n - b if n >= b else n for n, b in zip(s.counters, cur.base, strict=True))
        if r.lifetime and now - cur.since >= r.lifetime:
            s.trigger = "lifetime"
        elif r.bytes and used >= r.bytes:
            s.trigger = "bytes"
        else:
            return
        try:
            self._send_ike(s, s.ike.rekey_child(cur.spi_in))
        except IkeError as e:
            s.rekey_blocked_until = now + self.config.auth_retry_backoff
            self._emit(AppNotice(f"cannot rekey {wwn_str(s.wwpn)}: {e}"))
