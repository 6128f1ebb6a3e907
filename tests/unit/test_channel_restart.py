"""Restarts through the SCSI layer: edifd restarting from its state record, stale cursors, the agent
restarting without state, from a snapshot, and from a snapshot in doubt."""

from __future__ import annotations

from edifd.channel import HostState, Reject
from edifd.channel.loopback import read_cdb, write_cdb
from edifd.proto import (
    GetPortInfo,
    HostReset,
    Keepalive,
    LinkDown,
    LinkUp,
    MessageType,
    PortInfo,
    PortOnline,
    PortRef,
    Response,
    SecureConnect,
    Status,
    decode,
)
from edifd.scsi import Pending, ScsiDisk
from edifd.scsi import Status as ScsiStatus
from guest_agent.client import LOST_DETAIL
from tests.support.channel import (
    KEY,
    CountingHandler,
    Store,
    established,
    loop,
    make_client,
    make_core,
    raw_write,
    reject_sense,
    sense_of,
    seqs,
)


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
    resp, _ = raw_write(core2, clock, GetPortInfo(), 3, epoch=old_epoch)
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
    keys = core.epoch_keys
    first = next(r for r in lb.done_reads() if decode(r.response.data, KEY, keys=keys).sequence == 1)
    got_old += lb.finish_read(first)  # the old agent saw #1, re-armed (cursor 1), then crashed
    lb.issue_read()  # before it could acknowledge #1 in a WRITE: a READ's cursor acknowledges nothing
    acked = core.status()["upstream_acked"]
    client2 = make_client(clock)
    lb2 = loop(core, client2)
    client2.start()
    msgs = lb2.pump()
    assert seqs(got_old) == [1] and acked == 0
    assert seqs(msgs) == [1, 2, 3]  # everything the host had no acknowledgement for, once
    clock.now += 1.0
    core.tick()
    assert lb2.pump() == []


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
