"""RingDispatcher: commands to a fake executor and answers back, against the fake kernel."""

from __future__ import annotations

from edifd.scsi.command import Pending, ScsiCommand, ScsiResponse, Status
from edifd.tcmu import ring as r
from edifd.tcmu.dispatch import RingDispatcher, build_command
from edifd.tcmu.fakekernel import FakeKernel
from edifd.tcmu.ring import Ring

READ10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 2, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 2, 0])
INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])


class FakeDisk:
    """Answers READ with a pattern, parks READs at LBA 0x99, records everything."""

    def __init__(self) -> None:
        self.seen: list[ScsiCommand] = []
        self.parked: list[Pending] = []
        self.aborted: list[ScsiCommand] = []
        self.raise_on: int | None = None

    def execute(self, cmd: ScsiCommand) -> ScsiResponse | Pending:
        self.seen.append(cmd)
        if cmd.cdb[0] == self.raise_on:
            raise RuntimeError("boom")
        if cmd.cdb[0] == 0x28 and cmd.cdb[5] == 0x99:
            p = Pending(cmd)
            self.parked.append(p)
            return p
        if cmd.cdb[0] == 0x12:
            return ScsiResponse(Status.GOOD, b"I" * 36)  # shorter than the allocation length
        if cmd.cdb[0] == 0x28:
            return ScsiResponse(Status.GOOD, bytes([cmd.tag & 0xFF]) * cmd.data_in_len)
        if cmd.cdb[0] == 0x2A:
            return ScsiResponse(Status.GOOD)
        return ScsiResponse(Status.CHECK_CONDITION, sense=bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(120))

    def abort(self, cmd: ScsiCommand) -> None:
        self.aborted.append(cmd)


def setup() -> tuple[FakeKernel, RingDispatcher, FakeDisk, list[int]]:
    k = FakeKernel()
    disk = FakeDisk()
    wakes: list[int] = []
    return k, RingDispatcher(Ring(k.buf), disk, lambda: wakes.append(1)), disk, wakes


def flush(k: FakeKernel, d: RingDispatcher) -> None:
    if d.ring.take_notify():
        k.handle_completions()


def test_build_command_directions() -> None:
    rc = r.RingCommand(7, READ10, (r.Iovec(4096, 1024),))
    assert build_command(rc, b"") == ScsiCommand(READ10, b"", 1024, 7)
    wc = r.RingCommand(8, WRITE10, (r.Iovec(4096, 1024),))
    assert build_command(wc, b"x" * 1024) == ScsiCommand(WRITE10, b"x" * 1024, 0, 8)


def test_read_write_and_short_answers_are_zero_filled() -> None:
    k, d, disk, _ = setup()
    w = k.queue_cmd(WRITE10, data_out=b"p" * 1024)
    rd = k.queue_cmd(READ10, data_in_len=1024)
    inq = k.queue_cmd(INQUIRY, data_in_len=96)
    d.service()
    flush(k, d)
    got = {c.cmd_id: c for c in k.completions}
    assert disk.seen[0] == ScsiCommand(WRITE10, b"p" * 1024, 0, w)
    assert disk.seen[1].data_in_len == 1024 and disk.seen[1].data_out == b""
    assert got[rd].data == bytes([rd]) * 1024 and got[w].status == 0
    assert got[inq].data == b"I" * 36 + bytes(60)  # no stale pages (docs/tcmu.md, Observed on this lab)
    assert d.stats.completed == 3 and d.ring.drained and not k.broken


def test_check_condition_sense_is_truncated_to_the_entry() -> None:
    k, d, _, _ = setup()
    cid = k.queue_cmd(bytes([0xA5] + [0] * 11), data_in_len=0)
    d.service()
    flush(k, d)
    (c,) = k.completions
    assert (c.cmd_id, c.status, c.sense[:3]) == (cid, 2, bytes([0x70, 0, 5]))


def test_executor_exception_becomes_hardware_error() -> None:
    k, d, disk, _ = setup()
    disk.raise_on = 0x12
    k.queue_cmd(INQUIRY, data_in_len=96)
    d.service()
    flush(k, d)
    (c,) = k.completions
    assert c.status == 2 and c.sense[2] == 0x04 and c.sense[12] == 0x44
    assert c.data == bytes(96) and d.stats.failures == 1


def test_pending_resolved_later_is_completed_on_the_next_service() -> None:
    k, d, disk, wakes = setup()
    cid = k.queue_cmd(bytes([0x28, 0, 0, 0, 0, 0x99, 0, 0, 1, 0]), data_in_len=512)
    d.service()
    assert d.parked == 1 and not k.completions
    disk.parked[0].resolve(ScsiResponse(Status.GOOD, b"m" * 512))
    assert wakes == [1] and not k.completions  # the callback only queues
    d.service()
    flush(k, d)
    assert [(c.cmd_id, c.data) for c in k.completions] == [(cid, b"m" * 512)]


def test_pending_already_resolved_inside_execute_is_fine() -> None:
    k = FakeKernel()

    class Eager:
        def execute(self, cmd: ScsiCommand) -> Pending:
            p = Pending(cmd)
            p.resolve(ScsiResponse(Status.GOOD, b"e" * cmd.data_in_len))
            return p

    d = RingDispatcher(Ring(k.buf), Eager())
    k.queue_cmd(READ10, data_in_len=512)
    d.service()
    flush(k, d)
    assert k.completions[0].data == b"e" * 512


def test_tmr_aborts_a_parked_read_and_the_late_answer_writes_nothing() -> None:
    k, d, disk, _ = setup()
    parked = k.queue_cmd(bytes([0x28, 0, 0, 0, 0, 0x99, 0, 0, 1, 0]), data_in_len=512)
    d.service()
    k.queue_tmr([parked])
    d.service()
    flush(k, d)
    assert [(c.cmd_id, c.aborted) for c in k.completions] == [(parked, True)]
    assert disk.aborted == [disk.parked[0].command]
    # The kernel reuses the blocks; the late answer must not touch them.
    other = k.queue_cmd(READ10, data_in_len=1024)
    d.service()
    disk.parked[0].resolve(ScsiResponse(Status.GOOD, b"L" * 512))
    d.service()
    flush(k, d)
    assert d.stats.late == 1 and k.completions[-1].data == bytes([other]) * 1024
    assert k.free_blocks_untouched() and not k.broken


def test_complete_all_ends_parked_commands_with_busy() -> None:
    k, d, disk, _ = setup()
    for lba in (0x99, 0x99):
        k.queue_cmd(bytes([0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0]), data_in_len=512)
    d.service()
    assert d.complete_all() == 2
    flush(k, d)
    assert [c.status for c in k.completions] == [Status.BUSY, Status.BUSY]
    assert all(c.data == bytes(512) for c in k.completions)
    assert len(disk.aborted) == 2 and d.in_flight == 0 and d.ring.drained
    disk.parked[0].resolve(ScsiResponse(Status.GOOD, b"x" * 512))
    d.service()
    assert d.stats.late == 1 and not k.broken


def test_bidi_gets_data_out_and_answers_into_the_bidi_iovecs() -> None:
    k, d, disk, _ = setup()

    class Bidi(FakeDisk):
        def execute(self, cmd: ScsiCommand) -> ScsiResponse:
            self.seen.append(cmd)
            return ScsiResponse(Status.GOOD, cmd.data_out[::-1][: cmd.data_in_len])

    d.executor = Bidi()
    cid = k.queue_cmd(bytes([0x89] + [0] * 15), data_out=bytes(range(256)) * 2, data_in_len=512)
    d.service()
    flush(k, d)
    assert d.executor.seen[0].data_in_len == 512
    assert k.completions[0].cmd_id == cid and k.completions[0].data == (bytes(range(256)) * 2)[::-1]


def test_response_data_len_becomes_read_len() -> None:
    """A response that says only 36 of its bytes are data: the buffer is still zero-filled, the
    kernel transfers 36 bytes (TCMU_UFLAG_READ_LEN) and reports the rest as residual."""
    k = FakeKernel()

    class Short:
        def execute(self, cmd: ScsiCommand) -> ScsiResponse:
            return ScsiResponse(Status.GOOD, b"S" * 36 + bytes(cmd.data_in_len - 36), data_len=36)

    d = RingDispatcher(Ring(k.buf), Short())
    k.queue_cmd(INQUIRY, data_in_len=96)
    d.service()
    flush(k, d)
    assert k.completions[0].data == b"S" * 36 and not k.broken
