"""The per-VM channel key: a 32-byte secret provisioned out of band, identical on host and guest.

This is the one I/O edge of edifd.proto (reading the key file). The key never appears in a repr,
a log line or an error text; `fingerprint` is a one-way short id for comparing the two sides.
"""

from __future__ import annotations

import hashlib
import os
import stat
import string
from dataclasses import dataclass, field

from .errors import ChannelKeyError

CHANNEL_KEY_SIZE = 32
_MAX_KEY_FILE = 4096  # a key file is 32 or ~65 bytes; refuse to slurp anything big
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


def load_channel_key(path: str | os.PathLike[str]) -> ChannelKey:
    """Read a per-VM channel key file.

    Refuses: files any "other" user may read, write or execute (mode & 0o007), non-regular files
    (FIFOs, devices, directories), files over 4 KiB, and content that is not a key (see
    parse_channel_key). Every refusal is a ChannelKeyError naming the path, never the key.
    """
    name = os.fspath(path)
    buf = bytearray()
    try:
        # O_NONBLOCK: opening a FIFO must not hang; we refuse non-regular files right after.
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise ChannelKeyError(f"cannot open channel key file {name}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChannelKeyError(f"channel key file {name} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o007:
            raise ChannelKeyError(
                f"channel key file {name} is accessible by other users (mode {mode:04o}); "
                "run chmod o-rwx on it"
            )
        while len(buf) <= _MAX_KEY_FILE:
            chunk = os.read(fd, _MAX_KEY_FILE + 1 - len(buf))
            if not chunk:
                break
            buf += chunk
        if len(buf) > _MAX_KEY_FILE:
            raise ChannelKeyError(f"channel key file {name} is larger than {_MAX_KEY_FILE} bytes")
        try:
            return parse_channel_key(buf)
        except ChannelKeyError as e:
            raise ChannelKeyError(f"channel key file {name}: {e}") from None
    except OSError as e:
        raise ChannelKeyError(f"cannot read channel key file {name}: {e.strerror}") from None
    finally:
        os.close(fd)
        buf[:] = bytes(len(buf))  # do not leave the secret in a buffer we own
