"""InitiatorSession: one point-to-point FC link seen from the FCP initiator, sans-IO.

It owns the login state machine of the single remote port at the other end of the link
(FLOGI → PLOGI → [login policy / AUTH] → PRLI → READY), the ELS it sends and answers, and the EDIF
hooks (held logins, the AUTH_ELS relay); the FCP command side is its base class `FcpInitiator`
(`fcp.py`). Inputs are frames, SCSI commands and the current time (`now`, from the edge's clock);
outputs are the frames to send (returned by every method) and events (`take_events()`, `events.py`).
No sockets, no clocks.

Choices (also in docs/hba.md):
- Point-to-point login (FC-LS-3; docs/hba.md): only the initiator sends FLOGI (an FLOGI from the peer is
  answered with LS_ACC); after the FLOGI ACC the port with the higher Port_Name originates PLOGI and
  assigns the N_Port_IDs: 0x010101 to itself, 0x010102 to the other port. A re-login after LOGO,
  PRLO or an RSCN naming the peer is always originated by the initiator (PLOGI to the known ID).
- A remote port is GONE when a re-login (after RSCN/LOGO/PRLO) is rejected (LS_RJT to PLOGI or
  PRLI): queued and new commands fail at once with SENSE_TARGET_GONE until a later login succeeds.
- Bad input never raises: undecodable payloads, unknown exchanges and IUs that do not fit the
  exchange are dropped and counted; unsupported ELS requests get LS_RJT, ABTS for an unknown
  exchange gets BA_RJT.
"""

from __future__ import annotations

import logging

from edifd.fc import (
    AuthEls,
    CommonFeatures,
    ElsCode,
    FcError,
    FcpServiceParams,
    FcType,
    Flogi,
    Frame,
    LoginAcc,
    Logo,
    LsAcc,
    LsRjt,
    LsRjtExplanation,
    LsRjtReason,
    Plogi,
    Prli,
    PrliAcc,
    PrliAccCode,
    PrliFlags,
    Prlo,
    PrloAcc,
    RawEls,
    RCtl,
    Rscn,
    RscnAddressFormat,
    ServiceParamPage,
    els_reply,
    els_request,
    parse_payload,
    wwn_str,
)

from .counters import RemotePortCounters
from .events import (
    ElsReceived,
    ElsReplyReceived,
    LoggedIn,
    ResetLink,
    SessionState,
    StateChanged,
    StateReason,
    reason_text,
)
from .fcp import SENSE_NOT_AUTHORIZED, SENSE_TARGET_GONE, FcpInitiator
from .transform import AllowAll, FrameTransform, IdentityTransform, LoginPolicy, PeerInfo

log = logging.getLogger(__name__)

FLOGI_D_ID = 0xFFFFFE
PTP_ID_ORIGINATOR = 0x010101  # libfc's FC_LOCAL_PTP_FID_LO, taken by the PLOGI originator
PTP_ID_RESPONDER = 0x010102  # FC_LOCAL_PTP_FID_HI, assigned to the other port

_FCP_IUS = (RCtl.FCP_DATA, RCtl.FCP_XFER_RDY, RCtl.FCP_RSP)


class LinkEnd:
    """What both ends of a point-to-point link (this initiator, the target's session) do alike with
    a frame they will not take: count and drop it, or answer an ELS request with LS_RJT on an RX_ID
    of the subclass's own `_alloc_rx()`."""

    counters: RemotePortCounters

    def _alloc_rx(self) -> int:
        raise NotImplementedError

    def _drop(self, why: str) -> list[Frame]:
        self.counters.dropped_frames += 1
        logging.getLogger(type(self).__module__).debug("dropped a frame: %s", why)  # the subclass's log
        return []

    def _reject(self, frame: Frame, reason: LsRjtReason, expl: LsRjtExplanation) -> list[Frame]:
        self.counters.rejects_sent += 1
        return [els_reply(frame, LsRjt(reason, expl), rx_id=self._alloc_rx())]

    def _undecodable_request(self, frame: Frame) -> list[Frame]:
        """An ELS request whose payload does not decode: counted as dropped, answered with LS_RJT."""
        self.counters.dropped_frames += 1
        return self._reject(frame, LsRjtReason.PROTOCOL_ERROR, LsRjtExplanation.INVALID_PAYLOAD_LENGTH)


class InitiatorSession(FcpInitiator, LinkEnd):
    """Login + FCP initiator for the one remote port of a point-to-point link."""

    def __init__(
        self,
        wwpn: int,
        wwnn: int,
        *,
        security: bool = False,
        policy: LoginPolicy | None = None,
        transform: FrameTransform | None = None,
        login_timeout: float = 4.0,
        abts_timeout: float = 4.0,
        bursts: bool = False,
    ) -> None:
        super().__init__(transform or IdentityTransform(), abts_timeout)
        self.bursts = bursts  # the link edge takes WireBursts and DataRuns (fcp.py)
        self.wwpn, self.wwnn, self.security = wwpn, wwnn, security
        self.policy: LoginPolicy = policy or AllowAll()
        self.login_timeout = login_timeout
        self.state = SessionState.DOWN
        self.relay_auth_els = False  # EDIF sets this: AUTH_ELS requests become ElsReceived events
        self.peer: PeerInfo | None = None
        self.remote_wwpn: int | None = None
        self.remote_wwnn: int | None = None
        self._login_deadline: float | None = None
        self._revalidating = False
        self._els: dict[int, int] = {}  # OX_ID -> ELS code of our outstanding requests
        self._rx_next = 0
        self._gone_sense = SENSE_TARGET_GONE  # what commands fail with while GONE

    # --- introspection ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = self._command_deadlines()
        if self._login_deadline is not None:
            times.append(self._login_deadline)
        return min(times, default=None)

    # --- link events ------------------------------------------------------------------------------

    def connected(self, now: float) -> list[Frame]:
        """A new TCP connection: start over with FLOGI (docs/hba.md)."""
        self._reset_exchanges()
        self.local_id = self.remote_id = 0
        self._revalidating = False
        self._set_state(SessionState.FLOGI, StateReason.LINK_UP)
        self._login_deadline = now + self.login_timeout
        flogi = Flogi(wwpn=self.wwpn, wwnn=self.wwnn)
        return [self._els_request(flogi, s_id=0, d_id=FLOGI_D_ID)]

    def disconnected(self, now: float, detail: str = "") -> None:
        """The TCP connection is gone: in-flight commands go back to the queue."""
        was_ready = self.state is SessionState.READY
        self._reset_exchanges()
        self._login_deadline = None
        if self.state is not SessionState.GONE:
            self._set_state(SessionState.DOWN, StateReason.LINK_DOWN, detail)
        if was_ready:
            self.counters.logouts += 1

    def _reset_exchanges(self) -> None:
        super()._reset_exchanges()
        self._els.clear()

    def _xid_busy(self, xid: int) -> bool:
        return super()._xid_busy(xid) or xid in self._els

    # --- time -------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[Frame]:
        """Apply every deadline that has passed: command timeouts, ABTS timeouts, login timeout."""
        if self._login_deadline is not None and now >= self._login_deadline:
            self._login_deadline = None
            self.counters.login_failures += 1
            self._events.append(ResetLink(f"no answer to login step {self.state.value}"))
        return self._poll_commands(now)

    # --- login ------------------------------------------------------------------------------------

    def _set_state(self, state: SessionState, reason: StateReason, detail: str = "") -> None:
        if state is not self.state:
            self.state = state
            self._events.append(StateChanged(state, reason, detail))

    def _els_request(self, els: object, *, s_id: int, d_id: int) -> Frame:
        xid = self._alloc_xid()
        self._els[xid] = els.code if isinstance(els, RawEls) else els.CODE  # type: ignore[attr-defined]
        return els_request(s_id=s_id, d_id=d_id, ox_id=xid, els=els, seq_id=self._next_seq())  # type: ignore[arg-type]

    def _login_params(self, cls: type) -> object:
        feats = CommonFeatures.CIRO | (CommonFeatures.SECURITY if self.security else 0)
        return cls(wwpn=self.wwpn, wwnn=self.wwnn, common_features=feats)

    def _send_plogi(self, now: float, reason: StateReason = StateReason.PLOGI, detail: str = "") -> Frame:
        self._set_state(SessionState.PLOGI, reason, detail)
        self._login_deadline = now + self.login_timeout
        return self._els_request(self._login_params(Plogi), s_id=self.local_id, d_id=self.remote_id)

    def _plogi_done(self, acc: LoginAcc | Plogi, now: float) -> list[Frame]:
        self.remote_wwpn, self.remote_wwnn = acc.wwpn, acc.wwnn
        self.peer = PeerInfo(acc.wwpn, acc.wwnn, self.remote_id, acc.security)
        self._revalidating = False
        self._events.append(LoggedIn(self.peer))
        if self.policy.prli_allowed(self.peer, self.security):
            return [self._send_prli(now)]
        self._login_deadline = None
        self._set_state(SessionState.AUTH_PENDING, StateReason.AUTH_WAIT)
        return []

    def _send_prli(self, now: float) -> Frame:
        self._set_state(SessionState.PRLI, StateReason.PRLI)
        self._login_deadline = now + self.login_timeout
        page = ServiceParamPage(FcpServiceParams.INITIATOR | FcpServiceParams.READ_XFER_RDY_DISABLED,
                                PrliFlags.ESTABLISH_IMAGE_PAIR)
        return self._els_request(Prli((page,)), s_id=self.local_id, d_id=self.remote_id)

    def auth_complete(self, now: float) -> list[Frame]:
        """The security application reported AUTH_OK (both SAs installed): PRLI may go now."""
        if self.state is not SessionState.AUTH_PENDING:
            return []
        return [self._send_prli(now)]

    def logout(self, now: float) -> list[Frame]:
        """Explicit LOGO (shutdown). In-flight commands go back to the queue."""
        if self.state not in (SessionState.READY, SessionState.PRLI, SessionState.AUTH_PENDING):
            return []
        if self.state is SessionState.READY:
            self.counters.logouts += 1
        self._reset_exchanges()
        self._set_state(SessionState.DOWN, StateReason.LOGOUT)
        self._login_deadline = None
        return [self._els_request(Logo(self.local_id, self.wwpn), s_id=self.local_id, d_id=self.remote_id)]

    def _revalidate(self, now: float, reason: StateReason, detail: str = "") -> list[Frame]:
        """The peer logged out or changed: log in again with PLOGI (then PRLI)."""
        if self.state is SessionState.READY:
            self.counters.logouts += 1
        self._reset_exchanges()
        log.info("remote port %s: %s; logging in again", wwn_str(self.remote_wwpn),
                 reason_text(reason, detail))
        self._revalidating = True
        return [self._send_plogi(now, reason, detail)]  # the cause rides on StateChanged (EDIF)

    def _gone(self, reason: StateReason, detail: str = "", fail_sense: bytes = SENSE_TARGET_GONE) -> None:
        log.warning("remote port %s gone: %s", wwn_str(self.remote_wwpn), reason_text(reason, detail))
        self._login_deadline = None
        self._gone_sense = fail_sense
        self._reset_exchanges()
        self._set_state(SessionState.GONE, reason, detail)
        while self._queue:
            self._fail(self._queue.popleft(), fail_sense)

    # --- EDIF: held logins and the AUTH_ELS relay ---------------------------------------------------

    def hold(self, now: float, why: str, fail_sense: bytes = SENSE_NOT_AUTHORIZED) -> list[Frame]:
        """End the login and keep it ended (EDIF: AUTH_FAIL, APP_STOP, agent lost): LOGO to the peer,
        every queued and in-flight command fails with `fail_sense`, and so does every new one, until
        `relogin()` or a new link. In-flight exchanges are not aborted one by one: the LOGO ends them."""
        out: list[Frame] = []
        if self.state in (SessionState.READY, SessionState.PRLI, SessionState.AUTH_PENDING,
                          SessionState.PLOGI):
            if self.state is SessionState.READY:
                self.counters.logouts += 1
            logo = Logo(self.local_id, self.wwpn)
            out.append(self._els_request(logo, s_id=self.local_id, d_id=self.remote_id))
        inflight = list(self._inflight.values())
        self._inflight.clear()
        for c in inflight:
            self._fail(c, fail_sense)
        self._gone(StateReason.HELD, why, fail_sense)
        return out

    def relogin(self, now: float, why: str = "") -> list[Frame]:
        """PLOGI again on the current link (EDIF SECURE_CONNECT after a security change or a hold).
        Nothing while there is no link or FLOGI is still running: that login is fresh anyway."""
        if self.state in (SessionState.DOWN, SessionState.FLOGI) or not self.remote_id:
            return []
        if self.state is SessionState.PLOGI and self._login_deadline is not None:
            return []  # a PLOGI is already on its way
        self._gone_sense = SENSE_TARGET_GONE
        return self._revalidate(now, StateReason.RELOGIN, why)

    def send_els(self, payload: bytes) -> tuple[int, list[Frame]]:
        """Originate an ELS request with this raw payload (command code first) to the peer; its
        reply comes back as `ElsReplyReceived(ox_id, payload)`. (0, []) when not logged in."""
        if self.state in (SessionState.DOWN, SessionState.FLOGI, SessionState.GONE) or not self.remote_id:
            return 0, []
        if not payload:
            raise ValueError("empty ELS payload")
        frame = self._els_request(RawEls(payload[0], bytes(payload[1:])), s_id=self.local_id,
                                  d_id=self.remote_id)
        return frame.header.ox_id, [frame]

    def reply_els(self, request: Frame, payload: bytes) -> list[Frame]:
        """Answer a received ELS request (an `ElsReceived` frame) with this raw LS_ACC/LS_RJT payload."""
        if not payload or payload[0] not in (0x01, 0x02):
            raise ValueError("an ELS reply is an LS_ACC (0x02) or LS_RJT (0x01)")
        if self.state in (SessionState.DOWN, SessionState.FLOGI):
            return []
        return [els_reply(request, RawEls(payload[0], bytes(payload[1:])), rx_id=self._alloc_rx())]

    def _became_ready(self) -> list[Frame]:
        self._login_deadline = None
        self._gone_sense = SENSE_TARGET_GONE
        self.counters.logins += 1
        self._set_state(SessionState.READY, StateReason.PRLI_ACCEPTED)
        return self._dispatch()

    # --- receive ----------------------------------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> list[Frame]:
        """Handle one received frame. Never raises on bad input."""
        h = frame.header
        try:
            if h.type == FcType.FCP and h.r_ctl in _FCP_IUS:
                plain = self.transform.inbound(frame)
                if plain is None:
                    return self._drop("dropped by the session transform")
                return self._fcp_in(plain, now)
            if h.type == FcType.ELS and h.r_ctl == RCtl.ELS_REP:
                return self._els_reply_in(frame, now)
            if h.type == FcType.ELS and h.r_ctl == RCtl.ELS_REQ:
                return self._els_request_in(frame, now)
            if h.type == FcType.BLS:
                return self._bls_in(frame, now)
            return self._drop(f"unexpected R_CTL 0x{h.r_ctl:02x} TYPE 0x{h.type:02x}")
        except FcError as e:
            return self._drop(f"undecodable payload: {e}")

    def _els_reply_in(self, frame: Frame, now: float) -> list[Frame]:
        code = self._els.pop(frame.header.ox_id, None)
        if code is None:
            return self._drop("ELS reply for no request of ours")
        if code == ElsCode.AUTH_ELS:  # relayed: the security application reads the reply itself
            self._events.append(ElsReplyReceived(frame.header.ox_id, frame.fc4_payload))
            return []
        reply = parse_payload(frame, reply_to=code)
        if code == ElsCode.FLOGI and self.state is SessionState.FLOGI:
            if not isinstance(reply, LoginAcc):
                self._events.append(ResetLink(f"FLOGI rejected: {reply}"))
                self.counters.login_failures += 1
                return []
            if reply.wwpn == self.wwpn:
                self._events.append(ResetLink("peer has our own WWPN"))
                return []
            self.remote_wwpn, self.remote_wwnn = reply.wwpn, reply.wwnn
            if self.wwpn > reply.wwpn:  # we originate PLOGI and assign the IDs
                self.local_id, self.remote_id = PTP_ID_ORIGINATOR, PTP_ID_RESPONDER
                return [self._send_plogi(now)]
            self._set_state(SessionState.PLOGI, StateReason.PEER_ORIGINATES)
            self._login_deadline = now + self.login_timeout
            return []
        if code == ElsCode.PLOGI and self.state is SessionState.PLOGI:
            if isinstance(reply, LoginAcc):
                return self._plogi_done(reply, now)
            if self._revalidating:
                self._gone(StateReason.PLOGI_REJECTED, str(reply))
                return []
            self.counters.login_failures += 1
            self._events.append(ResetLink(f"PLOGI rejected: {reply}"))
            return []
        if code == ElsCode.PRLI and self.state is SessionState.PRLI:
            if isinstance(reply, PrliAcc) and self._prli_ok(reply):
                return self._became_ready()
            if isinstance(reply, LsRjt) and reply.explanation == LsRjtExplanation.AUTHENTICATION_REQUIRED:
                self._login_deadline = None
                self._set_state(SessionState.AUTH_PENDING, StateReason.AUTH_REQUIRED)
                return []
            self.counters.login_failures += 1
            self._gone(StateReason.PRLI_REFUSED, str(reply))
            return []
        return []  # a late reply (LOGO ACC, or a step we already left): nothing to do

    @staticmethod
    def _prli_ok(acc: PrliAcc) -> bool:
        page = acc.pages[0]
        return (page.type == FcType.FCP and int(page.response_code) == PrliAccCode.EXECUTED
                and bool(int(page.service_params) & FcpServiceParams.TARGET))

    def _alloc_rx(self) -> int:
        # RX_IDs of exchanges the peer opened (its ELS requests): a separate 0x8000.. range, so
        # they never look like our OX_IDs in a trace.
        self._rx_next = self._rx_next % 0x7FFF + 1
        return 0x8000 | self._rx_next

    def _els_request_in(self, frame: Frame, now: float) -> list[Frame]:
        h = frame.header
        try:
            req = parse_payload(frame)
        except FcError:
            return self._undecodable_request(frame)
        rx = self._alloc_rx()
        if isinstance(req, Flogi):
            return [els_reply(frame, self._login_params(LoginAcc), rx_id=rx)]  # type: ignore[arg-type]
        if isinstance(req, Plogi):
            if req.wwpn == self.wwpn or self.state in (SessionState.DOWN, SessionState.FLOGI):
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.INVALID_PORT_NAME)
            if self.state is SessionState.READY:
                self.counters.logouts += 1
            self._reset_exchanges()
            self.local_id, self.remote_id = h.d_id, h.s_id
            reply = els_reply(frame, self._login_params(LoginAcc), rx_id=rx)  # type: ignore[arg-type]
            return [reply, *self._plogi_done(req, now)]
        if isinstance(req, Logo):
            out = [els_reply(frame, LsAcc(), rx_id=rx)]
            if self.state in (SessionState.DOWN, SessionState.FLOGI):
                return out
            return out + self._revalidate(now, StateReason.PEER_LOGO)
        if isinstance(req, Prlo):
            out = [els_reply(frame, PrloAcc(tuple(p for p in req.pages)), rx_id=rx)]
            if self.state is not SessionState.READY:
                return out
            return out + self._revalidate(now, StateReason.PEER_PRLO)
        if isinstance(req, Rscn):
            out = [els_reply(frame, LsAcc(), rx_id=rx)]
            if self.remote_id and self.state not in (SessionState.DOWN, SessionState.FLOGI) and any(
                _covers(p.address_format, p.port_id, self.remote_id) for p in req.pages
            ):
                return out + self._revalidate(now, StateReason.RSCN)
            return out
        if isinstance(req, AuthEls):
            if not self.relay_auth_els:  # no security application attached: not supported
                return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)
            self._events.append(ElsReceived(frame))  # the EDIF relay answers it
            return []
        if isinstance(req, Prli):
            return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.REQUEST_NOT_SUPPORTED)
        return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)


def _covers(fmt: int, page_id: int, port_id: int) -> bool:
    """Does an RSCN page (address format + ID) cover `port_id`? (FC-LS: port, area, domain, fabric)."""
    mask = {RscnAddressFormat.PORT: 0xFFFFFF, RscnAddressFormat.AREA: 0xFFFF00,
            RscnAddressFormat.DOMAIN: 0xFF0000}.get(fmt, 0)
    return (page_id & mask) == (port_id & mask)

