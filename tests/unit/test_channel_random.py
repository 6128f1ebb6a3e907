"""Random schedules through the SCSI layer: exactly-once, in-order delivery by sequence numbers.

Hypothesis picks what happens and in which order: events and requests, READ completions in any
order, lost READ completions, aborted parked READs, lost WRITE statuses, duplicated WRITEs, time
passing, agent restarts (from the snapshot, with its parked READs orphaned in the host) and edifd
restarts (from the persisted state). Afterwards the channel is left to settle, and we check both
sides' books by sequence number.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.channel import HostState
from edifd.proto import GetPortInfo, HostReset, Keepalive, Kind, Message, PortOnline, PortRef
from edifd.scsi import ScsiDisk
from guest_agent.client import LOST_DETAIL
from tests.support.channel import CountingHandler, Store, established, make_client, make_core
from tests.support.clock import Clock

OPS = st.sampled_from(["event", "event", "request", "write", "write_lost", "write_dup", "complete",
                       "complete", "complete_last", "lose", "arm", "abort", "time", "agent_restart",
                       "host_restart"])


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.handler = CountingHandler()
        self.store = Store()
        self.lb, self.core, self.client = established(self.clock, handler=self.handler, store=self.store)
        self.delivered: list[Message] = []  # what every incarnation of the agent handed to its app
        self.events: dict[int, int] = {}  # upstream seq -> payload number, per host life
        self.lost_events: set[int] = set()  # posted before an edifd restart and not delivered
        self.n = 0
        self.host_lives = 0

    def take(self, msgs: list[Message]) -> None:
        self.delivered += msgs

    def step(self, op: str, pick: int) -> None:
        lb, core = self.lb, self.core
        if op == "event":
            self.n += 1
            seq = core.post_event(PortOnline(PortRef(self.n)))
            if seq is not None:
                self.events[seq] = self.n
        elif op == "request":
            self.client.request(GetPortInfo() if pick % 2 else Keepalive())
        elif op in ("write", "write_lost", "write_dup"):
            lb.write_once(lose_status=op == "write_lost", duplicate=op == "write_dup")
        elif op in ("complete", "complete_last", "lose"):
            done = lb.done_reads()
            if done:
                r = done[-1] if op == "complete_last" else done[pick % len(done)]
                self.take(lb.finish_read(r, lose=op == "lose"))
        elif op == "arm":
            lb.fill_reads(1 + pick % 6)
        elif op == "abort":
            parked = [r for r in lb.reads.values() if not r.done]
            if parked:
                lb.abort_read(parked[pick % len(parked)])
        elif op == "time":
            self.clock.now += (0.4, 1.1, 5.0)[pick % 3]
            core.tick()
        elif op == "agent_restart":
            snap = self.client.snapshot()
            self.client = make_client(self.clock, state=snap)
            lb.client = self.client
            lb.reads = {}  # its parked READs stay in the host as orphans
            if not self.client.established:
                self.client.start()
        elif op == "host_restart":
            state = HostState.unpack(self.store.last.pack())
            # Whatever the dead edifd had not delivered is gone with it (HOST_RESET tells the agent).
            got = {m.sequence for m in self.delivered if m.kind is Kind.EVENT}
            self.lost_events |= {s for s in self.events if s not in got}
            self.core = make_core(self.clock, self.handler, self.store, restored=state)
            lb.disk = ScsiDisk(self.core)
            for t in list(lb.reads):
                self.client.read_failed(t)  # the ring reset: they come back BUSY, then EIO
            lb.reads = {}
            self.host_lives += 1

    def settle(self) -> None:
        for _ in range(40):
            self.clock.now += 1.1
            self.core.tick()
            self.take(self.lb.pump(k=4))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPS, st.integers(0, 1000)), min_size=1, max_size=80))
def test_random_schedules_deliver_exactly_once_in_order(schedule):
    w = World()
    for op, pick in schedule:
        w.step(op, pick)
    w.settle()

    # Upstream, counted by sequence number across every agent incarnation: strictly increasing
    # (so no duplicate and no reordering), and every event that was not lost with a dead edifd.
    seqs = [m.sequence for m in w.delivered if m.epoch != 0]
    assert seqs == sorted(set(seqs))
    got_events = {m.sequence: m.body.port.wwpn for m in w.delivered if isinstance(m.body, PortOnline)}
    for seq, n in w.events.items():
        if seq not in w.lost_events:
            assert got_events.get(seq) == n
    assert set(got_events) <= set(w.events)
    if w.host_lives:
        assert any(isinstance(m.body, HostReset) for m in w.delivered)

    # Downstream: no (epoch, sequence) acted on twice; every request the final agent sent is
    # answered (or, if its edifd died first, failed locally with LOST_DETAIL).
    acted = [(m.epoch, m.sequence) for m in w.handler.handled]
    assert len(acted) == len(set(acted))
    assert w.client.established
    assert not w.client._outstanding and not w.client._outbox and w.client._outgoing is None
    for m in w.delivered:
        if m.epoch == 0 and m.kind is Kind.RESPONSE:
            assert m.body.detail == LOST_DETAIL
