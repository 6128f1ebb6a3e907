"""Requests and their responses through the SCSI layer: matching by request id, what the channel
answers itself, deferred responses, the handler hooks, the handshake's randomness, no key in status."""

from __future__ import annotations

import random
import threading

from edifd.channel import Deferred
from edifd.channel.loopback import read_cdb, write_cdb
from edifd.proto import (
    AppStart,
    AppStartChallenge,
    AppStartPhase,
    GetPortInfo,
    GetTargets,
    Keepalive,
    LinkUp,
    Message,
    MessageType,
    PortInfo,
    PortRef,
    Response,
    SecureConnect,
    Status,
    TargetList,
    agent_proof,
    decode,
    encode,
)
from edifd.proto.lba import NO_CURSOR_LANE
from edifd.scsi import ScsiDisk, ScsiResponse
from edifd.scsi import Status as ScsiStatus
from tests.support.channel import (
    KEY,
    CountingHandler,
    established,
    loop,
    make_client,
    make_core,
)


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


def test_repr_and_status_never_show_the_key(clock):
    lb, core, client = established(clock)
    text = repr(core) + repr(core.status()) + repr(client.counters) + repr(client.snapshot())
    assert KEY.material.hex() not in text


def test_the_handshake_draws_its_nonce_and_epoch_from_the_injected_rng(clock):
    core = make_core(clock, rng=random.Random(5).randbytes)
    disk = ScsiDisk(core)
    g = core.geometry
    expect = random.Random(5)
    nh, epoch = expect.randbytes(32), int.from_bytes(expect.randbytes(8), "big")
    na = bytes([0xA1]) * 32

    def handshake_step(body: AppStart) -> Message:
        w = disk.execute(write_cdb(g.write_lba(0), encode(Message(body, 0, 0, 1, 0), KEY), 512))
        assert w.status == ScsiStatus.GOOD
        r = disk.execute(read_cdb(g.read_lba(0, NO_CURSOR_LANE), g.slot_blocks, 512))
        assert isinstance(r, ScsiResponse)
        return decode(r.data, KEY)

    challenge = handshake_step(AppStart(AppStartPhase.HELLO, na))
    assert challenge.body == AppStartChallenge(na, nh)
    answer = handshake_step(AppStart(AppStartPhase.PROOF, na, nh, agent_proof(KEY, 0, na, nh)))
    assert answer.body.epoch == epoch and core.established
