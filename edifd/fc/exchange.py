"""Frame builders for the exchanges of FCP-4 / FC-LS-3: the right F_CTL, IDs and delimiters.

Conventions (Linux libfc's): a request opens an exchange as its first sequence and passes the
sequence initiative (F_CTL 0x290000, RX_ID 0xFFFF); every frame the exchange responder sends
has EX_CTX set; a reply that ends the exchange adds LAST_SEQ (0x990000). Class 3 delimiters:
SOFi3 on a sequence's first frame, SOFn3 after; EOFt on its last frame, EOFn before.
"""

from __future__ import annotations

from typing import TypeAlias

from .bls import Abts, BaAcc, BaRjt, BlsPayload, parse_bls
from .els import ElsPayload, parse_els
from .errors import FrameError, PayloadError
from .fcp import FcpCmnd, FcpRsp, FcpXferRdy
from .frame import (
    FC_DATA_FRAME_SIZE,
    FCTL_REQ,
    UNASSIGNED_XID,
    Eof,
    FCtl,
    FcType,
    Frame,
    FrameHeader,
    RCtl,
    Sof,
)

_CTX = FCtl.EX_CTX | FCtl.SEQ_CTX


def response_f_ctl(request_f_ctl: int, *, last_seq: bool = True, transfer_si: bool = True) -> int:
    """F_CTL for a single-frame reply sequence: contexts flipped, END_SEQ, optionally LAST_SEQ and SI."""
    # As libfc's reply header: start from "sent by the exchange responder" and flip both
    # context bits the request had set, so a reply to a responder's request is originator-side.
    f = (FCtl.EX_CTX ^ (request_f_ctl & _CTX)) | FCtl.END_SEQ
    if last_seq:
        f |= FCtl.LAST_SEQ
    if transfer_si:
        f |= FCtl.SEQ_INIT
    return int(f)


def request_frame(
    *, r_ctl: int, type: int, s_id: int, d_id: int, ox_id: int, payload: bytes, seq_id: int = 0
) -> Frame:
    """The single-frame first sequence of a new exchange (ELS request, FCP_CMND)."""
    header = FrameHeader(
        r_ctl=r_ctl, d_id=d_id, s_id=s_id, type=type, f_ctl=FCTL_REQ, seq_id=seq_id, ox_id=ox_id
    )
    return Frame(header, payload, Sof.I3, Eof.T)


def response_frame(
    request: Frame,
    *,
    r_ctl: int,
    payload: bytes,
    rx_id: int | None = None,
    seq_id: int = 0,
    last_seq: bool = True,
    transfer_si: bool = True,
    type: int | None = None,
) -> Frame:
    """A single-frame sequence answering `request` in the same exchange (addresses swapped)."""
    rq = request.header
    header = FrameHeader(
        r_ctl=r_ctl,
        d_id=rq.s_id,
        s_id=rq.d_id,
        type=rq.type if type is None else type,
        f_ctl=response_f_ctl(rq.f_ctl, last_seq=last_seq, transfer_si=transfer_si),
        seq_id=seq_id,
        ox_id=rq.ox_id,
        rx_id=rq.rx_id if rx_id is None else rx_id,
    )
    return Frame(header, payload, Sof.I3, Eof.T)


# --- ELS ----------------------------------------------------------------------------------------


def els_request(*, s_id: int, d_id: int, ox_id: int, els: ElsPayload, seq_id: int = 0) -> Frame:
    """An ELS request frame (R_CTL 0x22, TYPE 0x01, F_CTL 0x290000)."""
    return request_frame(
        r_ctl=RCtl.ELS_REQ, type=FcType.ELS, s_id=s_id, d_id=d_id, ox_id=ox_id,
        payload=els.pack(), seq_id=seq_id,
    )


def els_reply(request: Frame, els: ElsPayload, *, rx_id: int, seq_id: int = 0) -> Frame:
    """LS_ACC / LS_RJT for `request` (R_CTL 0x23, F_CTL 0x990000)."""
    return response_frame(request, r_ctl=RCtl.ELS_REP, payload=els.pack(), rx_id=rx_id, seq_id=seq_id)


# --- FCP ----------------------------------------------------------------------------------------


def fcp_cmnd_frame(*, s_id: int, d_id: int, ox_id: int, cmnd: FcpCmnd, seq_id: int = 0) -> Frame:
    return request_frame(
        r_ctl=RCtl.FCP_CMND, type=FcType.FCP, s_id=s_id, d_id=d_id, ox_id=ox_id,
        payload=cmnd.pack(), seq_id=seq_id,
    )


def xfer_rdy_frame(cmnd: Frame, xfer: FcpXferRdy, *, rx_id: int, seq_id: int) -> Frame:
    """Target → initiator, passing the sequence initiative for the data burst (F_CTL 0x890000)."""
    return response_frame(
        cmnd, r_ctl=RCtl.FCP_XFER_RDY, payload=xfer.pack(), rx_id=rx_id, seq_id=seq_id, last_seq=False
    )


def fcp_data_frames(
    cmnd: Frame,
    data: bytes,
    *,
    from_target: bool,
    rx_id: int,
    seq_id: int,
    offset: int = 0,
    frame_size: int = FC_DATA_FRAME_SIZE,
) -> list[Frame]:
    """One FCP_DATA sequence carrying `data` at relative `offset`, split into `frame_size` frames.

    Read data (from the target) keeps the sequence initiative: last frame F_CTL 0x880008.
    Write data (from the initiator) hands it back on the last frame: 0x090008.
    """
    if not data:
        raise FrameError("an FCP_DATA sequence needs at least one byte")
    if frame_size <= 0 or frame_size % 4:
        raise FrameError("frame_size must be a positive multiple of 4")
    c = cmnd.header
    s_id, d_id = (c.d_id, c.s_id) if from_target else (c.s_id, c.d_id)
    base = FCtl.REL_OFF | (FCtl.EX_CTX if from_target else 0)
    last_bits = FCtl.END_SEQ | (0 if from_target else FCtl.SEQ_INIT)
    chunks = [data[i : i + frame_size] for i in range(0, len(data), frame_size)]
    frames = []
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        header = FrameHeader(
            r_ctl=RCtl.FCP_DATA,
            d_id=d_id,
            s_id=s_id,
            type=FcType.FCP,
            f_ctl=int(base | (last_bits if last else 0)),
            seq_id=seq_id,
            seq_cnt=n,
            ox_id=c.ox_id,
            rx_id=rx_id,
            parameter=offset + n * frame_size,
        )
        frames.append(Frame(header, bytes(chunk), Sof.I3 if n == 0 else Sof.N3, Eof.T if last else Eof.N))
    return frames


def fcp_rsp_frame(cmnd: Frame, rsp: FcpRsp, *, rx_id: int, seq_id: int) -> Frame:
    """The last sequence of an FCP exchange (F_CTL 0x990000)."""
    return response_frame(cmnd, r_ctl=RCtl.FCP_RSP, payload=rsp.pack(), rx_id=rx_id, seq_id=seq_id)


# --- BLS ----------------------------------------------------------------------------------------


def abts_frame(
    *, s_id: int, d_id: int, ox_id: int, rx_id: int = UNASSIGNED_XID, seq_id: int = 0,
    from_responder: bool = False, abort_sequence: bool = False,
) -> Frame:
    """ABTS for an existing exchange: END_SEQ|SEQ_INIT (+EX_CTX from the exchange responder)."""
    f_ctl = FCtl.END_SEQ | FCtl.SEQ_INIT | (FCtl.EX_CTX if from_responder else 0)
    header = FrameHeader(
        r_ctl=RCtl.BLS_ABTS, d_id=d_id, s_id=s_id, type=FcType.BLS, f_ctl=int(f_ctl), seq_id=seq_id,
        ox_id=ox_id, rx_id=rx_id, parameter=int(abort_sequence),
    )
    return Frame(header, Abts().pack(), Sof.I3, Eof.T)


def ba_acc_frame(abts: Frame, acc: BaAcc | None = None, *, seq_id: int = 0) -> Frame:
    """BA_ACC for `abts`; by default it names the aborted exchange and no SEQ_ID."""
    acc = acc or BaAcc(ox_id=abts.header.ox_id, rx_id=abts.header.rx_id)
    return response_frame(abts, r_ctl=RCtl.BLS_BA_ACC, payload=acc.pack(), seq_id=seq_id)


def ba_rjt_frame(abts: Frame, rjt: BaRjt, *, seq_id: int = 0) -> Frame:
    return response_frame(abts, r_ctl=RCtl.BLS_BA_RJT, payload=rjt.pack(), seq_id=seq_id)


# --- receive side -------------------------------------------------------------------------------

FramePayload: TypeAlias = ElsPayload | BlsPayload | FcpCmnd | FcpXferRdy | FcpRsp | bytes


def parse_payload(frame: Frame, *, reply_to: int | None = None) -> FramePayload:
    """Decode a clear frame's FC-4 payload by TYPE and R_CTL. FCP_DATA comes back as bytes.

    `reply_to` is the ELS command an ELS reply answers (to decode its LS_ACC). ESP-protected
    frames must be decrypted first. Raises only `PayloadError`.
    """
    h, body = frame.header, frame.fc4_payload
    if h.type == FcType.ELS and h.r_ctl in (RCtl.ELS_REQ, RCtl.ELS_REP):
        return parse_els(body, reply_to=reply_to if h.r_ctl == RCtl.ELS_REP else None)
    if h.type == FcType.BLS:
        return parse_bls(h.r_ctl, body)
    if h.type == FcType.FCP:
        if h.r_ctl == RCtl.FCP_DATA:
            return body
        iu = {RCtl.FCP_CMND: FcpCmnd, RCtl.FCP_XFER_RDY: FcpXferRdy, RCtl.FCP_RSP: FcpRsp}.get(h.r_ctl)
        if iu is not None:
            return iu.unpack(body)  # type: ignore[attr-defined,no-any-return]
    raise PayloadError(f"no decoder for R_CTL 0x{h.r_ctl:02x} TYPE 0x{h.type:02x}")
