"""Secure-session setup latency as a histogram: from a secure login (or the agent's SECURE_CONNECT) to
the session being secure. Sans-IO: the caller measures with its own clock; edifd's engine, the agent's
security service and the metrics converter (edifd.metrics) share it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class LatencyHistogram:
    """Cumulative bucket counts, a sum and a count of observed durations (seconds). Sans-IO: the caller
    measures with its own clock. `snapshot()` is JSON-safe (no infinity: the count is the +Inf bucket)."""

    def __init__(self, buckets: Iterable[float] = SETUP_BUCKETS) -> None:
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        for i, le in enumerate(self.buckets):
            if seconds <= le:
                self._counts[i] += 1
        self.count += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": [[le, n] for le, n in zip(self.buckets, self._counts, strict=True)],
                "count": self.count, "sum": self.sum}
