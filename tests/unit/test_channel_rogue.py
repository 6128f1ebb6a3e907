"""Who may acknowledge (docs/protocol.md §8.3): only the authenticated agent, in a sealed WRITE of the
current epoch. Scripted CDBs of a keyless initiator and of a dead agent's late READ interleaved with a
real agent's traffic: the agent still receives every message exactly once and in order, and what a
keyless READ receives is ciphertext."""

from __future__ import annotations

import random

import pytest

from edifd.channel.loopback import read_cdb, write_cdb
from edifd.proto import (
    HEADER_SIZE,
    GetPortInfo,
    MessageType,
    PortOnline,
    PortRef,
    ProtocolError,
    UnknownEpochError,
    decode,
)
from edifd.proto.lba import CURSOR_LANES, NO_CURSOR_LANE
from edifd.scsi import Pending, ScsiResponse
from edifd.scsi import Status as ScsiStatus
from guest_agent.client import ACK_DELAY
from tests.support.channel import KEY, established, loop, make_client, seqs

WWPN_BASE = 0x2100_0024_FF00_0000


class Rogue:
    """A keyless initiator on the control LUN: it can issue READs at any LBA, nothing more."""

    def __init__(self, lb) -> None:
        self.disk = lb.disk
        self.g = lb.disk.medium.geometry
        self.pending: list[Pending] = []
        self.got: list[bytes] = []

    def read(self, lba: int) -> None:
        r = self.disk.execute(read_cdb(lba, self.g.slot_blocks, 512))
        if isinstance(r, Pending):
            self.pending.append(r)
        else:
            self.got.append(r.data)

    def sweep(self, around: int, spread: int = 5) -> None:
        """READs at every plausible cursor: each cursor lane at cursors around `around`, and the
        no-cursor lane's slots."""
        for lane in range(CURSOR_LANES):
            for c in range(max(0, around - spread), around + spread + 1):
                self.read(self.g.read_lba(c, lane))
        for slot in range(0, 16, 2):
            self.read(self.g.read_lba(slot, NO_CURSOR_LANE))

    def collect(self) -> None:
        still = []
        for p in self.pending:
            if p.done:
                assert isinstance(p.result, ScsiResponse) and p.result.status == ScsiStatus.GOOD
                self.got.append(p.result.data)
            else:
                still.append(p)
        self.pending = still


def events(msgs):
    return [m for m in msgs if m.type is MessageType.PORT_ONLINE]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_keyless_initiator_reading_every_cursor_lba_drops_nothing_and_gets_only_ciphertext(clock, seed):
    rnd = random.Random(seed)
    lb, core, client = established(clock, redeliver_after=1.0)
    rogue = Rogue(lb)
    got = []
    rids = []
    posted = 0
    for _ in range(40):
        step = rnd.random()
        if step < 0.4:
            posted += 1
            core.post_event(PortOnline(PortRef(WWPN_BASE + posted)))
        elif step < 0.55:
            rids.append(client.request(GetPortInfo()))
        rogue.sweep(core.status()["upstream_issued"])
        if rnd.random() < 0.5:
            got += lb.pump()
        if rnd.random() < 0.3:
            clock.now += 1.1  # what the rogue swallowed is redelivered on the agent's own READs' evidence
            core.tick()
        rogue.collect()
    for _ in range(20):  # settle: redeliveries and ACKs
        clock.now += 1.1
        core.tick()
        got += lb.pump()
        rogue.collect()
    ev = events(got)
    # Every one, once, in order:
    assert [m.body.port.wwpn - WWPN_BASE for m in ev] == list(range(1, posted + 1))
    assert seqs(got) == sorted(seqs(got)) and len(set(seqs(got))) == len(got)
    assert sorted(m.request_id for m in got if m.type is MessageType.PORT_INFO) == sorted(rids)
    assert posted > 5 and rids
    # The rogue took deliveries (the host cannot tell its READs from the agent's) ...
    kinds = (MessageType.PORT_ONLINE, MessageType.PORT_INFO)
    sealed = [d for d in rogue.got if d[:4] == b"EDIF" and d[5] in kinds]
    assert sealed, "the sweep competed for deliveries"
    # ... and could read none of them: sealed under keys it does not hold, and no body in clear.
    for d in sealed:
        with pytest.raises(UnknownEpochError):
            decode(d, KEY)
    for m in ev:
        wwpn = m.body.port.wwpn.to_bytes(8, "big")
        assert all(wwpn not in d[HEADER_SIZE:] for d in rogue.got)
    assert core.counters["acks"] > 0 and core.status()["upstream_acked"] == core.status()["upstream_issued"]


def test_a_dead_agents_late_read_acknowledges_nothing_the_new_agent_has_not_seen(clock):
    """The interleaving of protocol.md §8.5's old "known limit": a READ of a dead agent, carrying its
    cursor, reaches the host after the new agent's handshake and after the host delivered beyond the
    new agent's cursor; the new agent's completions are lost. Before: that READ acknowledged (dropped)
    the messages and the new agent never got them. Now READs acknowledge nothing."""
    lb, core, old = established(clock, redeliver_after=1.0)
    for i in range(1, 6):
        core.post_event(PortOnline(PortRef(WWPN_BASE + i)))
    seen_by_old = lb.pump()
    assert seqs(seen_by_old) == [1, 2, 3, 4, 5]  # consumed, but acknowledged in no WRITE yet (frozen clock)
    assert core.status()["upstream_acked"] == 0
    # Its READ issued after it had consumed #4 (cursor 4), held up in the transport:
    late = read_cdb(core.geometry.read_lba(4, 0), core.geometry.slot_blocks, 512)

    new = make_client(clock)  # the agent restarted without state
    lb2 = loop(core, new)
    new.start()
    for _ in range(4):  # the handshake, and not one READ completion beyond it
        lb2.write_once()
        lb2.fill_reads(4)
        for r in lb2.done_reads():
            assert seqs(lb2.finish_read(r)) == []
            if new.established:
                break
        if new.established:
            break
    assert new.established and core.status()["upstream_acked"] == 0
    lb2.fill_reads(4)
    delivered = lb2.done_reads()
    assert len(delivered) == 4, "the host delivered #1..#4, beyond the new agent's cursor (0)"

    r = lb2.disk.execute(late)  # the dead agent's READ arrives now
    assert isinstance(r, Pending | ScsiResponse)
    for rd in delivered:
        lb2.finish_read(rd, lose=True)  # ... and the new agent's completions never reach it
    assert core.status()["queued"] == 5, "nothing was dropped on a READ's word"

    got = []
    for _ in range(5):
        clock.now += 1.1
        core.tick()
        got += lb2.pump()
    assert seqs(events(got)) == [1, 2, 3, 4, 5]
    clock.now += 2 * ACK_DELAY
    lb2.pump()
    assert core.status()["upstream_acked"] == 5 and core.status()["queued"] == 0


def test_an_ack_of_the_previous_epoch_drops_nothing(clock):
    """A dead agent's sealed ACK that arrives after the new agent's handshake: refused (stale epoch),
    and the new agent still gets everything."""
    lb, core, old = established(clock)
    for i in range(1, 4):
        core.post_event(PortOnline(PortRef(WWPN_BASE + i)))
    assert seqs(lb.pump()) == [1, 2, 3]
    clock.now += 2 * ACK_DELAY
    ack = old.next_write()  # the old agent's ACK of 1..3, held up in the transport
    assert ack is not None and decode(ack.payload, KEY, keys=old.epoch_keys).type is MessageType.ACK

    new = make_client(clock)
    lb2 = loop(core, new)
    new.start()
    got = lb2.pump()
    resp = lb2.disk.execute(write_cdb(ack.lba, ack.payload, 512))
    assert resp.status == ScsiStatus.CHECK_CONDITION
    assert core.status()["upstream_acked"] == 0
    got += lb2.pump()
    assert seqs(events(got)) == [1, 2, 3]


def test_garbage_in_a_sealed_message_is_refused_and_changes_nothing(clock):
    lb, core, client = established(clock)
    core.post_event(PortOnline(PortRef(WWPN_BASE + 1)))
    lb.pump()
    clock.now += 2 * ACK_DELAY
    w = client.next_write()
    for i in (5, 40, 48, 70, HEADER_SIZE - 1):  # type, ack, tag, tag padding, last header byte
        bad = bytearray(w.payload)
        bad[i] ^= 0x01
        resp = lb.disk.execute(write_cdb(w.lba, bytes(bad), 512))
        assert resp.status == ScsiStatus.CHECK_CONDITION
        with pytest.raises(ProtocolError):
            decode(bytes(bad), KEY, keys=core.epoch_keys)
    assert core.status()["upstream_acked"] == 0 and core.counters["acks"] == 0
