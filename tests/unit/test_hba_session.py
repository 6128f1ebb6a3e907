"""InitiatorSession (sans-IO) against TargetSession over an in-memory wire: login, FCP, recovery."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.fc import (
    AuthEls,
    AuthMsgCode,
    CommonFeatures,
    ElsCode,
    FcpCmnd,
    FcType,
    Frame,
    FrameHeader,
    LsRjt,
    LsRjtExplanation,
    Plogi,
    RawEls,
    RCtl,
    Rscn,
    RscnAddressFormat,
    RscnPage,
    els_request,
    fcp_cmnd_frame,
    lun_to_bytes,
    parse_payload,
)
from edifd.hba import (
    SENSE_IO_TIMEOUT,
    SENSE_TARGET_GONE,
    ElsReceived,
    RequireAuthWhenSecure,
    ResetLink,
    SessionState,
)
from edifd.hba.session import PTP_ID_ORIGINATOR, PTP_ID_RESPONDER
from edifd.scsi import ScsiCommand, Status, cdb
from edifd.target import TargetSession
from tests.support.hba import HI, LO, NN, Wire, sense_of


def test_login_initiator_higher_wwpn_originates_plogi() -> None:
    w = Wire(HI, LO)
    w.up()
    assert w.i.state is SessionState.READY
    assert w.els_codes("i") == [ElsCode.FLOGI, ElsCode.PLOGI, ElsCode.PRLI]
    assert (w.i.local_id, w.i.remote_id) == (PTP_ID_ORIGINATOR, PTP_ID_RESPONDER)
    assert w.t.image_pair and w.t.initiator_wwpn == HI
    assert w.i.counters.logins == 1 and w.i.remote_wwpn == LO


def test_login_target_higher_wwpn_originates_plogi() -> None:
    w = Wire(LO, HI)
    w.up()
    assert w.i.state is SessionState.READY
    assert w.els_codes("i")[:1] == [ElsCode.FLOGI] and ElsCode.PLOGI not in w.els_codes("i")[:2]
    assert ElsCode.PLOGI in w.els_codes("t")
    assert (w.i.local_id, w.i.remote_id) == (PTP_ID_RESPONDER, PTP_ID_ORIGINATOR)


def test_security_bit_and_auth_pending_until_auth_complete() -> None:
    w = Wire(security=True, policy=RequireAuthWhenSecure(), target_kw={"security": True})
    w.up()
    plogi = next(f for s, f in w.log if s == "i" and f.payload[0] == ElsCode.PLOGI)
    assert parse_payload(plogi).common_features & CommonFeatures.SECURITY
    assert w.i.state is SessionState.AUTH_PENDING and ElsCode.PRLI not in w.els_codes("i")
    w.submit(1, ScsiCommand(cdb.tur()))
    assert 1 not in w.done  # no FCP before AUTH_OK
    w.to_target(w.i.auth_complete(w.now))
    assert w.i.state is SessionState.READY and w.done[1].status == Status.GOOD  # type: ignore[attr-defined]


def test_target_policy_refusal_means_auth_pending() -> None:
    w = Wire(target_kw={"policy": RequireAuthWhenSecure(), "security": True})
    w.i.security = True

    class Deny:
        def prli_allowed(self, peer: object, local_security: bool) -> bool:
            return False
    w.t.policy = Deny()
    w.up()
    assert w.i.state is SessionState.AUTH_PENDING
    rjt = [f for s, f in w.log if s == "t" and f.payload[0] == ElsCode.LS_RJT]
    assert parse_payload(rjt[0]).explanation == LsRjtExplanation.AUTHENTICATION_REQUIRED  # type: ignore[union-attr]


def test_write_read_roundtrip_uses_2048_byte_data_frames() -> None:
    w = Wire()
    w.up()
    data = hashlib.sha256(b"x").digest() * 320  # 10240 bytes = 20 blocks
    w.submit(1, ScsiCommand(cdb.write(100, 20), data_out=data))
    w.submit(2, ScsiCommand(cdb.read(100, 20), data_in_len=len(data)))
    assert w.done[1].status == Status.GOOD  # type: ignore[attr-defined]
    assert w.done[2].data == data and w.done[2].data_len == len(data)  # type: ignore[attr-defined]
    sizes = [len(f.payload) for _, f in w.log if f.header.r_ctl == RCtl.FCP_DATA]
    assert sizes == [2048] * 5 + [2048] * 5  # write burst then read data
    assert w.i.counters.completed == 2 and w.i.outstanding == 0


def test_short_response_reports_residual() -> None:
    w = Wire()
    w.up()
    w.submit(1, ScsiCommand(cdb.inquiry(255), data_in_len=255))
    r = w.done[1]
    assert r.status == Status.GOOD and len(r.data) == 255 and 36 <= r.data_len < 255  # type: ignore[attr-defined]


def test_commands_queue_until_login() -> None:
    w = Wire()
    w.submit(1, ScsiCommand(cdb.tur()))
    assert 1 not in w.done and w.i.outstanding == 1
    w.up()
    assert w.done[1].status == Status.GOOD  # type: ignore[attr-defined]


def test_timeout_sends_abts_and_fails_with_documented_sense() -> None:
    w = Wire()
    w.up()
    w.stall = True
    w.submit(1, ScsiCommand(cdb.read(0, 8), data_in_len=4096), timeout=1.0)
    w.tick(0.5)
    assert 1 not in w.done
    w.tick(0.6)
    assert any(f.header.r_ctl == RCtl.BLS_ABTS for s, f in w.log if s == "i")
    assert any(f.header.r_ctl == RCtl.BLS_BA_ACC for s, f in w.log if s == "t")
    assert sense_of(w.done[1]) == (0x0B, 0x08, 0x01)
    assert w.done[1].sense == SENSE_IO_TIMEOUT and len(w.done[1].data) == 4096  # type: ignore[attr-defined]
    assert w.i.counters.aborts == 1 and w.i.counters.timeouts == 1 and w.t.counters.aborts == 1
    # the late completion of the aborted exchange sends nothing
    assert w.t.complete(w.held[0].rx_id, w.disk.execute(w.held[0].command)) == []  # type: ignore[arg-type]


def test_lost_abts_resets_the_link() -> None:
    w = Wire()
    w.up()
    w.stall = True
    w.submit(1, ScsiCommand(cdb.tur()), timeout=1.0)
    frames = w.i.poll(2.0)  # ABTS, but we never deliver it
    assert frames[0].header.r_ctl == RCtl.BLS_ABTS
    assert w.i.poll(4.5) == []
    w.drain()
    assert w.done[1].sense == SENSE_IO_TIMEOUT  # type: ignore[attr-defined]
    assert any(isinstance(e, ResetLink) for e in w.other)


def test_link_loss_requeues_and_relogin_completes() -> None:
    w = Wire()
    w.up()
    w.stall = True
    data = bytes(range(256)) * 16
    w.submit(1, ScsiCommand(cdb.write(7, 8), data_out=data))
    w.i.disconnected(w.now)
    assert w.i.state is SessionState.DOWN and w.i.counters.requeued == 1
    w.stall = False
    w.t = TargetSession(LO, NN + 1, [0])  # the new connection is a new target session
    w.tick(1.0)
    w.up()
    assert w.done[1].status == Status.GOOD  # type: ignore[attr-defined]
    assert bytes(w.disk.medium.buf[7 * 512 : 7 * 512 + 4096]) == data  # type: ignore[attr-defined]
    assert w.i.counters.logins == 2


def test_queued_command_times_out_while_logged_out() -> None:
    w = Wire()
    w.submit(1, ScsiCommand(cdb.tur()), timeout=3.0)
    assert w.i.next_deadline() == 3.0
    w.tick(3.0)
    assert w.done[1].sense == SENSE_IO_TIMEOUT and w.i.counters.timeouts == 1  # type: ignore[attr-defined]


def test_rscn_then_rejected_relogin_makes_the_target_gone() -> None:
    w = Wire()
    w.up()
    w.stall = True
    w.submit(1, ScsiCommand(cdb.tur()))
    w.to_initiator(w.t.go_offline())
    assert w.i.state is SessionState.GONE
    assert w.done[1].sense == SENSE_TARGET_GONE  # type: ignore[attr-defined]
    w.submit(2, ScsiCommand(cdb.tur()))
    assert sense_of(w.done[2]) == (0x0B, 0x08, 0x00)
    assert w.i.counters.errors == 2


def test_logo_from_target_relogs_in() -> None:
    w = Wire()
    w.up()
    w.to_initiator(w.t.logout())
    assert w.i.state is SessionState.READY and w.i.counters.logins == 2 and w.i.counters.logouts == 1


def test_rscn_for_another_port_is_acknowledged_only() -> None:
    w = Wire()
    w.up()
    rscn = els_request(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x500,
                       els=Rscn((RscnPage(0x020304, RscnAddressFormat.PORT),)))
    w.to_initiator([rscn])
    assert w.i.state is SessionState.READY and w.i.counters.logins == 1
    assert w.log[-1][1].payload[0] == ElsCode.LS_ACC


def test_protocol_violations_are_rejected_or_dropped() -> None:
    w = Wire()
    w.up()
    base = len(w.log)
    stray = fcp_cmnd_frame(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x777,
                           cmnd=FcpCmnd(lun=lun_to_bytes(0), cdb=cdb.tur()))
    rsp_like = Frame(FrameHeader(r_ctl=RCtl.FCP_RSP, d_id=PTP_ID_ORIGINATOR, s_id=PTP_ID_RESPONDER,
                                 type=FcType.FCP, f_ctl=0x990000, ox_id=0x777), bytes(24))
    unknown_els = els_request(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x501, els=RawEls(0x52))
    auth = els_request(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x502,
                       els=AuthEls(AuthMsgCode.IKE_SA_INIT, tid=1, message=b"1234"))
    from edifd.fc import abts_frame
    abts = abts_frame(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x778, from_responder=True)
    for f in (stray, rsp_like):
        assert w.i.receive(f, 0.0) == []
    replies = [w.i.receive(f, 0.0) for f in (unknown_els, auth, abts)]
    assert [r[0].header.r_ctl for r in replies] == [RCtl.ELS_REP, RCtl.ELS_REP, RCtl.BLS_BA_RJT]
    assert isinstance(parse_payload(replies[0][0]), LsRjt)
    assert w.i.counters.dropped_frames == 2 and w.i.counters.rejects_sent == 3
    assert w.i.state is SessionState.READY and len(w.log) == base
    w.i.relay_auth_els = True
    assert w.i.receive(auth, 0.0) == [] and isinstance(w.i.take_events()[0], ElsReceived)


class Marking:
    """A transform that records what it sees: only FCP frames may pass through it."""

    def __init__(self, drop: bool = False) -> None:
        self.out: list[int] = []
        self.inn: list[int] = []
        self.drop = drop

    def outbound(self, frame: Frame) -> Frame:
        self.out.append(frame.header.type)
        return frame

    def inbound(self, frame: Frame) -> Frame | None:
        self.inn.append(frame.header.type)
        return None if self.drop else frame


def test_transform_sees_fcp_frames_only() -> None:
    tr = Marking()
    w = Wire(transform=tr)
    w.up()
    w.submit(1, ScsiCommand(cdb.read(0, 8), data_in_len=4096))
    assert w.done[1].status == Status.GOOD  # type: ignore[attr-defined]
    assert tr.out == [FcType.FCP] and tr.inn == [FcType.FCP] * 3  # CMND; DATA x2, RSP


def test_transform_drop_counts_and_times_out() -> None:
    w = Wire(transform=Marking(drop=True))
    w.up()
    w.submit(1, ScsiCommand(cdb.tur()), timeout=1.0)
    assert w.i.counters.dropped_frames == 1
    w.tick(1.5)
    w.tick(0.1)
    assert w.done[1].sense == SENSE_IO_TIMEOUT  # type: ignore[attr-defined]


@pytest.mark.parametrize("cmd,lun,n_in", [
    (ScsiCommand(cdb.write(0, 1), data_out=bytes(512), data_in_len=512), 0, 512),  # bidirectional
    (ScsiCommand(b""), 0, 0),  # no CDB
    (ScsiCommand(bytes(17)), 0, 0),  # not 16 + 4*N bytes
    (ScsiCommand(cdb.tur()), 20000, 0),  # LUN out of range
    (ScsiCommand(cdb.read(0, 1), data_in_len=1 << 33), 0, 0),  # FCP_DL does not fit 32 bits
    (ScsiCommand("not bytes", data_in_len=8), 0, 8),  # type: ignore[arg-type]  # a transport bug
])
def test_unsendable_commands_fail_with_sense_and_never_raise(cmd: ScsiCommand, lun: int, n_in: int) -> None:
    w = Wire()
    w.up()
    w.submit(1, cmd, lun=lun)
    assert sense_of(w.done[1]) == (0x05, 0x24, 0x00)
    assert len(w.done[1].data) == n_in  # type: ignore[attr-defined]
    assert w.i.outstanding == 0


def test_plogi_from_peer_is_answered_with_our_security_bit() -> None:
    w = Wire(security=True)
    w.up()
    plogi = els_request(s_id=PTP_ID_RESPONDER, d_id=PTP_ID_ORIGINATOR, ox_id=0x600,
                        els=Plogi(wwpn=LO, wwnn=NN + 1))
    out = w.i.receive(plogi, 0.0)
    acc = parse_payload(out[0], reply_to=ElsCode.PLOGI)
    assert acc.security and out[1].payload[0] == ElsCode.PRLI  # type: ignore[union-attr]


_header = st.builds(
    FrameHeader,
    r_ctl=st.sampled_from([0x01, 0x05, 0x06, 0x07, 0x22, 0x23, 0x81, 0x84, 0x85, 0x32, 0x00]),
    d_id=st.sampled_from([PTP_ID_ORIGINATOR, PTP_ID_RESPONDER, 0xFFFFFE]),
    s_id=st.sampled_from([PTP_ID_ORIGINATOR, PTP_ID_RESPONDER, 0]),
    type=st.sampled_from([0x00, 0x01, 0x08, 0x20]),
    f_ctl=st.sampled_from([0x290000, 0x990000, 0x880008, 0x090008, 0x800000]),
    ox_id=st.integers(0, 8) | st.just(0xFFFF),
    rx_id=st.integers(0, 8) | st.just(0xFFFF),
    parameter=st.integers(0, 1 << 20),
)
_logins = [bytes([c]) + bytes(115) for c in (2, 3, 4, 0x20)]
_payload = st.one_of(st.binary(max_size=160), st.sampled_from(_logins))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_header, _payload), max_size=8))
def test_random_frames_never_raise(frames: list[tuple[FrameHeader, bytes]]) -> None:
    w = Wire()
    w.up()
    w.submit(1, ScsiCommand(cdb.read(0, 1), data_in_len=512))
    w.stall = True
    w.submit(2, ScsiCommand(cdb.write(0, 1), data_out=bytes(512)))
    for h, p in frames:
        f = Frame(h, p[: len(p) - len(p) % 4] if h.df_ctl else p)
        w.i.receive(f, w.now)
        w.t.receive(f)
        w.i.poll(w.now + 100)
    w.i.take_events()
    w.t.take_events()


@pytest.mark.parametrize("fmt,page,hit", [
    (RscnAddressFormat.PORT, PTP_ID_RESPONDER, True), (RscnAddressFormat.AREA, 0x010100, True),
    (RscnAddressFormat.DOMAIN, 0x010000, True), (RscnAddressFormat.FABRIC, 0, True),
    (RscnAddressFormat.AREA, 0x010200, False),
])
def test_rscn_address_formats(fmt: RscnAddressFormat, page: int, hit: bool) -> None:
    from edifd.hba.session import _covers
    assert _covers(fmt, page, PTP_ID_RESPONDER) is hit


_ops = st.lists(st.tuples(st.booleans(), st.integers(0, 4000), st.integers(1, 96), st.integers(0, 255)),
                min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(_ops, st.sets(st.integers(0, 11), max_size=3))
def test_io_through_the_sessions_matches_a_model_across_link_drops(
        ops: list[tuple[bool, int, int, int]], drops: set[int]) -> None:
    """Writes and reads of any size land exactly as on a plain bytearray, even when the link drops
    with the command in flight (it is re-sent after relogin)."""
    w = Wire()
    w.up()
    model = bytearray(4096 * 512)
    for n, (write, lba, nblocks, fill) in enumerate(ops):
        nblocks = min(nblocks, 4096 - lba)
        size = nblocks * 512
        data = bytes([fill]) * size
        w.stall = n in drops  # the target holds the command; then the link dies under it
        if write:
            w.submit(n, ScsiCommand(cdb.write(lba, nblocks), data_out=data))
            model[lba * 512 : lba * 512 + size] = data
        else:
            w.submit(n, ScsiCommand(cdb.read(lba, nblocks), data_in_len=size))
        if n in drops:
            assert n not in w.done
            w.i.disconnected(w.now)
            w.stall = False
            w.t = TargetSession(LO, NN + 1, [0])  # the held command dies with the old target session
            w.up()
        assert w.done[n].status == Status.GOOD  # type: ignore[attr-defined]
        if not write:
            assert w.done[n].data == bytes(model[lba * 512 : lba * 512 + size])  # type: ignore[attr-defined]
    assert bytes(w.disk.medium.buf) == bytes(model)  # type: ignore[attr-defined]
    assert w.i.counters.requeued == len(drops & set(range(len(ops))))
