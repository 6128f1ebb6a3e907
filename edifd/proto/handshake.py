"""APP_START challenge-response helpers (pure functions; the state machine lives in the channel).

    agent -> host  APP_START(HELLO, agent_nonce Na)
    host -> agent  APP_START_CHALLENGE(Na, host_nonce Nh)
    agent -> host  APP_START(PROOF, Na, Nh, agent_proof)
    host -> agent  APP_START_ANSWER(epoch E, host_proof)

    agent_proof = HMAC-SHA-256(K, "edifd app-start agent proof v1\\0" || port(u16 BE) || Na || Nh)
    host_proof  = HMAC-SHA-256(K, "edifd app-start host proof v1\\0" || port(u16 BE) || Na || Nh || E(u64 BE))

(port is the header's port index.)

Nh makes the agent's proof fresh for the host (a replayed PROOF fails against a new Nh); Na
makes the host's proof and its epoch fresh for the agent. The labels differ from each other
(no reflection) and start with 'e', whereas every message MAC input starts with the magic
'EDIF', so no proof can be mistaken for a message MAC or vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable

from .errors import MalformedBodyError
from .keys import key_bytes
from .requests import NONCE_SIZE

AGENT_PROOF_LABEL = b"edifd app-start agent proof v1\x00"
HOST_PROOF_LABEL = b"edifd app-start host proof v1\x00"


Rng = Callable[[int], bytes]  # n -> n random bytes: secrets.token_bytes, or a seeded one in tests


def new_nonce(rng: Rng = secrets.token_bytes) -> bytes:
    return rng(NONCE_SIZE)


def new_epoch(rng: Rng = secrets.token_bytes) -> int:
    """A random non-zero 64-bit epoch: a restarted host never reuses an earlier one (in practice)."""
    while True:
        epoch = int.from_bytes(rng(8), "big")
        if epoch:
            return epoch


def _transcript(label: bytes, port_index: int, agent_nonce: bytes, host_nonce: bytes) -> bytes:
    if not isinstance(port_index, int) or not 0 <= port_index <= 0xFFFF:
        raise MalformedBodyError("port_index must be an unsigned 16-bit integer")
    for name, nonce in (("agent_nonce", agent_nonce), ("host_nonce", host_nonce)):
        if not isinstance(nonce, bytes | bytearray) or len(nonce) != NONCE_SIZE:
            raise MalformedBodyError(f"{name} must be {NONCE_SIZE} bytes")
    return label + struct.pack(">H", port_index) + bytes(agent_nonce) + bytes(host_nonce)


def agent_proof(key: object, port_index: int, agent_nonce: bytes, host_nonce: bytes) -> bytes:
    msg = _transcript(AGENT_PROOF_LABEL, port_index, agent_nonce, host_nonce)
    return hmac.new(key_bytes(key), msg, hashlib.sha256).digest()


def host_proof(key: object, port_index: int, agent_nonce: bytes, host_nonce: bytes, epoch: int) -> bytes:
    if not isinstance(epoch, int) or not 0 < epoch < (1 << 64):
        raise MalformedBodyError("epoch must be a non-zero unsigned 64-bit integer")
    msg = _transcript(HOST_PROOF_LABEL, port_index, agent_nonce, host_nonce) + struct.pack(">Q", epoch)
    return hmac.new(key_bytes(key), msg, hashlib.sha256).digest()


def _same(expected: bytes, proof: object) -> bool:
    return isinstance(proof, bytes | bytearray) and hmac.compare_digest(expected, bytes(proof))


def verify_agent_proof(
    key: object, port_index: int, agent_nonce: bytes, host_nonce: bytes, proof: object
) -> bool:
    """Constant-time check of an APP_START PROOF (host side)."""
    return _same(agent_proof(key, port_index, agent_nonce, host_nonce), proof)


def verify_host_proof(
    key: object, port_index: int, agent_nonce: bytes, host_nonce: bytes, epoch: int, proof: object
) -> bool:
    """Constant-time check of an APP_START_ANSWER (agent side)."""
    return _same(host_proof(key, port_index, agent_nonce, host_nonce, epoch), proof)
