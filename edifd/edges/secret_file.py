"""Reading secret files (channel keys, PSKs, private keys) under one permission policy.

A secret file must be a regular file, opened without following a symlink, that no one but its
owner can reach: a refusal names the file, its mode and the exact chmod that fixes it. Reads are
bounded (a key file is tiny; a FIFO or a huge file must neither hang nor exhaust the loader).
Errors name paths, modes and sizes only, never content.
"""

from __future__ import annotations

import errno
import os
import stat

from edifd.proto.errors import ChannelKeyError
from edifd.proto.keys import ChannelKey, parse_channel_key

# The policy, for every secret of every tool: no group or world access at all (chmod 0600 or 0400).
OWNER_ONLY = 0o077

MAX_CHANNEL_KEY_FILE = 4096  # a key file is 32 or ~65 bytes


class SecretFileError(ValueError):
    """A file was refused or unreadable. The text names the path, never the content."""


def _who(bits: int) -> str:
    parts = (["other users"] if bits & 0o007 else []) + (["its group"] if bits & 0o070 else [])
    return " and ".join(parts)


def _chmod(bits: int) -> str:
    """The symbolic chmod that removes exactly `bits` (e.g. 0o044 -> 'g-r,o-r')."""
    out = []
    for who, shift in (("g", 3), ("o", 0)):
        perms = "".join(c for c, b in (("r", 4), ("w", 2), ("x", 1)) if (bits >> shift) & b)
        if perms:
            out.append(f"{who}-{perms}")
    return ",".join(out)


def check_secret_mode(path: str, mode: int, what: str, refuse: int) -> None:
    """Refuse a secret file whose permission bits include any of `refuse`."""
    bad = stat.S_IMODE(mode) & refuse
    if bad:
        raise SecretFileError(
            f"{what} file {path} is accessible by {_who(bad)} (mode {stat.S_IMODE(mode):04o}); "
            f"run chmod {_chmod(bad)} {path}"
        )


def _read(path: str | os.PathLike[str], what: str, limit: int, refuse: int | None) -> bytes:
    name = os.fspath(path)
    buf = bytearray()
    try:
        # O_NONBLOCK: opening a FIFO must not hang; O_NOFOLLOW: a symlink is not the file we vetted.
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
                     | (os.O_NOFOLLOW if refuse is not None else 0))
    except OSError as e:
        if e.errno == errno.ELOOP and refuse is not None:
            raise SecretFileError(f"{what} file {name} is a symbolic link; give the file itself") from None
        raise SecretFileError(f"cannot open {what} file {name}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what} file {name} is not a regular file")
        if refuse is not None:
            check_secret_mode(name, st.st_mode, what, refuse)
        while len(buf) <= limit:
            chunk = os.read(fd, limit + 1 - len(buf))
            if not chunk:
                break
            buf += chunk
        if len(buf) > limit:
            raise SecretFileError(f"{what} file {name} is larger than {limit} bytes")
        return bytes(buf)
    except OSError as e:
        raise SecretFileError(f"cannot read {what} file {name}: {e.strerror}") from None
    finally:
        os.close(fd)
        buf[:] = bytes(len(buf))  # do not leave the secret in a buffer we own


def read_secret_file(
    path: str | os.PathLike[str], *, what: str, limit: int, refuse: int = OWNER_ONLY
) -> bytes:
    """A secret file's content: a regular file, not a symlink, no bits of `refuse`, <= limit bytes."""
    return _read(path, what, limit, refuse)


def read_regular_file(path: str | os.PathLike[str], *, what: str, limit: int) -> bytes:
    """A file that is not secret (a certificate), read with the same bounds: regular, <= limit bytes."""
    return _read(path, what, limit, None)


def load_channel_key(path: str | os.PathLike[str]) -> ChannelKey:
    """The per-VM channel key file (see `parse_channel_key` for its two forms). Every refusal is a
    ChannelKeyError naming the path, never the key."""
    try:
        content = read_secret_file(path, what="channel key", limit=MAX_CHANNEL_KEY_FILE,
                                   refuse=OWNER_ONLY)
    except SecretFileError as e:
        raise ChannelKeyError(str(e)) from None
    try:
        return parse_channel_key(content)
    except ChannelKeyError as e:
        raise ChannelKeyError(f"channel key file {os.fspath(path)}: {e}") from None
