"""Fault soak of the control channel, in process through the SCSI layer: request/response pairs and events in
both directions, with a fault every --fault-every messages drawn at random (seeded, printed), and the books
of both sides checked by sequence number at the end.

    .venv/bin/python bench/soak.py [--messages 10000] [--fault-every 100] [--seed 1]

The two ends are the real ones: ChannelCore behind ScsiDisk (edifd's side, its state persisted as the
StateFile would) and ChannelClient (the agent's), its snapshot and the application's ledger persisted
together before every WRITE and after every completion, as guest_agent.disk does. Faults:

* ``edifd_kill``: edifd dies and restarts from its persisted state (new ChannelCore): the parked READs and
  the in-flight WRITE die with it (the ring reset makes the guest see them fail), the queue is gone;
* ``agent_kill_snapshot``: the agent dies and restarts from its last persisted snapshot and ledger; its
  parked READs stay in the host as orphans;
* ``agent_kill_stateless``: the agent dies and restarts without state (a new ledger "chain");
* ``lun_reset``: the guest's SCSI error handler aborts every parked READ (ABORT TASK / LUN RESET);
* ``session_drop``: the iSCSI session goes: every READ and the WRITE in flight fail on the agent's side,
  LIO aborts them in the host;
* ``link_reset``: the FC link bounces: the HBA posts LINK_DOWN and LINK_UP;
* ``rogue_reads``: a keyless initiator (or a dead agent's late READs) reads the READ window at cursors
  around and ahead of the agent's, on every cursor lane, twice: what they take goes nowhere (under
  protocol version 1's rule, the second sweep's cursors acknowledged what the first one took: lost).

Accounting, by upstream sequence number per edifd life and by request: every number a host life issued is
recorded exactly once by the chain of agent incarnations that was alive, in order — except (a) what was
still unacknowledged when that edifd died (gone with it; HOST_RESET says so) and (b) what a stateless
restart receives again because its predecessor had not acknowledged it (counted, expected). Every request
is answered or failed (HOST_RESET) exactly once within its chain, or abandoned with a chain that lost its
state; the host acts on no (epoch, sequence) twice. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from channel_rig import ActedHandler, Clock

from edifd.channel import ChannelCore, HostState
from edifd.channel.loopback import Loopback, read_cdb, write_cdb
from edifd.proto import (
    ChannelKey,
    GetPortInfo,
    Keepalive,
    LinkDown,
    LinkUp,
    Message,
    PortOnline,
    PortRef,
    Status,
)
from edifd.scsi import ScsiDisk
from guest_agent.client import LOST_DETAIL, ChannelClient

KEY = ChannelKey(bytes(range(7, 39)))
BLOCKS = (16 << 20) // 512
FAULTS = ("edifd_kill", "agent_kill_snapshot", "agent_kill_stateless", "lun_reset", "session_drop",
          "link_reset", "rogue_reads")
_EVENT_BASE = 0x5000_0000_0000_0000


@dataclass
class Ledger:
    """The application's record, persisted with the client's snapshot."""

    chain: int
    seen: list[tuple[int, int]] = field(default_factory=list)  # (host life, upstream seq) in arrival order
    requests: dict[int, int] = field(default_factory=dict)  # request id -> request number
    outcomes: Counter[int] = field(default_factory=Counter)  # request number -> answers or failures
    failed: int = 0  # of those, failed locally (HOST_RESET, or abandoned with an epoch)
    unsent: set[int] = field(default_factory=set)  # request numbers never confirmed sent when the agent died

    def copy(self) -> Ledger:
        return Ledger(self.chain, list(self.seen), dict(self.requests), Counter(self.outcomes), self.failed,
                      set(self.unsent))


class Soak:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.clock = Clock()
        self.handler = ActedHandler()
        self.host_state: HostState | None = None
        self.host_life = 0
        self.base: dict[int, int] = {}  # host life -> the upstream number it started above
        self.issued: dict[int, set[int]] = {}  # host life -> upstream numbers it issued
        self.gone: dict[int, set[int]] = {}  # host life -> numbers unacknowledged when it died
        self.core = self._new_core()
        self.chain = 0
        self.ledger = Ledger(0)
        self.saved: tuple[bytes, Ledger] | None = None
        self.ledgers: list[Ledger] = []  # finished chains (a stateless restart ends one)
        self.client = self._new_client(None)
        self.lb = Loopback(ScsiDisk(self.core), self.client)
        self.faults: Counter[str] = Counter()
        self.requests_sent = 0
        self.events_posted = 0
        self.client.start()

    # -- the two ends ------------------------------------------------------------------------------

    def _persist_host(self, s: HostState) -> None:
        self.host_state = s

    def _new_core(self) -> ChannelCore:
        self.host_life += 1
        self.issued[self.host_life] = set()
        self.base[self.host_life] = self.host_state.up_reserved if self.host_state is not None else 0
        return ChannelCore(KEY, num_blocks=BLOCKS, handler=self.handler, clock=self.clock,
                           restored=self.host_state, persist=self._persist_host, queue_limit=64)

    def _new_client(self, state: bytes | None) -> ChannelClient:
        return ChannelClient(KEY, capacity_blocks=BLOCKS, clock=self.clock, state=state)

    def _save(self) -> None:
        self.saved = (self.client.snapshot(), self.ledger.copy())

    # -- one step of traffic -------------------------------------------------------------------------

    def _record(self, msgs: list[Message]) -> None:
        for m in msgs:
            if m.sequence:
                self.ledger.seen.append((self.host_life, m.sequence))
        self._take_responses()
        if msgs:
            self._save()  # after the application recorded them (guest_agent.disk's rule)

    def _take_responses(self) -> None:
        """Answers, and the client's local failures (HOST_RESET, an epoch abandoned with its WRITE)."""
        for rid, m in self.client.take_responses().items():
            n = self.ledger.requests.get(rid)
            if n is None:
                continue
            self.ledger.outcomes[n] += 1
            body = m.body
            if getattr(body, "status", None) is Status.FAILED and getattr(body, "detail", 0) == LOST_DETAIL:
                self.ledger.failed += 1

    def _write(self) -> None:
        w = self.client.next_write()
        if w is None:
            return
        self._save()  # before the WRITE leaves
        resp = self.lb.disk.execute(write_cdb(w.lba, w.payload, 512, tag=w.token))
        self.client.write_done(w.token, resp.status == 0, resp.sense)
        self._take_responses()
        self._save()

    def _complete_reads(self) -> None:
        done = self.lb.done_reads()
        self.rnd.shuffle(done)
        for r in done:
            self._record(self.lb.finish_read(r))

    def step(self) -> None:
        r = self.rnd.random()
        if r < 0.25:
            seq = self.core.post_event(PortOnline(PortRef(_EVENT_BASE + self.events_posted)))
            self.events_posted += 1
            if seq is not None:
                self.issued[self.host_life].add(seq)
        elif r < 0.5 and self.client.outstanding < 8:
            rid = self.client.request(Keepalive() if self.rnd.random() < 0.5 else GetPortInfo())
            self.ledger.requests[rid] = self.requests_sent
            self.requests_sent += 1
        for _ in range(3):
            self._write()
        self.lb.fill_reads(4)
        self._complete_reads()
        self.clock.now += 0.02
        if self.rnd.random() < 0.1:
            self.clock.now += 1.0  # long enough for redeliveries and ACK_DELAY
        self.core.tick()
        self._track_issued()

    def _track_issued(self) -> None:
        top = self.core.status()["upstream_issued"]
        self.issued[self.host_life] = set(range(self.base[self.host_life] + 1, top + 1))

    # -- faults ------------------------------------------------------------------------------------

    def _fail_agent_reads(self) -> None:
        for token in list(self.lb.reads):
            r = self.lb.reads.pop(token)
            self.client.read_failed(r.token)

    def fault(self, kind: str) -> None:
        self.faults[kind] += 1
        if kind == "edifd_kill":
            self._track_issued()
            st = self.core.status()
            self.gone[self.host_life] = {s for s in self.issued[self.host_life] if s > st["upstream_acked"]}
            self.core = self._new_core()
            self.lb.disk = ScsiDisk(self.core)
            self._fail_agent_reads()  # the ring reset: the guest sees them fail and retries
        elif kind in ("agent_kill_snapshot", "agent_kill_stateless"):
            if kind == "agent_kill_snapshot" and self.saved is not None:
                snap, ledger = self.saved
                self.client, self.ledger = self._new_client(snap), ledger.copy()
                # What the application asked for but the restored client never confirmed sending (still
                # queued, or in an in-doubt WRITE) is for the application to ask again.
                sent = self.client.awaiting
                self.ledger.unsent |= {n for rid, n in self.ledger.requests.items()
                                       if rid not in sent and not self.ledger.outcomes[n]}
            else:
                self.ledgers.append(self.ledger)
                self.chain += 1
                self.client, self.ledger = self._new_client(None), Ledger(self.chain)
                self.saved = None
            self.lb.client = self.client
            self.lb.reads = {}  # its READs stay parked in the host: orphans
            self.client.start()
        elif kind in ("lun_reset", "session_drop"):
            for r in list(self.lb.reads.values()):
                if not r.done:
                    self.core.abort(r.command)
            self._fail_agent_reads()
        elif kind == "rogue_reads":
            for _ in range(3):  # something for it to take
                self.core.post_event(PortOnline(PortRef(_EVENT_BASE + self.events_posted)))
                self.events_posted += 1
            g = self.core.geometry
            c = self.client.cursor
            for _sweep in range(2):  # the second sweep's cursors cover what the first one took
                for lane in range(7):
                    for d in range(-2, 6):
                        self.lb.disk.execute(read_cdb(g.read_lba(max(0, c + d), lane), g.slot_blocks, 512))
        elif kind == "link_reset":
            for body in (LinkDown(), LinkUp()):
                seq = self.core.post_event(body)
                if seq is not None:
                    self.issued[self.host_life].add(seq)

    def settle(self) -> None:
        for _ in range(400):
            self.clock.now += 0.5
            self.core.tick()
            for _ in range(3):
                self._write()
            self.lb.fill_reads(4)
            self._complete_reads()
            self._track_issued()
            st = self.core.status()
            if (st["upstream_acked"] == st["upstream_issued"] and self.client.outstanding == 0
                    and self.client.established):
                return

    # -- the books ---------------------------------------------------------------------------------

    def books(self) -> dict[str, Any]:
        self.ledgers.append(self.ledger)
        lost = dup = ooo = again = 0
        for life, issued in self.issued.items():
            gone = self.gone.get(life, set())
            per_chain = [[s for lf, s in ld.seen if lf == life] for ld in self.ledgers]
            for seen in per_chain:
                counts = Counter(seen)
                dup += sum(c - 1 for c in counts.values() if c > 1)
                ooo += sum(1 for a, b in zip(seen, seen[1:], strict=False) if b <= a)
            anywhere = Counter(s for seen in per_chain for s in set(seen))
            lost += sum(1 for s in issued if s not in gone and anywhere[s] == 0)
            again += sum(c - 1 for c in anywhere.values() if c > 1)
        answered_twice = sum(1 for ld in self.ledgers for c in ld.outcomes.values() if c > 1)
        unanswered = sum(1 for ld in self.ledgers[-1:] for n in ld.requests.values()
                         if ld.outcomes[n] == 0 and n not in ld.unsent)
        abandoned = sum(1 for ld in self.ledgers[:-1] for n in ld.requests.values() if ld.outcomes[n] == 0)
        acted_twice = sum(1 for c in self.handler.acted.values() if c > 1)
        return {
            "upstream_issued": sum(len(s) for s in self.issued.values()),
            "upstream_gone_with_edifd": sum(len(s) for s in self.gone.values()),
            "lost": lost, "duplicated": dup, "out_of_order": ooo,
            "again_after_stateless_restart": again,
            "requests": self.requests_sent, "answered_or_failed_twice": answered_twice,
            "failed_by_host_reset": sum(ld.failed for ld in self.ledgers),
            "unsent_when_agent_died": sum(len(ld.unsent) for ld in self.ledgers),
            "events_dropped_queue_full": self.core.counters["events_lost"],
            "unanswered": unanswered, "abandoned_with_stateless_agent": abandoned,
            "host_acted_twice": acted_twice, "events_posted": self.events_posted,
            "host_lives": self.host_life, "agent_chains": self.chain + 1,
        }


def run_soak(messages: int = 10_000, fault_every: int = 100, seed: int = 1) -> dict[str, Any]:
    s = Soak(seed)
    t0 = time.perf_counter()
    next_fault = fault_every
    log: list[tuple[int, str]] = []
    while s.requests_sent + s.events_posted < messages:
        s.step()
        if s.requests_sent + s.events_posted >= next_fault:
            kind = s.rnd.choice(FAULTS)
            log.append((s.requests_sent + s.events_posted, kind))
            s.fault(kind)
            next_fault += fault_every
    s.settle()
    out = s.books()
    out.update(messages=messages, fault_every=fault_every, seed=seed, faults=dict(sorted(s.faults.items())),
               fault_log=log[:20], wall_s=round(time.perf_counter() - t0, 2))
    out["exact"] = (out["lost"] == 0 and out["duplicated"] == 0 and out["out_of_order"] == 0
                    and out["answered_or_failed_twice"] == 0 and out["unanswered"] == 0
                    and out["host_acted_twice"] == 0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--fault-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    r = run_soak(a.messages, a.fault_every, a.seed)
    print(f"soak: {a.messages} messages, a fault every {a.fault_every} (seed {a.seed}), {r['wall_s']} s")
    print(f"  {'fault':<24}{'count':>6}")
    for kind in FAULTS:
        print(f"  {kind:<24}{r['faults'].get(kind, 0):>6}")
    for k in ("upstream_issued", "upstream_gone_with_edifd", "lost", "duplicated", "out_of_order",
              "again_after_stateless_restart", "requests", "answered_or_failed_twice", "failed_by_host_reset",
              "unsent_when_agent_died", "unanswered", "abandoned_with_stateless_agent", "host_acted_twice",
              "events_dropped_queue_full"):
        print(f"  {k:<32}{r[k]:>8}")
    print(f"  exact: {r['exact']}")
    print(json.dumps({"bench": "soak", **{k: v for k, v in r.items() if k != "fault_log"}}, sort_keys=True))
    return 0 if r["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
