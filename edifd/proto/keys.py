"""The per-VM channel key: a 32-byte secret provisioned out of band, identical on host and guest.

Reading the key file is an edge (`edifd.edges.secret_file.load_channel_key`); this is the value and
its file format. The key never appears in a repr, a log line or an error text; `fingerprint` is a
one-way short id for comparing the two sides.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field

from .errors import ChannelKeyError

CHANNEL_KEY_SIZE = 32
_HEX = frozenset(string.hexdigits.encode())


@dataclass(frozen=True, eq=False)
class ChannelKey:
    """The channel key. Compare keys by fingerprint, not by ==."""

    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes | bytearray) or len(self.material) != CHANNEL_KEY_SIZE:
            raise ChannelKeyError(f"a channel key must be {CHANNEL_KEY_SIZE} bytes")
        object.__setattr__(self, "material", bytes(self.material))

    @property
    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over a label and the key: safe to log, useless to an attacker."""
        return hashlib.sha256(b"edifd channel key fingerprint\x00" + self.material).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ChannelKey(fingerprint={self.fingerprint})"

    __str__ = __repr__


def key_bytes(key: object) -> bytes:
    """The raw key from a ChannelKey or 32 bytes; anything else is a ChannelKeyError."""
    if isinstance(key, ChannelKey):
        return key.material
    if isinstance(key, bytes | bytearray) and len(key) == CHANNEL_KEY_SIZE:
        return bytes(key)
    raise ChannelKeyError(f"the channel key must be a ChannelKey or {CHANNEL_KEY_SIZE} bytes")


def parse_channel_key(content: bytes | bytearray) -> ChannelKey:
    """Key file content: exactly 32 raw bytes, or 64 hex digits with optional surrounding whitespace.

    A 32-byte file is always raw (64 hex digits cannot be 32 bytes long), so the two forms never
    collide. Errors give sizes only, never content.
    """
    if len(content) == CHANNEL_KEY_SIZE:
        return ChannelKey(bytes(content))
    text = bytes(content).strip(b" \t\r\n")
    if len(text) == 2 * CHANNEL_KEY_SIZE and all(c in _HEX for c in text):
        return ChannelKey(bytes.fromhex(text.decode("ascii")))
    raise ChannelKeyError(
        f"expected {CHANNEL_KEY_SIZE} raw bytes or {2 * CHANNEL_KEY_SIZE} hexadecimal digits, "
        f"got {len(content)} bytes of another form"
    )
