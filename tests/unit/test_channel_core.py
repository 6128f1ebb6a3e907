"""The host end driven through the SCSI layer with scripted CDB sequences and a ChannelClient agent."""

from __future__ import annotations

import logging
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.channel import Deferred, HostState, Reject
from edifd.channel.loopback import read_cdb, write_cdb
from edifd.proto import (
    HEADER_SIZE,
    AppStart,
    AppStartPhase,
    EventOverflow,
    GetPortInfo,
    GetTargets,
    Heartbeat,
    HostReset,
    Keepalive,
    LinkDown,
    LinkUp,
    Message,
    MessageType,
    PortInfo,
    PortOnline,
    PortRef,
    Response,
    Resync,
    SecureConnect,
    Status,
    TargetList,
    decode,
    encode,
    new_nonce,
)
from edifd.proto.lba import CURSOR_LANES, SLOT_BYTES
from edifd.scsi import Pending, ScsiCommand, ScsiDisk, ScsiResponse
from edifd.scsi import Status as ScsiStatus
from edifd.scsi.sense import SenseData
from guest_agent.client import LOST_DETAIL
from tests.support.channel import (
    KEY,
    N_BLOCKS,
    OTHER_KEY,
    CountingHandler,
    Store,
    established,
    loop,
    make_client,
    make_core,
)
from tests.support.clock import Clock


def sense_of(resp: ScsiResponse) -> tuple[int, int, int]:
    s = SenseData.parse(resp.sense)
    return s.key, s.asc, s.ascq


def reject_sense(r: Reject) -> tuple[int, int, int]:
    return tuple(r.value[1:])  # type: ignore[return-value]


def seqs(msgs: list[Message]) -> list[int]:
    return [m.sequence for m in msgs]


# --- READs: parking, heartbeat, buffers ---------------------------------------------------------


def test_parked_reads_complete_with_a_full_mac_d_heartbeat_after_park_time(clock):
    lb, core, client = established(clock, park_time=5.0)
    hb0, chb0 = core.counters["heartbeats"], client.counters["heartbeats"]
    lb.fill_reads(4)
    assert not lb.done_reads() and core.status()["parked"] == 4
    clock.now += 4.9
    assert core.tick() == 0
    clock.now += 0.1
    assert core.tick() == 4
    for r in lb.done_reads():
        data = r.response.data
        assert len(data) == SLOT_BYTES and r.response.status == ScsiStatus.GOOD
        hb = decode(data, KEY)
        assert isinstance(hb.body, Heartbeat) and hb.epoch == client._epoch
        assert data[HEADER_SIZE:] == bytes(SLOT_BYTES - HEADER_SIZE)  # every byte written, zeros after
        assert lb.finish_read(r) == []
    assert core.counters["heartbeats"] - hb0 == 4 and client.counters["heartbeats"] - chb0 == 4


def test_reads_outside_the_window_are_zeros_at_once_and_misshapen_reads_are_refused(clock):
    lb, core, _ = established(clock)
    for lba in (0, 1, 34, N_BLOCKS - 33, N_BLOCKS - 1):
        resp = lb.disk.execute(read_cdb(lba, 1, 512))
        assert resp.status == ScsiStatus.GOOD and resp.data == bytes(512)
    assert core.counters["scan_reads"] == 5
    g = core.geometry
    resp = lb.disk.execute(read_cdb(g.read_base, 4, 512))  # half a slot
    assert resp.status == ScsiStatus.CHECK_CONDITION and sense_of(resp) == (5, 0x24, 0)
    resp = lb.disk.execute(read_cdb(g.read_base + 1, g.slot_blocks, 512))  # unaligned
    assert sense_of(resp) == (5, 0x24, 0)


def test_several_queued_messages_complete_several_parked_reads_at_once(clock):
    lb, core, client = established(clock)
    lb.fill_reads(4)
    for _ in range(3):
        core.post_event(LinkUp())
    done = lb.done_reads()
    assert len(done) == 3 and core.status()["parked"] == 1
    msgs = [m for r in done for m in lb.finish_read(r)]
    assert seqs(msgs) == [1, 2, 3]


def test_parked_reads_have_distinct_non_adjacent_lbas(clock):
    lb, core, _ = established(clock)
    lb.fill_reads(CURSOR_LANES)
    lbas = sorted(struct.unpack(">I", r.command.cdb[2:6])[0] for r in lb.reads.values())
    gaps = [b - a for a, b in zip(lbas, lbas[1:], strict=False)]
    assert len(set(lbas)) == CURSOR_LANES and min(gaps) > core.geometry.slot_blocks


def test_close_completes_parked_reads_and_later_reads_do_not_park(clock):
    lb, core, _ = established(clock)
    lb.fill_reads(4)
    assert core.close() == 4 and len(lb.done_reads()) == 4
    for r in lb.done_reads():
        lb.finish_read(r)
    r = lb.issue_read()
    assert isinstance(r.result, ScsiResponse) and isinstance(decode(r.response.data, KEY).body, Heartbeat)


def test_aborted_parked_read_is_forgotten(clock):
    lb, core, client = established(clock)
    assert core.status()["parked"] == 4
    first = next(iter(lb.reads.values()))
    lb.abort_read(first)
    assert core.status()["parked"] == 3
    core.post_event(LinkUp())
    assert not isinstance(first.result, ScsiResponse) and not first.result.done
    assert seqs(lb.pump()) == [1]


# --- requests, responses, dispatch ------------------------------------------------------------


def test_request_response_matched_by_request_id(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    a = client.request(GetPortInfo())
    b = client.request(GetTargets())
    c = client.request(SecureConnect(PortRef(0x50001)))
    lb.pump()
    resp = client.take_responses()
    assert set(resp) == {a, b, c}
    assert isinstance(resp[a].body, PortInfo) and resp[a].body.wwpn == 0x2100_0024_FF00_0001
    assert isinstance(resp[b].body, TargetList) and resp[b].body.total == 0
    assert resp[c].body == Response(MessageType.SECURE_CONNECT, Status.UNSUPPORTED)
    assert [m.sequence for m in h.handled] == [1, 2, 3]
    assert core.counters["messages_in"] == 3


def test_channel_answers_keepalive_and_request_before_handshake_gets_not_started(clock):
    h = CountingHandler()
    core = make_core(clock, h)
    client = make_client(clock)
    lb = loop(core, client)
    lb.fill_reads(2)
    # An authentic request outside any epoch: answered NOT_STARTED, never dispatched.
    msg = Message(GetPortInfo(), 0, 0, 77, 0)
    w = encode(msg, KEY)
    resp = lb.disk.execute(write_cdb(core.geometry.write_lba(0), w, 512))
    assert resp.status == ScsiStatus.GOOD
    got = [decode(r.response.data, KEY) for r in lb.done_reads()]
    assert got[0].body == Response(MessageType.GET_PORT_INFO, Status.NOT_STARTED) and got[0].request_id == 77
    assert h.handled == [] and core.counters["not_started"] == 1


def test_deferred_response_resolved_from_another_thread(clock):
    class Slow(CountingHandler):
        def __init__(self):
            super().__init__()
            self.pending: list[tuple[Message, Deferred]] = []

        def handle(self, msg):
            d = Deferred()
            self.pending.append((msg, d))
            return d

    h = Slow()
    lb, core, client = established(clock, handler=h)
    rid = client.request(SecureConnect(PortRef(1)))
    lb.pump()
    assert client.response(rid) is None and len(h.pending) == 1
    core.post_event(LinkUp())  # the event overtakes the deferred response
    ok = Response(MessageType.SECURE_CONNECT, Status.OK)
    t = threading.Thread(target=h.pending[0][1].resolve, args=(ok,))
    t.start()
    t.join()
    msgs = lb.pump()
    assert [m.type for m in msgs] == [MessageType.LINK_UP, MessageType.RESPONSE]
    assert client.response(rid).body.status == Status.OK


# --- downstream delivery rules ----------------------------------------------------------------


def test_duplicate_write_is_good_counted_and_acted_on_once(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    rid = client.request(GetPortInfo())
    resp = lb.write_once(duplicate=True)
    assert resp.status == ScsiStatus.GOOD
    assert len(h.handled) == 1 and core.counters["retries"] == 1
    msgs = lb.pump()
    assert [m.request_id for m in msgs] == [rid]


def test_write_whose_status_is_lost_is_retried_with_same_lba_and_payload_and_acted_on_once(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    rid = client.request(Keepalive())
    w1 = client.next_write()
    lb.disk.execute(write_cdb(w1.lba, w1.payload, 512))
    client.write_done(w1.token, False)  # e.g. the guest saw EIO although the host acted
    w2 = client.next_write()
    assert (w2.lba, w2.payload) == (w1.lba, w1.payload)
    assert lb.disk.execute(write_cdb(w2.lba, w2.payload, 512)).status == ScsiStatus.GOOD
    client.write_done(w2.token, True)
    assert core.counters["retries"] == 1 and core.counters["messages_in"] == 1
    msgs = lb.pump()
    assert [m.request_id for m in msgs] == [rid] and client.counters["write_retries"] == 1


def _raw_write(core, clock, body, seq, *, epoch=None, key=KEY, port=0, rid=900, lba=None):
    msg = Message(body, port, core._down.current.epoch if epoch is None else epoch, rid, seq)
    data = encode(msg, key)
    cmd = write_cdb(core.geometry.write_lba(seq) if lba is None else lba, data, 512)
    return ScsiDisk(core).execute(cmd), data


def test_gap_is_refused_with_sequence_sense_and_not_acted_on(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    resp, _ = _raw_write(core, clock, GetPortInfo(), 2)  # expected: 1
    assert resp.status == ScsiStatus.CHECK_CONDITION and sense_of(resp) == reject_sense(Reject.GAP)
    assert h.handled == [] and core.counters["rejected_gap"] == 1
    resp, _ = _raw_write(core, clock, GetPortInfo(), 1)
    assert resp.status == ScsiStatus.GOOD and len(h.handled) == 1


def test_replay_of_an_old_write_is_refused(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    client.request(Keepalive())
    w = client.next_write()
    first = write_cdb(w.lba, w.payload, 512)
    lb.disk.execute(first)
    client.write_done(w.token, True)
    for _ in range(20):  # the host remembers only recent WRITEs as retries
        client.request(Keepalive())
        lb.pump()
    resp = lb.disk.execute(first)
    assert sense_of(resp) == reject_sense(Reject.REPLAY) and core.counters["rejected_replay"] == 1
    # Same sequence, different (authentic) content: also a replay, never acted on.
    n = len(h.handled)
    resp, _ = _raw_write(core, clock, GetPortInfo(), core._down.current.down_next - 1, rid=12345)
    assert sense_of(resp) == reject_sense(Reject.REPLAY) and len(h.handled) == n


def test_wrong_key_is_rejected_counted_logged_once_per_burst_and_never_acted_on(clock, caplog):
    h = CountingHandler()
    core = make_core(clock, h)
    client = make_client(clock, key=OTHER_KEY)
    lb = loop(core, client)
    client.start()
    caplog.set_level(logging.WARNING, logger="edifd.channel")
    for _ in range(5):
        resp = lb.write_once()
        assert sense_of(resp) == reject_sense(Reject.UNAUTHENTICATED)
    assert core.counters["rejected_bad_mac"] == 5 and not core.established and not client.established
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "bad_mac" in lines[0]
    clock.now += 11  # a new burst is logged again, with the count of the suppressed ones
    lb.write_once()
    assert "4 more suppressed" in caplog.records[-1].getMessage()
    text = " ".join(r.getMessage() for r in caplog.records) + repr(core.status())
    for k in (KEY, OTHER_KEY):
        assert k.material.hex() not in text and k.material.hex().upper() not in text


def test_bad_proof_and_proof_without_challenge_are_refused(clock):
    core = make_core(clock)
    disk = ScsiDisk(core)
    na = new_nonce()
    proof = AppStart(AppStartPhase.PROOF, na, new_nonce(), bytes(32))
    resp = disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(proof, 0, 0, 1, 0), KEY), 512))
    assert sense_of(resp) == reject_sense(Reject.REPLAY)
    hello = AppStart(AppStartPhase.HELLO, na)
    assert disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(hello, 0, 0, 1, 0), KEY),
                                  512)).status == ScsiStatus.GOOD
    nh = core._down.challenge[1]
    bad = AppStart(AppStartPhase.PROOF, na, nh, bytes(range(32)))
    resp = disk.execute(write_cdb(core.geometry.write_lba(0), encode(Message(bad, 0, 0, 1, 0), KEY), 512))
    assert sense_of(resp) == reject_sense(Reject.BAD_PROOF) and not core.established


@pytest.mark.parametrize("case", ["bad_padding", "truncated", "oversized_write", "outside_window",
                                  "wrong_port", "slot_mismatch", "upstream_type", "garbage", "bad_version"])
def test_malformed_writes_are_refused_with_their_family_sense_and_not_acted_on(clock, case):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    g = core.geometry
    good = encode(Message(GetPortInfo(), 0, core._down.current.epoch, 5, 1), KEY)
    lba, data, want = g.write_lba(1), good, None
    if case == "bad_padding":
        data = good[:-1] + b"\x01"
        want = Reject.MALFORMED
    elif case == "truncated":
        # Declares a 2000-byte body in a one-block WRITE.
        data = bytearray(good)
        struct.pack_into(">I", data, 12, 2000)
        data = bytes(data)
        want = Reject.BAD_LENGTH
    elif case == "oversized_write":
        data = good.ljust(SLOT_BYTES + 512, b"\x00")
        want = Reject.BAD_LENGTH
    elif case == "outside_window":
        lba = 0
        want = Reject.OUTSIDE_WINDOW
    elif case == "wrong_port":
        data = encode(Message(GetPortInfo(), 3, core._down.current.epoch, 5, 1), KEY)
        want = Reject.WRONG_PORT
    elif case == "slot_mismatch":
        lba = g.write_lba(7)
        want = Reject.SLOT_MISMATCH
    elif case == "upstream_type":
        data = encode(Message(LinkUp(), 0, core._down.current.epoch, 0, 1), KEY)
        want = Reject.MALFORMED
    elif case == "garbage":
        data = bytes(range(256)) * 2
        want = Reject.MALFORMED
    elif case == "bad_version":
        data = b"EDIF\x02" + good[5:]
        want = Reject.MALFORMED
    resp = lb.disk.execute(write_cdb(lba, data, 512))
    assert resp.status == ScsiStatus.CHECK_CONDITION and sense_of(resp) == reject_sense(want)
    assert h.handled == [] and core.counters[f"rejected_{want.counter}"] == 1
    assert core._down.current.down_next == 1  # nothing consumed: the real message 1 still goes through
    client.request(GetPortInfo())
    lb.pump()
    assert len(h.handled) == 1


# --- upstream delivery rules ------------------------------------------------------------------


def test_lost_read_completion_is_redelivered_and_seen_once(clock):
    lb, core, client = established(clock, redeliver_after=1.0)
    lb.fill_reads(2)
    core.post_event(PortOnline(PortRef(1)))
    (carrier,) = lb.done_reads()
    lb.finish_read(carrier, lose=True)  # abort / agent never got the data
    core.post_event(PortOnline(PortRef(2)))
    msgs = lb.pump(k=2)
    assert seqs(msgs) == []  # #2 is buffered: #1 is missing
    assert client.counters["out_of_order"] == 1
    clock.now += 1.0
    core.tick()  # a parked READ still says cursor 0 after the redelivery delay
    msgs = lb.pump(k=2)
    # Both were resent (#2 had arrived, but the cursor cannot say so); the agent drops the copy.
    assert seqs(msgs) == [1, 2] and core.counters["redelivered"] == 2
    assert client.counters["messages_in"] == 2 and client.counters["duplicates"] == 1


def test_reordered_completions_are_delivered_in_order(clock):
    lb, core, client = established(clock)
    lb.fill_reads(4)
    for i in range(4):
        core.post_event(PortOnline(PortRef(i + 1)))
    done = lb.done_reads()
    out = []
    for r in reversed(done):
        out += lb.finish_read(r)
    assert seqs(out) == [1, 2, 3, 4]
    assert [m.body.port.wwpn for m in out] == [1, 2, 3, 4]


def test_redelivered_message_arriving_twice_is_dropped_as_duplicate(clock):
    lb, core, client = established(clock, redeliver_after=1.0)
    lb.fill_reads(1)
    core.post_event(LinkUp())
    (slow,) = lb.done_reads()
    del lb.reads[slow.token]  # completion delayed in the transport, not lost
    client._reads.pop(slow.token)
    clock.now += 2
    r = lb.issue_read()  # cursor still 0: the host sends #1 again
    assert r.done
    assert seqs(lb.finish_read(r)) == [1]
    client._reads[slow.token] = (0, client._gen)
    lb.reads[slow.token] = slow
    assert lb.finish_read(slow) == [] and client.counters["duplicates"] == 1


# --- overflow and resync ----------------------------------------------------------------------


def test_overflow_reports_the_loss_refuses_requests_until_drained_and_resync_restates(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h, queue_limit=8)
    posted = [core.post_event(PortOnline(PortRef(i + 1))) for i in range(20)]
    assert posted[:7] == list(range(1, 8)) and posted[7:] == [None] * 13
    assert core.counters["events_lost"] == 13
    # The queue is full: a request is refused (not consumed) and goes through once there is room.
    rid = client.request(Resync())
    resp = lb.write_once()
    assert sense_of(resp) == reject_sense(Reject.QUEUE_FULL) and h.handled == []
    msgs = lb.pump()
    events = [m for m in msgs if m.kind.name == "EVENT"]
    assert seqs(events[:8]) == list(range(1, 9))
    assert events[7].body == EventOverflow(13)
    assert isinstance(events[8].body, LinkDown)  # RESYNC re-announces the state
    assert client.response(rid).body == Response(MessageType.RESYNC, Status.OK)
    assert core.counters["resyncs"] == 1


def test_losses_after_the_report_went_out_make_a_second_report(clock):
    lb, core, client = established(clock, queue_limit=4)
    for i in range(10):
        core.post_event(PortOnline(PortRef(i + 1)))
    msgs = lb.pump()
    # The first report went out at once into a parked READ; later losses make a second one.
    assert [type(m.body).__name__ for m in msgs] == ["PortOnline"] * 3 + ["EventOverflow"] * 2
    assert [m.body.lost for m in msgs[3:]] == [1, 6] and seqs(msgs) == [1, 2, 3, 4, 5]


def test_loss_is_added_to_an_overflow_report_not_yet_sent(clock):
    core = make_core(clock, queue_limit=4)  # no READs parked: nothing leaves the queue
    for i in range(10):
        core.post_event(PortOnline(PortRef(i + 1)))
    client = make_client(clock)
    lb = loop(core, client)
    client.start()
    msgs = lb.pump()
    assert [type(m.body).__name__ for m in msgs] == ["PortOnline"] * 3 + ["EventOverflow"]
    assert msgs[-1].body.lost == 7


# --- restarts -------------------------------------------------------------------------------


def test_edifd_restart_retried_write_recognised_new_one_refused_agent_rehandshakes(clock):
    h = CountingHandler()
    store = Store()
    lb, core, client = established(clock, handler=h, store=store)
    old_epoch = client._epoch
    client.request(Keepalive())
    lb.pump()
    core.post_event(LinkUp())
    lb.pump()
    # A request whose WRITE reaches the old edifd, which dies before the answer goes out.
    lost_rid = client.request(GetPortInfo())
    w = client.next_write()
    last = write_cdb(w.lba, w.payload, 512)
    assert lb.disk.execute(last).status == ScsiStatus.GOOD
    client.write_done(w.token, True)
    issued_before = core.status()["upstream_issued"]
    state = HostState.unpack(store.last.pack())

    h2 = CountingHandler()
    core2 = make_core(clock, h2, Store(), restored=state)
    lb.disk = ScsiDisk(core2)
    lb.reads.clear()  # the ring reset returned them BUSY; the agent's READs fail
    for t in list(client._reads):
        client.read_failed(t)
    # The retried WRITE of the dead epoch is recognised (acted on before the restart) ...
    assert lb.disk.execute(last).status == ScsiStatus.GOOD and core2.counters["retries"] == 1
    # ... a new one of that epoch is refused with the sense that means "run APP_START".
    resp, _ = _raw_write(core2, clock, GetPortInfo(), 3, epoch=old_epoch)
    assert sense_of(resp) == reject_sense(Reject.STALE_EPOCH) and h2.handled == []
    # READs issued after the handshake get heartbeats of epoch 0: the agent re-runs APP_START.
    lb.fill_reads(4)
    clock.now += 6
    core2.tick()
    msgs = lb.pump()
    assert client.established and client._epoch != old_epoch and client.counters["host_resets"] == 1
    assert isinstance(msgs[0].body, HostReset) and msgs[0].sequence > issued_before
    lost = [m for m in msgs if m.request_id == lost_rid]
    assert lost and lost[0].body == Response(MessageType.GET_PORT_INFO, Status.FAILED, LOST_DETAIL)
    rid = client.request(GetPortInfo())
    lb.pump()
    assert isinstance(client.response(rid).body, PortInfo) and len(h2.handled) == 1


def test_stale_cursor_after_restart_acknowledges_nothing(clock):
    store = Store()
    lb, core, client = established(clock, store=store)
    for _ in range(5):
        core.post_event(LinkUp())
    lb.pump()
    old_read_lba = core.geometry.read_lba(client._cursor, 0)
    core2 = make_core(clock, None, Store(), restored=HostState.unpack(store.last.pack()))
    core2.post_event(LinkUp())
    disk2 = ScsiDisk(core2)
    client2 = make_client(clock)
    lb2 = loop(core2, client2)
    client2.start()
    first = lb2.pump()
    # A READ the old agent issued before the restart arrives late: it must not acknowledge anything.
    resp = disk2.execute(read_cdb(old_read_lba, 8, 512))
    assert isinstance(resp, Pending)
    assert core2.status()["upstream_acked"] <= core2.status()["upstream_issued"]
    msgs = first + lb2.pump()
    assert [type(m.body) for m in msgs] == [HostReset, LinkUp]


def test_agent_restart_without_state_gets_every_unacknowledged_message_once(clock):
    lb, core, client = established(clock)
    for i in range(3):
        core.post_event(PortOnline(PortRef(i + 1)))
    lb.fill_reads(4)
    got_old = []
    first = next(r for r in lb.done_reads() if decode(r.response.data, KEY).sequence == 1)
    got_old += lb.finish_read(first)  # the old agent saw #1, re-armed (cursor 1), then crashed
    lb.issue_read()
    acked = core.status()["upstream_acked"]
    client2 = make_client(clock)
    lb2 = loop(core, client2)
    client2.start()
    msgs = lb2.pump()
    assert seqs(got_old) == [1] and acked == 1
    clock.now += 1.0  # #2 and #3 went into the dead agent's READs: resent on evidence of loss
    core.tick()
    msgs += lb2.pump()
    assert seqs(msgs) == [2, 3]  # everything the host had no acknowledgement for, once


def test_agent_restart_from_snapshot_resumes_without_handshake(clock):
    h = CountingHandler()
    lb, core, client = established(clock, handler=h)
    core.post_event(LinkUp())
    rid = client.request(SecureConnect(PortRef(1)))
    lb.pump()
    client.take_responses()
    pending = client.request(GetPortInfo())
    w = client.next_write()
    lb.disk.execute(write_cdb(w.lba, w.payload, 512))
    client.write_done(w.token, True)
    snap = client.snapshot()
    assert KEY.material not in snap
    core.post_event(LinkDown())
    client2 = make_client(clock, state=snap)
    assert client2.established
    lb2 = loop(core, client2)
    msgs = lb2.pump()  # the old agent's parked READs took them: its completions are lost
    assert msgs == []
    clock.now += 1.0
    core.tick()
    msgs = lb2.pump()
    assert [m.type for m in msgs] == [MessageType.PORT_INFO, MessageType.LINK_DOWN]
    assert client2.response(pending) is not None and rid != pending
    assert core.counters["epochs"] == 1 and client2.counters["duplicates"] == 0


def test_in_doubt_snapshot_falls_back_to_app_start_and_drops_what_was_consumed(clock):
    lb, core, client = established(clock)
    core.post_event(LinkUp())
    core.post_event(LinkUp())
    lb.pump(k=1)
    client.request(Keepalive())
    w = client.next_write()  # in flight when the agent dies
    snap = client.snapshot()
    client2 = make_client(clock, state=snap)
    assert not client2.established
    lb2 = loop(core, client2)
    client2.start()
    msgs = lb2.pump()
    assert all(m.sequence > 2 for m in msgs) and client2.counters["messages_in"] == len(msgs)
    assert w is not None


def test_read16_path_on_a_large_lun(clock):
    big = 1 << 40
    lb, core, client = established(clock, num_blocks=big, queue_limit=64)
    lb.fill_reads(4)
    assert any(r.command.cdb[0] == 0x88 for r in lb.reads.values())  # READ(16) above 2^32 blocks
    rid = client.request(GetPortInfo())
    core.post_event(LinkUp())
    msgs = lb.pump()
    assert {m.request_id for m in msgs} == {rid, 0}


def test_repr_and_status_never_show_the_key(clock):
    lb, core, client = established(clock)
    text = repr(core) + repr(core.status()) + repr(client.counters) + repr(client.snapshot())
    assert KEY.material.hex() not in text


def test_agent_that_stops_its_promised_keepalives_is_reported_once(clock):
    class Watch(CountingHandler):
        silent = 0

        def agent_silent(self):
            self.silent += 1

    h = Watch()
    core = make_core(clock, h, park_time=60)
    client = make_client(clock, keepalive_ms=1000)
    lb = loop(core, client)
    client.start()
    lb.pump()
    clock.now += 2.5
    core.tick()
    client.request(Keepalive())
    lb.pump()
    clock.now += 2.9
    core.tick()
    assert h.silent == 0
    clock.now += 0.2
    core.tick()
    core.tick()
    assert h.silent == 1 and core.counters["agent_silent"] == 1
    client.request(Keepalive())  # heard again: a later silence is reported again
    lb.pump()
    clock.now += 3.1
    core.tick()
    assert h.silent == 2


_FUZZ = {}


def _fuzz_world():
    if not _FUZZ:
        h = CountingHandler()
        lb, core, client = established(Clock(), handler=h)
        _FUZZ.update(lb=lb, core=core, handler=h)
    return _FUZZ["lb"], _FUZZ["core"], _FUZZ["handler"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, N_BLOCKS - 1), st.integers(1, 16), st.binary(max_size=8192), st.booleans())
def test_any_write_or_read_is_answered_without_internal_errors_and_never_acted_on(lba, n, data, read):
    lb, core, h = _fuzz_world()
    if read:
        r = lb.disk.execute(read_cdb(lba, n, 512))
        if isinstance(r, Pending):
            core.release_all()
    else:
        resp = lb.disk.execute(write_cdb(lba, data.ljust(n * 512, b"\x00")[: n * 512], 512))
        assert resp.status == ScsiStatus.CHECK_CONDITION
    assert lb.disk.internal_errors == 0 and h.handled == []


def test_verify_in_the_read_window_takes_no_message(clock):
    lb, core, client = established(clock)
    lba = core.geometry.read_lba(0, 0)
    cdb = struct.pack(">BBIBHB", 0x2F, 0x02, lba, 0, 8, 0)  # VERIFY(10), BYTCHK=01b: compare 8 blocks
    resp = lb.disk.execute(ScsiCommand(cdb, data_out=bytes(4096)))
    assert resp.status == ScsiStatus.GOOD and core.counters["scan_reads"] == 1
