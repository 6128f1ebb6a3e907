"""Small helpers shared by the codecs: bounds-checked struct access and value checks.

They exist so that no `struct.error`, `IndexError` or enum `ValueError` can escape a parser:
every failure is turned into the caller's `FcError` subclass.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .errors import FcError, PayloadError

E = TypeVar("E", bound=enum.IntEnum)
R = TypeVar("R", bound="RejectCodes")


def unpack_from(
    fmt: str, data: bytes, offset: int = 0, *, what: str, exc: type[FcError] = FcError
) -> tuple[Any, ...]:
    """struct.unpack_from that raises `exc` when `data` is too short."""
    size = struct.calcsize(fmt)
    if offset < 0 or len(data) < offset + size:
        raise exc(f"{what}: need {offset + size} bytes, have {len(data)}")
    return struct.unpack_from(fmt, data, offset)


def check_uint(name: str, value: int, bits: int, exc: type[FcError] = FcError) -> None:
    """Reject values that do not fit an unsigned field of `bits` bits (bool is not an int here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise exc(f"{name} must be an unsigned {bits}-bit integer, got {value!r}")


def check_bytes(name: str, value: object, exc: type[FcError] = FcError) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise exc(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def enum_or_int(cls: type[E], value: int) -> E | int:
    """Map a received code to its enum member, keeping unknown codes as plain ints.

    Peers may send codes we have no name for; callers decide whether that is an error.
    """
    try:
        return cls(value)
    except ValueError:
        return value


def wwn_str(wwn: int | None) -> str:
    """Colon-separated hex form of a 64-bit World Wide Name (as Wireshark prints it); "unknown" for None.

    The one text form of a WWN in logs, status output and configuration round trips.
    """
    return "unknown" if wwn is None else ":".join(f"{b:02x}" for b in wwn.to_bytes(8, "big"))


@dataclass(frozen=True)
class RejectCodes:
    """The reason, explanation and vendor-unique bytes that close both LS_RJT and BA_RJT.

    A subclass narrows the field types, names its REASONS and EXPLANATIONS enums, and packs the
    three bytes (`codes()`) behind its own leading bytes.
    """

    REASONS: ClassVar[type[enum.IntEnum]]
    EXPLANATIONS: ClassVar[type[enum.IntEnum]]

    reason: enum.IntEnum | int
    explanation: enum.IntEnum | int = 0
    vendor: int = 0

    def __post_init__(self) -> None:
        check_uint("reason", int(self.reason), 8, PayloadError)
        check_uint("explanation", int(self.explanation), 8, PayloadError)
        check_uint("vendor", self.vendor, 8, PayloadError)

    def codes(self) -> tuple[int, int, int]:
        return int(self.reason), int(self.explanation), self.vendor

    @classmethod
    def from_codes(cls: type[R], reason: int, explanation: int, vendor: int) -> R:
        """The received bytes, reason and explanation by name where we know one."""
        return cls(enum_or_int(cls.REASONS, reason), enum_or_int(cls.EXPLANATIONS, explanation), vendor)
