"""Upstream delivery rules through the SCSI layer: redelivery of lost completions, order, duplicates,
the overflow report and RESYNC."""

from __future__ import annotations

from edifd.channel import Reject
from edifd.proto import (
    EventOverflow,
    LinkDown,
    LinkUp,
    MessageType,
    PortOnline,
    PortRef,
    Response,
    Resync,
    Status,
)
from guest_agent.client import ACK_DELAY
from tests.support.channel import (
    CountingHandler,
    established,
    loop,
    make_client,
    make_core,
    reject_sense,
    sense_of,
    seqs,
)


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
    clock.now += 2 * ACK_DELAY  # the agent acknowledges what it has (an ACK): room for the second report
    msgs += lb.pump()
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
