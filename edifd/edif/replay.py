"""RFC 4303 §3.4.3 anti-replay window for one inbound SA, sans-IO.

Two steps on purpose: `check()` before the ICV is verified (cheap rejection of replays, and no
state change), `accept()` only after it verified — so a forged frame can never move the window
(RFC 4303 §3.4.3: "the receive window is updated only if the integrity verification succeeds").
The bitmap is a Python int: bit i set means sequence number `highest - i` was accepted.
"""

from __future__ import annotations

import enum

from .errors import EdifError

DEFAULT_WINDOW = 64
MIN_WINDOW = 32  # RFC 4303: at least 32
MAX_SEQ = 0xFFFFFFFF  # 32-bit sequence numbers, no ESN: FC-SP ESP_Header carries 4 bytes


class ReplayVerdict(enum.Enum):
    OK = "ok"
    ZERO = "zero"  # sequence numbers start at 1; 0 is never sent
    DUPLICATE = "duplicate"  # inside the window and already accepted
    TOO_OLD = "too_old"  # at or below highest - window


class ReplayWindow:
    """Highest accepted sequence number plus a bitmap of the `size` numbers at and below it."""

    __slots__ = ("size", "highest", "_bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not MIN_WINDOW <= size <= 4096:
            raise EdifError(f"replay window must be an int in {MIN_WINDOW}..4096, got {size!r}")
        self.size = size
        self.highest = 0  # nothing accepted yet
        self._bitmap = 0
        self._mask = (1 << size) - 1

    def check(self, seq: int) -> ReplayVerdict:
        """Would `seq` be acceptable? Changes nothing."""
        if seq <= 0:
            return ReplayVerdict.ZERO
        if seq > self.highest:
            return ReplayVerdict.OK
        diff = self.highest - seq
        if diff >= self.size:
            return ReplayVerdict.TOO_OLD
        return ReplayVerdict.DUPLICATE if self._bitmap >> diff & 1 else ReplayVerdict.OK

    def fresh(self, seq: int) -> bool:
        """`check(seq) is OK` without the verdict object: the bulk data path asks this per frame."""
        if seq > self.highest:
            return True
        diff = self.highest - seq
        return seq > 0 and diff < self.size and not self._bitmap >> diff & 1

    def accept_fresh(self, seq: int) -> None:
        """`accept` for a `seq` that `fresh()` just vouched for and whose ICV verified."""
        if seq > self.highest:
            shift = seq - self.highest
            # A jump of `size` or more leaves nothing of the old window.
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.highest = seq
        else:
            self._bitmap |= 1 << (self.highest - seq)

    def accept(self, seq: int) -> None:
        """Record `seq` as received. Call only after check() said OK and the ICV verified."""
        if self.check(seq) is not ReplayVerdict.OK:
            raise EdifError(f"sequence number {seq} is not acceptable to the replay window")
        self.accept_fresh(seq)

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, highest={self.highest})"
