"""CDB builders for the commands ScsiDisk implements (initiator side: tests, the FCP initiator,
tools). Each returns the exact CDB bytes with a zero CONTROL byte; out-of-range fields raise
ValueError rather than silently wrapping.
"""

from __future__ import annotations

import struct

from .commands import Opcode, ServiceAction


def _pack(fmt: str, *values: int) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error as e:
        raise ValueError(f"CDB field out of range: {e}") from None


def tur() -> bytes:
    """TEST UNIT READY (not named test_* so that pytest never collects it)."""
    return bytes(6)


def request_sense(alloc: int = 18, *, desc: bool = False) -> bytes:
    return _pack(">BBHBB", Opcode.REQUEST_SENSE, int(desc), 0, alloc, 0)


def inquiry(alloc: int = 96, *, evpd: bool = False, page: int = 0) -> bytes:
    return _pack(">BBBHB", Opcode.INQUIRY, int(evpd), page, alloc, 0)


def mode_sense6(
    page: int = 0x3F, alloc: int = 255, *, pc: int = 0, subpage: int = 0, dbd: bool = False
) -> bytes:
    return _pack(">BBBBBB", Opcode.MODE_SENSE_6, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0)


def mode_sense10(
    page: int = 0x3F,
    alloc: int = 512,
    *,
    pc: int = 0,
    subpage: int = 0,
    dbd: bool = False,
    llbaa: bool = False,
) -> bytes:
    b1 = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return _pack(">BBBBBBBHB", Opcode.MODE_SENSE_10, b1, (pc << 6) | page, subpage, 0, 0, 0, alloc, 0)


def start_stop_unit(*, start: bool = True, loej: bool = False, immed: bool = False, power: int = 0) -> bytes:
    b4 = (power << 4) | (0x02 if loej else 0) | (0x01 if start else 0)
    return _pack(">BBBBBB", Opcode.START_STOP_UNIT, int(immed), 0, 0, b4, 0)


def read_capacity10() -> bytes:
    return bytes([Opcode.READ_CAPACITY_10]) + bytes(9)


def read_capacity16(alloc: int = 32) -> bytes:
    return _pack(">BBQIBB", Opcode.SERVICE_ACTION_IN_16, ServiceAction.READ_CAPACITY_16, 0, alloc, 0, 0)


def report_luns(alloc: int = 4096, *, select: int = 0) -> bytes:
    return _pack(">BBBBBBIBB", Opcode.REPORT_LUNS, 0, select, 0, 0, 0, alloc, 0, 0)


def report_supported_opcodes(
    alloc: int = 65535, *, option: int = 0, opcode: int = 0, sa: int = 0, rctd: bool = False
) -> bytes:
    return _pack(
        ">BBBBHIBB",
        Opcode.MAINTENANCE_IN,
        ServiceAction.REPORT_SUPPORTED_OPERATION_CODES,
        (0x80 if rctd else 0) | option,
        opcode,
        sa,
        alloc,
        0,
        0,
    )


_RW = {
    ("read", 10): Opcode.READ_10,
    ("read", 12): Opcode.READ_12,
    ("read", 16): Opcode.READ_16,
    ("write", 10): Opcode.WRITE_10,
    ("write", 12): Opcode.WRITE_12,
    ("write", 16): Opcode.WRITE_16,
    ("verify", 10): Opcode.VERIFY_10,
    ("verify", 12): Opcode.VERIFY_12,
    ("verify", 16): Opcode.VERIFY_16,
    ("sync", 10): Opcode.SYNCHRONIZE_CACHE_10,
    ("sync", 16): Opcode.SYNCHRONIZE_CACHE_16,
}


def _io(kind: str, size: int, lba: int, nblocks: int, byte1: int) -> bytes:
    if size == 6:
        if kind not in ("read", "write"):
            raise ValueError(f"no 6-byte {kind} CDB")
        if not 0 <= lba < 1 << 21 or not 1 <= nblocks <= 256:
            raise ValueError("READ/WRITE(6): LBA < 2^21 and 1..256 blocks")
        op = Opcode.READ_6 if kind == "read" else Opcode.WRITE_6
        return _pack(">BBHBB", op, lba >> 16, lba & 0xFFFF, nblocks & 0xFF, 0)
    op = _RW.get((kind, size))
    if op is None:
        raise ValueError(f"no {size}-byte {kind} CDB")
    if size == 10:
        return _pack(">BBIBHB", op, byte1, lba, 0, nblocks, 0)
    if size == 12:
        return _pack(">BBIIBB", op, byte1, lba, nblocks, 0, 0)
    return _pack(">BBQIBB", op, byte1, lba, nblocks, 0, 0)


def read(lba: int, nblocks: int, *, size: int = 10, fua: bool = False, dpo: bool = False) -> bytes:
    return _io("read", size, lba, nblocks, (0x08 if fua else 0) | (0x10 if dpo else 0))


def write(lba: int, nblocks: int, *, size: int = 10, fua: bool = False, dpo: bool = False) -> bytes:
    return _io("write", size, lba, nblocks, (0x08 if fua else 0) | (0x10 if dpo else 0))


def verify(lba: int, nblocks: int, *, size: int = 10, bytchk: int = 1, dpo: bool = False) -> bytes:
    return _io("verify", size, lba, nblocks, (bytchk << 1) | (0x10 if dpo else 0))


def synchronize_cache(lba: int = 0, nblocks: int = 0, *, size: int = 10, immed: bool = False) -> bytes:
    return _io("sync", size, lba, nblocks, 0x02 if immed else 0)
