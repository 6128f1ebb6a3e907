"""READ/WRITE(6/10/12/16), VERIFY(10/12/16), SYNCHRONIZE CACHE(10/16) against MemoryMedium:
round trips, range and field checks (the libiscsi Read/Write/Verify suites' cases), data-in sizing."""

import pytest

from edifd.scsi import (
    IoKind,
    IoRequest,
    MemoryMedium,
    ScsiCommand,
    ScsiDisk,
    ScsiResponse,
    SenseData,
    Status,
    cdb,
)

N = 1000  # blocks


def run(disk: ScsiDisk, c: bytes, data_in_len: int = 0, data_out: bytes = b"") -> ScsiResponse:
    r = disk.execute(ScsiCommand(c, data_out, data_in_len))
    assert isinstance(r, ScsiResponse)
    assert len(r.data) == data_in_len
    return r


def sense_of(r: ScsiResponse) -> tuple[int, int, int]:
    assert r.status == Status.CHECK_CONDITION
    sd = SenseData.parse(r.sense)
    return sd.key, sd.asc, sd.ascq


OOB = (0x05, 0x21, 0x00)
INVALID = (0x05, 0x24, 0x00)


class RecordingMedium(MemoryMedium):
    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.calls: list[IoRequest] = []

    def read(self, req: IoRequest) -> bytes:
        self.calls.append(req)
        return super().read(req)

    def write(self, req: IoRequest, data: bytes) -> None:
        self.calls.append(req)
        super().write(req, data)

    def flush(self, req: IoRequest) -> None:
        self.calls.append(req)
        super().flush(req)


Rec = RecordingMedium


@pytest.fixture(params=[512, 4096])
def bs(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def medium(bs: int) -> RecordingMedium:
    return RecordingMedium(N, bs)


@pytest.fixture
def disk(medium: Rec) -> ScsiDisk:
    return ScsiDisk(medium)


def pattern(nblocks: int, bs: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(nblocks * bs))


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read_round_trip(disk: ScsiDisk, medium: Rec, bs: int, size: int) -> None:
    data = pattern(3, bs, size)
    assert run(disk, cdb.write(5, 3, size=size), 0, data).status == Status.GOOD
    assert medium.buf[5 * bs : 8 * bs] == data
    r = run(disk, cdb.read(5, 3, size=size), 3 * bs)
    assert r.status == Status.GOOD and r.data == data
    assert [c.kind for c in medium.calls] == [IoKind.WRITE, IoKind.READ]
    assert all((c.lba, c.nblocks) == (5, 3) for c in medium.calls)


def test_six_byte_transfer_length_zero_means_256(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    r = run(disk, bytes([0x08, 0, 0, 0, 0, 0]), 256 * bs)
    assert r.status == Status.GOOD and medium.calls[-1].nblocks == 256


class HugeMedium(RecordingMedium):
    """Claims far more blocks than it stores; reads return zeros (no 1 GiB buffer in a unit test)."""

    @property
    def num_blocks(self) -> int:
        return (1 << 21) + 4

    def read(self, req: IoRequest) -> bytes:
        self.calls.append(req)
        return bytes(req.nblocks * self.block_size)


def test_read6_21_bit_lba() -> None:
    m = HugeMedium(1, 512)
    d = ScsiDisk(m)
    assert run(d, bytes([0x08, 0x1F, 0xFF, 0xFF, 1, 0]), 512).status == Status.GOOD
    assert m.calls[-1].lba == (1 << 21) - 1
    assert sense_of(run(d, bytes([0x08, 0x20, 0, 0, 1, 0]), 512)) == INVALID  # bits 7-5 reserved


@pytest.mark.parametrize("size", [10, 16])
def test_last_blocks_readable_and_one_past_is_oob(disk: ScsiDisk, bs: int, size: int) -> None:
    for n in (1, 2, 255):
        assert run(disk, cdb.read(N - n, n, size=size), n * bs).status == Status.GOOD
        assert sense_of(run(disk, cdb.read(N + 1 - n, n, size=size), n * bs)) == OOB
    for n in (2, 200):
        assert sense_of(run(disk, cdb.read(N - 1, n, size=size), n * bs)) == OOB


@pytest.mark.parametrize("kind", ["read", "write", "verify"])
@pytest.mark.parametrize("size", [10, 12, 16])
def test_zero_blocks(disk: ScsiDisk, medium: Rec, kind: str, size: int) -> None:
    build = getattr(cdb, kind)
    assert run(disk, build(0, 0, size=size)).status == Status.GOOD
    for lba in (N + 1, 0x80000000, 0xFFFFFFFF) + ((1 << 63, (1 << 64) - 1) if size == 16 else ()):
        assert sense_of(run(disk, build(lba, 0, size=size))) == OOB
    assert medium.calls == []  # zero blocks never reach the medium


@pytest.mark.parametrize("kind", ["read", "write", "verify"])
def test_huge_lbas_are_oob_not_overflow(disk: ScsiDisk, bs: int, kind: str) -> None:
    build = getattr(cdb, kind)
    for lba in ((1 << 64) - 1, 1 << 63, 1 << (64 - bs.bit_length() + 1)):
        r = run(disk, build(lba, 1, size=16), bs if kind == "read" else 0, bytes(bs))
        assert sense_of(r) == OOB


@pytest.mark.parametrize("op", [0x28, 0x2A, 0x2F, 0xA8, 0xAA, 0xAF, 0x88, 0x8A, 0x8F])
@pytest.mark.parametrize("prot", range(1, 8))
def test_protection_fields_are_invalid(disk: ScsiDisk, bs: int, op: int, prot: int) -> None:
    length = {0x28: 10, 0x2A: 10, 0x2F: 10, 0xA8: 12, 0xAA: 12, 0xAF: 12}.get(op, 16)
    c = bytearray(length)
    c[0], c[1] = op, prot << 5
    c[-3 if length != 10 else 8] = 1  # one block (last byte of TRANSFER LENGTH)
    sd = SenseData.parse(run(disk, bytes(c), bs, bytes(bs)).sense)
    assert (sd.key, sd.asc) == (0x05, 0x24)
    assert sd.field_pointer == (1, prot.bit_length() + 4)  # highest set bit of the 3-bit field


@pytest.mark.parametrize("kind", ["read", "write"])
def test_dpo_fua_accepted_and_passed_to_medium(disk: ScsiDisk, medium: Rec, bs: int, kind: str) -> None:
    for dpo, fua in ((1, 0), (0, 1), (1, 1)):
        c = getattr(cdb, kind)(0, 1, dpo=bool(dpo), fua=bool(fua))
        r = run(disk, c, bs if kind == "read" else 0, bytes(bs))
        assert r.status == Status.GOOD
        assert (medium.calls[-1].dpo, medium.calls[-1].fua) == (bool(dpo), bool(fua))


def test_medium_sees_the_command(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    c = ScsiCommand(cdb.read(7, 1), b"", bs, tag=99)
    disk.execute(c)
    assert medium.calls[-1].command is c


def test_max_transfer_length_enforced(bs: int) -> None:
    m = RecordingMedium(10000, bs)
    d = ScsiDisk(m, max_transfer_bytes=64 * 1024)
    n = 64 * 1024 // bs
    assert run(d, cdb.read(0, n), n * bs).status == Status.GOOD
    sd = SenseData.parse(run(d, cdb.read(0, n + 1), (n + 1) * bs).sense)
    assert (sd.key, sd.asc, sd.field_pointer) == (5, 0x24, (7, None))
    sd = SenseData.parse(run(d, cdb.write(0, n + 1, size=16), 0, bytes((n + 1) * bs)).sense)
    assert sd.field_pointer == (10, None)


# --- data-in sizing ----------------------------------------------------------------------------------


def test_read_into_smaller_buffer_truncates(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    medium.buf[: 4 * bs] = pattern(4, bs)
    r = run(disk, cdb.read(0, 4), bs + 3)
    assert r.status == Status.GOOD and r.data == pattern(4, bs)[: bs + 3]


def test_read_into_larger_buffer_zero_fills(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    medium.buf[: 2 * bs] = b"\xee" * (2 * bs)
    r = run(disk, cdb.read(0, 2), 5 * bs)
    assert r.data == b"\xee" * (2 * bs) + bytes(3 * bs)


def test_errors_zero_fill_the_buffer(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    medium.buf[:] = b"\xff" * len(medium.buf)
    r = run(disk, cdb.read(N, 1), bs)
    assert r.status == Status.CHECK_CONDITION and r.data == bytes(bs)


# --- WRITE data-out checks ---------------------------------------------------------------------------


def test_short_data_out_is_rejected_and_changes_nothing(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    before = bytes(medium.buf)
    sd = SenseData.parse(run(disk, cdb.write(0, 2), 0, bytes(2 * bs - 1)).sense)
    assert (sd.key, sd.asc, sd.field_pointer) == (5, 0x24, (7, None))
    assert bytes(medium.buf) == before and medium.calls == []


def test_extra_data_out_is_ignored(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    assert run(disk, cdb.write(1, 1), 0, b"\x11" * bs + b"\x22" * bs).status == Status.GOOD
    assert medium.buf[bs : 2 * bs] == b"\x11" * bs and medium.buf[2 * bs : 3 * bs] == bytes(bs)


def test_write_out_of_range_changes_nothing(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    assert sense_of(run(disk, cdb.write(N - 1, 2), 0, b"\x01" * 2 * bs)) == OOB
    assert medium.buf == bytearray(N * bs)


# --- VERIFY -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 12, 16])
def test_verify_bytchk1_match_and_miscompare(disk: ScsiDisk, medium: Rec, bs: int, size: int) -> None:
    data = pattern(3, bs)
    medium.buf[10 * bs : 13 * bs] = data
    assert run(disk, cdb.verify(10, 3, size=size), 0, data).status == Status.GOOD
    for off in (0, bs - 1, 2 * bs + 17):
        bad = bytearray(data)
        bad[off] ^= ord("X")
        r = run(disk, cdb.verify(10, 3, size=size), 0, bytes(bad))
        sd = SenseData.parse(r.sense)
        assert (sd.key, sd.asc, sd.ascq, sd.information) == (0x0E, 0x1D, 0x00, off)


def test_verify_bytchk0_checks_range_only(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    assert run(disk, cdb.verify(0, 8, bytchk=0)).status == Status.GOOD
    assert sense_of(run(disk, cdb.verify(N - 1, 2, bytchk=0))) == OOB
    assert medium.calls == []


def test_verify_bytchk3_compares_one_block_against_each(disk: ScsiDisk, medium: Rec, bs: int) -> None:
    block = pattern(1, bs, 9)
    medium.buf[0 : 4 * bs] = block * 4
    assert run(disk, cdb.verify(0, 4, bytchk=3), 0, block).status == Status.GOOD
    medium.buf[3 * bs + 5] ^= 1
    sd = SenseData.parse(run(disk, cdb.verify(0, 4, bytchk=3), 0, block).sense)
    assert (sd.key, sd.information) == (0x0E, 5)


def test_verify_bytchk2_and_short_data_out_invalid(disk: ScsiDisk, bs: int) -> None:
    assert SenseData.parse(run(disk, cdb.verify(0, 1, bytchk=2), 0, bytes(bs)).sense).field_pointer == (1, 2)
    assert sense_of(run(disk, cdb.verify(0, 2, bytchk=1), 0, bytes(bs))) == INVALID


def test_verify_dpo_accepted(disk: ScsiDisk, bs: int) -> None:
    assert run(disk, cdb.verify(0, 1, dpo=True), 0, bytes(bs)).status == Status.GOOD


# --- SYNCHRONIZE CACHE ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 16])
def test_synchronize_cache(disk: ScsiDisk, medium: Rec, size: int) -> None:
    assert run(disk, cdb.synchronize_cache(size=size)).status == Status.GOOD
    assert run(disk, cdb.synchronize_cache(10, 5, size=size, immed=True)).status == Status.GOOD
    assert medium.flushes == 2
    assert [(c.kind, c.lba, c.nblocks) for c in medium.calls] == [(IoKind.FLUSH, 0, 0), (IoKind.FLUSH, 10, 5)]
    assert sense_of(run(disk, cdb.synchronize_cache(N, 0, size=size))) == OOB
    assert sense_of(run(disk, cdb.synchronize_cache(N - 1, 2, size=size))) == OOB
    assert medium.flushes == 2
