"""EdifEngine: the host's EDIF engine for one HBA port — the control LUN's request handler joined to
the HBA model (qla2xxx EDIF semantics, drivers/scsi/qla2xxx/qla_edif.c; docs/engine.md).

One engine per control LUN = one `InitiatorPort` = one point-to-point link to one target port. It is
the channel's `RequestHandler` (overriding its hooks `app_stopped`, `event_acked` and
`agent_silent`) and its `StateProvider` (PORT_INFO, TARGET_LIST). Every piece of state lives on the
HBA's event loop: `handle()` returns a `Deferred` and does the work there. It drives the port only
through its security-control interface (`port.security`, `edifd.hba.security.SecurityControl`):
the engine keeps the channel's business (generations, AUTH state, pending ELS, channel bodies), the
HBA the frames and the SAs of its logins.

What it enforces (with `RequireAuthWhenSecure` as the HBA's login policy):
- PLOGI carries the security bit only while the security application is active (SECURE_CONNECT
  turns it on; APP_STOP or the agent's silence turns it off);
- a secure login waits in AUTH_PENDING (no PRLI, no FCP) until AUTH_OK, which is accepted only when
  an RX and a TX SA are installed (else RETRY_LATER);
- a new login never inherits SAs; when one ends the HBA zeroizes them and the engine reports the
  pending SA_UPDATE_COMPLs and SESSION_SHUTDOWN;
- AUTH_FAIL, APP_STOP and agent loss log the secure session out and hold it: its commands fail at
  once with SENSE_NOT_AUTHORIZED (07/74/71) until SECURE_CONNECT logs in again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from edifd.channel.handler import Deferred, RequestHandler
from edifd.edif.latency import LatencyHistogram
from edifd.fc import wwn_str
from edifd.hba.hba import Hba
from edifd.hba.port import InitiatorPort
from edifd.hba.security import (
    AuthElsReply,
    AuthElsRequest,
    DeleteRx,
    LoginEnded,
    LoginStarted,
    RekeyNeeded,
    SaEvent,
    SaUpdateDone,
    SecurityControl,
    SecurityEvent,
    SessionState,
    StateChanged,
    StateReason,
    TeardownRequested,
)
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
    SaFlags,
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

from .login import ElsOut, EngineCounters, Login

log = logging.getLogger(__name__)

ELS_TIMEOUT = 10.0  # s an ELS_SEND waits for the peer's LS_ACC/LS_RJT (qla: R_A_TOV-ish 10 s)
SHUTDOWN_ACK_TIMEOUT = 10.0  # qla2xxx waits 100 × 100 ms for the SESSION_SHUTDOWN ack
MAX_PENDING_RX_ELS = 32  # received AUTH_ELS waiting for ELS_REPLY; the oldest is refused beyond this
TICK = 1.0


class EdifEngine(RequestHandler):
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
        self.sec: SecurityControl = port.security  # the only way in to the port
        self._post = post_event
        self.els_timeout, self.shutdown_ack_timeout = els_timeout, shutdown_ack_timeout
        self.tick_interval = tick
        self.counters = EngineCounters()
        self.setup_latency = LatencyHistogram()  # secure login -> AUTH_OK accepted (first one only)
        self.app_active = False
        self.generation = 0
        self.login: Login | None = None
        self._down_reason: ShutdownReason | None = None  # set by us before we end a login ourselves
        self._gone_announced = False
        self._rx_els: OrderedDict[int, AuthElsRequest] = OrderedDict()
        self._next_rx_exchange = 0
        self._els_out: dict[int, ElsOut] = {}
        self._shutdowns: dict[int, float] = {}  # event sequence -> ack deadline
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._stopped = False
        # What other threads read (PORT_INFO, TARGET_LIST): replaced as a whole on the loop.
        self._view: tuple[PortInfo, list[TargetEntry], list[StatsEntry]] = (self._port_info(), [], [])
        # status(): (generation, direction, spi) -> when a status call first saw that SA
        self._sa_seen: dict[tuple[object, ...], float] = {}

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
        self.sec.attach(self._observe)
        self.sec.relay_auth_els(False)  # LS_RJT until an application is active (qla)
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

    def status(self, now: float | None = None) -> dict[str, object]:
        """For status output: counters, the login (remote port, generation, auth) and its SAs; no key
        material. Each SA carries `age`: seconds since a status call first saw it installed (status is
        sampled about once a second, so an age is at most that much short); `now` is time.monotonic()."""
        lg, sas, view = self.login, self.sec.query_sa(), self.sec.view()
        now = time.monotonic() if now is None else now
        sa = sas.sas if sas else None
        if isinstance(sa, dict):
            sa = {**sa, **{d: [self._aged(lg, e, now) for e in sa.get(d) or []] for d in ("rx", "tx")}}
        seen_now = {(lg.generation if lg else 0, e.get("direction"), e.get("spi"))
                    for d in ("rx", "tx") for e in (sa or {}).get(d) or [] if isinstance(e, dict)}
        self._sa_seen = {k: v for k, v in self._sa_seen.items() if k in seen_now}
        return {
            "app_active": self.app_active,
            "session": view.state.value,
            "local_wwpn": wwn_str(view.wwpn),
            "local_id": view.local_id,
            "remote_wwpn": wwn_str(view.remote_wwpn) if view.remote_wwpn else None,
            "remote_id": view.remote_id,
            "logged_in": view.logged_in,
            "secure": bool(lg and lg.secure),
            "generation": self.generation,
            "auth": lg.auth.name if lg else AuthState.NOT_SECURE.name,
            "sa": sa,
            "setup_latency": self.setup_latency.snapshot(),
            "esp": sas.counters.snapshot() if sas else None,
            "counters": self.counters.snapshot(),
        }

    def _aged(self, lg: Login | None, entry: object, now: float) -> object:
        if not isinstance(entry, dict):
            return entry
        key = (lg.generation if lg else 0, entry.get("direction"), entry.get("spi"))
        first = self._sa_seen.setdefault(key, now)
        return {**entry, "age": round(now - first, 1)}

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
        self.sec.relay_auth_els(True)
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
        v = self.sec.view()
        if v.remote_wwpn is None:
            return None
        return PortRef(v.remote_wwpn, v.remote_id & 0xFFFFFF, self.generation)

    def _check(self, t: MessageType, ref: PortRef, *, any_generation: bool = False) -> Response | None:
        """None if `ref` names the current login of our remote port."""
        remote = self.sec.view().remote_wwpn
        if remote is None or ref.wwpn != remote:
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
        self.sec.set_security(True)  # PLOGI with the security bit from now on
        self._gone_announced = False
        lg, v = self.login, self.sec.view()
        if v.state is SessionState.AUTH_PENDING and lg is not None and lg.secure:
            ref = self._ref()
            assert ref is not None
            lg.auth = AuthState.NEEDED
            self._emit(AuthNeeded(ref, RoleFlags.TARGET))  # the login in service: authenticate it
        elif v.state in (SessionState.PRLI, SessionState.READY) and lg is not None and lg.secure:
            pass  # already authenticated (or finishing PRLI): nothing to do
        else:
            # Logged in without security, held after a failure, or between logins: PLOGI (again)
            # with the bit; AUTH_NEEDED follows when the secure login completes.
            if v.logged_in:
                self._down_reason = ShutdownReason.LOGO
            self.sec.relogin("SECURE_CONNECT")
        return Response(MessageType.SECURE_CONNECT, Status.OK)

    def _els_send(self, msg: Message, body: ElsSend) -> tuple[Body | Deferred, list[Body]]:
        bad = self._check(msg.type, body.port)
        if bad is not None:
            return bad, []
        if not self.sec.view().logged_in:
            return Response(msg.type, Status.NO_SUCH_PORT), []
        ox = self.sec.send_auth_els(body.payload)
        if ox is None:
            return Response(msg.type, Status.NO_SUCH_PORT), []
        d = Deferred()
        self._els_out[ox] = ElsOut(d, body.port, self.sec.now() + self.els_timeout)
        self.counters.els_sent += 1
        if self.login is not None and self.login.auth in (AuthState.NEEDED, AuthState.FAILED):
            self.login.auth = AuthState.IN_PROGRESS
        return d, []  # ELS_RESPONSE comes with the peer's LS_ACC/LS_RJT

    def _els_reply(self, body: ElsReply) -> Body:
        t = MessageType.ELS_REPLY
        bad = self._check(t, body.port)
        if bad is not None:
            return bad
        request = self._rx_els.pop(body.rx_exchange, None)
        if request is None:
            return Response(t, Status.INVALID_PARAM)
        if body.action is ElsReplyAction.TERMINATE:
            return Response(t, Status.OK)  # the exchange is abandoned: the peer times it out
        try:
            self.sec.reply_auth_els(request, body.payload)
        except ValueError:
            return Response(t, Status.INVALID_PARAM)
        return Response(t, Status.OK)

    def _sa_update(self, body: SaUpdate) -> tuple[Body, list[Body]]:
        t = MessageType.SA_UPDATE
        bad = self._check(t, body.port)
        if bad is not None:
            return bad, []
        lg = self.login
        if not self.sec.view().logged_in or lg is None:
            return Response(t, Status.NO_SUCH_PORT), []
        if not lg.secure:
            return Response(t, Status.REFUSED), []
        self.counters.sa_updates += 1
        d, spi, f = body.direction, body.spi, body.flags  # SA_UPDATE is add_sa, or del_sa with DELETE
        result = (self.sec.del_sa(d, spi, force=SaFlags.FORCE_DELETE in f, flags=f) if SaFlags.DELETE in f
                  else self.sec.add_sa(d, spi, body.cipher, body.key, body.salt, flags=f))
        if not result.ok:
            log.info("SA_UPDATE refused: %s", result.detail)  # detail never holds key material
            return Response(t, result.status), []
        if lg.auth is AuthState.NEEDED:
            lg.auth = AuthState.IN_PROGRESS
        return Response(t, Status.OK), self._esp_bodies(result.events)

    def _auth_ok(self, body: AuthOk) -> Body:
        t = MessageType.AUTH_OK
        bad = self._check(t, body.port)
        if bad is not None:
            return bad
        lg, v = self.login, self.sec.view()
        if lg is None or not lg.secure or not v.logged_in:
            return Response(t, Status.REFUSED)
        sas = self.sec.query_sa()
        if sas is None or not sas.both_confirmed:
            self.counters.auth_retry_later += 1
            return Response(t, Status.RETRY_LATER)  # qla: prli_status 0, the app retries later
        self.counters.auth_ok += 1
        lg.auth = AuthState.AUTHENTICATED
        if v.state is SessionState.AUTH_PENDING:
            self.setup_latency.observe(self.sec.now() - lg.started)
            self.sec.auth_complete()  # PRLI now
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
        self.sec.set_security(False)  # no security bit while no application runs (qla n2n_fw_acc_sec)
        self.sec.relay_auth_els(False)
        self._rx_els.clear()
        lg, v = self.login, self.sec.view()
        if lg is not None and lg.secure and v.state is not SessionState.GONE:
            log.warning("%s: logging out the secure session to %s", why, wwn_str(v.remote_wwpn))
            self._hold(reason, why)
        elif self.app_active:
            log.info("%s: no secure session to log out", why)
        self.app_active = False
        self._refresh()

    def _hold(self, reason: ShutdownReason, why: str) -> None:
        self._down_reason = reason
        self.sec.hold(why)

    # --- the AUTH_ELS relay (loop thread) ---------------------------------------------------------------

    def _on_auth_els(self, request: AuthElsRequest) -> None:
        ref = self._ref()
        if ref is None or not self.app_active or not self.sec.view().logged_in:
            self.sec.refuse_auth_els(request)
            return
        while len(self._rx_els) >= MAX_PENDING_RX_ELS:
            _, old = self._rx_els.popitem(last=False)
            self.sec.refuse_auth_els(old)
        self._next_rx_exchange = self._next_rx_exchange % 0xFFFFFFFF + 1
        rx = self._next_rx_exchange
        self._rx_els[rx] = request
        self.counters.els_received += 1
        self._emit(ElsRcvd(ref, rx, request.payload))

    # --- session events (loop thread) ---------------------------------------------------------------

    def _observe(self, events: list[SecurityEvent]) -> None:
        for ev in events:
            if isinstance(ev, StateChanged):
                self._state_changed(ev)
            elif isinstance(ev, LoginStarted):
                self._logged_in(ev)
            elif isinstance(ev, LoginEnded):
                if self.login is not None:
                    self._login_ended(ev.state, ev.reason)
            elif isinstance(ev, AuthElsReply):
                out = self._els_out.pop(ev.exchange, None)
                if out is not None:
                    result = ElsResult.LS_ACC if ev.accepted else ElsResult.LS_RJT
                    out.deferred.resolve(ElsResponse(out.port, result, ev.payload))
            elif isinstance(ev, AuthElsRequest):
                self._on_auth_els(ev)
            else:  # the SAs' own events (a login's end brings its cleared SAs' first)
                self._esp_events([ev])
        if events:
            self._refresh()

    def _state_changed(self, ev: StateChanged) -> None:
        if ev.state is SessionState.FLOGI and ev.reason is StateReason.LINK_UP:
            self._emit(LinkUp())
        if ev.state is SessionState.DOWN and ev.reason is not StateReason.LOGOUT:
            self._emit(LinkDown())
        if ev.state is SessionState.GONE and ev.reason is StateReason.PLOGI_REJECTED:
            self._target_gone()
        lg = self.login
        if ev.state is SessionState.AUTH_PENDING and lg is not None and not lg.secure:
            log.warning("remote port %s requires authentication; no security application has asked for it",
                        wwn_str(self.sec.view().remote_wwpn))

    def _logged_in(self, ev: LoginStarted) -> None:
        """A PLOGI completed: a new login with its own generation (and, in the HBA, its own SAs)."""
        self.generation = self.generation % 0xFFFFFFFF + 1
        secure = ev.secure
        lg = self.login = Login(self.generation, secure, started=self.sec.now())
        ref = self._ref()
        assert ref is not None
        if self._gone_announced:
            self._gone_announced = False
            self._emit(PortOnline(ref))
        if secure:
            lg.auth = AuthState.NEEDED
            log.info("secure login to %s (generation %d): AUTH_NEEDED", wwn_str(ref.wwpn), ref.generation)
            self._emit(AuthNeeded(ref, RoleFlags.TARGET))

    def _login_ended(self, state: SessionState, why: StateReason) -> None:
        lg, self.login = self.login, None
        reason, self._down_reason = self._down_reason, None
        v = self.sec.view()
        ref = PortRef(v.remote_wwpn or 0, 0, self.generation) if lg else None
        for out in list(self._els_out.values()):
            out.deferred.resolve(Response(MessageType.ELS_SEND, Status.FAILED))
        self._els_out.clear()
        self._rx_els.clear()
        if lg is None:
            return
        if ref is not None and v.remote_id:
            ref = PortRef(ref.wwpn, v.remote_id & 0xFFFFFF, ref.generation)
        if reason is None:
            reason = (ShutdownReason.LINK_DOWN if state is SessionState.DOWN
                      else ShutdownReason.PORT_GONE if why in (StateReason.RSCN, StateReason.PLOGI_REJECTED)
                      else ShutdownReason.LOGO)
        # The HBA cleared the login's keys; their pending completions came just before (`LoginEnded`).
        if lg.secure and self.app_active and ref is not None and lg.auth is not AuthState.NOT_SECURE:
            self.counters.shutdowns += 1
            seq = self._emit(SessionShutdown(ref, reason))
            if seq is not None:
                self._shutdowns[seq] = self.sec.now() + self.shutdown_ack_timeout
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

    def _esp_events(self, events: list[SaEvent]) -> None:
        for b in self._esp_bodies(events):
            self._emit(b)

    def _esp_bodies(self, events: list[SaEvent] | tuple[SaEvent, ...]) -> list[Body]:
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
        """The ESP stage gave up on the SAs: end the login (the HBA clears its keys) and log in again."""
        if self.sec.view().logged_in:
            self._down_reason = ShutdownReason.KEYS_REMOVED
            self.sec.relogin("ESP teardown")

    # --- time ---------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.sec.now()  # the SAs' own time (the delayed RX delete) runs on the port's timer
        try:
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
        v = self.sec.view()
        link = LinkState.UP if v.state is not SessionState.DOWN else LinkState.DOWN
        return PortInfo(v.wwpn, v.wwnn, v.local_id & 0xFFFFFF, link,
                        remote_ports=1 if v.remote_wwpn is not None else 0)

    def _targets(self) -> list[TargetEntry]:
        ref = self._ref()
        if ref is None:
            return []
        lg = self.login
        state = PortState.ONLINE if self.sec.view().logged_in else PortState.OFFLINE
        flags = TargetFlags.SECURE_LOGIN if lg is not None and lg.secure else TargetFlags(0)
        auth = lg.auth if lg is not None else AuthState.NOT_SECURE
        return [TargetEntry(ref, RoleFlags.TARGET, state, auth, flags)]

    def _stats(self) -> list[StatsEntry]:
        ref, sas = self._ref(), self.sec.query_sa()
        if ref is None:
            return []
        if self.login is None or sas is None:
            return [StatsEntry(ref)]
        c = sas.counters
        return [StatsEntry(ref, c.rekeys, c.bytes_out_protected, c.bytes_in_protected)]

    def _refresh(self) -> None:
        self._view = (self._port_info(), self._targets(), self._stats())
