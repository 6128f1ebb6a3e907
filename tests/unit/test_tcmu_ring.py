"""The ring codec against the fake kernel (edifd.tcmu.fakekernel)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.tcmu import ring as r
from edifd.tcmu.errors import RingError
from edifd.tcmu.fakekernel import STALE, FakeKernel, RingFull
from edifd.tcmu.ring import Ring, RingCommand, TmrNotice

READ10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0])
TUR = bytes(6)


def test_layout_constants_match_the_kernel_abi() -> None:
    assert (r.MB_CMD_HEAD, r.MB_CMD_TAIL, r.REQ_CDB_OFF, r.REQ_IOV) == (12, 64, 24, 48)
    assert (r.RSP_SCSI_STATUS, r.RSP_READ_LEN, r.RSP_SENSE, r.CMD_ENTRY_SIZE) == (8, 12, 16, 112)
    assert (r.TMR_TYPE, r.TMR_CMD_CNT, r.TMR_CMD_IDS) == (8, 12, 32)


@pytest.mark.parametrize("op,length", [(0x00, 6), (0x28, 10), (0x5A, 10), (0xA0, 12), (0x88, 16), (0xC0, 10)])
def test_cdb_length_follows_scsi_command_size(op: int, length: int) -> None:
    assert r.cdb_length(op) == length


def test_cdb_length_variable() -> None:
    assert r.cdb_length(0x7F, 24) == 32


def test_entry_sizes_match_the_kernel() -> None:
    k = FakeKernel()
    k.queue_cmd(TUR)
    k.queue_cmd(READ10, data_in_len=512)
    assert k.head == 120 + 128  # TUR: 112 + 8; READ(10) with one iovec: 112 + 16


@pytest.mark.parametrize("field,value,msg", [
    (r.MB_VERSION, 1, "version"), (r.MB_FLAGS, 0, "OOOC"), (r.MB_CMDR_OFF, 64, "cmdr_off"),
    (r.MB_CMDR_SIZE, 1 << 30, "beyond"), (r.MB_CMD_HEAD, 5, "cmd_head"), (r.MB_CMD_TAIL, 4096, "cmd_tail"),
])
def test_open_rejects_bad_mailbox(field: int, value: int, msg: str) -> None:
    k = FakeKernel()
    fmt = "<H" if field in (r.MB_VERSION, r.MB_FLAGS) else "<I"
    struct.pack_into(fmt, k.buf, field, value)
    with pytest.raises(RingError, match=msg):
        Ring(k.buf)


def test_open_rejects_short_or_readonly_buffer() -> None:
    with pytest.raises(RingError):
        Ring(bytearray(64))
    with pytest.raises(RingError):
        Ring(memoryview(bytes(FakeKernel().buf)))


def test_fetch_copies_cdb_and_data_and_completes_in_order() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    wid = k.queue_cmd(WRITE10, data_out=b"w" * 1024)
    rid = k.queue_cmd(READ10, data_in_len=1024)
    w, rd = ring.fetch()
    assert isinstance(w, RingCommand) and isinstance(rd, RingCommand)
    assert (w.cmd_id, w.cdb, rd.cmd_id, rd.cdb) == (wid, WRITE10, rid, READ10)
    assert ring.read_data(w) == b"w" * 1024 and rd.data_len == 1024
    ring.complete(wid, 0)
    ring.write_data(rd, b"r" * 1000)
    ring.complete(rid, 0)
    assert ring.take_notify() and not ring.take_notify()
    done = k.handle_completions()
    assert [(c.cmd_id, c.status) for c in done] == [(wid, 0), (rid, 0)]
    assert done[1].data == b"r" * 1000 + bytes(24)  # zero-filled: no stale bytes
    assert ring.drained and not k.broken and k.free_blocks_untouched()


def test_read_len_limits_the_transfer_but_the_buffer_is_still_zero_filled() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    rid = k.queue_cmd(READ10, data_in_len=1024)
    (rd,) = ring.fetch()
    ring.write_data(rd, b"i" * 36)
    # the data area past the 36 bytes is zeroed even though only 36 bytes will be transferred
    assert bytes(k.buf[rd.iovecs[0].offset + 36:rd.iovecs[0].offset + 1024]) == bytes(988)
    ring.complete(rid, 0, read_len=36)
    (done,) = k.handle_completions()
    assert done.data == b"i" * 36


def test_out_of_order_completion_steals_the_tail_slot() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    ids = [k.queue_cmd(READ10, data_in_len=512) for _ in range(3)]
    cmds = ring.fetch()
    # Complete the last first: it goes into the first slot, after which the others' slots are
    # overwritten; their copies must still be intact.
    for c, fill in ((cmds[2], b"c"), (cmds[0], b"a"), (cmds[1], b"b")):
        ring.write_data(c, fill * 512)
        ring.complete(c.cmd_id, 0, bytes([0x70, 0, 5]) if fill == b"b" else b"")
    done = {c.cmd_id: c for c in k.handle_completions()}
    assert set(done) == set(ids) and not k.broken
    assert done[ids[0]].data == b"a" * 512 and done[ids[2]].data == b"c" * 512
    assert done[ids[1]].sense[:3] == bytes([0x70, 0, 5]) and done[ids[1]].sense[3:] == bytes(93)


def test_pad_at_the_wrap_is_skipped() -> None:
    k = FakeKernel(cmdr_size=1024, data_blocks=256)
    ring = Ring(k.buf)
    for i in range(40):  # 120- and 128-byte entries through a 1 KiB ring: wraps with PADs
        read = i % 3 != 0
        cid = k.queue_cmd(READ10, data_in_len=512) if read else k.queue_cmd(TUR)
        (c,) = ring.fetch()
        assert c.cmd_id == cid and c.cdb == (READ10 if read else TUR)
        if read:
            ring.write_data(c, bytes([i]) * 512)
        ring.complete(cid, 0)
        (done,) = k.handle_completions()
        assert done.cmd_id == cid and done.data == (bytes([i]) * 512 if read else b"")
    assert ring.pads >= 3 and ring.drained and not k.broken and len(k.completions) == 40


def test_wrap_with_pad_and_commands_outstanding() -> None:
    k = FakeKernel(cmdr_size=512, data_blocks=64)
    ring = Ring(k.buf)
    a = k.queue_cmd(TUR)  # 0..120
    b = k.queue_cmd(TUR)  # 120..240
    c = k.queue_cmd(TUR)  # 240..360
    ring.fetch()
    ring.complete(b, 0)
    ring.complete(a, 0)
    k.handle_completions()
    d = k.queue_cmd(READ10, data_in_len=512)  # 360..488
    e = k.queue_cmd(TUR)  # does not fit in 24 bytes: PAD 488..512, then 0..120
    items = ring.fetch()
    assert [i.cmd_id for i in items] == [d, e] and ring.pads == 1 and k.head == 120
    for cmd in items:
        if cmd.cmd_id == d:
            ring.write_data(cmd, b"d" * 512)
        ring.complete(cmd.cmd_id, 0)
    ring.complete(c, 0)
    done = k.handle_completions()
    assert sorted(x.cmd_id for x in done) == sorted([c, d, e]) and not k.broken and ring.drained


def test_tmr_entry_is_reported_and_skipped_at_the_tail() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    a = k.queue_cmd(READ10, data_in_len=512)
    b = k.queue_cmd(READ10, data_in_len=512)
    k.queue_tmr([a], r.TmrType.ABORT_TASK)
    items = ring.fetch()
    assert isinstance(items[2], TmrNotice) and items[2].cmd_ids == (a,)
    assert items[2].tmr_type == r.TmrType.ABORT_TASK
    ring.complete(a, 0x40)
    with pytest.raises(RingError):
        ring.write_data(items[0], b"late")  # aborted: its pages are no longer ours
    ring.write_data(items[1], b"b" * 512)
    ring.complete(b, 0)
    done = k.handle_completions()
    assert [(x.cmd_id, x.aborted) for x in done] == [(a, True), (b, False)]
    assert ring.drained and k.free_blocks_untouched()


def test_complete_unknown_id_changes_nothing() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    k.queue_cmd(TUR)
    ring.fetch()
    before = bytes(k.buf)
    with pytest.raises(RingError):
        ring.complete(999, 0)
    with pytest.raises(ValueError):
        ring.complete(1, 256)
    with pytest.raises(ValueError):
        ring.complete(1, 2, bytes(97))
    assert bytes(k.buf) == before and ring.outstanding == 1


def test_complete_before_fetch_is_refused() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    cid = k.queue_cmd(TUR)
    with pytest.raises(RingError):
        ring.complete(cid, 0)


def _corrupt(k: FakeKernel, offset: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, k.buf, r.MAILBOX_SIZE + offset, value)


@pytest.mark.parametrize("offset,fmt,value", [
    (0, "<I", 0),  # zero length: would loop forever
    (0, "<I", 120 | 5),  # unknown opcode
    (0, "<I", 4096 | 1),  # runs past the end of the ring
    (r.REQ_CDB_OFF, "<Q", 1 << 40),  # CDB outside the entry
    (r.REQ_IOV_CNT, "<I", 3),  # iovecs overlap the CDB
    (r.REQ_IOV, "<Q", 0),  # iovec inside the mailbox
    (r.REQ_IOV + 8, "<Q", 1 << 40),  # iovec beyond the map
])
def test_malformed_entries_raise_ring_error_and_do_not_advance(offset: int, fmt: str, value: int) -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    k.queue_cmd(READ10, data_in_len=512)
    _corrupt(k, offset, fmt, value)
    for _ in range(2):
        with pytest.raises(RingError):
            ring.fetch()
    assert ring.outstanding == 0 and ring.tail == 0


def test_good_entries_before_a_bad_one_are_returned_first() -> None:
    k = FakeKernel()
    ring = Ring(k.buf)
    k.queue_cmd(TUR)
    k.queue_cmd(TUR)
    _corrupt(k, 120, "<I", 120 | 6)
    assert len(ring.fetch()) == 1
    with pytest.raises(RingError):
        ring.fetch()


def test_attach_to_nonzero_tail_starts_from_the_tail() -> None:
    k = FakeKernel()
    first = Ring(k.buf)
    cid = k.queue_cmd(TUR)
    first.fetch()
    first.complete(cid, 0)
    k.handle_completions()
    k.queue_cmd(READ10, data_in_len=512)
    second = Ring(k.buf)  # a new owner after a restart sees only the unconsumed entry
    (c,) = second.fetch()
    assert c.cdb == READ10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["r", "w", "t", "c", "a"]), st.integers(0, 7),
                          st.integers(1, 3)), min_size=1, max_size=60))
def test_random_schedules_keep_the_ring_consistent(ops: list[tuple[str, int, int]]) -> None:
    """Queue, complete out of order and abort at random; the kernel model must never see a
    broken ring, every completion must carry exactly what we wrote, and no freed page is touched."""
    k = FakeKernel(cmdr_size=1024, data_blocks=16)
    ring = Ring(k.buf)
    live: dict[int, RingCommand] = {}
    expect: dict[int, bytes] = {}
    written: dict[int, bytes] = {}
    for op, pick, nblk in ops:
        try:
            if op == "r":
                k.queue_cmd(READ10, data_in_len=nblk * 512 - pick)
            elif op == "w":
                payload = bytes([pick]) * (nblk * 512)
                written[k.queue_cmd(WRITE10, data_out=payload)] = payload
            elif op == "t":
                k.queue_cmd(TUR)
            elif op == "a" and live:
                k.queue_tmr([sorted(live)[pick % len(live)]])
        except RingFull:
            pass
        for item in ring.fetch():
            if isinstance(item, TmrNotice):
                for i in item.cmd_ids:
                    if i in live:
                        del live[i]
                        ring.complete(i, 0x40)
            else:
                if item.cdb[0] == 0x2A:
                    assert ring.read_data(item) == written.pop(item.cmd_id)
                live[item.cmd_id] = item
        if op == "c" and live:
            cid = sorted(live)[pick % len(live)]
            cmd = live.pop(cid)
            fill = bytes([cid & 0xFF]) * (cmd.data_len // 2)
            if cmd.cdb[0] == 0x28:
                ring.write_data(cmd, fill)
                expect[cid] = fill + bytes(cmd.data_len - len(fill))
            ring.complete(cid, 0)
        if ring.take_notify():
            for comp in k.handle_completions():
                if not comp.aborted and comp.cmd_id in expect:
                    assert comp.data == expect.pop(comp.cmd_id)
        assert not k.broken
        assert k.free_blocks_untouched()
    for cid in list(live):
        ring.complete(cid, 0)
    k.handle_completions()
    ring.fetch()
    assert not k.broken and k.in_flight == 0 and ring.drained
    assert all(b == STALE for b in k.buf[k.data_off:])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=r.MAILBOX_SIZE + 1024 + 512), st.integers(0, 1023),
       st.data())
def test_arbitrary_bytes_raise_only_ring_error(junk: bytes, head: int, data: st.DataObject) -> None:
    """Whatever the shared memory holds, the codec raises RingError or nothing."""
    buf = bytearray(junk)
    if data.draw(st.booleans()) and len(buf) >= r.MAILBOX_SIZE + 1024:
        # A valid mailbox over random entries, so the entry parser is reached too.
        struct.pack_into("<HHII", buf, 0, 2, 1, r.MAILBOX_SIZE, 1024)
        struct.pack_into("<I", buf, r.MB_CMD_HEAD, head & ~7)
        struct.pack_into("<I", buf, r.MB_CMD_TAIL, 0)
    try:
        ring = Ring(buf)
    except RingError:
        return
    for _ in range(4):
        try:
            items = ring.fetch()
        except RingError:
            break
        for item in items:
            if isinstance(item, RingCommand):
                ring.read_data(item)
                ring.write_data(item, b"z" * 7)
                ring.complete(item.cmd_id, 0)
