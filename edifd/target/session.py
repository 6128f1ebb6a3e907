"""TargetSession: one point-to-point FC link seen from a target port, sans-IO.

Answers the initiator's login (FLOGI, PLOGI, PRLI, PRLO, LOGO), runs the FCP target side of each
exchange (FCP_CMND → [XFER_RDY → FCP_DATA] → execute → [FCP_DATA] → FCP_RSP) and ABTS. SCSI
execution is the edge's job: the session emits `Execute` and the edge calls `complete()` with the
`ScsiResponse`, so a slow backing file never blocks frame handling. REPORT LUNS and commands for a
LUN that does not exist are answered here.

Choices (docs/hba.md): one XFER_RDY per write for the whole FCP_DL (first burst = all of it);
FCP_CMND before PRLI is dropped and counted; a command whose OX_ID is already open is dropped;
when the target port's WWPN is the higher one it originates PLOGI after answering FLOGI (FC-LS-3
point-to-point login; docs/hba.md). Bad input never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from edifd.fc import (
    Abts,
    AuthEls,
    BaAcc,
    BaRjt,
    BaRjtExplanation,
    BaRjtReason,
    CommonFeatures,
    DataRun,
    DataSequence,
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
    RscnPage,
    RspCode,
    ServiceParamPage,
    TaskMgmt,
    WireBurst,
    ba_acc_frame,
    ba_rjt_frame,
    els_reply,
    els_request,
    fcp_data_frames,
    fcp_rsp_frame,
    parse_payload,
    wwn_str,
    xfer_rdy_frame,
)
from edifd.fc.burst import FC_HDR, REC_FC, REC_OVERHEAD, BufferPool
from edifd.hba.counters import RemotePortCounters
from edifd.hba.fcp import bulk_outbound
from edifd.hba.session import PTP_ID_ORIGINATOR, PTP_ID_RESPONDER, LinkEnd
from edifd.hba.transform import AllowAll, FrameTransform, IdentityTransform, LoginPolicy, PeerInfo
from edifd.scsi import ScsiCommand, ScsiResponse, SenseKey, Status, respond_report_luns, sense

log = logging.getLogger(__name__)

_REL_OFF = 0x000008  # F_CTL: Parameter is a relative offset
MAX_FCP_DL = 16 << 20  # largest transfer we buffer for one command
REPORT_LUNS = 0xA0
INQUIRY = 0x12
_SENSE_NO_LUN = sense(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00)  # LOGICAL UNIT NOT SUPPORTED


@dataclass(frozen=True)
class Execute:
    """Run `command` on `lun`, then call `TargetSession.complete(rx_id, response)`."""

    rx_id: int
    lun: int
    command: ScsiCommand


@dataclass(frozen=True)
class LoginEvent:
    what: str  # "plogi", "prli", "prlo", "logout (<reason>)"
    wwpn: int | None


@dataclass(frozen=True)
class AuthElsReceived:
    """An AUTH_ELS request for the EDIF responder: answer it with `reply_els(frame, payload)`."""

    frame: Frame
    wwpn: int | None


Event = Execute | LoginEvent | AuthElsReceived


@dataclass(eq=False)
class _Exchange:
    ox_id: int
    rx_id: int
    cmnd_frame: Frame
    cmnd: FcpCmnd
    buf: bytearray = field(default_factory=bytearray, repr=False)
    received: int = 0
    executing: bool = False


def _no_lun_inquiry(alloc: int) -> bytes:
    """Standard INQUIRY data for a LUN that does not exist: qualifier 011b, type 1Fh (SPC-4 6.6.2)."""
    data = bytes((0x7F, 0, 0x06, 0x02, 31, 0, 0, 0)) + b"EDIF    " + b"NO LUN".ljust(16) + b"0001"
    return data[:alloc]


class TargetSession(LinkEnd):
    def __init__(
        self,
        wwpn: int,
        wwnn: int,
        luns: Iterable[int],
        *,
        security: bool = False,
        policy: LoginPolicy | None = None,
        transform: FrameTransform | None = None,
        bursts: bool = False,
    ) -> None:
        self.wwpn, self.wwnn, self.security = wwpn, wwnn, security
        # The link edge takes WireBursts and DataRuns: read data leaves as one buffer per sequence and
        # write data is taken without a Frame per record (edifd/fc/burst.py, `receive_data`).
        self.bursts = bursts
        self._pool = BufferPool()
        self.luns = frozenset(luns)
        self.policy: LoginPolicy = policy or AllowAll()
        self.transform: FrameTransform = transform or IdentityTransform()
        self.counters = RemotePortCounters()
        self.initiator_wwpn: int | None = None
        self.initiator_wwnn: int | None = None
        self.local_id = 0
        self.remote_id = 0
        self.logged_in = False
        self.image_pair = False
        self.offline = False  # port being removed: refuse new logins
        self.peer_security = False  # the initiator's PLOGI (or ACC) carried the FC-SP security bit
        self.relay_auth_els = False  # EDIF responder attached: AUTH_ELS become AuthElsReceived events
        self._exchanges: dict[int, _Exchange] = {}  # OX_ID -> exchange
        self._rx_next = 0
        self._seq_id = 0
        self._plogi_xid: int | None = None
        self._events: list[Event] = []

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    @property
    def active_exchanges(self) -> int:
        return len(self._exchanges)

    def _next_seq(self) -> int:
        self._seq_id = (self._seq_id + 1) & 0xFF
        return self._seq_id

    def _alloc_rx(self) -> int:
        in_use = {x.rx_id for x in self._exchanges.values()}
        for _ in range(0xFFFE):
            self._rx_next = self._rx_next % 0xFFFE + 1
            if self._rx_next not in in_use:
                break
        return self._rx_next

    def _logout(self, reason: str) -> None:
        """Implicit or explicit logout: the image pair and every open exchange end."""
        was = self.logged_in
        if self._exchanges:
            self.counters.aborts += len(self._exchanges)
        self._exchanges.clear()
        if self.image_pair:
            self.counters.logouts += 1
        self.logged_in = self.image_pair = False
        if was:
            self._events.append(LoginEvent(f"logout ({reason})", self.initiator_wwpn))

    # --- initiated by us --------------------------------------------------------------------------

    def logout(self) -> list[Frame]:
        """LOGO to the initiator (shutdown)."""
        if not self.logged_in:
            return []
        frame = els_request(s_id=self.local_id, d_id=self.remote_id, ox_id=self._alloc_rx(),
                            els=Logo(self.local_id, self.wwpn), seq_id=self._next_seq())
        self._logout("LOGO sent")
        return [frame]

    def go_offline(self) -> list[Frame]:
        """This port is going away: RSCN naming it, then refuse logins (the initiator's re-PLOGI)."""
        self.offline = True
        if not self.logged_in:
            return []
        rscn = Rscn((RscnPage(self.local_id),))
        frame = els_request(s_id=self.local_id, d_id=self.remote_id, ox_id=self._alloc_rx(), els=rscn,
                            seq_id=self._next_seq())
        return [frame]

    def reply_els(self, request: Frame, payload: bytes) -> list[Frame]:
        """Answer a received ELS request with a raw LS_ACC (0x02…) or LS_RJT (0x01…) payload."""
        if not payload or payload[0] not in (0x01, 0x02):
            raise ValueError("an ELS reply is an LS_ACC (0x02) or LS_RJT (0x01)")
        return [els_reply(request, RawEls(payload[0], bytes(payload[1:])), rx_id=self._alloc_rx())]

    def send_els(self, payload: bytes) -> list[Frame]:
        """Originate an ELS request (the responder's AUTH_ELS) to the logged-in initiator. Its reply
        is not interpreted (the responder's IKE state already moved; a lost one is retransmitted)."""
        if not self.logged_in or not payload:
            return []
        return [els_request(s_id=self.local_id, d_id=self.remote_id, ox_id=self._alloc_rx(),
                            els=RawEls(payload[0], bytes(payload[1:])), seq_id=self._next_seq())]

    # --- receive ----------------------------------------------------------------------------------

    def receive(self, frame: Frame) -> list[Frame]:
        h = frame.header
        try:
            if h.type == FcType.FCP and h.r_ctl in (RCtl.FCP_CMND, RCtl.FCP_DATA):
                plain = self.transform.inbound(frame)
                if plain is None:
                    return self._drop("dropped by the session transform")
                out = self._fcp_in(plain)
                return self._protect(out)
            if h.type == FcType.ELS and h.r_ctl == RCtl.ELS_REQ:
                return self._els_in(frame)
            if h.type == FcType.ELS and h.r_ctl == RCtl.ELS_REP:
                return self._els_reply_in(frame)
            if h.type == FcType.BLS and h.r_ctl == RCtl.BLS_ABTS:
                return self._abts_in(frame)
            return self._drop(f"unexpected R_CTL 0x{h.r_ctl:02x} TYPE 0x{h.type:02x}")
        except FcError as e:
            return self._drop(f"undecodable payload: {e}")

    def receive_data(self, run: DataRun) -> list[Frame | WireBurst]:
        """`receive` of every record of `run` in order, without a Frame per record in the plain case:
        a write's data (verified and decrypted by the transform's bulk path) goes straight into its
        exchange's buffer. Anything else takes the general path, record by record."""
        t = self.transform
        esp = getattr(t, "inbound_data", None)
        if esp is None and type(t) is not IdentityTransform:
            return [f for i in range(run.count) for f in self.receive(run.frame(i))]
        want_df = 0x40 if esp is not None else 0
        mv = memoryview(run.data)
        starts, size = run.starts, len(run.data)
        exchanges = self._exchanges
        out: list[Frame | WireBurst] = []
        for i, at in enumerate(starts):
            _w0, w1, f_ctl, _sid, df_ctl, _cnt, ox_id, _rx, off = FC_HDR.unpack_from(mv, at + REC_FC)
            if w1 >> 24 or df_ctl != want_df:  # CS_CTL set (not in the AAD) or not what this session expects
                out += self.receive(run.frame(i))
                continue
            fc = at + REC_FC
            dflen = (starts[i + 1] if i + 1 < len(starts) else size) - at - REC_OVERHEAD
            if esp is not None:
                data = esp(mv, fc, dflen)
                if data is None:
                    out += self._drop("dropped by the session transform")
                    continue
            else:
                data = mv[fc + 24 : fc + 24 + dflen]
            n = len(data)
            x = exchanges.get(ox_id)
            if x is None or x.executing or not x.cmnd.write or not f_ctl & _REL_OFF or off + n > x.cmnd.dl:
                frame = run.frame(i)
                if esp is not None:
                    frame = frame.without_esp(bytes(data))
                try:
                    out += self._protect(self._fcp_in(frame))
                except FcError as e:
                    out += self._drop(f"undecodable payload: {e}")
                continue
            x.buf[off : off + n] = data
            x.received += n
            if x.received >= x.cmnd.dl:
                out += self._protect(self._start(x, bytes(x.buf)))
        return out

    def _login_acc(self) -> LoginAcc:
        feats = CommonFeatures.CIRO | (CommonFeatures.SECURITY if self.security else 0)
        return LoginAcc(wwpn=self.wwpn, wwnn=self.wwnn, common_features=feats)

    def _els_in(self, frame: Frame) -> list[Frame]:
        h = frame.header
        try:
            req = parse_payload(frame)
        except FcError:
            return self._undecodable_request(frame)
        rx = self._alloc_rx()
        if isinstance(req, Flogi):
            if self.offline:
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.NONE)
            self._logout("flogi")
            self.initiator_wwpn, self.initiator_wwnn = req.wwpn, req.wwnn
            acc = LoginAcc(wwpn=self.wwpn, wwnn=self.wwnn)
            out = [els_reply(frame, acc, rx_id=rx)]
            if self.wwpn > req.wwpn:  # the higher Port_Name originates PLOGI (FC-LS-3; docs/hba.md)
                self.local_id, self.remote_id = PTP_ID_ORIGINATOR, PTP_ID_RESPONDER
                self._plogi_xid = self._alloc_rx()
                feats = self._login_acc().common_features
                plogi = Plogi(wwpn=self.wwpn, wwnn=self.wwnn, common_features=feats)
                out.append(els_request(s_id=self.local_id, d_id=self.remote_id, ox_id=self._plogi_xid,
                                       els=plogi, seq_id=self._next_seq()))
            return out
        if isinstance(req, Plogi):
            if self.offline:
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.NONE)
            self._logout("plogi")
            self.initiator_wwpn, self.initiator_wwnn = req.wwpn, req.wwnn
            self.local_id, self.remote_id = h.d_id, h.s_id
            self.peer_security = req.security
            self.logged_in = True
            self._events.append(LoginEvent("plogi", req.wwpn))
            return [els_reply(frame, self._login_acc(), rx_id=rx)]
        if isinstance(req, Prli):
            if self.offline or not self.logged_in:
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.PLOGI_REQUIRED)
            peer = PeerInfo(self.initiator_wwpn or 0, self.initiator_wwnn or 0, self.remote_id,
                            self.peer_security)
            if not self.policy.prli_allowed(peer, self.security):
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.AUTHENTICATION_REQUIRED)
            page = req.pages[0]
            if page.type != FcType.FCP:
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.REQUEST_NOT_SUPPORTED)
            acc_page = ServiceParamPage(FcpServiceParams.TARGET | FcpServiceParams.READ_XFER_RDY_DISABLED,
                                        PrliFlags.ESTABLISH_IMAGE_PAIR, PrliAccCode.EXECUTED)
            self.image_pair = True
            self.counters.logins += 1
            self._events.append(LoginEvent("prli", self.initiator_wwpn))
            return [els_reply(frame, PrliAcc((acc_page,)), rx_id=rx)]
        if isinstance(req, Prlo):
            self._exchanges.clear()
            self.image_pair = False
            self._events.append(LoginEvent("prlo", self.initiator_wwpn))
            return [els_reply(frame, PrloAcc(req.pages), rx_id=rx)]
        if isinstance(req, Logo):
            self._logout("logo")
            return [els_reply(frame, LsAcc(), rx_id=rx)]
        if isinstance(req, Rscn):
            return [els_reply(frame, LsAcc(), rx_id=rx)]
        if isinstance(req, AuthEls):
            if not self.relay_auth_els:  # no EDIF responder on this port: not supported
                return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)
            if not self.logged_in:  # FC-SP-2: authentication follows PLOGI
                return self._reject(frame, LsRjtReason.UNABLE, LsRjtExplanation.PLOGI_REQUIRED)
            self._events.append(AuthElsReceived(frame, self.initiator_wwpn))
            return []
        return self._reject(frame, LsRjtReason.NOT_SUPPORTED, LsRjtExplanation.NONE)

    def _els_reply_in(self, frame: Frame) -> list[Frame]:
        if self._plogi_xid is None or frame.header.ox_id != self._plogi_xid:
            return []  # LOGO/RSCN ACC, or a stray reply: nothing to do
        self._plogi_xid = None
        reply = parse_payload(frame, reply_to=0x03)
        if isinstance(reply, LoginAcc):
            self.logged_in = True
            self.peer_security = reply.security
            self._events.append(LoginEvent("plogi", reply.wwpn))
        else:
            self.counters.login_failures += 1
        return []

    def _abts_in(self, frame: Frame) -> list[Frame]:
        h = frame.header
        if isinstance(parse_payload(frame), Abts) and h.ox_id in self._exchanges:
            x = self._exchanges.pop(h.ox_id)
            self.counters.aborts += 1
            log.info("ABTS from %s for OX_ID 0x%04x", wwn_str(self.initiator_wwpn), h.ox_id)
            return [ba_acc_frame(frame, BaAcc(ox_id=h.ox_id, rx_id=x.rx_id))]
        self.counters.rejects_sent += 1
        return [ba_rjt_frame(frame, BaRjt(BaRjtReason.LOGICAL_ERROR, BaRjtExplanation.INVALID_OX_RX_ID))]

    # --- FCP --------------------------------------------------------------------------------------

    def _fcp_in(self, frame: Frame) -> list[Frame]:
        h = frame.header
        if h.r_ctl == RCtl.FCP_DATA:
            return self._data_in(frame)
        if not self.image_pair:
            return self._drop("FCP_CMND without PRLI")
        if h.ox_id in self._exchanges:
            return self._drop(f"FCP_CMND reuses the open OX_ID 0x{h.ox_id:04x}")
        cmnd = FcpCmnd.unpack(frame.fc4_payload)
        self.counters.commands += 1
        x = _Exchange(h.ox_id, self._alloc_rx(), frame, cmnd)
        if cmnd.tmf:
            return self._tmf(x)
        if (cmnd.read and cmnd.write) or cmnd.dl > MAX_FCP_DL:
            return [self._rsp(x, FcpRsp(rsp_info=bytes((0, 0, 0, RspCode.CMND_FIELDS_INVALID))))]
        self._exchanges[h.ox_id] = x
        if cmnd.write and cmnd.dl:
            x.buf = bytearray(cmnd.dl)
            return [xfer_rdy_frame(frame, FcpXferRdy(0, cmnd.dl), rx_id=x.rx_id, seq_id=self._next_seq())]
        return self._start(x, b"")

    def _data_in(self, frame: Frame) -> list[Frame]:
        h = frame.header
        x = self._exchanges.get(h.ox_id)
        if x is None or x.executing or not x.cmnd.write:
            return self._drop(f"FCP_DATA for no open write (OX_ID 0x{h.ox_id:04x})")
        off, data = h.relative_offset, frame.fc4_payload
        if off is None or off + len(data) > x.cmnd.dl:
            del self._exchanges[h.ox_id]
            self.counters.errors += 1
            return [self._rsp(x, FcpRsp(rsp_info=bytes((0, 0, 0, RspCode.DATA_RO_MISMATCH))))]
        x.buf[off : off + len(data)] = data
        x.received += len(data)
        if x.received >= x.cmnd.dl:
            return self._start(x, bytes(x.buf))
        return []

    def _start(self, x: _Exchange, data_out: bytes) -> list[Frame]:
        c = x.cmnd
        cmd = ScsiCommand(cdb=c.cdb, data_out=data_out, data_in_len=c.dl if c.read else 0, tag=x.ox_id)
        try:
            lun = c.lun_number
        except FcError:
            lun = -1
        x.executing = True
        if c.cdb[0] == REPORT_LUNS:
            return self._complete(x.rx_id, respond_report_luns(cmd, sorted(self.luns)))
        if lun not in self.luns:
            if c.cdb[0] == INQUIRY:
                data = _no_lun_inquiry(cmd.data_in_len)
                resp = ScsiResponse(Status.GOOD, data.ljust(cmd.data_in_len, b"\0"), data_len=len(data))
            else:
                resp = ScsiResponse(Status.CHECK_CONDITION, bytes(cmd.data_in_len), _SENSE_NO_LUN, data_len=0)
            return self._complete(x.rx_id, resp)
        self._events.append(Execute(x.rx_id, lun, cmd))
        return []

    def _tmf(self, x: _Exchange) -> list[Frame]:
        """ABORT TASK SET / CLEAR TASK SET / LU RESET: drop the LUN's open exchanges."""
        try:
            lun = x.cmnd.lun_number
        except FcError:
            lun = -1
        if int(x.cmnd.tmf) & (TaskMgmt.ABORT_TASK_SET | TaskMgmt.CLEAR_TASK_SET | TaskMgmt.LU_RESET):
            for ox, other in list(self._exchanges.items()):
                if other.cmnd.lun_number == lun:
                    del self._exchanges[ox]
                    self.counters.aborts += 1
            return [self._rsp(x, FcpRsp.tmf_response(RspCode.TMF_COMPLETE))]
        return [self._rsp(x, FcpRsp.tmf_response(RspCode.TMF_REJECTED))]

    def _rsp(self, x: _Exchange, rsp: FcpRsp) -> Frame:
        return fcp_rsp_frame(x.cmnd_frame, rsp, rx_id=x.rx_id, seq_id=self._next_seq())

    def complete(self, rx_id: int, resp: ScsiResponse) -> list[Frame]:
        """The SCSI layer finished the command `rx_id`: data-in frames (reads) and FCP_RSP.

        A completion for an exchange that was aborted or logged out meanwhile sends nothing.
        """
        return self._protect(self._complete(rx_id, resp))

    def _protect(self, frames: list[Frame | DataSequence]) -> list[Frame | WireBurst]:
        """FCP frames through the transform; one it withholds (None) is not sent, and counted. A data
        sequence (`bursts`) becomes one WireBurst where the transform has a bulk path, else frames."""
        out: list[Frame | WireBurst] = []
        for item in frames:
            if type(item) is DataSequence:
                burst = bulk_outbound(self.transform, item)
                if burst is not None:
                    out.append(burst)
                    continue
                out += self._protect(item.frames())
                continue
            f = item
            p = self.transform.outbound(f) if f.header.type == FcType.FCP else f
            if p is None:
                self.counters.dropped_frames += 1
            else:
                out.append(p)
        return out

    def _complete(self, rx_id: int, resp: ScsiResponse) -> list[Frame]:
        x = next((e for e in self._exchanges.values() if e.rx_id == rx_id), None)
        if x is None:
            self.counters.dropped_frames += 1  # late completion of an aborted exchange
            return []
        self._exchanges.pop(x.ox_id, None)
        c = x.cmnd
        out: list[Frame | DataSequence] = []
        sent = 0
        if c.read and resp.status == Status.GOOD:
            sent = min(resp.valid_len, c.dl)
            if sent and self.bursts:
                out.append(DataSequence(x.cmnd_frame, memoryview(resp.data)[:sent], from_target=True,
                                        rx_id=x.rx_id, seq_id=self._next_seq(), pool=self._pool))
            elif sent:
                out += fcp_data_frames(x.cmnd_frame, resp.data[:sent], from_target=True, rx_id=x.rx_id,
                                       seq_id=self._next_seq())
        resid = c.dl - sent if c.read else (c.dl - x.received if x.received < c.dl else 0)
        status_sense = resp.sense if resp.status == Status.CHECK_CONDITION else b""
        rsp = FcpRsp(status=int(resp.status), resid=resid, resid_under=resid > 0, sense=status_sense)
        out.append(self._rsp(x, rsp))
        if resp.status == Status.GOOD:
            self.counters.completed += 1
        else:
            self.counters.errors += 1
        return out
