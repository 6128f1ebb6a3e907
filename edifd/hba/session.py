"""InitiatorSession: one point-to-point FC link seen from the FCP initiator, sans-IO.

It owns the login state machine of the single remote port at the other end of the link
(FLOGI → PLOGI → [login policy / AUTH] → PRLI → READY) and the FCP exchange table. Inputs are
frames, SCSI commands and the current time (`now`, from the edge's clock); outputs are the frames
to send (returned by every method) and events (`take_events()`). No sockets, no clocks.

Choices (also in docs/hba.md):
- Point-to-point login (fc-wire §1.8): only the initiator sends FLOGI (an FLOGI from the peer is
  answered with LS_ACC); after the FLOGI ACC the port with the higher Port_Name originates PLOGI and
  assigns the N_Port_IDs: 0x010101 to itself, 0x010102 to the other port. A re-login after LOGO,
  PRLO or an RSCN naming the peer is always originated by the initiator (PLOGI to the known ID).
- Commands live in a queue with a deadline (submit time + io_timeout). They are sent only while
  READY. A command in flight when the link drops or the peer logs out goes back to the queue and
  is sent again after relogin (SCSI READ/WRITE/VERIFY/SYNC are idempotent). When the deadline
  passes, a queued command fails at once with SENSE_IO_TIMEOUT; one in flight is aborted with ABTS
  and fails with the same sense on BA_ACC/BA_RJT, or after abts_timeout (then the link is reset,
  the FC-FS recovery for an exchange whose state is unknown).
- A remote port is GONE when a re-login (after RSCN/LOGO/PRLO) is rejected (LS_RJT to PLOGI or
  PRLI): queued and new commands fail at once with SENSE_TARGET_GONE until a later login succeeds.
- Bad input never raises: undecodable payloads, unknown exchanges and IUs that do not fit the
  exchange are dropped and counted; unsupported ELS requests get LS_RJT, ABTS for an unknown
  exchange gets BA_RJT.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field

from edifd.fc import (
    Abts,
    AuthEls,
    BaAcc,
    BaRjt,
    BaRjtExplanation,
    BaRjtReason,
    CommonFeatures,
    ElsCode,
    FcError,
    FcpCmnd,
    FcpRsp,
    FcpServiceParams,
    FcpXferRdy,
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
    abts_frame,
    ba_acc_frame,
    ba_rjt_frame,
    els_reply,
    els_request,
    fcp_cmnd_frame,
    fcp_data_frames,
    lun_to_bytes,
    parse_payload,
    wwn_str,
)
from edifd.scsi import ScsiCommand, ScsiResponse, SenseKey, Status, sense

from .counters import RemotePortCounters
from .transform import AllowAll, FrameTransform, IdentityTransform, LoginPolicy, PeerInfo

log = logging.getLogger(__name__)

FLOGI_D_ID = 0xFFFFFE
PTP_ID_ORIGINATOR = 0x010101  # libfc's FC_LOCAL_PTP_FID_LO, taken by the PLOGI originator
PTP_ID_RESPONDER = 0x010102  # FC_LOCAL_PTP_FID_HI, assigned to the other port
UNASSIGNED = 0xFFFF

# Sense of commands the transport could not complete (fixed format, SPC-4 annex D codes).
# ABORTED COMMAND makes Linux sd retry a few times before giving up, as for a transport error.
SENSE_IO_TIMEOUT = sense(SenseKey.ABORTED_COMMAND, 0x08, 0x01)  # LOGICAL UNIT COMMUNICATION TIME-OUT
SENSE_TARGET_GONE = sense(SenseKey.ABORTED_COMMAND, 0x08, 0x00)  # LOGICAL UNIT COMMUNICATION FAILURE
SENSE_PROTOCOL_ERROR = sense(SenseKey.ABORTED_COMMAND, 0x4B, 0x00)  # DATA PHASE ERROR
SENSE_INVALID_REQUEST = sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)  # INVALID FIELD IN CDB (not sendable)
# EDIF: the secure session to the target was refused or ended (AUTH_FAIL, APP_STOP, agent lost).
# DATA PROTECT / LOGICAL UNIT ACCESS NOT AUTHORIZED (SPC-4 74h/71h): not a transport error to retry.
SENSE_NOT_AUTHORIZED = sense(SenseKey.DATA_PROTECT, 0x74, 0x71)
AUTH_ELS_CODE = 0x90

_FCP_IUS = (RCtl.FCP_DATA, RCtl.FCP_XFER_RDY, RCtl.FCP_RSP)


class SessionState(enum.Enum):
    DOWN = "down"  # no link
    FLOGI = "flogi"  # FLOGI sent
    PLOGI = "plogi"  # PLOGI sent, or waiting for the peer's PLOGI
    AUTH_PENDING = "auth_pending"  # PLOGI done; the login policy holds PRLI back (EDIF: until AUTH_OK)
    PRLI = "prli"  # PRLI sent
    READY = "ready"  # FCP may flow
    GONE = "gone"  # the peer rejected a re-login


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    """A command finished (successfully or not); `tag` is the submitter's."""

    tag: int
    response: ScsiResponse


@dataclass(frozen=True)
class StateChanged:
    state: SessionState
    reason: str


@dataclass(frozen=True)
class ResetLink:
    """The edge must drop the TCP connection and reconnect (login timeout, lost ABTS)."""

    reason: str


@dataclass(frozen=True)
class ElsReceived:
    """An unsolicited ELS the session does not handle itself (AUTH_ELS for the EDIF relay)."""

    frame: Frame


@dataclass(frozen=True)
class LoggedIn:
    """A PLOGI (ours or the peer's) completed: a new login of the remote port begins (EDIF: new
    generation, new SAs). Comes before the StateChanged to PRLI or AUTH_PENDING."""

    peer: PeerInfo


@dataclass(frozen=True)
class ElsReplyReceived:
    """The LS_ACC / LS_RJT answering an ELS we originated with `send_els` (the AUTH_ELS relay)."""

    ox_id: int
    payload: bytes


Event = Completed | StateChanged | ResetLink | ElsReceived | ElsReplyReceived | LoggedIn
SessionEvent = Event


@dataclass(eq=False)
class _Command:
    tag: int
    lun: int
    cmd: ScsiCommand
    deadline: float
    write: bool
    dl: int
    ox_id: int = UNASSIGNED
    rx_id: int = UNASSIGNED
    cmnd: Frame | None = None
    buf: bytearray = field(default_factory=bytearray, repr=False)
    received: int = 0
    abts_deadline: float | None = None
    fail_sense: bytes = SENSE_IO_TIMEOUT


class InitiatorSession:
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
    ) -> None:
        self.wwpn, self.wwnn, self.security = wwpn, wwnn, security
        self.policy: LoginPolicy = policy or AllowAll()
        self.transform: FrameTransform = transform or IdentityTransform()
        self.login_timeout, self.abts_timeout = login_timeout, abts_timeout
        self.state = SessionState.DOWN
        self.relay_auth_els = False  # EDIF sets this: AUTH_ELS requests become ElsReceived events
        self.counters = RemotePortCounters()
        self.peer: PeerInfo | None = None
        self.remote_wwpn: int | None = None
        self.remote_wwnn: int | None = None
        self.local_id = 0
        self.remote_id = 0
        self._login_deadline: float | None = None
        self._revalidating = False
        self._els: dict[int, int] = {}  # OX_ID -> ELS code of our outstanding requests
        self._queue: deque[_Command] = deque()
        self._inflight: dict[int, _Command] = {}  # OX_ID -> command
        self._next_xid = 1
        self._seq_id = 0
        self._rx_next = 0
        self._gone_sense = SENSE_TARGET_GONE  # what commands fail with while GONE
        self._events: list[Event] = []

    # --- introspection ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is SessionState.READY

    @property
    def outstanding(self) -> int:
        return len(self._queue) + len(self._inflight)

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def next_deadline(self) -> float | None:
        times = [c.deadline for c in self._queue]
        for c in self._inflight.values():
            times.append(c.abts_deadline if c.abts_deadline is not None else c.deadline)
        if self._login_deadline is not None:
            times.append(self._login_deadline)
        return min(times, default=None)

    # --- link events ------------------------------------------------------------------------------

    def connected(self, now: float) -> list[Frame]:
        """A new TCP connection: start over with FLOGI (fc-wire §1.8)."""
        self._reset_exchanges()
        self.local_id = self.remote_id = 0
        self._revalidating = False
        self._set_state(SessionState.FLOGI, "link up")
        self._login_deadline = now + self.login_timeout
        flogi = Flogi(wwpn=self.wwpn, wwnn=self.wwnn)
        return [self._els_request(flogi, s_id=0, d_id=FLOGI_D_ID)]

    def disconnected(self, now: float, reason: str = "link down") -> None:
        """The TCP connection is gone: in-flight commands go back to the queue."""
        was_ready = self.state is SessionState.READY
        self._reset_exchanges()
        self._login_deadline = None
        if self.state is not SessionState.GONE:
            self._set_state(SessionState.DOWN, reason)
        if was_ready:
            self.counters.logouts += 1

    def _reset_exchanges(self) -> None:
        for cmd in sorted(self._inflight.values(), key=lambda c: c.deadline, reverse=True):
            if cmd.abts_deadline is not None:  # already being aborted: its time is up
                self._fail(cmd, cmd.fail_sense)
                continue
            self.counters.requeued += 1
            self._unassign(cmd)
            self._queue.appendleft(cmd)
        self._inflight.clear()
        self._els.clear()

    @staticmethod
    def _unassign(cmd: _Command) -> None:
        cmd.ox_id = cmd.rx_id = UNASSIGNED
        cmd.cmnd = None
        cmd.received = 0

    # --- the SCSI side ----------------------------------------------------------------------------

    def submit(self, tag: int, lun: int, cmd: ScsiCommand, now: float, timeout: float) -> list[Frame]:
        """Queue a command for `lun`; it completes (a `Completed` event) within `timeout` seconds."""
        self.counters.commands += 1
        try:
            write, read = bool(cmd.data_out), cmd.data_in_len > 0
            dl = len(cmd.data_out) if write else cmd.data_in_len
            c = _Command(tag, lun, cmd, now + timeout, write, dl)
            # Build the IU once here so a command FCP cannot carry (bidirectional, odd CDB length,
            # LUN or FCP_DL out of range) fails now instead of raising later.
            FcpCmnd(lun=lun_to_bytes(lun), cdb=cmd.cdb, dl=dl, read=read and not write, write=write)
            if write and read:
                raise FcError("bidirectional commands are not supported")
            if not cmd.cdb:
                raise ValueError("empty CDB")
        except (FcError, TypeError, ValueError):
            bad = _Command(tag, 0, ScsiCommand(b"", data_in_len=_safe_len(cmd)), now, False, 0)
            self._fail(bad, SENSE_INVALID_REQUEST)
            return []
        if self.state is SessionState.GONE:
            self._fail(c, self._gone_sense)
            return []
        self._queue.append(c)
        return self._dispatch() if self.ready else []

    def _dispatch(self) -> list[Frame]:
        out: list[Frame] = []
        while self._queue and self.ready:
            c = self._queue.popleft()
            c.ox_id = self._alloc_xid()
            if c.ox_id == UNASSIGNED:  # 65534 exchanges open: wait for one to finish
                self._queue.appendleft(c)
                break
            cmnd = FcpCmnd(lun=lun_to_bytes(c.lun), cdb=c.cmd.cdb, dl=c.dl, read=not c.write and c.dl > 0,
                           write=c.write)
            c.cmnd = fcp_cmnd_frame(s_id=self.local_id, d_id=self.remote_id, ox_id=c.ox_id, cmnd=cmnd,
                                    seq_id=self._next_seq())
            c.buf = bytearray(0 if c.write else c.dl)
            sent = self.transform.outbound(c.cmnd)
            if sent is None:  # the transform cannot protect it: nothing leaves, the command fails
                self.counters.dropped_frames += 1
                self._fail(c, SENSE_NOT_AUTHORIZED)
                continue
            self._inflight[c.ox_id] = c
            out.append(sent)
        return out

    def _protect(self, frames: list[Frame]) -> list[Frame]:
        out = []
        for f in frames:
            p = self.transform.outbound(f)
            if p is None:
                self.counters.dropped_frames += 1  # withheld: the exchange times out and is aborted
            else:
                out.append(p)
        return out

    def _alloc_xid(self) -> int:
        for _ in range(0xFFFE):
            xid = self._next_xid
            self._next_xid = xid % 0xFFFE + 1  # 1..0xFFFE; 0xFFFF means unassigned
            if xid not in self._inflight and xid not in self._els:
                return xid
        return UNASSIGNED

    def _next_seq(self) -> int:
        self._seq_id = (self._seq_id + 1) & 0xFF
        return self._seq_id

    def _complete(self, c: _Command, resp: ScsiResponse) -> None:
        self._events.append(Completed(c.tag, resp))

    def _fail(self, c: _Command, sense_data: bytes) -> None:
        if sense_data is SENSE_IO_TIMEOUT:
            self.counters.timeouts += 1
        else:
            self.counters.errors += 1
        resp = ScsiResponse(Status.CHECK_CONDITION, bytes(c.cmd.data_in_len), sense_data, data_len=0)
        self._complete(c, resp)

    # --- time -------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[Frame]:
        """Apply every deadline that has passed: command timeouts, ABTS timeouts, login timeout."""
        out: list[Frame] = []
        if self._login_deadline is not None and now >= self._login_deadline:
            self._login_deadline = None
            self.counters.login_failures += 1
            self._events.append(ResetLink(f"no answer to login step {self.state.value}"))
        if self._queue and any(c.deadline <= now for c in self._queue):
            keep: deque[_Command] = deque()
            for c in self._queue:
                if c.deadline <= now:
                    self._fail(c, SENSE_IO_TIMEOUT)
                else:
                    keep.append(c)
            self._queue = keep
        for c in list(self._inflight.values()):
            if c.abts_deadline is not None:
                if now >= c.abts_deadline:
                    del self._inflight[c.ox_id]
                    self._fail(c, c.fail_sense)
                    self._events.append(ResetLink(f"no BA_ACC for OX_ID 0x{c.ox_id:04x}"))
            elif now >= c.deadline:
                out += self._abort(c, now, SENSE_IO_TIMEOUT)
        return out

    def _abort(self, c: _Command, now: float, fail_sense: bytes) -> list[Frame]:
        self.counters.aborts += 1
        c.abts_deadline = now + self.abts_timeout
        c.fail_sense = fail_sense
        log.info("aborting OX_ID 0x%04x (tag %d) to %s", c.ox_id, c.tag, wwn_str(self.remote_wwpn))
        return [abts_frame(s_id=self.local_id, d_id=self.remote_id, ox_id=c.ox_id, rx_id=c.rx_id,
                           seq_id=self._next_seq())]

    # --- login ------------------------------------------------------------------------------------

    def _set_state(self, state: SessionState, reason: str) -> None:
        if state is not self.state:
            self.state = state
            self._events.append(StateChanged(state, reason))

    def _els_request(self, els: object, *, s_id: int, d_id: int) -> Frame:
        xid = self._alloc_xid()
        self._els[xid] = els.code if isinstance(els, RawEls) else els.CODE  # type: ignore[attr-defined]
        return els_request(s_id=s_id, d_id=d_id, ox_id=xid, els=els, seq_id=self._next_seq())  # type: ignore[arg-type]

    def _login_params(self, cls: type) -> object:
        feats = CommonFeatures.CIRO | (CommonFeatures.SECURITY if self.security else 0)
        return cls(wwpn=self.wwpn, wwnn=self.wwnn, common_features=feats)

    def _send_plogi(self, now: float, reason: str = "PLOGI") -> Frame:
        self._set_state(SessionState.PLOGI, reason)
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
        self._set_state(SessionState.AUTH_PENDING, "waiting for authentication")
        return []

    def _send_prli(self, now: float) -> Frame:
        self._set_state(SessionState.PRLI, "PRLI")
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
        self._set_state(SessionState.DOWN, "logout")
        self._login_deadline = None
        return [self._els_request(Logo(self.local_id, self.wwpn), s_id=self.local_id, d_id=self.remote_id)]

    def _revalidate(self, now: float, reason: str) -> list[Frame]:
        """The peer logged out or changed: log in again with PLOGI (then PRLI)."""
        if self.state is SessionState.READY:
            self.counters.logouts += 1
        self._reset_exchanges()
        log.info("remote port %s: %s; logging in again", wwn_str(self.remote_wwpn), reason)
        self._revalidating = True
        return [self._send_plogi(now, reason)]  # the cause rides on StateChanged (EDIF shutdown reason)

    def _gone(self, reason: str, fail_sense: bytes = SENSE_TARGET_GONE) -> None:
        log.warning("remote port %s gone: %s", wwn_str(self.remote_wwpn), reason)
        self._login_deadline = None
        self._gone_sense = fail_sense
        self._reset_exchanges()
        self._set_state(SessionState.GONE, reason)
        while self._queue:
            self._fail(self._queue.popleft(), fail_sense)

    # --- EDIF: held logins and the AUTH_ELS relay ---------------------------------------------------

    def hold(self, now: float, reason: str, fail_sense: bytes = SENSE_NOT_AUTHORIZED) -> list[Frame]:
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
        self._gone(reason, fail_sense)
        return out

    def relogin(self, now: float, reason: str = "re-login requested") -> list[Frame]:
        """PLOGI again on the current link (EDIF SECURE_CONNECT after a security change or a hold).
        Nothing while there is no link or FLOGI is still running: that login is fresh anyway."""
        if self.state in (SessionState.DOWN, SessionState.FLOGI) or not self.remote_id:
            return []
        if self.state is SessionState.PLOGI and self._login_deadline is not None:
            return []  # a PLOGI is already on its way
        self._gone_sense = SENSE_TARGET_GONE
        return self._revalidate(now, reason)

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
        self._set_state(SessionState.READY, "PRLI accepted")
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

    def _drop(self, why: str) -> list[Frame]:
        self.counters.dropped_frames += 1
        log.debug("dropped a frame: %s", why)
        return []

    def _els_reply_in(self, frame: Frame, now: float) -> list[Frame]:
        code = self._els.pop(frame.header.ox_id, None)
        if code is None:
            return self._drop("ELS reply for no request of ours")
        if code == AUTH_ELS_CODE:  # relayed: the security application reads the reply itself
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
            self._set_state(SessionState.PLOGI, "waiting for the peer's PLOGI")
            self._login_deadline = now + self.login_timeout
            return []
        if code == ElsCode.PLOGI and self.state is SessionState.PLOGI:
            if isinstance(reply, LoginAcc):
                return self._plogi_done(reply, now)
            if self._revalidating:
                self._gone(f"PLOGI rejected: {reply}")
                return []
            self.counters.login_failures += 1
            self._events.append(ResetLink(f"PLOGI rejected: {reply}"))
            return []
        if code == ElsCode.PRLI and self.state is SessionState.PRLI:
            if isinstance(reply, PrliAcc) and self._prli_ok(reply):
                return self._became_ready()
            if isinstance(reply, LsRjt) and reply.explanation == LsRjtExplanation.AUTHENTICATION_REQUIRED:
                self._login_deadline = None
                self._set_state(SessionState.AUTH_PENDING, "target requires authentication")
                return []
            self.counters.login_failures += 1
            self._gone(f"PRLI refused: {reply}")
            return []
        return []  # a late reply (LOGO ACC, or a step we already left): nothing to do

    @staticmethod
    def _prli_ok(acc: PrliAcc) -> bool:
        page = acc.pages[0]
        return (page.type == FcType.FCP and int(page.response_code) == PrliAccCode.EXECUTED
                and bool(int(page.service_params) & FcpServiceParams.TARGET))

    def _reject(self, frame: Frame, reason: LsRjtReason, expl: LsRjtExplanation) -> list[Frame]:
        self.counters.rejects_sent += 1
        return [els_reply(frame, LsRjt(reason, expl), rx_id=self._alloc_rx())]

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
            self.counters.dropped_frames += 1
            return self._reject(frame, LsRjtReason.PROTOCOL_ERROR, LsRjtExplanation.INVALID_PAYLOAD_LENGTH)
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
            return out + self._revalidate(now, "LOGO from the peer")
        if isinstance(req, Prlo):
            out = [els_reply(frame, PrloAcc(tuple(p for p in req.pages)), rx_id=rx)]
            if self.state is not SessionState.READY:
                return out
            return out + self._revalidate(now, "PRLO from the peer")
        if isinstance(req, Rscn):
            out = [els_reply(frame, LsAcc(), rx_id=rx)]
            if self.remote_id and self.state not in (SessionState.DOWN, SessionState.FLOGI) and any(
                _covers(p.address_format, p.port_id, self.remote_id) for p in req.pages
            ):
                return out + self._revalidate(now, "RSCN names it")
            return out
        if isinstance(req, AuthEls):
            if not self.relay_auth_els:  # no security application attached: not supported
                return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)
            self._events.append(ElsReceived(frame))  # the EDIF relay answers it
            return []
        if isinstance(req, Prli):
            return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.REQUEST_NOT_SUPPORTED)
        return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)

    def _bls_in(self, frame: Frame, now: float) -> list[Frame]:
        h = frame.header
        payload = parse_payload(frame)
        if isinstance(payload, Abts):  # the target aborts one of our exchanges: retry it later
            c = self._inflight.get(h.ox_id)
            if c is None:
                self.counters.rejects_sent += 1
                rjt = BaRjt(BaRjtReason.LOGICAL_ERROR, BaRjtExplanation.INVALID_OX_RX_ID)
                return [ba_rjt_frame(frame, rjt)]
            del self._inflight[h.ox_id]
            self._unassign(c)
            self.counters.requeued += 1
            self._queue.appendleft(c)
            return [ba_acc_frame(frame, BaAcc(ox_id=h.ox_id, rx_id=h.rx_id)), *self._dispatch()]
        c = self._inflight.get(h.ox_id)
        if c is None or c.abts_deadline is None:
            return self._drop("BA_ACC/BA_RJT for no ABTS of ours")
        del self._inflight[h.ox_id]
        self._fail(c, c.fail_sense)
        return []

    # --- FCP --------------------------------------------------------------------------------------

    def _fcp_in(self, frame: Frame, now: float) -> list[Frame]:
        h = frame.header
        c = self._inflight.get(h.ox_id)
        if c is None:
            return self._drop(f"FCP frame for unknown OX_ID 0x{h.ox_id:04x}")
        if c.abts_deadline is not None:
            return self._drop("FCP frame for an exchange being aborted")
        if c.rx_id == UNASSIGNED:
            c.rx_id = h.rx_id
        if h.r_ctl == RCtl.FCP_XFER_RDY:
            xfer = FcpXferRdy.unpack(frame.fc4_payload)
            end = xfer.data_ro + xfer.burst_len
            if not c.write or xfer.burst_len == 0 or end > c.dl or c.cmnd is None:
                return self._abort(c, now, SENSE_PROTOCOL_ERROR)
            data = c.cmd.data_out[xfer.data_ro : end]
            frames = fcp_data_frames(c.cmnd, data, from_target=False, rx_id=c.rx_id,
                                     seq_id=self._next_seq(), offset=xfer.data_ro)
            return self._protect(frames)
        if h.r_ctl == RCtl.FCP_DATA:
            off = h.relative_offset
            data = frame.fc4_payload
            if c.write or off is None or off + len(data) > c.dl:
                return self._abort(c, now, SENSE_PROTOCOL_ERROR)
            c.buf[off : off + len(data)] = data
            c.received += len(data)
            return []
        rsp = FcpRsp.unpack(frame.fc4_payload)
        del self._inflight[h.ox_id]
        self._complete_rsp(c, rsp)
        return self._dispatch() if self._queue else []

    def _complete_rsp(self, c: _Command, rsp: FcpRsp) -> None:
        code = rsp.rsp_code
        try:
            status = Status(rsp.status)
        except ValueError:
            status = None
        if (code is not None and int(code) != 0) or status is None:
            self._fail(c, SENSE_PROTOCOL_ERROR)
            return
        n_in = c.cmd.data_in_len
        if c.write or status is not Status.GOOD:
            data, valid = bytes(n_in), 0
        else:
            valid = c.dl - rsp.resid if rsp.resid_under else c.dl
            valid = max(0, min(valid, c.dl))
            if c.received < valid:  # data frames missing: never hand back a buffer with holes
                self._fail(c, SENSE_PROTOCOL_ERROR)
                return
            data = bytes(c.buf[:valid]).ljust(n_in, b"\x00")[:n_in]
        self.counters.completed += 1
        self._complete(c, ScsiResponse(status, data, rsp.sense, data_len=min(valid, n_in)))


def _safe_len(cmd: object) -> int:
    n = getattr(cmd, "data_in_len", 0)
    return n if isinstance(n, int) and 0 <= n <= 1 << 32 else 0


def _covers(fmt: int, page_id: int, port_id: int) -> bool:
    """Does an RSCN page (address format + ID) cover `port_id`? (FC-LS: port, area, domain, fabric)."""
    mask = {RscnAddressFormat.PORT: 0xFFFFFF, RscnAddressFormat.AREA: 0xFFFF00,
            RscnAddressFormat.DOMAIN: 0xFF0000}.get(fmt, 0)
    return (page_id & mask) == (port_id & mask)
