"""EdifEngine: the host's EDIF engine for one HBA port — the control LUN's request handler joined to
the HBA model (qla2xxx EDIF semantics, drivers/scsi/qla2xxx/qla_edif.c; docs/engine.md).

One engine per control LUN = one `InitiatorPort` = one point-to-point link to one target port. It is
the channel's `RequestHandler` (plus the optional hooks `app_stopped`, `keepalive`, `event_acked`,
`agent_silent`) and its `StateProvider` (PORT_INFO, TARGET_LIST). Every piece of state lives on the
HBA's event loop: `handle()` returns a `Deferred` and does the work there, so the HBA session, the
SA database and the ESP stage are never touched from two threads.

What it enforces (with `RequireAuthWhenSecure` as the HBA's login policy):
- PLOGI carries the security bit only while the security application is active (SECURE_CONNECT
  turns it on; APP_STOP or the agent's silence turns it off);
- a secure login waits in AUTH_PENDING (no PRLI, no FCP) until AUTH_OK, which is accepted only when
  an RX and a TX SA are installed (else RETRY_LATER);
- one `SaDatabase` + `EspTransform` per login: a new login never inherits SAs; a session that ends
  clears (zeroizes) them, reports the pending SA_UPDATE_COMPLs and SESSION_SHUTDOWN;
- AUTH_FAIL, APP_STOP and agent loss log the secure session out and hold it: its commands fail at
  once with SENSE_NOT_AUTHORIZED (07/74/71) until SECURE_CONNECT logs in again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from edifd.channel.handler import Deferred
from edifd.edif import DeleteRx, EspTransform, Event, RekeyNeeded, SaDatabase, SaUpdateDone, TeardownRequested
from edifd.fc import Frame, wwn_str
from edifd.hba.hba import Hba
from edifd.hba.port import InitiatorPort
from edifd.hba.session import (
    SENSE_NOT_AUTHORIZED,
    ElsReceived,
    ElsReplyReceived,
    LoggedIn,
    SessionEvent,
    SessionState,
    StateChanged,
)
from edifd.hba.transform import IdentityTransform
from edifd.proto import (
    MAX_TARGET_ENTRIES,
    AuthFail,
    AuthNeeded,
    AuthOk,
    AuthState,
    Body,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    GetPortInfo,
    GetStats,
    GetTargets,
    LinkDown,
    LinkState,
    LinkUp,
    Message,
    MessageType,
    PortInfo,
    PortOnline,
    PortRef,
    PortState,
    Response,
    RoleFlags,
    SaUpdate,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Stats,
    StatsEntry,
    Status,
    TargetEntry,
    TargetFlags,
    TargetGone,
    TargetList,
)

log = logging.getLogger(__name__)

ELS_TIMEOUT = 10.0  # s an ELS_SEND waits for the peer's LS_ACC/LS_RJT (qla: R_A_TOV-ish 10 s)
SHUTDOWN_ACK_TIMEOUT = 10.0  # qla2xxx waits 100 × 100 ms for the SESSION_SHUTDOWN ack
MAX_PENDING_RX_ELS = 32  # received AUTH_ELS waiting for ELS_REPLY; the oldest is refused beyond this
TICK = 1.0

_LOGGED_IN = (SessionState.AUTH_PENDING, SessionState.PRLI, SessionState.READY)
_LS_RJT_UNABLE = bytes((0x01, 0, 0, 0, 0, 0x09, 0x00, 0))  # LS_RJT unable to perform command


@dataclass
class _ElsOut:
    deferred: Deferred
    port: PortRef
    deadline: float


@dataclass
class EngineCounters:
    requests: int = 0
    refused: int = 0  # requests answered with anything but OK / a body
    els_sent: int = 0
    els_received: int = 0
    els_timeouts: int = 0
    sa_updates: int = 0
    auth_ok: int = 0
    auth_retry_later: int = 0
    auth_fail: int = 0
    shutdowns: int = 0
    shutdowns_acked: int = 0
    shutdowns_unacked: int = 0  # not acked within SHUTDOWN_ACK_TIMEOUT (teardown went on anyway)
    teardowns: int = 0  # sessions the ESP stage asked to tear down (ICV failures, no TX SA)
    app_stops: int = 0
    agent_lost: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Login:
    """The state of the current login of the remote port (a new PLOGI makes a new one)."""

    generation: int
    secure: bool
    sadb: SaDatabase = field(default_factory=SaDatabase)
    esp: EspTransform = field(init=False)
    auth: AuthState = AuthState.NOT_SECURE

    def __post_init__(self) -> None:
        self.esp = EspTransform(self.sadb)


class EdifEngine:
    """RequestHandler + StateProvider of one control LUN, driving one `InitiatorPort` of `hba`."""

    def __init__(
        self,
        hba: Hba,
        port: InitiatorPort,
        *,
        post_event: Callable[[Body], object] | None = None,
        els_timeout: float = ELS_TIMEOUT,
        shutdown_ack_timeout: float = SHUTDOWN_ACK_TIMEOUT,
        tick: float = TICK,
    ) -> None:
        if port not in hba.ports:
            raise ValueError("the port must belong to the HBA")
        self.hba, self.port = hba, port
        self._post = post_event
        self.els_timeout, self.shutdown_ack_timeout = els_timeout, shutdown_ack_timeout
        self.tick_interval = tick
        self.counters = EngineCounters()
        self.app_active = False
        self.generation = 0
        self.login: _Login | None = None
        self._down_reason: ShutdownReason | None = None  # set by us before we end a login ourselves
        self._gone_announced = False
        self._rx_els: OrderedDict[int, Frame] = OrderedDict()
        self._next_rx_exchange = 0
        self._els_out: dict[int, _ElsOut] = {}
        self._shutdowns: dict[int, float] = {}  # event sequence -> ack deadline
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._stopped = False
        # What other threads read (PORT_INFO, TARGET_LIST): replaced as a whole on the loop.
        self._view: tuple[PortInfo, list[TargetEntry], list[StatsEntry]] = (self._port_info(), [], [])

    # --- wiring ----------------------------------------------------------------------------------

    def attach(self, post_event: Callable[[Body], object]) -> None:
        """Where upstream events go (`ChannelCore.post_event`); the core is built after the engine."""
        self._post = post_event

    def start(self) -> None:
        """Thread-safe, after `hba.start_thread()`/`start()`: hook into the port on the HBA loop."""
        self.hba.call_soon(self._start_on_loop)

    def _start_on_loop(self) -> None:
        if self._started:
            return
        self._started = True
        self.port.observer = self._observe
        self.port.els_handler = self._on_auth_els
        self.port.session.relay_auth_els = False  # LS_RJT until an application is active (qla)
        self._timer = asyncio.get_running_loop().call_later(self.tick_interval, self._tick)
        self._refresh()

    def stop(self) -> None:
        """Thread-safe: stop the engine's timer (before `hba.stop_thread()`)."""
        self._stopped = True
        self._call(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- StateProvider (any thread) ----------------------------------------------------------------

    def port_info(self) -> PortInfo:
        return self._view[0]

    def targets(self) -> list[TargetEntry]:
        return list(self._view[1])

    def status(self) -> dict[str, object]:
        """For status output: counters, the login and SA state; no key material."""
        lg = self.login
        return {
            "app_active": self.app_active,
            "session": self.port.session.state.value,
            "generation": self.generation,
            "auth": lg.auth.name if lg else AuthState.NOT_SECURE.name,
            "sa": lg.sadb.snapshot() if lg else None,
            "esp": lg.esp.counters.snapshot() if lg else None,
            "counters": self.counters.snapshot(),
        }

    # --- RequestHandler (channel thread) -----------------------------------------------------------

    def handle(self, msg: Message) -> Body | Deferred:
        d = Deferred()
        try:
            self.hba.call_soon(self._handle_on_loop, msg, d)
        except RuntimeError:
            return Response(msg.type, Status.FAILED)  # the HBA is not running
        return d

    def app_stopped(self, msg: Message) -> None:
        self._call(self._app_gone, ShutdownReason.APP_STOP, "APP_STOP")

    def agent_silent(self) -> None:
        self._call(self._app_gone, ShutdownReason.KEYS_REMOVED, "agent silent (keepalives missed)")

    def keepalive(self, msg: Message) -> None:
        return None

    def event_acked(self, msg: Message) -> None:
        body = msg.body
        if getattr(body, "event_type", None) == MessageType.SESSION_SHUTDOWN:
            self._call(self._shutdown_acked, int(body.event_sequence))  # type: ignore[attr-defined]

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self.hba.call_soon(fn, *args)
        except RuntimeError:
            log.warning("EDIF engine: HBA not running; %s ignored", getattr(fn, "__name__", fn))

    # --- requests (loop thread) --------------------------------------------------------------------

    def _handle_on_loop(self, msg: Message, d: Deferred) -> None:
        self.counters.requests += 1
        try:
            answer, after = self._dispatch(msg)
        except Exception:
            log.exception("EDIF engine failed on %s", msg.type.name)
            answer, after = Response(msg.type, Status.FAILED), []  # type: ignore[assignment]
        if isinstance(answer, Deferred):
            answer.bind(d.resolve)
        else:
            if isinstance(answer, Response) and answer.status is not Status.OK:
                self.counters.refused += 1
                log.info("EDIF %s -> %s", msg.type.name, answer.status.name)
            d.resolve(answer)
        for ev in after:  # events caused by the request follow its response (qla: BSG reply, then AEN)
            self._emit(ev)
        self._refresh()

    def _dispatch(self, msg: Message) -> tuple[Body | Deferred, list[Body]]:
        body = msg.body
        self.app_active = True  # any authorized request after APP_START: the application is running
        self.port.session.relay_auth_els = True
        if isinstance(body, GetPortInfo):
            return self._port_info(), []
        if isinstance(body, GetTargets):
            rows = [t for t in self._targets() if body.wwpn in (0, t.port.wwpn)]
            start = min(body.start, len(rows))
            return TargetList(len(rows), start, tuple(rows[start:start + min(body.max_entries,
                                                                                   MAX_TARGET_ENTRIES)])), []
        if isinstance(body, GetStats):
            rows = [s for s in self._stats() if body.wwpn in (0, s.port.wwpn)]
            start = min(body.start, len(rows))
            return Stats(len(rows), start, tuple(rows[start:start + min(body.max_entries, 1)])), []
        if isinstance(body, SecureConnect):
            return self._secure_connect(body), []
        if isinstance(body, ElsSend):
            return self._els_send(msg, body)
        if isinstance(body, ElsReply):
            return self._els_reply(body), []
        if isinstance(body, SaUpdate):
            return self._sa_update(body)
        if isinstance(body, AuthOk):
            return self._auth_ok(body), []
        if isinstance(body, AuthFail):
            return self._auth_fail(body), []
        return Response(msg.type, Status.UNSUPPORTED), []

    def _ref(self) -> PortRef | None:
        s = self.port.session
        if s.remote_wwpn is None:
            return None
        return PortRef(s.remote_wwpn, s.remote_id & 0xFFFFFF, self.generation)

    def _check(self, t: MessageType, ref: PortRef, *, any_generation: bool = False) -> Response | None:
        """None if `ref` names the current login of our remote port."""
        s = self.port.session
        if s.remote_wwpn is None or ref.wwpn != s.remote_wwpn:
            return Response(t, Status.NO_SUCH_PORT)
        if ref.generation == 0 and any_generation:
            return None
        if ref.generation != self.generation:
            return Response(t, Status.STALE_GENERATION)
        return None

    def _secure_connect(self, body: SecureConnect) -> Body:
        bad = self._check(MessageType.SECURE_CONNECT, body.port, any_generation=True)
        if bad is not None:
            return bad
        s, now = self.port.session, self.port.now()
        s.security = True  # PLOGI with the security bit from now on
        self._gone_announced = False
        lg = self.login
        if s.state is SessionState.AUTH_PENDING and lg is not None and lg.secure:
            ref = self._ref()
            assert ref is not None
            lg.auth = AuthState.NEEDED
            self._emit(AuthNeeded(ref, RoleFlags.TARGET))  # the login in service: authenticate it
        elif s.state in (SessionState.PRLI, SessionState.READY) and lg is not None and lg.secure:
            pass  # already authenticated (or finishing PRLI): nothing to do
        else:
            # Logged in without security, held after a failure, or between logins: PLOGI (again)
            # with the bit; AUTH_NEEDED follows when the secure login completes.
            if s.state in _LOGGED_IN:
                self._down_reason = ShutdownReason.LOGO
            self.port.push(s.relogin(now, "SECURE_CONNECT"))
        return Response(MessageType.SECURE_CONNECT, Status.OK)

    def _els_send(self, msg: Message, body: ElsSend) -> tuple[Body | Deferred, list[Body]]:
        bad = self._check(msg.type, body.port)
        if bad is not None:
            return bad, []
        s = self.port.session
        if s.state not in _LOGGED_IN:
            return Response(msg.type, Status.NO_SUCH_PORT), []
        ox, frames = s.send_els(body.payload)
        if not frames:
            return Response(msg.type, Status.NO_SUCH_PORT), []
        d = Deferred()
        self._els_out[ox] = _ElsOut(d, body.port, self.port.now() + self.els_timeout)
        self.counters.els_sent += 1
        if self.login is not None and self.login.auth in (AuthState.NEEDED, AuthState.FAILED):
            self.login.auth = AuthState.IN_PROGRESS
        self.port.push(frames)
        return d, []  # ELS_RESPONSE comes with the peer's LS_ACC/LS_RJT

    def _els_reply(self, body: ElsReply) -> Body:
        t = MessageType.ELS_REPLY
        bad = self._check(t, body.port)
        if bad is not None:
            return bad
        frame = self._rx_els.pop(body.rx_exchange, None)
        if frame is None:
            return Response(t, Status.INVALID_PARAM)
        if body.action is ElsReplyAction.TERMINATE:
            return Response(t, Status.OK)  # the exchange is abandoned: the peer times it out
        try:
            frames = self.port.session.reply_els(frame, body.payload)
        except ValueError:
            return Response(t, Status.INVALID_PARAM)
        self.port.push(frames)
        return Response(t, Status.OK)

    def _sa_update(self, body: SaUpdate) -> tuple[Body, list[Body]]:
        t = MessageType.SA_UPDATE
        bad = self._check(t, body.port)
        if bad is not None:
            return bad, []
        lg = self.login
        if self.port.session.state not in _LOGGED_IN or lg is None:
            return Response(t, Status.NO_SUCH_PORT), []
        if not lg.secure:
            return Response(t, Status.REFUSED), []
        self.counters.sa_updates += 1
        result = lg.sadb.apply(body, self.port.now())
        if not result.ok:
            log.info("SA_UPDATE refused: %s", result.detail)  # detail never holds key material
            return Response(t, result.status), []
        if lg.auth is AuthState.NEEDED:
            lg.auth = AuthState.IN_PROGRESS
        return Response(t, Status.OK), self._esp_bodies(list(result.events))

    def _auth_ok(self, body: AuthOk) -> Body:
        t = MessageType.AUTH_OK
        bad = self._check(t, body.port)
        if bad is not None:
            return bad
        s, lg = self.port.session, self.login
        if lg is None or not lg.secure or s.state not in _LOGGED_IN:
            return Response(t, Status.REFUSED)
        if not lg.sadb.both_confirmed:
            self.counters.auth_retry_later += 1
            return Response(t, Status.RETRY_LATER)  # qla: prli_status 0, the app retries later
        self.counters.auth_ok += 1
        lg.auth = AuthState.AUTHENTICATED
        if s.state is SessionState.AUTH_PENDING:
            self.port.push(s.auth_complete(self.port.now()))  # PRLI now
        return Response(t, Status.OK)  # online already: the rekey path

    def _auth_fail(self, body: AuthFail) -> Body:
        t = MessageType.AUTH_FAIL
        bad = self._check(t, body.port, any_generation=True)
        if bad is not None:
            return bad
        self.counters.auth_fail += 1
        if self.login is not None:
            self.login.auth = AuthState.FAILED
        log.warning("AUTH_FAIL (%s) for %s: logging out", body.reason.name, wwn_str(body.port.wwpn))
        self._hold(ShutdownReason.AUTH_FAIL, f"AUTH_FAIL ({body.reason.name})")
        return Response(t, Status.OK)

    # --- application gone ---------------------------------------------------------------------------

    def _app_gone(self, reason: ShutdownReason, why: str) -> None:
        """APP_STOP (reason APP_STOP: the app expects nothing more) or agent silence (KEYS_REMOVED:
        told in a SESSION_SHUTDOWN, so a hung agent that resumes on the same epoch learns its
        session is gone and connects again). Either way: no security bit, the secure login held."""
        silent = reason is not ShutdownReason.APP_STOP
        if silent:
            self.counters.agent_lost += 1
        else:
            self.counters.app_stops += 1
            self.app_active = False  # qla: APP_STOP flushes the queues; nothing more is posted
        s = self.port.session
        s.security = False  # no security bit in PLOGI while no application runs (qla n2n_fw_acc_sec)
        s.relay_auth_els = False
        self._rx_els.clear()
        lg = self.login
        if lg is not None and lg.secure and s.state is not SessionState.GONE:
            log.warning("%s: logging out the secure session to %s", why, wwn_str(s.remote_wwpn))
            self._hold(reason, why)
        elif self.app_active:
            log.info("%s: no secure session to log out", why)
        self.app_active = False
        self._refresh()

    def _hold(self, reason: ShutdownReason, why: str) -> None:
        self._down_reason = reason
        self.port.push(self.port.session.hold(self.port.now(), why, SENSE_NOT_AUTHORIZED))

    # --- the AUTH_ELS relay (loop thread) ---------------------------------------------------------------

    def _on_auth_els(self, frame: Frame) -> None:
        ref = self._ref()
        s = self.port.session
        if ref is None or not self.app_active or s.state not in _LOGGED_IN:
            self.port.push(s.reply_els(frame, _LS_RJT_UNABLE))
            return
        while len(self._rx_els) >= MAX_PENDING_RX_ELS:
            _, old = self._rx_els.popitem(last=False)
            self.port.push(s.reply_els(old, _LS_RJT_UNABLE))
        self._next_rx_exchange = self._next_rx_exchange % 0xFFFFFFFF + 1
        rx = self._next_rx_exchange
        self._rx_els[rx] = frame
        self.counters.els_received += 1
        self._emit(ElsRcvd(ref, rx, frame.fc4_payload))

    # --- session events (loop thread) ---------------------------------------------------------------

    def _observe(self, events: list[SessionEvent]) -> None:
        for ev in events:
            if isinstance(ev, StateChanged):
                self._state_changed(ev)
            elif isinstance(ev, LoggedIn):
                self._logged_in(ev)
            elif isinstance(ev, ElsReplyReceived):
                out = self._els_out.pop(ev.ox_id, None)
                if out is not None:
                    result = ElsResult.LS_ACC if ev.payload[:1] == b"\x02" else ElsResult.LS_RJT
                    out.deferred.resolve(ElsResponse(out.port, result, ev.payload))
            elif isinstance(ev, ElsReceived):
                pass  # handled by els_handler
        lg = self.login
        if lg is not None:
            self._esp_events(lg.esp.pop_events())
        if events:
            self._refresh()

    def _state_changed(self, ev: StateChanged) -> None:
        if ev.state is SessionState.FLOGI and ev.reason == "link up":
            self._emit(LinkUp())
        if ev.state not in _LOGGED_IN and self.login is not None:
            self._login_ended(ev.state, ev.reason)
        if ev.state is SessionState.DOWN and ev.reason != "logout":
            self._emit(LinkDown())
        if ev.state is SessionState.GONE and ev.reason.startswith("PLOGI rejected"):
            self._target_gone()
        lg = self.login
        if ev.state is SessionState.AUTH_PENDING and lg is not None and not lg.secure:
            log.warning("remote port %s requires authentication; no security application has asked for it",
                        wwn_str(self.port.session.remote_wwpn))

    def _logged_in(self, ev: LoggedIn) -> None:
        """A PLOGI completed: a new login with its own generation and SAs (the old keys are gone)."""
        if self.login is not None:  # a PLOGI while logged in is an implicit logout
            self._login_ended(SessionState.PLOGI, "implicit logout (PLOGI)")
        s = self.port.session
        self.generation = self.generation % 0xFFFFFFFF + 1
        secure = ev.peer.security and s.security
        lg = self.login = _Login(self.generation, secure)
        s.transform = lg.esp if secure else IdentityTransform()
        ref = self._ref()
        assert ref is not None
        if self._gone_announced:
            self._gone_announced = False
            self._emit(PortOnline(ref))
        if secure:
            lg.auth = AuthState.NEEDED
            log.info("secure login to %s (generation %d): AUTH_NEEDED", wwn_str(ref.wwpn), ref.generation)
            self._emit(AuthNeeded(ref, RoleFlags.TARGET))

    def _login_ended(self, state: SessionState, text: str) -> None:
        lg, self.login = self.login, None
        reason, self._down_reason = self._down_reason, None
        ref = PortRef(self.port.session.remote_wwpn or 0, 0, self.generation) if lg else None
        for out in list(self._els_out.values()):
            out.deferred.resolve(Response(MessageType.ELS_SEND, Status.FAILED))
        self._els_out.clear()
        self._rx_els.clear()
        if lg is None:
            return
        if ref is not None and self.port.session.remote_id:
            ref = PortRef(ref.wwpn, self.port.session.remote_id & 0xFFFFFF, ref.generation)
        if reason is None:
            reason = (ShutdownReason.LINK_DOWN if state is SessionState.DOWN
                      else ShutdownReason.PORT_GONE if "RSCN" in text or "rejected" in text
                      else ShutdownReason.LOGO)
        # The keys go with the login (qla2xxx releases the SADB on session free).
        self._esp_events(lg.sadb.clear())
        self._esp_events(lg.esp.pop_events())
        if lg.secure and self.app_active and ref is not None and lg.auth is not AuthState.NOT_SECURE:
            self.counters.shutdowns += 1
            seq = self._emit(SessionShutdown(ref, reason))
            if seq is not None:
                self._shutdowns[seq] = self.port.now() + self.shutdown_ack_timeout
        if reason is ShutdownReason.PORT_GONE and ref is not None:
            self._target_gone(ref)

    def _target_gone(self, ref: PortRef | None = None) -> None:
        ref = ref or self._ref()
        if ref is None or self._gone_announced:
            return
        self._gone_announced = True
        self._emit(TargetGone(ref))

    def _shutdown_acked(self, seq: int) -> None:
        if self._shutdowns.pop(seq, None) is not None:
            self.counters.shutdowns_acked += 1

    def _esp_events(self, events: list[Event]) -> None:
        for b in self._esp_bodies(events):
            self._emit(b)

    def _esp_bodies(self, events: list[Event]) -> list[Body]:
        out: list[Body] = []
        ref = self._ref()
        for ev in events:
            if isinstance(ev, SaUpdateDone):
                if ref is not None and self.app_active:
                    out.append(ev.to_proto(ref))
            elif isinstance(ev, DeleteRx):
                log.info("RX SA 0x%08x removed (%s)", ev.spi, ev.cause.value)
            elif isinstance(ev, RekeyNeeded):
                log.warning("TX SA 0x%08x near the end of its sequence space (%d): rekey needed", ev.spi,
                            ev.seq)
            elif isinstance(ev, TeardownRequested):
                self.counters.teardowns += 1
                log.warning("tearing the secure session down: %s (%s)", ev.reason.value, ev.detail)
                asyncio.get_running_loop().call_soon(self._teardown)
        return out

    def _teardown(self) -> None:
        """The ESP stage gave up on the SAs: end the login (keys cleared) and log in again."""
        s = self.port.session
        if s.state in _LOGGED_IN:
            self._down_reason = ShutdownReason.KEYS_REMOVED
            self.port.push(s.relogin(self.port.now(), "ESP teardown"))

    # --- time ---------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.port.now()
        try:
            if self.login is not None:
                self._esp_events(self.login.esp.tick(now))
            for ox, out in list(self._els_out.items()):
                if now >= out.deadline:
                    del self._els_out[ox]
                    self.counters.els_timeouts += 1
                    out.deferred.resolve(Response(MessageType.ELS_SEND, Status.TIMEOUT))
            for seq, deadline in list(self._shutdowns.items()):
                if now >= deadline:
                    del self._shutdowns[seq]
                    self.counters.shutdowns_unacked += 1
                    log.warning("SESSION_SHUTDOWN %d not acknowledged in %.0f s", seq,
                                self.shutdown_ack_timeout)
            self._refresh()
        finally:
            if not self._stopped:
                self._timer = asyncio.get_running_loop().call_later(self.tick_interval, self._tick)

    # --- upstream and views -------------------------------------------------------------------------

    def _emit(self, body: Body) -> int | None:
        if self._post is None:
            return None
        seq = self._post(body)
        return seq if isinstance(seq, int) else None

    def _port_info(self) -> PortInfo:
        s, c = self.port.session, self.port.config
        link = LinkState.UP if s.state is not SessionState.DOWN else LinkState.DOWN
        return PortInfo(c.wwpn, c.wwnn, s.local_id & 0xFFFFFF, link,
                        remote_ports=1 if s.remote_wwpn is not None else 0)

    def _targets(self) -> list[TargetEntry]:
        ref = self._ref()
        if ref is None:
            return []
        s, lg = self.port.session, self.login
        state = PortState.ONLINE if s.state in _LOGGED_IN else PortState.OFFLINE
        flags = TargetFlags.SECURE_LOGIN if lg is not None and lg.secure else TargetFlags(0)
        auth = lg.auth if lg is not None else AuthState.NOT_SECURE
        return [TargetEntry(ref, RoleFlags.TARGET, state, auth, flags)]

    def _stats(self) -> list[StatsEntry]:
        ref, lg = self._ref(), self.login
        if ref is None:
            return []
        if lg is None:
            return [StatsEntry(ref)]
        c = lg.esp.counters
        return [StatsEntry(ref, c.rekeys, c.bytes_out_protected, c.bytes_in_protected)]

    def _refresh(self) -> None:
        self._view = (self._port_info(), self._targets(), self._stats())
