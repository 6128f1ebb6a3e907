"""Helpers shared by the body codecs: a bounds-checked reader and field validators.

Every failure here is a MalformedBodyError or BodyLengthMismatchError whose text names the
field and, for secret fields, never the value.
"""

from __future__ import annotations

import enum
import struct
from typing import TypeVar

from .errors import BodyLengthMismatchError, MalformedBodyError

E = TypeVar("E", bound=enum.IntEnum)
F = TypeVar("F", bound=enum.IntFlag)

_BYTE_WORD = ">B3s"  # a 1-byte field and 3 reserved (zero) bytes: one 32-bit word


class Reader:
    """Consumes one body; short reads and leftovers are length mismatches."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise BodyLengthMismatchError(
                f"{self._what}: body of {len(self._data)} bytes is too short "
                f"(layout needs at least {self._pos + n})"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        assert fmt[0] in "<>", "explicit endianness"
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def byte_word(self) -> int:
        """A 1-byte field and its 3 reserved bytes (see pack_byte_word)."""
        value, rsvd = self.unpack(_BYTE_WORD)
        check_zero(rsvd, "reserved")
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise BodyLengthMismatchError(
                f"{self._what}: body has {len(self._data)} bytes, layout uses {self._pos}"
            )


def pack_byte_word(value: int) -> bytes:
    """A 1-byte field (a reason, a phase, role flags) padded with 3 reserved bytes to a word."""
    return struct.pack(_BYTE_WORD, value, bytes(3))


def check_uint(value: object, bits: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise MalformedBodyError(f"{name} must be an unsigned {bits}-bit integer")
    return value


def check_spi(value: object) -> int:
    """An SA's SPI: 32 bits, and never 0."""
    spi = check_uint(value, 32, "spi")
    if spi == 0:
        raise MalformedBodyError("spi 0 is reserved (RFC 4303)")
    return spi


def check_enum(cls: type[E], value: object, name: str) -> E:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBodyError(f"{name} must be a {cls.__name__}")
    try:
        return cls(value)
    except ValueError:
        raise MalformedBodyError(f"{name}: {value!r} is not a valid {cls.__name__}") from None


def check_flags(cls: type[F], value: object, bits: int, name: str) -> F:
    check_uint(value, bits, name)
    assert isinstance(value, int)
    known = 0
    for member in cls:
        known |= member.value
    if value & ~known:
        raise MalformedBodyError(f"{name}: undefined {cls.__name__} bits 0x{value & ~known:x}")
    return cls(value)


def check_bytes(value: object, size: int, name: str, *, secret: bool = False) -> bytes:
    """Fixed-size byte field. For secret fields the error never shows the value."""
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__
        if secret and not isinstance(value, bytes | bytearray):
            got = "a non-bytes value"
        raise MalformedBodyError(f"{name} must be {size} bytes, got {got}")
    return bytes(value)


def check_payload(value: object, lo: int, hi: int, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise MalformedBodyError(f"{name} must be bytes")
    if not lo <= len(value) <= hi:
        raise MalformedBodyError(f"{name} must be {lo}..{hi} bytes, got {len(value)}")
    return bytes(value)


def check_zero(value: int | bytes, name: str) -> None:
    if (isinstance(value, int) and value != 0) or (isinstance(value, bytes) and any(value)):
        raise MalformedBodyError(f"reserved field {name} must be zero")
