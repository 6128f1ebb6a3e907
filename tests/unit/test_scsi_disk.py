"""Non-I/O commands through ScsiDisk: TEST UNIT READY, REQUEST SENSE, READ CAPACITY, MODE SENSE,
START STOP UNIT, REPORT LUNS, unknown opcodes, garbage CDBs and medium bugs."""

import logging
import struct

import pytest

from edifd.scsi import (
    Identity,
    MemoryMedium,
    ScsiCommand,
    ScsiDisk,
    ScsiResponse,
    SenseData,
    Status,
    cdb,
    sense,
)

ILLEGAL = 0x05


def run(disk: ScsiDisk, c: bytes, data_in_len: int = 0, data_out: bytes = b"") -> ScsiResponse:
    r = disk.execute(ScsiCommand(c, data_out, data_in_len))
    assert isinstance(r, ScsiResponse)
    assert len(r.data) == data_in_len
    if r.status == Status.CHECK_CONDITION:
        assert len(r.sense) == 18 and r.data == bytes(data_in_len)
    else:
        assert r.sense == b""
    return r


def good(disk: ScsiDisk, c: bytes, data_in_len: int = 512) -> bytes:
    r = run(disk, c, data_in_len)
    assert r.status == Status.GOOD, SenseData.parse(r.sense)
    return r.data


def check(disk: ScsiDisk, c: bytes, data_in_len: int = 64, data_out: bytes = b"") -> SenseData:
    r = run(disk, c, data_in_len, data_out)
    assert r.status == Status.CHECK_CONDITION
    return SenseData.parse(r.sense)


@pytest.fixture
def disk() -> ScsiDisk:
    return ScsiDisk(MemoryMedium(2048), Identity(serial="d0"))


def test_test_unit_ready(disk: ScsiDisk) -> None:
    assert run(disk, cdb.tur()).status == Status.GOOD


# --- unknown and malformed CDBs ---------------------------------------------------------------------


@pytest.mark.parametrize("op", [0x01, 0x04, 0x15, 0x1E, 0x41, 0x42, 0x55, 0x7F, 0x83, 0x89, 0x93, 0xB5, 0xFF])
def test_unknown_opcode_is_05_20_00(disk: ScsiDisk, op: int) -> None:
    sd = check(disk, bytes([op]) + bytes(15))
    assert (sd.key, sd.asc, sd.ascq) == (ILLEGAL, 0x20, 0x00)


def test_empty_cdb_is_invalid_opcode(disk: ScsiDisk) -> None:
    sd = check(disk, b"", 100)
    assert (sd.key, sd.asc) == (ILLEGAL, 0x20)


@pytest.mark.parametrize("c", [b"\x28", b"\x28\x00\x00", b"\x12\x00\x00\x00", b"\x88" + bytes(10), b"\x9e"])
def test_short_cdb_is_invalid_field(disk: ScsiDisk, c: bytes) -> None:
    sd = check(disk, c, 32)
    assert (sd.key, sd.asc) == (ILLEGAL, 0x24)


def test_fcp_padded_cdb_is_accepted(disk: ScsiDisk) -> None:
    # FCP_CMND always carries 16 CDB bytes; a 6-byte INQUIRY arrives zero-padded.
    assert good(disk, cdb.inquiry(96) + bytes(10), 96)[8:12] == b"EDIF"


def test_unsupported_service_action_is_invalid_field(disk: ScsiDisk) -> None:
    sd = check(disk, bytes([0x9E, 0x11]) + bytes(14))
    assert (sd.key, sd.asc, sd.field_pointer) == (ILLEGAL, 0x24, (1, 4))


def test_naca_and_link_are_rejected(disk: ScsiDisk) -> None:
    assert check(disk, bytes(5) + b"\x04").field_pointer == (5, 2)
    assert check(disk, bytes(5) + b"\x01").field_pointer == (5, 0)
    assert run(disk, bytes(5) + b"\xc0").status == Status.GOOD  # vendor-specific bits ignored


# --- REQUEST SENSE ----------------------------------------------------------------------------------


def test_request_sense_without_error_is_no_sense(disk: ScsiDisk) -> None:
    assert good(disk, cdb.request_sense(18), 18) == sense(0, 0, 0)


def test_request_sense_returns_last_check_condition_once(disk: ScsiDisk) -> None:
    r = run(disk, cdb.read(5000, 1), 512)
    assert good(disk, cdb.request_sense(252), 252)[:18] == r.sense
    assert good(disk, cdb.request_sense(18), 18) == sense(0, 0, 0)


def test_request_sense_allocation_length(disk: ScsiDisk) -> None:
    check(disk, bytes([0x77]) + bytes(5))
    d = good(disk, cdb.request_sense(8), 32)
    assert d[:8] == sense(5, 0x20, 0, field_pointer=(0, 7))[:8] and d[8:] == bytes(24)


def test_request_sense_desc_is_invalid_field(disk: ScsiDisk) -> None:
    assert check(disk, cdb.request_sense(18, desc=True), 18).field_pointer == (1, 0)


# --- READ CAPACITY ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bs", [512, 4096])
def test_read_capacity_10_and_16(bs: int) -> None:
    d = ScsiDisk(MemoryMedium(1000, bs))
    assert good(d, cdb.read_capacity10(), 8) == struct.pack(">II", 999, bs)
    rc16 = good(d, cdb.read_capacity16(32), 32)
    assert struct.unpack_from(">QI", rc16) == (999, bs)
    assert rc16[12:] == bytes(20)  # no protection, LBPPBE 0, LBPME/LBPRZ 0


class BigMedium(MemoryMedium):
    @property
    def num_blocks(self) -> int:
        return (1 << 32) + 10


def test_read_capacity_10_saturates_for_huge_media() -> None:
    d = ScsiDisk(BigMedium(1))
    assert good(d, cdb.read_capacity10(), 8)[:4] == b"\xff\xff\xff\xff"
    assert struct.unpack_from(">Q", good(d, cdb.read_capacity16(32), 32))[0] == (1 << 32) + 9
    ms = good(d, cdb.mode_sense6(0x08), 255)
    assert ms[4:8] == b"\xff\xff\xff\xff"  # short block descriptor saturates too


@pytest.mark.parametrize("alloc", range(0, 34))
def test_read_capacity_16_allocation_length(disk: ScsiDisk, alloc: int) -> None:
    full = good(disk, cdb.read_capacity16(32), 32)
    d = good(disk, cdb.read_capacity16(alloc), 40)
    k = min(alloc, 32)
    assert d[:k] == full[:k] and d[k:] == bytes(40 - k)


def test_read_capacity_10_obsolete_fields_must_be_zero(disk: ScsiDisk) -> None:
    assert check(disk, bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]), 8).field_pointer == (5, 0)
    assert check(disk, bytes([0x25, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 8).field_pointer == (8, 0)  # PMI
    assert check(disk, bytes([0x25, 1, 0, 0, 0, 0, 0, 0, 0, 0]), 8).field_pointer == (1, 0)  # RELADR


# --- MODE SENSE -------------------------------------------------------------------------------------


def pages_of(body: bytes) -> dict[int, bytes]:
    out, off = {}, 0
    while off < len(body):
        code, n = body[off] & 0x3F, body[off + 1]
        out[code] = body[off : off + 2 + n]
        off += 2 + n
    assert off == len(body)
    return out


def mode6(disk: ScsiDisk, page: int = 0x3F, **kw: object) -> tuple[bytes, bytes, dict[int, bytes]]:
    d = good(disk, cdb.mode_sense6(page, 255, **kw), 255)
    n = d[0] + 1
    assert d[n:] == bytes(255 - n)
    bdl = d[3]
    return d[:4], d[4 : 4 + bdl], pages_of(d[4 + bdl : n])


def test_mode_sense6_all_pages(disk: ScsiDisk) -> None:
    head, bd, pages = mode6(disk)
    assert head[0] >= 3 and head[2] == 0x10  # DPOFUA, not write protected
    assert bd == struct.pack(">II", 2048, 512)
    assert sorted(pages) == [0x08, 0x0A]
    assert list(pages) == [0x08, 0x0A]  # ascending order
    assert len(pages[0x08]) == 20 and len(pages[0x0A]) == 12


def test_control_page_same_alone_and_in_all(disk: ScsiDisk) -> None:
    _, _, allp = mode6(disk)
    _, _, ctl = mode6(disk, 0x0A)
    assert ctl == {0x0A: allp[0x0A]}
    c = ctl[0x0A]
    assert c[2] & 0xE0 == 0 and c[2] & 0x04 == 0  # TST 0, D_SENSE 0 (fixed sense)
    assert c[3] >> 4 in (0, 1) and (c[3] >> 1) & 3 != 2  # valid QAM, QERR
    assert (c[4] >> 4) & 3 != 1  # UA_INTLCK_CTRL
    assert c[8:10] == b"\xff\xff"


def test_caching_page_wce_follows_medium_and_option() -> None:
    assert mode6(ScsiDisk(MemoryMedium(8)), 0x08)[2][0x08][2] & 0x04 == 0
    assert mode6(ScsiDisk(MemoryMedium(8), write_cache=True), 0x08)[2][0x08][2] & 0x04 == 0x04


def test_changeable_values_are_all_zero(disk: ScsiDisk) -> None:
    _, _, pages = mode6(disk, 0x0A, pc=1, dbd=True)
    assert pages[0x0A] == bytes([0x0A, 10]) + bytes(10)  # SWP not changeable: libiscsi skips SWP


def test_saved_values_not_supported(disk: ScsiDisk) -> None:
    sd = check(disk, cdb.mode_sense6(0x3F, 255, pc=3), 255)
    assert (sd.key, sd.asc, sd.ascq) == (ILLEGAL, 0x39, 0x00)


@pytest.mark.parametrize("page", [0x00, 0x01, 0x1C, 0x3E])
def test_unsupported_mode_page(disk: ScsiDisk, page: int) -> None:
    assert check(disk, cdb.mode_sense6(page), 255).field_pointer == (2, 5)


def test_subpages(disk: ScsiDisk) -> None:
    assert mode6(disk, 0x3F, subpage=0xFF)[2].keys() == {0x08, 0x0A}
    assert check(disk, cdb.mode_sense6(0x0A, subpage=1), 255).field_pointer == (3, None)


def test_mode_sense6_allocation_length_4(disk: ScsiDisk) -> None:
    full = good(disk, cdb.mode_sense6(0x3F, 255), 255)
    assert good(disk, cdb.mode_sense6(0x3F, 4), 255) == full[:4] + bytes(251)


def test_read_only_sets_wp_and_blocks_writes() -> None:
    d = ScsiDisk(MemoryMedium(8), read_only=True)
    assert mode6(d)[0][2] & 0x80
    sd = check(d, cdb.write(0, 1), 0, bytes(512))
    assert (sd.key, sd.asc, sd.ascq) == (0x07, 0x27, 0x00)


def test_mode_sense10_short_and_long_descriptors(disk: ScsiDisk) -> None:
    d = good(disk, cdb.mode_sense10(0x08, 512), 512)
    n = struct.unpack_from(">H", d)[0] + 2
    assert d[3] == 0x10 and d[4] & 1 == 0 and struct.unpack_from(">H", d, 6)[0] == 8
    assert d[8:16] == struct.pack(">II", 2048, 512)
    assert pages_of(d[16:n]).keys() == {0x08}
    d = good(disk, cdb.mode_sense10(0x08, 512, llbaa=True), 512)
    assert d[4] & 1 and struct.unpack_from(">H", d, 6)[0] == 16
    assert d[8:24] == struct.pack(">QII", 2048, 0, 512)
    d = good(disk, cdb.mode_sense10(0x08, 512, dbd=True), 512)
    assert struct.unpack_from(">H", d, 6)[0] == 0 and d[8] == 0x08


# --- START STOP UNIT --------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("immed", [True, False])
def test_start_stop_unit_accepted_and_unit_stays_ready(disk: ScsiDisk, start: bool, immed: bool) -> None:
    assert run(disk, cdb.start_stop_unit(start=start, immed=immed)).status == Status.GOOD
    assert run(disk, cdb.tur()).status == Status.GOOD
    assert run(disk, cdb.read(0, 1), 512).status == Status.GOOD


def test_start_stop_unit_rejects_loej_and_power_conditions(disk: ScsiDisk) -> None:
    assert check(disk, cdb.start_stop_unit(loej=True)).field_pointer == (4, 1)
    assert check(disk, cdb.start_stop_unit(power=1)).field_pointer == (4, 7)
    assert check(disk, bytes([0x1B, 0, 0, 1, 1, 0])).field_pointer == (3, 3)


# --- REPORT LUNS (if it reaches the disk) -----------------------------------------------------------


def test_report_luns_through_disk() -> None:
    d = ScsiDisk(MemoryMedium(8), luns=(0, 3))
    data = good(d, cdb.report_luns(4096), 64)
    assert data[:24] == struct.pack(">II", 16, 0) + bytes([0, 0]) + bytes(6) + bytes([0, 3]) + bytes(6)
    assert data[24:] == bytes(40)


# --- medium and internal bugs -----------------------------------------------------------------------


class BuggyMedium(MemoryMedium):
    def read(self, req):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("medium bug")


def test_medium_bug_is_internal_target_failure_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    d = ScsiDisk(BuggyMedium(8))
    with caplog.at_level(logging.DEBUG, logger="edifd.scsi.disk"):
        for _ in range(3):
            sd = check(d, cdb.read(0, 1), 512)
            assert (sd.key, sd.asc, sd.ascq) == (0x04, 0x44, 0x00)
    assert d.internal_errors == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "0x28" in errors[0].getMessage()


class WrongTypeMedium(MemoryMedium):
    def read(self, req):  # type: ignore[no-untyped-def]
        return 42


def test_medium_returning_wrong_type_is_internal_failure() -> None:
    sd = check(ScsiDisk(WrongTypeMedium(8)), cdb.read(0, 1), 512)
    assert (sd.key, sd.asc) == (0x04, 0x44)


@pytest.mark.parametrize(
    "cmd",
    [
        ScsiCommand(None, b"", 16),  # type: ignore[arg-type]
        ScsiCommand(b"\x12\x00\x00\x00\x60\x00", b"", None),  # type: ignore[arg-type]
        ScsiCommand(b"\x28" + bytes(9), None, 512),  # type: ignore[arg-type]
        ScsiCommand("text", b"", 8),  # type: ignore[arg-type]
    ],
)
def test_malformed_scsi_command_never_raises(disk: ScsiDisk, cmd: ScsiCommand) -> None:
    r = disk.execute(cmd)
    assert isinstance(r, ScsiResponse) and r.status in (Status.GOOD, Status.CHECK_CONDITION)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        ScsiDisk(MemoryMedium(8), max_transfer_bytes=1000)

    class Odd(MemoryMedium):
        block_size = 520  # type: ignore[assignment]

    with pytest.raises(ValueError):
        ScsiDisk(Odd(8))
    with pytest.raises(ValueError):
        MemoryMedium(0)
