"""Fixed-format sense data (SPC-4 4.5.3) and the exception that carries it.

We only ever produce fixed format (response code 0x70): TCMU's sense buffer, FCP_RSP and every
initiator we care about read it, and the CONTROL mode page reports D_SENSE=0 to match.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

FIXED_SENSE_LEN = 18
_RESPONSE_CURRENT = 0x70
_VALID = 0x80
_SKSV = 0x80
_CD = 0x40  # field pointer refers to the CDB (not the parameter list)
_BPV = 0x08


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    ABORTED_COMMAND = 0xB
    MISCOMPARE = 0xE


class Asc(tuple, enum.Enum):
    """(ASC, ASCQ) pairs we use (SPC-4 annex D)."""

    NO_ADDITIONAL_SENSE = (0x00, 0x00)
    WRITE_ERROR = (0x0C, 0x00)
    UNRECOVERED_READ_ERROR = (0x11, 0x00)
    MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
    LBA_OUT_OF_RANGE = (0x21, 0x00)
    INVALID_FIELD_IN_CDB = (0x24, 0x00)
    WRITE_PROTECTED = (0x27, 0x00)
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
    INTERNAL_TARGET_FAILURE = (0x44, 0x00)

    @property
    def asc(self) -> int:
        return self.value[0]

    @property
    def ascq(self) -> int:
        return self.value[1]


def sense(
    key: int,
    asc: int,
    ascq: int,
    *,
    information: int | None = None,
    field_pointer: tuple[int, int | None] | None = None,
) -> bytes:
    """Build 18 bytes of fixed-format current sense data.

    information: goes to the INFORMATION field with VALID=1 (e.g. the miscompare offset); values that
        do not fit 32 bits are dropped (VALID=0), as SPC-4 requires for fixed format.
    field_pointer: (byte, bit) of the offending CDB field for ILLEGAL REQUEST; bit None = whole byte.
    """
    for name, v, hi in (("sense key", key, 0xF), ("ASC", asc, 0xFF), ("ASCQ", ascq, 0xFF)):
        if not 0 <= v <= hi:
            raise ValueError(f"{name} {v!r} out of range 0..{hi:#x}")
    buf = bytearray(FIXED_SENSE_LEN)
    buf[0] = _RESPONSE_CURRENT
    buf[2] = key
    if information is not None and 0 <= information <= 0xFFFFFFFF:
        buf[0] |= _VALID
        struct.pack_into(">I", buf, 3, information)
    buf[7] = FIXED_SENSE_LEN - 8  # ADDITIONAL SENSE LENGTH
    buf[12] = asc
    buf[13] = ascq
    if field_pointer is not None:
        byte, bit = field_pointer
        if not 0 <= byte <= 0xFFFF or (bit is not None and not 0 <= bit <= 7):
            raise ValueError(f"bad field pointer {field_pointer!r}")
        buf[15] = _SKSV | _CD | ((_BPV | bit) if bit is not None else 0)
        struct.pack_into(">H", buf, 16, byte)
    return bytes(buf)


class CheckCondition(Exception):  # noqa: N818 - named for the SCSI status it becomes
    """Terminate the command with CHECK CONDITION and this sense.

    Raised by the CDB checks and by a `Medium` (see `MediumError`); `ScsiDisk.execute` turns it
    into a response and never lets it escape.
    """

    def __init__(
        self,
        key: int,
        asc: int,
        ascq: int,
        *,
        information: int | None = None,
        field_pointer: tuple[int, int | None] | None = None,
    ) -> None:
        self.sense = sense(key, asc, ascq, information=information, field_pointer=field_pointer)
        self.key, self.asc, self.ascq = key, asc, ascq
        super().__init__(f"sense {key:X}/{asc:02X}/{ascq:02X}")

    @classmethod
    def of(cls, key: SenseKey, code: Asc, **kw: object) -> CheckCondition:
        return cls(key, code.asc, code.ascq, **kw)  # type: ignore[arg-type]


class MediumError(CheckCondition):
    """What a medium raises to fail an I/O with specific sense, e.g.
    `MediumError(SenseKey.MEDIUM_ERROR, 0x11, 0x00)`."""


def invalid_field(byte: int, bit: int | None = None) -> CheckCondition:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at CDB byte (and bit)."""
    return CheckCondition.of(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_pointer=(byte, bit))


class SenseParseError(ValueError):
    """The only exception `SenseData.parse` raises."""


@dataclass(frozen=True)
class SenseData:
    """The fields of fixed-format sense an initiator or a test looks at."""

    key: int
    asc: int
    ascq: int
    information: int | None = None
    field_pointer: tuple[int, int | None] | None = None

    @classmethod
    def parse(cls, data: bytes) -> SenseData:
        if len(data) < 14:
            raise SenseParseError(f"sense data too short ({len(data)} bytes)")
        code = data[0] & 0x7F
        if code not in (0x70, 0x71):
            raise SenseParseError(f"not fixed-format sense (response code {code:#x})")
        info = struct.unpack_from(">I", data, 3)[0] if data[0] & _VALID else None
        fp = None
        if len(data) >= 18 and data[15] & _SKSV and data[15] & _CD:
            fp = (struct.unpack_from(">H", data, 16)[0], data[15] & 7 if data[15] & _BPV else None)
        return cls(data[2] & 0x0F, data[12], data[13], info, fp)
