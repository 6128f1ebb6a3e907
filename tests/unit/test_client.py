"""guest_agent.client.ChannelClient on its own: the API the I/O edge relies on."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.channel.loopback import write_cdb
from edifd.proto import (
    AppStart,
    AppStartPhase,
    GetPortInfo,
    Heartbeat,
    Keepalive,
    LinkUp,
    Message,
    MessageType,
    PortInfo,
    decode,
    encode,
)
from edifd.proto.lba import CURSOR_LANES, LANES, NO_CURSOR_LANE
from edifd.proto.reject import Reject
from edifd.scsi import sense
from guest_agent.client import ClientError, ClientStateError, Phase, ReadRequest, WriteRequest
from tests.support.channel import KEY, N_BLOCKS, established, make_client
from tests.support.clock import Clock


def test_start_queues_a_hello_at_slot_zero_and_nothing_else_before_the_epoch(clock):
    c = make_client(clock)
    c.request(GetPortInfo())
    assert c.next_write() is None and not c.established
    c.start()
    w = c.next_write()
    assert isinstance(w, WriteRequest) and w.lba == c.geometry.write_lba(0)
    m = decode(w.payload, KEY)
    assert isinstance(m.body, AppStart) and m.body.phase is AppStartPhase.HELLO and m.epoch == 0
    assert c.next_write() is None  # one WRITE in flight at a time


def test_failed_write_is_issued_again_with_same_lba_and_payload_and_stale_token_ignored(clock):
    c = make_client(clock)
    c.start()
    w1 = c.next_write()
    c.write_done(w1.token, False)
    w2 = c.next_write()
    assert (w2.lba, w2.payload) == (w1.lba, w1.payload) and w2.token != w1.token
    c.write_done(w1.token, True)  # late status of the first attempt: ignored
    assert c.next_write() is None and c.counters["write_retries"] == 1


def test_handshake_restarts_after_timeout_with_a_fresh_nonce(clock):
    c = make_client(clock, handshake_timeout=10.0)
    c.start()
    w1 = c.next_write()
    c.write_done(w1.token, True)
    clock.now += 10
    w2 = c.next_write()
    n1, n2 = (decode(w.payload, KEY).body.agent_nonce for w in (w1, w2))
    assert n1 != n2 and c.counters["handshake_retries"] == 1


def test_handshake_nonces_come_from_the_injected_rng(clock):
    def seeded(seed: int):
        r = random.Random(seed)
        return lambda n: r.randbytes(n)

    def hello_nonces(rng) -> list[bytes]:
        c = make_client(clock, handshake_timeout=10.0, rng=rng)
        c.start()
        w1 = c.next_write()
        c.write_done(w1.token, True)
        clock.now += 10
        w2 = c.next_write()
        return [decode(w.payload, KEY).body.agent_nonce for w in (w1, w2)]

    first, again, other = hello_nonces(seeded(7)), hello_nonces(seeded(7)), hello_nonces(seeded(8))
    assert first == again and first[0] != first[1] and first != other
    assert first[0] == random.Random(7).randbytes(len(first[0]))


def test_reads_use_distinct_lanes_and_the_cursor(clock):
    lb, core, c = established(clock)
    for r in list(lb.reads.values()):
        lb.abort_read(r)
    reqs = [c.next_read() for _ in range(CURSOR_LANES)]
    assert all(isinstance(r, ReadRequest) and r.nblocks == 8 for r in reqs)
    assert len({r.lba for r in reqs}) == CURSOR_LANES
    with pytest.raises(ClientError):
        c.next_read()
    c.read_failed(reqs[3].token)
    again = c.next_read()
    assert again.lba == reqs[3].lba  # the freed lane, same cursor
    assert [core.geometry.parse_read(r.lba, 8) for r in reqs[:2]] == [(0, 0), (0, 1)]


def test_garbage_read_data_is_counted_and_delivers_nothing(clock):
    lb, core, c = established(clock)
    r = c.next_read() if len(c._reads) < CURSOR_LANES else None
    token = r.token if r else next(iter(c._reads))
    assert c.read_done(token, bytes(4096)) == []
    assert c.counters["rejected"] == 1


def test_heartbeat_of_another_epoch_only_counts_on_a_read_issued_in_this_epoch(clock):
    lb, core, c = established(clock)
    epoch = c._epoch
    old = c.next_read()
    c._reads[old.token] = (0, c._gen - 1)  # as if issued before the handshake finished
    stale = encode(Message(Heartbeat(), 0, 0, 0, 0), KEY, pad_to=4096)
    assert c.read_done(old.token, stale) == [] and c.established and c._epoch == epoch
    fresh = c.next_read()
    c.read_done(fresh.token, stale)  # the host's epoch really changed: handshake again
    assert c.phase is Phase.HELLO and c.counters["host_resets"] == 1


def test_stale_epoch_sense_on_a_write_restarts_the_handshake(clock):
    lb, core, c = established(clock)
    c.request(Keepalive())
    w = c.next_write()
    c.write_done(w.token, False, sense(*Reject.STALE_EPOCH.value[1:]))
    assert c.phase is Phase.HELLO
    assert c.take_responses()[decode(w.payload, KEY, keys=c.epoch_keys).request_id].body.detail != 0


def test_responses_by_request_id_and_events_in_order(clock):
    lb, core, c = established(clock)
    rid = c.request(GetPortInfo())
    core.post_event(LinkUp())
    msgs = lb.pump()
    assert [m.type for m in msgs] == [MessageType.LINK_UP, MessageType.PORT_INFO]  # sequence order
    assert isinstance(c.response(rid).body, PortInfo) and c.response(rid) is None
    assert c.take_responses() == {}


def test_request_refuses_non_requests(clock):
    c = make_client(clock)
    with pytest.raises(ClientError):
        c.request(LinkUp())
    with pytest.raises(ClientError):
        c.request(AppStart(AppStartPhase.HELLO, bytes(32)))


def test_snapshot_roundtrip_and_resume(clock):
    lb, core, c = established(clock)
    c.request(Keepalive())
    lb.pump()
    snap = c.snapshot()
    r = make_client(clock, state=snap)
    assert r.established and r._epoch == c._epoch and r._cursor == c._cursor
    assert r.snapshot() == snap


def test_snapshot_for_another_port_is_refused(clock):
    lb, core, c = established(clock)
    with pytest.raises(ClientStateError):
        make_client(clock, state=c.snapshot(), port_index=1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_as_state_either_load_or_raise_client_state_error(data):
    try:
        make_client(Clock(), state=data)
    except ClientStateError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=4096))
def test_any_read_data_is_handled_without_exceptions(data):
    c = make_client(Clock())
    c.start()
    r = c.next_read()
    assert c.read_done(r.token, data) == []


def test_write_payload_goes_through_write10_cdb(clock):
    c = make_client(clock)
    c.start()
    w = c.next_write()
    cmd = write_cdb(w.lba, w.payload, 512)
    assert cmd.cdb[0] == 0x2A and len(cmd.data_out) % 512 == 0 and w.lba < N_BLOCKS


def test_reads_before_the_epoch_use_the_no_cursor_lane_and_acknowledge_nothing(clock):
    from tests.support.channel import loop, make_core

    core = make_core(clock)
    c = make_client(clock)
    c._cursor = 5  # e.g. restored from an in-doubt snapshot: meaningless to this host until the ANSWER
    reqs = [c.next_read() for _ in range(LANES)]
    g = core.geometry
    places = sorted(g.parse_read(r.lba, 8) for r in reqs)
    assert places == [(2 * k, NO_CURSOR_LANE) for k in range(LANES)]
    with pytest.raises(ClientError):
        c.next_read()
    lb = loop(core, c)
    for r in reqs:
        c.read_failed(r.token)
    lb.fill_reads(4)
    assert core.counters["stale_cursors"] == 0 and core.status()["upstream_acked"] == 0
