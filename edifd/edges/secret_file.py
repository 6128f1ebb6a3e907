"""Reading secret files (channel keys, PSKs, private keys, iSCSI CHAP secrets) under one permission policy.

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

# iSCSI CHAP secrets. RFC 3720 section 8.2.1 (RFC 7143 section 12.1.3): a secret SHOULD be at least 12
# octets and every implementation MUST support up to 16. LIO takes up to 255 characters (the kernel's
# struct iscsi_node_auth, rtslib-fb's limit), but initiators may not: 12..16 is what all of them accept.
CHAP_SECRET_MIN = 12
CHAP_SECRET_MAX = 16
MAX_CHAP_SECRET_FILE = 256


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


def check_chap_secret(text: str, where: str) -> None:
    """Refuse a CHAP secret LIO or an initiator would not take as written; `where` names its file.
    The reason names lengths and character classes only, never a character of the secret."""
    if not CHAP_SECRET_MIN <= len(text) <= CHAP_SECRET_MAX:
        raise SecretFileError(f"{where}: {len(text)} characters; a CHAP secret has {CHAP_SECRET_MIN} to "
                              f"{CHAP_SECRET_MAX} (RFC 3720 8.2.1), e.g. head -c 12 /dev/urandom | base64")
    if not (text.isascii() and text.isprintable()) or any(c.isspace() for c in text):
        # rtslib-fb strips surrounding whitespace before writing it to configfs, QEMU and libvirt do not.
        raise SecretFileError(f"{where}: a CHAP secret is printable ASCII without spaces")
    if text.startswith("NULL"):
        # configfs: a value beginning with NULL unsets the attribute (no CHAP for that direction).
        raise SecretFileError(f"{where}: a CHAP secret must not begin with NULL (LIO reads it as 'unset')")


def load_chap_secret(path: str | os.PathLike[str]) -> str:
    """An iSCSI CHAP secret file: the secret itself, 12..16 printable ASCII characters, no newline at its
    end (QEMU's `-object secret,file=` and `virsh secret-set-value --file` take every byte of the file,
    so the file both ends read must hold exactly the secret). Every refusal is a SecretFileError naming
    the path, never the secret."""
    name = os.fspath(path)
    raw = read_secret_file(path, what="CHAP secret", limit=MAX_CHAP_SECRET_FILE, refuse=OWNER_ONLY)
    where = f"CHAP secret file {name}"
    if raw.endswith(b"\n"):
        raise SecretFileError(f"{where}: ends with a newline, which an initiator reading the file would take "
                              "as part of the secret; write it without one (printf '%s' SECRET > FILE)")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise SecretFileError(f"{where}: a CHAP secret is printable ASCII without spaces") from None
    check_chap_secret(text, where)
    return text
