"""Version-2 codec helpers for tests: epoch keys from fixed handshake nonces, encode/decode that pick
the keys a message's epoch needs, and an independent model of sealing (docs/security.md) for
byte-exact expectations and for keyed forgeries.

    data = wire(Message(SaUpdate(...), epoch=5, request_id=1))   # sealed under keys_for(5)
    msg = back(data)                                             # opened with the header's epoch

The model (`hkdf_keys`, `aead_nonce`, `reauth`) is built from the documented derivation with
cryptography's HKDF and AESGCM, never from edifd.proto.epoch_keys, so a test comparing the two
checks the module rather than itself.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edifd.proto import EpochKeys, Message, decode, encode

KEY = bytes(range(7, 39))
# The nonces of a handshake that made every test epoch (any fixed 32-byte values do).
AGENT_NONCE = bytes(range(0x40, 0x60))
HOST_NONCE = bytes(range(0x80, 0xA0))

# The documented layout (docs/protocol.md, docs/security.md), restated here on purpose.
HEADER = 80
AAD_END = 48  # magic .. ack: the associated data / the MAC'd prefix
TAG = 16
LABEL = b"edifd channel v2 epoch keys\x00"
HEARTBEAT = 0xF0
ACK = 0x3F


def _raw(key: object) -> bytes:
    return key.material if hasattr(key, "material") else bytes(key)  # ChannelKey or bytes


@functools.lru_cache(maxsize=4096)
def _keys(key: bytes, epoch: int, port_index: int, agent_nonce: bytes, host_nonce: bytes) -> EpochKeys:
    return EpochKeys.derive(key, port_index, agent_nonce, host_nonce, epoch)


def keys_for(
    epoch: int,
    key: object = KEY,
    port_index: int = 0,
    *,
    agent_nonce: bytes = AGENT_NONCE,
    host_nonce: bytes = HOST_NONCE,
) -> EpochKeys:
    """The EpochKeys of `epoch` for a handshake with the fixed nonces (cached: Hypothesis asks often)."""
    return _keys(_raw(key), epoch, port_index, bytes(agent_nonce), bytes(host_nonce))


def wire(msg: Message, key: object = KEY, **kw: object) -> bytes:
    """encode() with the keys of msg's epoch and port (none for epoch 0)."""
    keys = keys_for(msg.epoch, key, msg.port_index) if msg.epoch else None
    return encode(msg, key, keys=keys, **kw)


def header_fields(data: bytes) -> tuple[int, int, int, int, int]:
    """(type, port index, epoch, sequence, ack) of a frame, read without authenticating it."""
    return data[5], struct.unpack_from(">H", data, 8)[0], *struct.unpack_from(">QxxxxxxxxQQ", data, 16)


def back(data: bytes, key: object = KEY) -> Message:
    """decode() holding the keys of the epoch and port the header names (a peer that has them)."""
    epoch = port = 0
    if len(data) >= AAD_END:
        _, port, epoch, _, _ = header_fields(bytes(data[:AAD_END]))
    return decode(data, key, keys=keys_for(epoch, key, port) if epoch else None)


# --- the independent model ---------------------------------------------------------------------------


def hkdf_keys(
    epoch: int,
    key: object = KEY,
    port_index: int = 0,
    agent_nonce: bytes = AGENT_NONCE,
    host_nonce: bytes = HOST_NONCE,
) -> tuple[bytes, bytes]:
    """(K_down, K_up) per docs/security.md, with cryptography's HKDF."""
    info = LABEL + struct.pack(">HQ", port_index, epoch)
    okm = HKDF(hashes.SHA256(), 64, agent_nonce + host_nonce, info).derive(_raw(key))
    return okm[:32], okm[32:]


def is_sealed(msg_type: int, epoch: int) -> bool:
    return epoch != 0 and msg_type != HEARTBEAT


def downstream(msg_type: int) -> bool:
    return msg_type < 0x40  # the catalogue's code ranges


def aead_nonce(msg_type: int, sequence: int, ack: int) -> bytes:
    """u32 (1 down, 2 up, 3 a downstream ACK) || u64 (the sequence, or the ACK's ack)."""
    if msg_type == ACK:
        return struct.pack(">IQ", 3, ack)
    return struct.pack(">IQ", 1 if downstream(msg_type) else 2, sequence)


def seal_frame(prefix: bytes, body: bytes, key: object = KEY, *, swap: bool = False) -> bytes:
    """prefix (48 bytes) + auth + ciphertext of a sealed frame, under the keys of the epoch and port
    in the prefix; swap=True seals with the other direction's key (a forgery test)."""
    t, port, epoch, seq, ack = header_fields(prefix)
    down, up = hkdf_keys(epoch, key, port)
    use_down = downstream(t) != swap
    out = AESGCM(down if use_down else up).encrypt(aead_nonce(t, seq, ack), body, prefix)
    return prefix + out[-TAG:] + bytes(TAG) + out[:-TAG]


def mac_frame(prefix: bytes, body: bytes, key: object = KEY) -> bytes:
    """prefix + HMAC-SHA-256(K, prefix || 32 zero bytes || body) + body."""
    return prefix + hmac.new(_raw(key), prefix + bytes(32) + body, hashlib.sha256).digest() + body


def reauth(buf: bytes | bytearray, key: object = KEY) -> bytes:
    """What a keyed (buggy) sender would put on the wire for this frame, whose body region holds the
    PLAINTEXT body: sealed or MAC'd as its (possibly rewritten) header says, trailing bytes kept."""
    buf = bytes(buf)
    if len(buf) < HEADER:
        return buf
    n = struct.unpack_from(">I", buf, 12)[0]
    prefix, body, tail = buf[:AAD_END], buf[HEADER : HEADER + n], buf[HEADER + n :]
    t, _, epoch, _, _ = header_fields(prefix)
    framed = seal_frame(prefix, body, key) if is_sealed(t, epoch) else mac_frame(prefix, body, key)
    return framed + tail


def unsealed(data: bytes, key: object = KEY) -> bytes:
    """A valid encoding with its ciphertext replaced by the plaintext body (for `reauth`)."""
    msg = back(data, key)
    body = msg.body.pack()
    return data[:HEADER] + body + data[HEADER + len(body) :]
