"""Deferral: a medium that completes later (parked control-LUN READ, READ forwarded over FCP).

The disk hands the transport a Pending and, when the medium resolves, builds the final response:
data padded to data_in_len, medium errors passed through or translated into sense."""

import pytest

from edifd.scsi import (
    IoKind,
    IoRequest,
    MediumError,
    MemoryMedium,
    Pending,
    ScsiCommand,
    ScsiDisk,
    ScsiResponse,
    SenseData,
    SenseKey,
    Status,
    cdb,
    sense,
)

BS = 512


class DeferringMedium(MemoryMedium):
    """Every operation returns a Pending the test resolves by hand."""

    def __init__(self, n: int = 64) -> None:
        super().__init__(n, BS)
        self.parked: list[tuple[IoRequest, Pending, bytes | None]] = []
        self.aborted: list[ScsiCommand] = []

    def _park(self, req: IoRequest, data: bytes | None = None) -> Pending:
        p = Pending(req.command)
        self.parked.append((req, p, data))
        return p

    def read(self, req: IoRequest) -> Pending:  # type: ignore[override]
        return self._park(req)

    def write(self, req: IoRequest, data: bytes) -> Pending:  # type: ignore[override]
        return self._park(req, data)

    def flush(self, req: IoRequest) -> Pending:  # type: ignore[override]
        return self._park(req)

    def complete_next(self) -> None:
        req, p, data = self.parked.pop(0)
        if req.kind is IoKind.WRITE:
            assert data is not None
            super().write(req, data)
        out = super().read(req) if req.kind in (IoKind.READ, IoKind.VERIFY) else b""
        p.resolve(ScsiResponse(Status.GOOD, out))

    def abort(self, cmd: ScsiCommand) -> None:
        self.aborted.append(cmd)


def pending(disk: ScsiDisk, c: bytes, data_in_len: int = 0, data_out: bytes = b"") -> tuple[Pending, list]:
    cmd = ScsiCommand(c, data_out, data_in_len)
    p = disk.execute(cmd)
    assert isinstance(p, Pending) and not p.done and p.command is cmd
    got: list[ScsiResponse] = []
    p.on_done(got.append)
    return p, got


@pytest.fixture
def medium() -> DeferringMedium:
    return DeferringMedium()


@pytest.fixture
def disk(medium: DeferringMedium) -> ScsiDisk:
    return ScsiDisk(medium)


def test_read_completes_later_padded(disk: ScsiDisk, medium: DeferringMedium) -> None:
    medium.buf[BS : 3 * BS] = b"\x5a" * (2 * BS)
    _, got = pending(disk, cdb.read(1, 2), 4 * BS)
    assert got == []
    medium.complete_next()
    assert len(got) == 1 and got[0].status == Status.GOOD
    assert got[0].data == b"\x5a" * (2 * BS) + bytes(2 * BS)
    assert got[0].data_len == 2 * BS and got[0].residual == 2 * BS


def test_medium_short_or_long_data_is_normalised(disk: ScsiDisk, medium: DeferringMedium) -> None:
    _, got = pending(disk, cdb.read(0, 2), 3 * BS)
    medium.parked.pop()[1].resolve(ScsiResponse(Status.GOOD, b"\x01" * 10))
    assert got[0].data == b"\x01" * 10 + bytes(3 * BS - 10)
    _, got = pending(disk, cdb.read(0, 1), 2 * BS)
    medium.parked.pop()[1].resolve(ScsiResponse(Status.GOOD, b"\x02" * (3 * BS)))
    assert got[0].data == b"\x02" * BS + bytes(BS)  # never more than the blocks asked for


def test_medium_check_condition_passes_through(disk: ScsiDisk, medium: DeferringMedium) -> None:
    _, got = pending(disk, cdb.read(0, 1), BS)
    s = sense(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
    medium.parked.pop()[1].resolve(ScsiResponse(Status.CHECK_CONDITION, b"\xff" * BS, s))
    assert got[0] == ScsiResponse(Status.CHECK_CONDITION, bytes(BS), s)  # medium's data not leaked
    assert disk.pending_sense == s


def test_medium_busy_passes_through(disk: ScsiDisk, medium: DeferringMedium) -> None:
    _, got = pending(disk, cdb.read(0, 1), BS)
    medium.parked.pop()[1].resolve(ScsiResponse(Status.BUSY))
    assert got[0] == ScsiResponse(Status.BUSY, bytes(BS))


def test_garbage_resolution_is_internal_failure(disk: ScsiDisk, medium: DeferringMedium) -> None:
    _, got = pending(disk, cdb.read(0, 1), BS)
    medium.parked.pop()[1].resolve("nonsense")  # type: ignore[arg-type]
    sd = SenseData.parse(got[0].sense)
    assert (sd.key, sd.asc) == (0x04, 0x44) and got[0].data == bytes(BS)


def test_deferred_write_and_flush(disk: ScsiDisk, medium: DeferringMedium) -> None:
    _, got_w = pending(disk, cdb.write(2, 1, fua=True), 0, b"\x33" * BS)
    _, got_f = pending(disk, cdb.synchronize_cache())
    assert medium.buf[2 * BS : 3 * BS] == bytes(BS)  # not yet
    medium.complete_next()
    assert got_w == [ScsiResponse(Status.GOOD)] and medium.buf[2 * BS : 3 * BS] == b"\x33" * BS
    assert medium.parked[0][0].fua is False and got_f == []
    medium.complete_next()
    assert got_f == [ScsiResponse(Status.GOOD)]


def test_out_of_order_completion(disk: ScsiDisk, medium: DeferringMedium) -> None:
    medium.buf[0:BS] = b"\x01" * BS
    medium.buf[BS : 2 * BS] = b"\x02" * BS
    _, a = pending(disk, cdb.read(0, 1), BS)
    _, b = pending(disk, cdb.read(1, 1), BS)
    req_b, p_b, _ = medium.parked.pop(1)
    p_b.resolve(ScsiResponse(Status.GOOD, bytes(medium.buf[BS : 2 * BS])))
    assert a == [] and b[0].data == b"\x02" * BS
    medium.complete_next()
    assert a[0].data == b"\x01" * BS


def test_deferred_verify_miscompare(disk: ScsiDisk, medium: DeferringMedium) -> None:
    medium.buf[0 : 2 * BS] = b"\x44" * (2 * BS)
    out = bytearray(b"\x44" * (2 * BS))
    out[700] = 0
    _, got = pending(disk, cdb.verify(0, 2), 0, bytes(out))
    assert medium.parked[0][0].kind is IoKind.VERIFY
    medium.complete_next()
    sd = SenseData.parse(got[0].sense)
    assert (sd.key, sd.asc, sd.information) == (0x0E, 0x1D, 700)


def test_immed_flush_answers_before_the_medium(disk: ScsiDisk, medium: DeferringMedium) -> None:
    r = disk.execute(ScsiCommand(cdb.synchronize_cache(immed=True)))
    assert r == ScsiResponse(Status.GOOD)
    # a later failure can only be logged: nobody is waiting for it any more
    medium.parked.pop()[1].resolve(ScsiResponse(Status.CHECK_CONDITION, sense=sense(3, 0x0C, 0)))


class AlreadyDone(MemoryMedium):
    def read(self, req: IoRequest) -> Pending:  # type: ignore[override]
        p = Pending(req.command)
        p.resolve(ScsiResponse(Status.GOOD, b"\x07" * BS))
        return p


def test_pending_resolved_before_return_gives_plain_response() -> None:
    r = ScsiDisk(AlreadyDone(4, BS)).execute(ScsiCommand(cdb.read(0, 1), b"", 2 * BS))
    assert r == ScsiResponse(Status.GOOD, b"\x07" * BS + bytes(BS))


class Raising(MemoryMedium):
    def read(self, req: IoRequest) -> bytes:
        raise MediumError(SenseKey.MEDIUM_ERROR, 0x11, 0x04)


def test_medium_error_becomes_check_condition() -> None:
    r = ScsiDisk(Raising(4, BS)).execute(ScsiCommand(cdb.read(0, 1), b"", BS))
    assert isinstance(r, ScsiResponse) and r.data == bytes(BS)
    assert SenseData.parse(r.sense) == SenseData(3, 0x11, 0x04)


def test_abort_is_forwarded_to_the_medium(disk: ScsiDisk, medium: DeferringMedium) -> None:
    p, got = pending(disk, cdb.read(0, 1), BS)
    disk.abort(p.command)
    assert medium.aborted == [p.command]
    medium.complete_next()  # a late resolution after abort is harmless
    assert len(got) == 1
    ScsiDisk(MemoryMedium(4)).abort(p.command)  # media without the hook: no-op
