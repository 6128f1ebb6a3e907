"""REPORT SUPPORTED OPERATION CODES and the command table behind it: what we report is exactly what
we accept (every bit outside a usage map is rejected with a field pointer to that bit)."""

import struct

import pytest

from edifd.scsi import MemoryMedium, ScsiCommand, ScsiDisk, ScsiResponse, SenseData, Status, cdb
from edifd.scsi.commands import SPECS, CommandSpec

ALL = 65535


@pytest.fixture
def disk() -> ScsiDisk:
    return ScsiDisk(MemoryMedium(64))


def run(disk: ScsiDisk, c: bytes, dil: int = ALL, out: bytes = b"") -> ScsiResponse:
    r = disk.execute(ScsiCommand(c, out, dil))
    assert isinstance(r, ScsiResponse) and len(r.data) == dil
    return r


def descriptors(data: bytes, rctd: bool) -> list[tuple[int, int, int, int]]:
    n = struct.unpack_from(">I", data)[0]
    step = 20 if rctd else 8
    assert n % step == 0
    out = []
    for off in range(4, 4 + n, step):
        op, _, sa, _, flags, length = struct.unpack_from(">BBHBBH", data, off)
        out.append((op, sa, flags, length))
        if rctd:
            assert data[off + 8 : off + 10] == b"\x00\x0a"
    assert data[4 + n :] == bytes(len(data) - 4 - n)
    return out


def test_all_commands_listed(disk: ScsiDisk) -> None:
    ds = descriptors(run(disk, cdb.report_supported_opcodes()).data, rctd=False)
    assert [(op, sa) for op, sa, _, _ in ds] == [(s.opcode, s.service_action or 0) for s in SPECS]
    for (_, sa, flags, length), spec in zip(ds, SPECS, strict=True):
        assert flags & 0x02 == 0  # CTDP clear without RCTD
        assert bool(flags & 0x01) == (spec.service_action is not None)
        assert not (sa and not flags & 0x01)  # libiscsi ServiceActionValid
        assert length == spec.cdb_length
    ops = {op for op, *_ in ds}
    for must in (0x00, 0x03, 0x12, 0x1A, 0x25, 0x28, 0x2A, 0x35, 0x88, 0x8A, 0x9E, 0xA0, 0xA3):
        assert must in ops


def test_rctd_adds_timeout_descriptors(disk: ScsiDisk) -> None:
    ds = descriptors(run(disk, cdb.report_supported_opcodes(rctd=True)).data, rctd=True)
    assert ds and all(flags & 0x02 for _, _, flags, _ in ds)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_one_command_query_matches_table(disk: ScsiDisk, spec: CommandSpec) -> None:
    option = 2 if spec.service_action is not None else 1
    c = cdb.report_supported_opcodes(option=option, opcode=spec.opcode, sa=spec.service_action or 0)
    d = run(disk, c).data
    assert d[1] & 0x07 == 0b011  # supported, conforming to the standard
    n = struct.unpack_from(">H", d, 2)[0]
    assert n == spec.cdb_length
    usage = d[4 : 4 + n]
    assert usage[0] == spec.opcode
    if spec.service_action is not None:
        assert usage[1] & 0x1F == spec.service_action
    # the wrong option for this opcode is an error
    wrong = cdb.report_supported_opcodes(option=3 - option, opcode=spec.opcode, sa=spec.service_action or 0)
    assert SenseData.parse(run(disk, wrong).sense).asc == 0x24
    # option 3 works either way
    either = cdb.report_supported_opcodes(option=3, opcode=spec.opcode, sa=spec.service_action or 0)
    assert run(disk, either).data == d


def test_dpo_fua_in_usage_data(disk: ScsiDisk) -> None:
    for op in (0x28, 0x2A, 0x88, 0x8A):
        d = run(disk, cdb.report_supported_opcodes(option=1, opcode=op)).data
        assert d[5] & 0x18 == 0x18
    d = run(disk, cdb.report_supported_opcodes(option=1, opcode=0x2F)).data
    assert d[5] & 0x10 == 0x10  # libiscsi Verify10.Dpo


def test_unsupported_opcode_reports_not_supported(disk: ScsiDisk) -> None:
    d = run(disk, cdb.report_supported_opcodes(option=1, opcode=0x41), 64).data
    assert d[:4] == b"\x00\x01\x00\x00" and d[4:] == bytes(60)
    d = run(disk, cdb.report_supported_opcodes(option=2, opcode=0x9E, sa=0x11), 64).data
    assert d[1] & 7 == 1


def test_one_command_with_rctd(disk: ScsiDisk) -> None:
    d = run(disk, cdb.report_supported_opcodes(option=1, opcode=0x28, rctd=True)).data
    assert d[1] & 0x80
    assert d[14:16] == b"\x00\x0a"


@pytest.mark.parametrize("option", [4, 5, 6, 7])
def test_bad_reporting_option(disk: ScsiDisk, option: int) -> None:
    sd = SenseData.parse(run(disk, cdb.report_supported_opcodes(option=option)).sense)
    assert (sd.key, sd.asc, sd.field_pointer) == (5, 0x24, (2, 2))


def test_allocation_length_truncates(disk: ScsiDisk) -> None:
    full = run(disk, cdb.report_supported_opcodes()).data
    d = run(disk, cdb.report_supported_opcodes(alloc=10), 100).data
    assert d == full[:10] + bytes(90)


def base_cdb(spec: CommandSpec) -> bytes:
    """A valid CDB for the spec with every optional field zero (SA filled in)."""
    c = bytearray(spec.cdb_length)
    c[0] = spec.opcode
    if spec.service_action is not None:
        c[1] = spec.service_action
    return bytes(c)


def reserved_bits(spec: CommandSpec) -> list[tuple[int, int]]:
    usage = spec.usage_map()
    ignored = spec.ignored.ljust(spec.cdb_length - 1, b"\x00") + b"\xc0"
    out = []
    for i in range(1, spec.cdb_length):
        for bit in range(8):
            m = 1 << bit
            if not (usage[i] | ignored[i]) & m:
                out.append((i, bit))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_reserved_bit_is_rejected_with_its_pointer(disk: ScsiDisk, spec: CommandSpec) -> None:
    bits = reserved_bits(spec)
    assert bits  # every command has reserved bits (at least in CONTROL)
    for i, bit in bits:
        c = bytearray(base_cdb(spec))
        c[i] |= 1 << bit
        r = run(disk, bytes(c), 512, bytes(4096))
        assert r.status == Status.CHECK_CONDITION, (spec.name, i, bit)
        sd = SenseData.parse(r.sense)
        assert (sd.key, sd.asc, sd.ascq) == (5, 0x24, 0)
        assert sd.field_pointer == (i, bit)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.ignored], ids=lambda s: s.name)
def test_ignored_bits_are_accepted(disk: ScsiDisk, spec: CommandSpec) -> None:
    c = bytearray(base_cdb(spec))
    for i, m in enumerate(spec.ignored):
        c[i] |= m
    c[-1] |= 0xC0
    r = run(disk, bytes(c), 512)
    assert r.status == Status.GOOD
