"""Bounded exponential backoff for re-arming a READ or retrying a WRITE after an I/O error (sans-IO).

An EIO on a parked READ usually means a host-side timer fired or the path is down (edifd restarting,
iSCSI reconnecting); retrying at once would spin, never retrying would strand the channel. The delays
double from ``initial`` up to ``maximum`` and return to ``initial`` after a success. No jitter: the few
threads of one agent re-arming together is harmless, and deterministic delays keep tests exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False, repr=False)
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self._next = self.initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call after a failure grows it, up to maximum."""
        d = self._next
        self._next = min(self.maximum, self._next * self.factor)
        self.failures += 1
        return d

    def reset(self) -> None:
        self._next = self.initial
        self.failures = 0
