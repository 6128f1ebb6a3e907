"""FcpInitiator: the FCP half of an `InitiatorSession`, sans-IO — the command queue, the exchange
table and its recovery (FCP-4 exchanges; docs/hba.md, docs/fc-wire.md).

Commands live in a queue with a deadline (submit time + io_timeout). They are sent only while the
login is READY. A command in flight when the link drops or the peer logs out goes back to the queue
and is sent again after relogin (SCSI READ/WRITE/VERIFY/SYNC are idempotent). When the deadline
passes, a queued command fails at once with SENSE_IO_TIMEOUT; one in flight is aborted with ABTS and
fails with the same sense on BA_ACC/BA_RJT, or after abts_timeout (then the link is reset, the FC-FS
recovery for an exchange whose state is unknown). The login side (`session.py`) owns the state and
the link addresses this class reads.

With `bursts` on (the port sets it), a write's FCP_DATA sequence leaves as one `WireBurst` (the
records built in one buffer, through the transform's bulk path) and `receive_data` takes a received
`DataRun` of read data without a `Frame` per record (edifd/fc/burst.py). Both fall back to the
per-frame path for anything but the plain case, so bytes, counters and outcomes are the same.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from edifd.fc import (
    Abts,
    BaAcc,
    BaRjt,
    BaRjtExplanation,
    BaRjtReason,
    DataRun,
    DataSequence,
    FcError,
    FcpCmnd,
    FcpRsp,
    FcpXferRdy,
    Frame,
    RCtl,
    WireBurst,
    abts_frame,
    ba_acc_frame,
    ba_rjt_frame,
    fcp_cmnd_frame,
    fcp_data_frames,
    lun_to_bytes,
    parse_payload,
    wwn_str,
)
from edifd.fc.burst import FC_HDR, REC_FC, REC_OVERHEAD, BufferPool
from edifd.scsi import ScsiCommand, ScsiResponse, SenseKey, Status, sense

from .counters import RemotePortCounters
from .events import Completed, Event, ResetLink, SessionState
from .transform import FrameTransform, IdentityTransform

log = logging.getLogger(__name__)

UNASSIGNED = 0xFFFF
_REL_OFF = 0x000008  # F_CTL: Parameter is a relative offset

# Sense of commands the transport could not complete (fixed format, SPC-4 annex D codes).
# ABORTED COMMAND makes Linux sd retry a few times before giving up, as for a transport error.
SENSE_IO_TIMEOUT = sense(SenseKey.ABORTED_COMMAND, 0x08, 0x01)  # LOGICAL UNIT COMMUNICATION TIME-OUT
SENSE_TARGET_GONE = sense(SenseKey.ABORTED_COMMAND, 0x08, 0x00)  # LOGICAL UNIT COMMUNICATION FAILURE
SENSE_PROTOCOL_ERROR = sense(SenseKey.ABORTED_COMMAND, 0x4B, 0x00)  # DATA PHASE ERROR
SENSE_INVALID_REQUEST = sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)  # INVALID FIELD IN CDB (not sendable)
# EDIF: the secure session to the target was refused or ended (AUTH_FAIL, APP_STOP, agent lost).
# DATA PROTECT / LOGICAL UNIT ACCESS NOT AUTHORIZED (SPC-4 74h/71h): not a transport error to retry.
SENSE_NOT_AUTHORIZED = sense(SenseKey.DATA_PROTECT, 0x74, 0x71)


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


class FcpInitiator:
    """Queued and in-flight FCP commands of the one remote port, and the IUs that move them."""

    # Kept by the login side (InitiatorSession): when commands may go, where, and why they fail.
    state: SessionState
    remote_wwpn: int | None
    _gone_sense: bytes

    def __init__(self, transform: FrameTransform, abts_timeout: float) -> None:
        self.transform = transform
        self.abts_timeout = abts_timeout
        self.counters = RemotePortCounters()
        self.local_id = 0
        self.remote_id = 0
        self._queue: deque[_Command] = deque()
        self._inflight: dict[int, _Command] = {}  # OX_ID -> command
        self._next_xid = 1
        self._seq_id = 0
        self._events: list[Event] = []
        self.bursts = False  # FCP_DATA as WireBurst/DataRun (the port's fast path); frames when False
        self._pool = BufferPool()  # the buffers of this session's bursts

    @property
    def ready(self) -> bool:
        return self.state is SessionState.READY

    @property
    def outstanding(self) -> int:
        return len(self._queue) + len(self._inflight)

    def take_events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def _command_deadlines(self) -> list[float]:
        times = [c.deadline for c in self._queue]
        for c in self._inflight.values():
            times.append(c.abts_deadline if c.abts_deadline is not None else c.deadline)
        return times

    def _reset_exchanges(self) -> None:
        for cmd in sorted(self._inflight.values(), key=lambda c: c.deadline, reverse=True):
            if cmd.abts_deadline is not None:  # already being aborted: its time is up
                self._fail(cmd, cmd.fail_sense)
                continue
            self.counters.requeued += 1
            self._unassign(cmd)
            self._queue.appendleft(cmd)
        self._inflight.clear()

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

    def _protect_sequence(self, seq: DataSequence) -> list[Frame | WireBurst]:
        """A data sequence through the transform: one WireBurst where it has a bulk path, else frames."""
        burst = bulk_outbound(self.transform, seq)
        return [burst] if burst is not None else self._protect(seq.frames())

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
            if not self._xid_busy(xid):
                return xid
        return UNASSIGNED

    def _xid_busy(self, xid: int) -> bool:
        return xid in self._inflight

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

    def _poll_commands(self, now: float) -> list[Frame]:
        """Command timeouts and ABTS timeouts that have passed."""
        out: list[Frame] = []
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
            if self.bursts:
                data = memoryview(c.cmd.data_out)[xfer.data_ro : end]
                return self._protect_sequence(DataSequence(c.cmnd, data, from_target=False, rx_id=c.rx_id,
                                                           seq_id=self._next_seq(), offset=xfer.data_ro,
                                                           pool=self._pool))
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

    def receive_data(self, run: DataRun, now: float) -> list[Frame | WireBurst]:
        """`receive` of every record of `run` in order, without a Frame per record in the plain case:
        a read's data (verified and decrypted by the transform's bulk path) goes straight into its
        command's buffer. Anything else takes the general path, record by record."""
        t = self.transform
        esp = getattr(t, "inbound_data", None)
        if esp is None and type(t) is not IdentityTransform:
            return [f for i in range(run.count) for f in self.receive(run.frame(i), now)]
        want_df = 0x40 if esp is not None else 0
        mv = memoryview(run.data)
        starts, size = run.starts, len(run.data)
        inflight = self._inflight
        out: list[Frame | WireBurst] = []
        for i, at in enumerate(starts):
            _w0, w1, f_ctl, _sid, df_ctl, _cnt, ox_id, rx_id, off = FC_HDR.unpack_from(mv, at + REC_FC)
            if w1 >> 24 or df_ctl != want_df:  # CS_CTL set (not in the AAD) or not what this session expects
                out += self.receive(run.frame(i), now)
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
            c = inflight.get(ox_id)
            if c is None or c.abts_deadline is not None or c.write or not f_ctl & _REL_OFF or off + n > c.dl:
                out += self._data_fallback(run, i, data if esp is not None else None, now)
                continue
            if c.rx_id == UNASSIGNED:
                c.rx_id = rx_id
            c.buf[off : off + n] = data
            c.received += n
        return out

    def _data_fallback(self, run: DataRun, i: int, clear: bytes | memoryview | None,
                       now: float) -> list[Frame]:
        """Record `i` after the transform (`clear`: its decrypted data field), the general way."""
        frame = run.frame(i)
        if clear is not None:
            frame = frame.without_esp(bytes(clear))
        try:
            return self._fcp_in(frame, now)
        except FcError as e:
            return self._drop(f"undecodable payload: {e}")

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
            if valid == n_in == len(c.buf):  # the whole buffer: one copy, not three
                data = bytes(c.buf)
            else:
                data = bytes(c.buf[:valid]).ljust(n_in, b"\x00")[:n_in]
        self.counters.completed += 1
        self._complete(c, ScsiResponse(status, data, rsp.sense, data_len=min(valid, n_in)))



def bulk_outbound(transform: FrameTransform, seq: DataSequence) -> WireBurst | None:
    """The records of `seq` through `transform` in one buffer: in clear for the identity transform,
    by the transform's `outbound_sequence` where it has one (EDIF's ESP stage); None = send frames."""
    if type(transform) is IdentityTransform:
        return seq.encode()
    bulk = getattr(transform, "outbound_sequence", None)
    return bulk(seq) if bulk is not None else None


def _safe_len(cmd: object) -> int:
    n = getattr(cmd, "data_in_len", 0)
    return n if isinstance(n, int) and 0 <= n <= 1 << 32 else 0

