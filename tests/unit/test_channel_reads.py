"""Host-end READs through the SCSI layer: parking, the heartbeat, full buffers, scan and VERIFY reads,
READ(16) on a large LUN."""

from __future__ import annotations

import struct

from edifd.channel.loopback import read_cdb
from edifd.proto import (
    HEADER_SIZE,
    GetPortInfo,
    Heartbeat,
    LinkUp,
    decode,
)
from edifd.proto.lba import CURSOR_LANES, SLOT_BYTES
from edifd.scsi import ScsiCommand, ScsiResponse
from edifd.scsi import Status as ScsiStatus
from tests.support.channel import (
    KEY,
    N_BLOCKS,
    established,
    sense_of,
    seqs,
)


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


def test_read16_path_on_a_large_lun(clock):
    big = 1 << 40
    lb, core, client = established(clock, num_blocks=big, queue_limit=64)
    lb.fill_reads(4)
    assert any(r.command.cdb[0] == 0x88 for r in lb.reads.values())  # READ(16) above 2^32 blocks
    rid = client.request(GetPortInfo())
    core.post_event(LinkUp())
    msgs = lb.pump()
    assert {m.request_id for m in msgs} == {rid, 0}


def test_verify_in_the_read_window_takes_no_message(clock):
    lb, core, client = established(clock)
    lba = core.geometry.read_lba(0, 0)
    cdb = struct.pack(">BBIBHB", 0x2F, 0x02, lba, 0, 8, 0)  # VERIFY(10), BYTCHK=01b: compare 8 blocks
    resp = lb.disk.execute(ScsiCommand(cdb, data_out=bytes(4096)))
    assert resp.status == ScsiStatus.GOOD and core.counters["scan_reads"] == 1
