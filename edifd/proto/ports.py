"""How a message names a remote FC port: WWPN, 24-bit N_Port ID and login generation.

16 bytes on the wire, big-endian: WWPN (8) | reserved (1) | port id (3) | generation (4).
The port id is in FC wire order (domain, area, port) -- unlike qla2xxx's host-endian
port_id_t (drivers/scsi/qla2xxx/qla_def.h), which is easy to get wrong.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from ._wire import Reader, check_enum, check_uint, pack_byte_word
from .body import Body
from .errors import MalformedBodyError

_PORT_REF = struct.Struct(">QII")
PORT_REF_SIZE = _PORT_REF.size  # 16


@dataclass(frozen=True, repr=False)
class PortRef:
    """A remote port. generation changes on every new login of that port (0 = unknown / any);
    requests carrying a stale generation are refused, so no action lands on a newer session."""

    wwpn: int
    port_id: int = 0
    generation: int = 0

    def __post_init__(self) -> None:
        check_uint(self.wwpn, 64, "wwpn")
        check_uint(self.port_id, 24, "port_id")
        check_uint(self.generation, 32, "generation")

    def __repr__(self) -> str:
        return f"PortRef(wwpn=0x{self.wwpn:016x}, port_id=0x{self.port_id:06x}, generation={self.generation})"

    def pack(self) -> bytes:
        return _PORT_REF.pack(self.wwpn, self.port_id, self.generation)

    @classmethod
    def read(cls, r: Reader) -> PortRef:
        wwpn, pid_word, generation = r.unpack(">QII")
        if pid_word >> 24:
            raise MalformedBodyError("reserved byte before port id must be zero")
        return cls(wwpn, pid_word, generation)


def check_port_ref(value: object) -> PortRef:
    """Body fields that name a remote port must hold a PortRef."""
    if not isinstance(value, PortRef):
        raise MalformedBodyError("port must be a PortRef")
    return value


P = TypeVar("P", bound="PortOnlyBody")


@dataclass(frozen=True, repr=False)
class PortOnlyBody(Body):
    """The base of the requests and events whose whole body is the remote port they name (the
    PortRef's 16 bytes)."""

    port: PortRef

    def __post_init__(self) -> None:
        check_port_ref(self.port)

    def pack(self) -> bytes:
        return self.port.pack()

    @classmethod
    def read(cls: type[P], r: Reader) -> P:
        return cls(PortRef.read(r))


R = TypeVar("R", bound="PortReasonBody")


@dataclass(frozen=True, repr=False)
class PortReasonBody(Body):
    """The base of the bodies that are the remote port they name and a 1-byte reason, one of
    REASONS, in a word with 3 reserved bytes (20 bytes). A subclass narrows `reason` (and may
    give it a default) and sets REASONS."""

    port: PortRef
    reason: enum.IntEnum

    REASONS: ClassVar[type[enum.IntEnum]]

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        self._coerce("reason", check_enum(self.REASONS, self.reason, "reason"))

    def pack(self) -> bytes:
        return self.port.pack() + pack_byte_word(self.reason)

    @classmethod
    def read(cls: type[R], r: Reader) -> R:
        return cls(PortRef.read(r), r.byte_word())
