"""TargetSession (sans-IO): login rules, FCP target exchanges, ABTS, TMF, and bad input."""

from __future__ import annotations

from edifd.fc import (
    BaRjt,
    ElsCode,
    FcpCmnd,
    FcpRsp,
    FcpServiceParams,
    FcpXferRdy,
    Flogi,
    Frame,
    LoginAcc,
    Logo,
    LsRjt,
    LsRjtExplanation,
    Plogi,
    Prli,
    PrliAcc,
    PrliFlags,
    RawEls,
    RCtl,
    RspCode,
    ServiceParamPage,
    TaskMgmt,
    abts_frame,
    els_reply,
    els_request,
    fcp_cmnd_frame,
    fcp_data_frames,
    lun_to_bytes,
    parse_payload,
)
from edifd.hba.session import PTP_ID_ORIGINATOR as I_ID
from edifd.hba.session import PTP_ID_RESPONDER as T_ID
from edifd.scsi import ScsiResponse, SenseData, Status, cdb
from edifd.target import Execute, TargetSession

I_WWPN, T_WWPN = 0x2100000000000009, 0x2100000000000002
PAGE = ServiceParamPage(FcpServiceParams.INITIATOR | FcpServiceParams.READ_XFER_RDY_DISABLED,
                        PrliFlags.ESTABLISH_IMAGE_PAIR)


def logged_in(prli: bool = True) -> TargetSession:
    t = TargetSession(T_WWPN, 0x2000000000000002, [0, 5])
    t.receive(els_request(s_id=0, d_id=0xFFFFFE, ox_id=1, els=Flogi(wwpn=I_WWPN, wwnn=1)))
    t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=2, els=Plogi(wwpn=I_WWPN, wwnn=1)))
    if prli:
        out = t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=3, els=Prli((PAGE,))))
        acc = parse_payload(out[0], reply_to=ElsCode.PRLI)
        assert isinstance(acc, PrliAcc) and acc.pages[0].service_params & FcpServiceParams.TARGET
    t.take_events()
    return t


def cmnd(ox: int, cdb_bytes: bytes, dl: int = 0, *, read: bool = False, write: bool = False, lun: int = 0,
         tmf: int = 0) -> Frame:
    return fcp_cmnd_frame(s_id=I_ID, d_id=T_ID, ox_id=ox, cmnd=FcpCmnd(
        lun=lun_to_bytes(lun), cdb=cdb_bytes, dl=dl, read=read, write=write, tmf=tmf))


def test_flogi_from_lower_wwpn_initiator_is_answered_then_plogi_follows() -> None:
    t = TargetSession(0x21000000000000FF, 1, [0])
    out = t.receive(els_request(s_id=0, d_id=0xFFFFFE, ox_id=1, els=Flogi(wwpn=I_WWPN, wwnn=1)))
    assert isinstance(parse_payload(out[0], reply_to=ElsCode.FLOGI), LoginAcc)
    assert out[1].payload[0] == ElsCode.PLOGI and (out[1].header.s_id, out[1].header.d_id) == (I_ID, T_ID)
    t.receive(els_reply(out[1], LoginAcc(wwpn=I_WWPN, wwnn=1), rx_id=9))
    assert t.logged_in


def test_prli_needs_plogi_and_fcp_needs_prli() -> None:
    t = TargetSession(T_WWPN, 1, [0])
    out = t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=3, els=Prli((PAGE,))))
    rjt = parse_payload(out[0])
    assert isinstance(rjt, LsRjt) and rjt.explanation == LsRjtExplanation.PLOGI_REQUIRED
    t2 = logged_in(prli=False)
    assert t2.receive(cmnd(10, cdb.tur())) == [] and t2.counters.dropped_frames == 1


def test_read_emits_execute_and_completion_sends_data_and_rsp() -> None:
    t = logged_in()
    c = cmnd(10, cdb.read(0, 8), 4096, read=True)
    assert t.receive(c) == []
    (ev,) = t.take_events()
    assert isinstance(ev, Execute) and ev.lun == 0 and ev.command.data_in_len == 4096
    out = t.complete(ev.rx_id, ScsiResponse(Status.GOOD, bytes(4096)))
    assert [f.header.r_ctl for f in out] == [RCtl.FCP_DATA, RCtl.FCP_DATA, RCtl.FCP_RSP]
    assert [f.header.f_ctl for f in out[:2]] == [0x800008, 0x880008]
    rsp = parse_payload(out[2])
    assert isinstance(rsp, FcpRsp) and rsp.status == 0 and not rsp.resid_under
    assert t.active_exchanges == 0


def test_short_read_sets_resid_under() -> None:
    t = logged_in()
    t.receive(cmnd(10, cdb.inquiry(96), 96, read=True))
    (ev,) = t.take_events()
    out = t.complete(ev.rx_id, ScsiResponse(Status.GOOD, bytes(96), data_len=36))
    rsp = parse_payload(out[-1])
    assert len(out[0].payload) == 36 and rsp.resid_under and rsp.resid == 60  # type: ignore[union-attr]


def test_write_gets_one_xfer_rdy_and_executes_when_all_data_arrived() -> None:
    t = logged_in()
    c = cmnd(11, cdb.write(0, 8), 4096, write=True)
    (xrdy,) = t.receive(c)
    x = parse_payload(xrdy)
    assert isinstance(x, FcpXferRdy) and (x.data_ro, x.burst_len) == (0, 4096)
    data = bytes(range(256)) * 16
    frames = fcp_data_frames(c, data, from_target=False, rx_id=xrdy.header.rx_id, seq_id=2)
    assert t.receive(frames[0]) == [] and t.take_events() == []
    t.receive(frames[1])
    (ev,) = t.take_events()
    assert ev.command.data_out == data


def test_write_data_beyond_fcp_dl_fails_the_exchange() -> None:
    t = logged_in()
    c = cmnd(11, cdb.write(0, 1), 512, write=True)
    (xrdy,) = t.receive(c)
    bad = fcp_data_frames(c, bytes(1024), from_target=False, rx_id=xrdy.header.rx_id, seq_id=2)
    out = t.receive(bad[0])
    assert parse_payload(out[0]).rsp_code == RspCode.DATA_RO_MISMATCH  # type: ignore[union-attr]


def test_report_luns_and_missing_lun_are_answered_by_the_session() -> None:
    t = logged_in()
    out = t.receive(cmnd(12, cdb.report_luns(64), 64, read=True, lun=3))
    assert out[0].payload[:24] == bytes.fromhex("00000010 00000000 0000000000000000 0005000000000000")
    out = t.receive(cmnd(13, cdb.read(0, 1), 512, read=True, lun=3))
    rsp = parse_payload(out[0])
    s = SenseData.parse(rsp.sense)  # type: ignore[union-attr]
    assert rsp.status == 2 and (s.key, s.asc) == (0x05, 0x25)  # type: ignore[union-attr]
    out = t.receive(cmnd(14, cdb.inquiry(36), 36, read=True, lun=3))
    assert out[0].payload[0] == 0x7F  # peripheral qualifier 3: no LU here


def test_abts_known_and_unknown_exchanges() -> None:
    t = logged_in()
    t.receive(cmnd(20, cdb.tur()))
    (ev,) = t.take_events()
    out = t.receive(abts_frame(s_id=I_ID, d_id=T_ID, ox_id=20, rx_id=ev.rx_id))
    assert out[0].header.r_ctl == RCtl.BLS_BA_ACC
    assert t.complete(ev.rx_id, ScsiResponse(Status.GOOD)) == []  # late completion dropped
    out = t.receive(abts_frame(s_id=I_ID, d_id=T_ID, ox_id=21))
    assert isinstance(parse_payload(out[0]), BaRjt)


def test_duplicate_ox_id_dropped_and_abort_task_set_clears() -> None:
    t = logged_in()
    t.receive(cmnd(30, cdb.tur()))
    assert t.receive(cmnd(30, cdb.tur())) == [] and t.counters.dropped_frames == 1
    out = t.receive(cmnd(31, b"", tmf=TaskMgmt.ABORT_TASK_SET))
    assert parse_payload(out[0]).rsp_code == RspCode.TMF_COMPLETE  # type: ignore[union-attr]
    assert t.active_exchanges == 0


def test_offline_port_rejects_logins_and_announces_rscn() -> None:
    t = logged_in()
    (rscn,) = t.go_offline()
    assert rscn.payload[0] == ElsCode.RSCN
    out = t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=40, els=Plogi(wwpn=I_WWPN, wwnn=1)))
    assert isinstance(parse_payload(out[0]), LsRjt)


def test_logo_unknown_els_and_garbage_payloads() -> None:
    t = logged_in()
    out = t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=50, els=Logo(I_ID, I_WWPN)))
    assert out[0].payload[0] == ElsCode.LS_ACC and not t.logged_in and not t.image_pair
    out = t.receive(els_request(s_id=I_ID, d_id=T_ID, ox_id=51, els=RawEls(0x78)))
    assert isinstance(parse_payload(out[0]), LsRjt)
    hdr = out[0].header.replace(r_ctl=RCtl.ELS_REQ, f_ctl=0x290000)
    broken = Frame(hdr, bytes([ElsCode.PLOGI]) + bytes(7))
    assert isinstance(parse_payload(t.receive(broken)[0]), LsRjt)
    junk_cmnd = Frame(cmnd(52, cdb.tur()).header, bytes(5))
    assert t.receive(junk_cmnd) == []
