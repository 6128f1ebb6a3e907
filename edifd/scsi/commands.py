"""The command set: opcodes, CDB usage maps, reserved-bit checks and REPORT SUPPORTED OPERATION CODES.

One table drives three things so they can never disagree: which CDB bits we look at (the usage map
that REPORT SUPPORTED OPERATION CODES returns, SPC-4 6.35), which bits must be zero (everything the
usage map and the `ignored` mask leave out: reserved, obsolete and unsupported fields such as
RDPROTECT), and the list of supported commands.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .sense import Asc, CheckCondition, SenseKey, invalid_field


class Opcode(enum.IntEnum):
    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    VERIFY_10 = 0x2F
    SYNCHRONIZE_CACHE_10 = 0x35
    MODE_SENSE_10 = 0x5A
    READ_16 = 0x88
    WRITE_16 = 0x8A
    VERIFY_16 = 0x8F
    SYNCHRONIZE_CACHE_16 = 0x91
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    VERIFY_12 = 0xAF


class ServiceAction(enum.IntEnum):
    READ_CAPACITY_16 = 0x10  # under SERVICE ACTION IN(16)
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C  # under MAINTENANCE IN


# Opcodes whose byte 1 holds a service action (SPC-4 4.2.5.1); REPORT SUPPORTED OPERATION CODES
# must know them even for the ones we do not implement.
SERVICE_ACTION_OPCODES = frozenset({0x5E, 0x5F, 0x7F, 0x83, 0x84, 0x8C, 0x8D, 0x9E, 0x9F, 0xA3, 0xA4})

# CONTROL byte: we evaluate NACA (bit 2) to reject it; vendor-specific bits 7-6 are ignored;
# LINK/FLAG (bits 1-0, obsolete) and bits 5-3 are reserved.
_CTL_USAGE = 0x04
_CTL_IGNORED = 0xC0


@dataclass(frozen=True)
class CommandSpec:
    """One supported command.

    usage: the CDB usage map without the CONTROL byte (byte 0 = opcode); length + 1 = CDB length.
    ignored: bits we accept with any value but do not act on (same length as usage), e.g. GROUP NUMBER.
    """

    opcode: int
    service_action: int | None
    name: str
    usage: bytes
    ignored: bytes = b""

    @property
    def cdb_length(self) -> int:
        return len(self.usage) + 1

    def usage_map(self) -> bytes:
        return self.usage + bytes([_CTL_USAGE])

    def check(self, cdb: bytes) -> None:
        """Raise INVALID FIELD IN CDB (with a field pointer) for any set bit we do not accept."""
        n = self.cdb_length
        if len(cdb) < n:
            raise invalid_field(0)
        ignored = self.ignored.ljust(n - 1, b"\x00") + bytes([_CTL_IGNORED])
        allowed = self.usage_map()
        for i in range(1, n):
            bad = cdb[i] & ~(allowed[i] | ignored[i]) & 0xFF
            if bad:
                raise invalid_field(i, bad.bit_length() - 1)
        if cdb[n - 1] & 0x04:  # NACA: we do not support ACA (SAM-5 5.9)
            raise invalid_field(n - 1, 2)


def _spec(op: int, name: str, usage: str, ignored: str = "", sa: int | None = None) -> CommandSpec:
    ignore = b"\x00" + bytes.fromhex(ignored) if ignored else b""
    return CommandSpec(op, sa, name, bytes([op]) + bytes.fromhex(usage), ignore)


_LBA4, _LBA8 = "ffffffff", "ffffffffffffffff"
# Byte 1 of READ/WRITE: DPO|FUA evaluated; RDPROTECT/WRPROTECT (7-5) and the rest must be zero.
_RW1 = "18"
# GROUP NUMBER (SBC-4: bits 5-0) is accepted and ignored.
_GROUP = "3f"

SPECS: tuple[CommandSpec, ...] = (
    _spec(0x00, "TEST UNIT READY", "00000000"),
    _spec(0x03, "REQUEST SENSE", "010000ff"),
    _spec(0x08, "READ(6)", "1fffffff"),
    _spec(0x0A, "WRITE(6)", "1fffffff"),
    _spec(0x12, "INQUIRY", "01ffffff"),
    _spec(0x1A, "MODE SENSE(6)", "08ffffff"),
    _spec(0x1B, "START STOP UNIT", "01000ff7"),
    _spec(0x25, "READ CAPACITY(10)", "00" + "00000000" + "0000" + "00"),
    _spec(0x28, "READ(10)", _RW1 + _LBA4 + "00" + "ffff", "00" + "00000000" + _GROUP),
    _spec(0x2A, "WRITE(10)", _RW1 + _LBA4 + "00" + "ffff", "00" + "00000000" + _GROUP),
    # VERIFY byte 1: DPO (4) and BYTCHK (2-1) evaluated; VRPROTECT must be zero.
    _spec(0x2F, "VERIFY(10)", "16" + _LBA4 + "00" + "ffff", "00" + "00000000" + _GROUP),
    # SYNCHRONIZE CACHE byte 1: IMMED (1); SYNC_NV (2, obsolete) is ignored.
    _spec(0x35, "SYNCHRONIZE CACHE(10)", "02" + _LBA4 + "00" + "ffff", "04" + "00000000" + _GROUP),
    _spec(0x5A, "MODE SENSE(10)", "18ffff000000ffff"),
    _spec(0x88, "READ(16)", _RW1 + _LBA8 + _LBA4 + "00", "00" + "00" * 12 + _GROUP),
    _spec(0x8A, "WRITE(16)", _RW1 + _LBA8 + _LBA4 + "00", "00" + "00" * 12 + _GROUP),
    _spec(0x8F, "VERIFY(16)", "16" + _LBA8 + _LBA4 + "00", "00" + "00" * 12 + _GROUP),
    _spec(0x91, "SYNCHRONIZE CACHE(16)", "02" + _LBA8 + _LBA4 + "00", "04" + "00" * 12 + _GROUP),
    # READ CAPACITY(16): the obsolete LBA and PMI fields must be zero.
    _spec(0x9E, "READ CAPACITY(16)", "1f" + "00" * 8 + "ffffffff" + "00", sa=0x10),
    _spec(0xA0, "REPORT LUNS", "00ff000000ffffffff00"),
    _spec(0xA3, "REPORT SUPPORTED OPERATION CODES", "1f87ffffffffffffff00", sa=0x0C),
    _spec(0xA8, "READ(12)", _RW1 + _LBA4 + _LBA4 + "00", "00" + "00" * 8 + "1f"),
    _spec(0xAA, "WRITE(12)", _RW1 + _LBA4 + _LBA4 + "00", "00" + "00" * 8 + "1f"),
    _spec(0xAF, "VERIFY(12)", "16" + _LBA4 + _LBA4 + "00", "00" + "00" * 8 + "1f"),
)

_BY_KEY: dict[tuple[int, int | None], CommandSpec] = {(s.opcode, s.service_action): s for s in SPECS}
_SA_OPS = {s.opcode for s in SPECS if s.service_action is not None}


def lookup(cdb: bytes) -> CommandSpec:
    """Find the spec for a CDB and check its reserved bits.

    Raises CheckCondition: INVALID COMMAND OPERATION CODE for an empty CDB or an opcode we do not
    implement; INVALID FIELD IN CDB for an unsupported service action, a short CDB or a set bit we
    do not accept. Longer CDBs are fine (FCP always carries 16 bytes); the excess is ignored.
    """
    if not cdb:
        raise CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE)
    op = cdb[0]
    if op in _SA_OPS:
        if len(cdb) < 2:
            raise invalid_field(0)
        spec = _BY_KEY.get((op, cdb[1] & 0x1F))
        if spec is None:
            raise invalid_field(1, 4)
    else:
        spec = _BY_KEY.get((op, None))
        if spec is None:
            raise CheckCondition.of(
                SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=(0, 7)
            )
    spec.check(cdb)
    return spec


# --- REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) -------------------------------------------------

_SUPPORT_NOT_SUPPORTED = 0b001
_SUPPORT_STANDARD = 0b011
_CTDP = 0x02  # in the all-commands descriptor; 0x80 in the one-command header
_SERVACTV = 0x01


def _timeouts() -> bytes:
    # Command timeouts descriptor: length 0x0A, then zero = "not specified" for nominal and
    # recommended timeouts (a parked control-LUN READ legitimately takes the whole park time).
    return struct.pack(">HBBII", 0x0A, 0, 0, 0, 0)


def report_supported_opcodes(cdb: bytes) -> bytes:
    """The parameter data for a checked MAINTENANCE IN / REPORT SUPPORTED OPERATION CODES CDB,
    before truncation to the allocation length."""
    rctd = bool(cdb[2] & 0x80)
    option = cdb[2] & 0x07
    req_op = cdb[3]
    req_sa = struct.unpack_from(">H", cdb, 4)[0]
    if option == 0:
        body = bytearray()
        for s in SPECS:
            flags = (_CTDP if rctd else 0) | (_SERVACTV if s.service_action is not None else 0)
            body += struct.pack(">BBHBBH", s.opcode, 0, s.service_action or 0, 0, flags, s.cdb_length)
            if rctd:
                body += _timeouts()
        return struct.pack(">I", len(body)) + bytes(body)
    has_sa = req_op in SERVICE_ACTION_OPCODES
    if option == 1:
        if has_sa:
            raise invalid_field(3)
        spec = _BY_KEY.get((req_op, None))
    elif option == 2:
        if not has_sa:
            raise invalid_field(3)
        spec = _BY_KEY.get((req_op, req_sa))
    elif option == 3:
        spec = _BY_KEY.get((req_op, req_sa if has_sa else None))
    else:
        raise invalid_field(2, 2)
    if spec is None:
        return struct.pack(">BBH", 0, _SUPPORT_NOT_SUPPORTED, 0)
    usage = bytearray(spec.usage_map())
    if spec.service_action is not None:
        # The usage map shows the service action itself in its field (SPC-4 6.35.3).
        usage[1] = spec.service_action
    head = struct.pack(">BBH", 0, (0x80 if rctd else 0) | _SUPPORT_STANDARD, len(usage))
    return head + bytes(usage) + (_timeouts() if rctd else b"")
