"""FCP-4 IUs (FCP_CMND, FCP_XFER_RDY, FCP_RSP) and the exchange frame builders (F_CTL as libfc's fc_fcp.c)."""

from __future__ import annotations

import pytest

from edifd.fc import (
    Abts,
    BaAcc,
    ElsCode,
    Eof,
    ErrorReason,
    EspHeader,
    FcpCmnd,
    FcpRsp,
    FcpXferRdy,
    FcType,
    Frame,
    FrameError,
    LoginAcc,
    LsAcc,
    PayloadError,
    Plogi,
    RCtl,
    RspCode,
    Sof,
    TaskAttr,
    TaskMgmt,
    abts_frame,
    ba_acc_frame,
    els_reply,
    els_request,
    fcp_cmnd_frame,
    fcp_data_frames,
    fcp_rsp_frame,
    lun_from_bytes,
    lun_to_bytes,
    parse_bls,
    parse_payload,
    xfer_rdy_frame,
)

READ10 = bytes.fromhex("28 00 00001000 00 0008 00")
SENSE = bytes.fromhex("70 00 05 00000000 0a 00000000 24 00 00 000000")  # ILLEGAL REQUEST, 24h
I_ID, T_ID = 0x010101, 0x010102


def test_fcp_cmnd_read_byte_exact() -> None:
    c = FcpCmnd(lun=lun_to_bytes(3), cdb=READ10, dl=4096, read=True)
    assert c.pack() == (
        bytes.fromhex("0003000000000000")  # single-level LUN 3
        + bytes.fromhex("00 00 00 02")  # CRN 0, SIMPLE, no TMF, RDDATA
        + READ10 + bytes(6)  # CDB padded to 16
        + bytes.fromhex("00001000")  # FCP_DL
    )
    back = FcpCmnd.unpack(c.pack())
    assert back == c and back.lun_number == 3 and back.read and not back.write


def test_fcp_cmnd_fields_and_long_cdb_and_bidi() -> None:
    c = FcpCmnd(
        lun=lun_to_bytes(300), cdb=bytes(range(32)), dl=512, write=True, read=True, bidi_read_dl=1024,
        task_attr=TaskAttr.ORDERED, priority=5, crn=9,
    )
    raw = c.pack()
    assert len(raw) == 32 + 16 + 4
    assert raw[:2] == b"\x41\x2c"  # flat addressing for LUN 300
    assert raw[8:12] == bytes((9, 5 << 3 | 2, 0, 4 << 2 | 3))
    assert raw[-8:] == bytes.fromhex("00000200 00000400")
    assert FcpCmnd.unpack(raw) == c
    with pytest.raises(PayloadError):
        FcpCmnd(cdb=bytes(17))
    with pytest.raises(PayloadError):
        FcpCmnd(read=True, write=True)  # bidi needs its read length


def test_fcp_cmnd_tmf() -> None:
    c = FcpCmnd(lun=lun_to_bytes(0), tmf=TaskMgmt.LU_RESET)
    assert c.pack()[10] == 0x10 and FcpCmnd.unpack(c.pack()).tmf is TaskMgmt.LU_RESET


@pytest.mark.parametrize(
    "raw",
    [bytes(31), bytes(33), bytes(11) + b"\x04" + bytes(20), bytes(9) + b"\x80" + bytes(22)],
)
def test_fcp_cmnd_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        FcpCmnd.unpack(raw)


def test_lun_helpers() -> None:
    assert lun_from_bytes(lun_to_bytes(0)) == 0 and lun_from_bytes(lun_to_bytes(16383)) == 16383
    for bad in (bytes.fromhex("0001000100000000"), bytes.fromhex("c000000000000000"), bytes(7)):
        with pytest.raises(PayloadError):
            lun_from_bytes(bad)


def test_xfer_rdy_byte_exact() -> None:
    x = FcpXferRdy(data_ro=0x800, burst_len=0x1000)
    assert x.pack() == bytes.fromhex("00000800 00001000 00000000")
    assert FcpXferRdy.unpack(x.pack()) == x
    with pytest.raises(PayloadError):
        FcpXferRdy.unpack(bytes(8))


def test_fcp_rsp_with_sense_and_residual_byte_exact() -> None:
    r = FcpRsp(status=0x02, resid=0x200, resid_under=True, sense=SENSE)
    assert r.pack() == (
        bytes(8) + bytes.fromhex("0000 0a 02")  # retry delay, SNS_LEN_VALID|RESID_UNDER, CHECK CONDITION
        + bytes.fromhex("00000200 00000012 00000000")  # FCP_RESID, FCP_SNS_LEN 18, FCP_RSP_LEN 0
        + SENSE
    )
    assert FcpRsp.unpack(r.pack()) == r


def test_fcp_rsp_good_and_tmf_response() -> None:
    assert FcpRsp().pack() == bytes(24)
    t = FcpRsp.tmf_response(RspCode.TMF_INCORRECT_LUN)
    assert t.pack() == bytes(10) + b"\x01\x00" + bytes.fromhex("00000000 00000000 00000004 00000009")
    back = FcpRsp.unpack(t.pack())
    assert back == t and back.rsp_code is RspCode.TMF_INCORRECT_LUN
    over = FcpRsp(status=0, resid=7, resid_over=True, bidi_read_resid=3, bidi_read_under=True, conf_req=True)
    assert over.pack()[10] == 0x80 | 0x40 | 0x10 | 0x04 and len(over.pack()) == 28
    assert FcpRsp.unpack(over.pack()) == over
    with pytest.raises(PayloadError):
        FcpRsp(resid_under=True, resid_over=True)


@pytest.mark.parametrize(
    "raw",
    [
        bytes(23),
        bytes(10) + b"\x0c\x00" + bytes(12),  # both residual directions
        bytes(10) + b"\x01\x00" + bytes(8) + b"\x00\x00\x00\x05" + bytes(5),  # RSP_LEN 5
        bytes(10) + b"\x02\x00" + bytes(4) + b"\x00\x00\x00\x12" + bytes(4),  # sense missing
        bytes(10) + b"\x40\x00" + bytes(12),  # bidi flag without BIDI_RSP
        bytes(24) + b"x",  # trailing byte
    ],
)
def test_fcp_rsp_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        FcpRsp.unpack(raw)


# --- exchanges ----------------------------------------------------------------------------------


def cmnd(read: bool) -> Frame:
    c = FcpCmnd(lun=lun_to_bytes(1), cdb=READ10, dl=5000, read=read, write=not read)
    return fcp_cmnd_frame(s_id=I_ID, d_id=T_ID, ox_id=0x42, cmnd=c)


def test_read_exchange_f_ctl_and_offsets() -> None:
    c = cmnd(read=True)
    assert (c.header.f_ctl, c.header.ox_id, c.header.rx_id) == (0x290000, 0x42, 0xFFFF)
    assert (c.header.r_ctl, c.header.type, c.sof, c.eof) == (RCtl.FCP_CMND, FcType.FCP, Sof.I3, Eof.T)
    data = bytes(range(256)) * 19 + bytes(136)  # 5000 bytes -> 2048 + 2048 + 904
    frames = fcp_data_frames(c, data, from_target=True, rx_id=0x77, seq_id=1)
    assert [f.header.f_ctl for f in frames] == [0x800008, 0x800008, 0x880008]
    assert [f.header.parameter for f in frames] == [0, 2048, 4096]
    assert [f.header.seq_cnt for f in frames] == [0, 1, 2]
    assert [(f.sof, f.eof) for f in frames] == [(Sof.I3, Eof.N), (Sof.N3, Eof.N), (Sof.N3, Eof.T)]
    assert all((f.header.s_id, f.header.d_id, f.header.ox_id, f.header.rx_id) == (T_ID, I_ID, 0x42, 0x77)
               for f in frames)
    assert b"".join(f.payload for f in frames) == data
    rsp = fcp_rsp_frame(c, FcpRsp(), rx_id=0x77, seq_id=2)
    assert (rsp.header.f_ctl, rsp.header.s_id, rsp.header.r_ctl) == (0x990000, T_ID, RCtl.FCP_RSP)


def test_write_exchange_f_ctl() -> None:
    c = cmnd(read=False)
    x = xfer_rdy_frame(c, FcpXferRdy(0, 5000), rx_id=0x78, seq_id=1)
    assert (x.header.f_ctl, x.header.s_id, x.header.d_id, x.header.rx_id) == (0x890000, T_ID, I_ID, 0x78)
    frames = fcp_data_frames(c, bytes(5001), from_target=False, rx_id=0x78, seq_id=2)
    assert [f.header.f_ctl & ~3 for f in frames] == [0x000008, 0x000008, 0x090008]
    assert frames[-1].header.f_ctl & 3 == 3  # 905 bytes: 3 fill bytes
    assert all(f.header.s_id == I_ID for f in frames)
    with pytest.raises(FrameError):
        fcp_data_frames(c, b"", from_target=False, rx_id=1, seq_id=1)


def ids(f: Frame) -> tuple[int, int, int, int]:
    return (f.header.r_ctl, f.header.f_ctl, f.header.ox_id, f.header.rx_id)


def test_els_and_bls_pairs() -> None:
    req = els_request(s_id=I_ID, d_id=T_ID, ox_id=9, els=Plogi(wwpn=1, wwnn=2))
    assert ids(req) == (0x22, 0x290000, 9, 0xFFFF) and req.header.type == FcType.ELS
    rep = els_reply(req, LsAcc(), rx_id=0x33)
    assert ids(rep) == (0x23, 0x990000, 9, 0x33)
    assert (rep.header.s_id, rep.header.d_id) == (T_ID, I_ID)
    ab = abts_frame(s_id=I_ID, d_id=T_ID, ox_id=0x42, rx_id=0x77, seq_id=3)
    assert ids(ab) == (0x81, 0x090000, 0x42, 0x77) and ab.header.type == FcType.BLS and ab.payload == b""
    from_resp = abts_frame(s_id=T_ID, d_id=I_ID, ox_id=0x42, rx_id=0x77, from_responder=True)
    assert from_resp.header.f_ctl == 0x890000
    acc = ba_acc_frame(ab)
    assert ids(acc) == (0x84, 0x990000, 0x42, 0x77)
    assert parse_bls(acc.header.r_ctl, acc.payload) == BaAcc(ox_id=0x42, rx_id=0x77)


def test_error_reason_is_set_on_frame_errors() -> None:
    with pytest.raises(FrameError) as e:
        Frame(cmnd(True).header, bytes(2113))
    assert e.value.reason is ErrorReason.FRAME_TOO_LONG


def test_parse_payload_dispatches_by_type_and_r_ctl() -> None:
    c = cmnd(read=True)
    assert parse_payload(c) == FcpCmnd.unpack(c.payload)
    x = xfer_rdy_frame(c, FcpXferRdy(0, 8), rx_id=1, seq_id=1)
    assert parse_payload(x) == FcpXferRdy(0, 8)
    [d] = fcp_data_frames(c, b"data", from_target=True, rx_id=1, seq_id=1)
    assert parse_payload(d) == b"data"
    assert parse_payload(fcp_rsp_frame(c, FcpRsp(status=8), rx_id=1, seq_id=2)) == FcpRsp(status=8)
    req = els_request(s_id=I_ID, d_id=T_ID, ox_id=9, els=Plogi(wwpn=1, wwnn=2))
    assert parse_payload(req) == Plogi(wwpn=1, wwnn=2)
    acc = els_reply(req, LoginAcc(wwpn=3, wwnn=4), rx_id=2)
    assert parse_payload(acc, reply_to=ElsCode.PLOGI) == LoginAcc(wwpn=3, wwnn=4)
    ab = abts_frame(s_id=I_ID, d_id=T_ID, ox_id=1)
    assert parse_payload(ab) == Abts()
    with pytest.raises(PayloadError):
        parse_payload(Frame(c.header.replace(r_ctl=0x44), b""))
    with pytest.raises(PayloadError):  # ESP-protected: decrypt first
        parse_payload(c.with_esp(EspHeader(0x100, 1), bytes(40)))
