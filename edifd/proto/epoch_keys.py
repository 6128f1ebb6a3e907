"""The per-epoch session keys of the channel: derived in the APP_START handshake, one per direction.

    okm      = HKDF-SHA-256(IKM = K, salt = Na || Nh,
                            info = "edifd channel v2 epoch keys\\0" || port(u16) || E(u64), L = 64)
    K_down   = okm[0:32]     agent -> host (WRITE payloads)
    K_up     = okm[32:64]    host -> agent (READ data)
    nonce    = 1(u32) || sequence(u64)   a downstream request          (12 bytes, RFC 5116 §3.2)
               2(u32) || sequence(u64)   an upstream message
               3(u32) || ack(u64)        a downstream ACK (sequence 0; the same ack value always
                                         makes the same bytes, so a repeat is a byte copy)

(RFC 5869 HKDF; AES-256-GCM as NIST SP 800-38D.) K is the channel key, Na and Nh the handshake
nonces, E the epoch the host chose, so every handshake yields fresh keys: a recorded epoch cannot be
replayed into another, and one epoch's keys open no other epoch. A (key, nonce) pair is never used
for two different plaintexts: downstream sequence numbers are used once per epoch (a retried WRITE
resends the same bytes; an agent that resumes after a crash with a WRITE in doubt starts a new
epoch), upstream numbers are never reused while the LUN's state file lives (a redelivery resends
the same bytes; a message re-sent in a new epoch is sealed under the new epoch's key).

The keys never appear in a repr; the AEAD objects are made once per epoch (the data path seals
and opens with them directly).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .catalogue import Direction
from .errors import BadMacError, MalformedBodyError
from .framing import TAG_SIZE
from .keys import key_bytes
from .requests import NONCE_SIZE

EPOCH_KEYS_LABEL = b"edifd channel v2 epoch keys\x00"
_NONCE = struct.Struct(">IQ")
_DOWN, _UP, _ACK = 1, 2, 3


def nonce(direction: Direction, sequence: int, *, ack: int | None = None) -> bytes:
    """The AES-GCM nonce of a sealed message (module docstring); `ack` only for an ACK."""
    if ack is not None:
        return _NONCE.pack(_ACK, ack)
    return _NONCE.pack(_DOWN if direction is Direction.DOWNSTREAM else _UP, sequence)


@dataclass(frozen=True, eq=False)
class EpochKeys:
    """The two AEAD keys of one epoch. Build with `derive`; compare by `epoch`, never by key."""

    epoch: int
    _down: AESGCM = field(repr=False)
    _up: AESGCM = field(repr=False)

    @classmethod
    def derive(
        cls, key: object, port_index: int, agent_nonce: bytes, host_nonce: bytes, epoch: int
    ) -> EpochKeys:
        """The keys of `epoch`, from the channel key and the nonces of the handshake that made it."""
        if not isinstance(port_index, int) or isinstance(port_index, bool) or not 0 <= port_index <= 0xFFFF:
            raise MalformedBodyError("port_index must be an unsigned 16-bit integer")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch < (1 << 64):
            raise MalformedBodyError("epoch must be a non-zero unsigned 64-bit integer")
        for name, nonce in (("agent_nonce", agent_nonce), ("host_nonce", host_nonce)):
            if not isinstance(nonce, bytes | bytearray) or len(nonce) != NONCE_SIZE:
                raise MalformedBodyError(f"{name} must be {NONCE_SIZE} bytes")
        info = EPOCH_KEYS_LABEL + struct.pack(">HQ", port_index, epoch)
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=bytes(agent_nonce) + bytes(host_nonce),
                   info=info).derive(key_bytes(key))
        return cls(epoch, AESGCM(okm[:32]), AESGCM(okm[32:]))

    def _aead(self, direction: Direction) -> AESGCM:
        return self._down if direction is Direction.DOWNSTREAM else self._up

    def seal(self, direction: Direction, nonce: bytes, aad: bytes, body: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, tag) of a body: the ciphertext is as long as the body."""
        out = self._aead(direction).encrypt(nonce, body, aad)
        return out[:-TAG_SIZE], out[-TAG_SIZE:]

    def open(self, direction: Direction, nonce: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes:
        """The body, or BadMacError if anything (header, body, tag, key, direction) differs."""
        try:
            return self._aead(direction).decrypt(nonce, ciphertext + tag, aad)
        except InvalidTag:
            raise BadMacError("message authentication failed") from None

    def __repr__(self) -> str:
        return f"EpochKeys(epoch={self.epoch:#x})"

    __str__ = __repr__
