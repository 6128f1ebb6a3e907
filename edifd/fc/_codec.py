"""Small helpers shared by the codecs: bounds-checked struct access and value checks.

They exist so that no `struct.error`, `IndexError` or enum `ValueError` can escape a parser:
every failure is turned into the caller's `FcError` subclass.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, TypeVar

from .errors import FcError

E = TypeVar("E", bound=enum.IntEnum)


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
