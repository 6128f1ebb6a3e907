"""Who the logical unit says it is: INQUIRY strings, serial number and NAA identifier.

NAA choice (SPC-4 7.8.6.6): an operator may give a full NAA-5 (64-bit, IEEE Registered) or NAA-6
(128-bit, IEEE Registered Extended) value, used verbatim. Otherwise we derive an NAA-6 from the serial:
NAA=6, the 24-bit OUI (default 0x001405, the OUI LIO puts in every LIO/TCMU LUN's NAA; set your own
if you have one), then the first 100 bits of SHA-256(serial). Hashing, unlike LIO's nibble packing of
the serial, keeps the identifier stable and well spread for any serial length, so two LUNs with
different serials never share an NAA in practice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_OUI = 0x001405
MAX_SERIAL_LEN = 251  # VPD 0x80 page length is one byte in practice; keep designators under 255


def _check_ascii(name: str, value: str, maxlen: int, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if len(value) > maxlen:
        raise ValueError(f"{name} {value!r} is longer than {maxlen} characters")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise ValueError(f"{name} {value!r} must be printable ASCII (0x20-0x7E)")


def derive_naa6(seed: bytes | int, oui: int = DEFAULT_OUI) -> int:
    """A stable 128-bit NAA-6 identifier: 6h | OUI | 100 bits of SHA-256(seed).

    seed: bytes, or a non-negative int of up to 128 bits (e.g. a port WWPN), hashed as 16 big-endian
    bytes. Use as `Identity(naa=derive_naa6(wwpn))` to tie the LU identifier to a port.
    """
    if not 0 <= oui <= 0xFFFFFF:
        raise ValueError(f"OUI {oui:#x} does not fit 24 bits")
    if isinstance(seed, int):
        if not 0 <= seed < 1 << 128:
            raise ValueError("integer seed must be 0..2^128-1")
        seed = seed.to_bytes(16, "big")
    digest = int.from_bytes(hashlib.sha256(seed).digest()[:13], "big") >> 4  # 100 bits
    return (6 << 124) | (oui << 100) | digest


@dataclass(frozen=True)
class Identity:
    """INQUIRY identity of one logical unit.

    vendor/product/revision: ASCII, space-padded to 8/16/4 bytes on the wire.
    serial: VPD 0x80 and the T10 vendor ID designator; printable ASCII, 1..251 characters.
    naa: a full NAA-5 (64-bit, top nibble 5) or NAA-6 (128-bit, top nibble 6) value, or None to
        derive an NAA-6 from the serial and `oui`.
    port_wwpn: the FC port this LU is reached through; adds target-port designators to VPD 0x83.
    relative_port: RELATIVE TARGET PORT IDENTIFIER reported with port_wwpn (1..65535).
    """

    vendor: str = "EDIF"
    product: str = "DISK"
    revision: str = "0001"
    serial: str = "0"
    naa: int | None = None
    oui: int = DEFAULT_OUI
    port_wwpn: int | None = None
    relative_port: int = 1

    def __post_init__(self) -> None:
        _check_ascii("vendor", self.vendor, 8)
        _check_ascii("product", self.product, 16)
        _check_ascii("revision", self.revision, 4)
        _check_ascii("serial", self.serial, MAX_SERIAL_LEN)
        if not 0 <= self.oui <= 0xFFFFFF:
            raise ValueError(f"oui {self.oui:#x} does not fit 24 bits")
        if self.naa is not None:
            if not isinstance(self.naa, int) or self.naa < 0:
                raise ValueError("naa must be a non-negative int")
            if self.naa >= 1 << 64:
                if self.naa >> 124 != 6 or self.naa >= 1 << 128:
                    raise ValueError(f"128-bit naa {self.naa:#x} must be NAA-6 (top nibble 6)")
            elif self.naa >> 60 != 5:
                raise ValueError(f"64-bit naa {self.naa:#x} must be NAA-5 (top nibble 5)")
        if self.port_wwpn is not None and not 0 < self.port_wwpn < 1 << 64:
            raise ValueError(f"port_wwpn {self.port_wwpn!r} must be a non-zero 64-bit value")
        if not 0 < self.relative_port <= 0xFFFF:
            raise ValueError(f"relative_port {self.relative_port} must be 1..65535")

    def naa_bytes(self) -> bytes:
        """The NAA designator: 8 bytes (NAA-5) or 16 bytes (NAA-6)."""
        if self.naa is not None:
            return self.naa.to_bytes(16 if self.naa >= 1 << 64 else 8, "big")
        return derive_naa6(self.serial.encode("ascii"), self.oui).to_bytes(16, "big")

    @staticmethod
    def field(value: str, width: int) -> bytes:
        """Left-aligned, space-padded ASCII (SPC-4 4.4.1)."""
        return value.encode("ascii").ljust(width, b" ")
