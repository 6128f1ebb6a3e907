"""The downstream admission rules of one control LUN: epochs, the APP_START handshake that makes one,
and the sequence rules that admit a MAC-verified WRITE into it.

In an epoch the WRITE slot and the sealed header carry the sequence: the expected one is acted on
once; a lower one with the same tag as before is a retry (GOOD, not acted on again), anything else
lower is a replay; a higher one is a gap, refused so the agent resends in order. The epoch before
the current one (or before an edifd restart) is remembered so its retries are still recognised: with
its keys while this process made it, by the exact tag alone after a restart (the keys are never
persisted).
Not thread-safe on its own: ChannelCore holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edifd.proto import (
    AppStart,
    AppStartAnswer,
    AppStartChallenge,
    ChannelKey,
    EpochKeys,
    host_proof,
    new_epoch,
    new_nonce,
    verify_agent_proof,
)
from edifd.proto.handshake import Rng
from edifd.proto.reject import Reject

from .hoststate import HostState

_RECENT = 16  # accepted WRITE MACs remembered per epoch, to tell a retry from a replay


class Refusal(Exception):
    """A WRITE these rules refuse: ChannelCore counts, logs and answers it with the reason's sense."""

    def __init__(self, reason: Reject, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class EpochMemory:
    """What identifies the WRITEs of an epoch: next sequence and the auth fields of recent ones;
    and its keys, unless it was restored from the state file of an earlier process."""

    epoch: int
    down_next: int = 1
    recent: OrderedDict[int, bytes] | None = None
    keys: EpochKeys | None = None

    def remember(self, seq: int, mac: bytes) -> None:
        if self.recent is None:
            self.recent = OrderedDict()
        self.recent[seq] = mac
        while len(self.recent) > _RECENT:
            self.recent.popitem(last=False)

    def is_retry(self, seq: int, mac: bytes) -> bool:
        return self.recent is not None and self.recent.get(seq) == mac

    @property
    def last_mac(self) -> bytes:
        if not self.recent:
            return bytes(32)
        return next(reversed(self.recent.values()))


class Downstream:
    """The epochs of one LUN and the admission of WRITEs into them (see the module docstring)."""

    def __init__(self, key: ChannelKey, port_index: int, rng: Rng, restored: HostState | None) -> None:
        self._key = key
        self._port_index = port_index
        self._rng = rng
        self.current: EpochMemory | None = None  # the established epoch
        self.previous: EpochMemory | None = None  # the one before (or the one before a restart)
        self.challenge: tuple[bytes, bytes] | None = None  # (Na, Nh) awaiting a PROOF
        self._last_proof: tuple[bytes, bytes] | None = None  # the PROOF that made `current`
        if restored is not None and restored.epoch:
            mem = EpochMemory(restored.epoch, restored.down_next)
            mem.remember(restored.down_next - 1, restored.last_digest)
            self.previous = mem

    @property
    def keys(self) -> tuple[EpochKeys, ...]:
        """The epoch keys held: the current epoch's and the previous one's (for its retries)."""
        return tuple(m.keys for m in (self.current, self.previous) if m is not None and m.keys is not None)

    def is_keyless_retry(self, epoch: int, seq: int, auth: bytes) -> bool:
        """A WRITE sealed in the epoch before an edifd restart, byte-identical in its tag to the
        last one that epoch acted on: GOOD, not acted on (we hold no key to open it, and need none
        to see it is the same)."""
        prev = self.previous
        return (prev is not None and prev.keys is None and epoch == prev.epoch
                and 0 < seq < prev.down_next and prev.is_retry(seq, auth))

    @property
    def persisted(self) -> tuple[int, int, bytes]:
        """(epoch, down_next, last MAC) of the epoch a restarted edifd must recognise retries of."""
        mem = self.current or self.previous
        return (mem.epoch, mem.down_next, mem.last_mac) if mem else (0, 1, bytes(32))

    # --- in an epoch -------------------------------------------------------------------------------

    def check(self, epoch: int, seq: int, mac: bytes) -> bool:
        """Sequence rules for a MAC-verified request with an epoch. True: the current epoch's next
        request (act on it once `advance` took it); False: a retry of one acted on before."""
        cur, prev = self.current, self.previous
        if cur is not None and epoch == cur.epoch:
            if seq == cur.down_next:
                return True
            if 0 < seq < cur.down_next:
                if cur.is_retry(seq, mac):
                    return False
                raise Refusal(Reject.REPLAY, f"sequence {seq} already used")
            if seq == 0:
                raise Refusal(Reject.MALFORMED, "sequence 0 inside an epoch")
            raise Refusal(Reject.GAP, f"sequence {seq}, expected {cur.down_next}")
        if prev is not None and epoch == prev.epoch and 0 < seq < prev.down_next:
            if prev.is_retry(seq, mac):  # acted on before the epoch ended: still only once
                return False
            raise Refusal(Reject.REPLAY, f"sequence {seq} of the previous epoch")
        raise Refusal(Reject.STALE_EPOCH, "not the current epoch (run APP_START)")

    def advance(self, seq: int, mac: bytes) -> None:
        """The request `check` admitted is acted on: the epoch expects the next one."""
        assert self.current is not None and seq == self.current.down_next
        self.current.down_next += 1
        self.current.remember(seq, mac)

    # --- the handshake -------------------------------------------------------------------------

    def hello(self, agent_nonce: bytes) -> AppStartChallenge | None:
        """HELLO: the challenge to send, or None for the same HELLO again (keep the one we sent).
        A HELLO changes no session state: it only replaces the pending challenge."""
        if self.challenge is not None and self.challenge[0] == agent_nonce:
            return None
        self.challenge = (agent_nonce, new_nonce(self._rng))
        return AppStartChallenge(*self.challenge)

    def prove(self, body: AppStart, heartbeat_ms: int) -> AppStartAnswer | None:
        """PROOF: start a new epoch and return its answer, or None for a retry of the PROOF that
        started the current one."""
        pair = (body.agent_nonce, body.host_nonce)
        if pair == self._last_proof:
            return None
        if self.challenge != pair:
            raise Refusal(Reject.REPLAY, "PROOF for no pending challenge")
        if not verify_agent_proof(self._key, self._port_index, body.agent_nonce, body.host_nonce, body.proof):
            raise Refusal(Reject.BAD_PROOF, "agent proof does not verify")
        epoch = new_epoch(self._rng)
        keys = EpochKeys.derive(self._key, self._port_index, body.agent_nonce, body.host_nonce, epoch)
        self.previous, self.current = self.current or self.previous, EpochMemory(epoch, keys=keys)
        self.challenge, self._last_proof = None, pair
        proof = host_proof(self._key, self._port_index, body.agent_nonce, body.host_nonce, epoch)
        return AppStartAnswer(epoch, proof, heartbeat_ms=heartbeat_ms)
