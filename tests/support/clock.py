"""The one fake clock of the tests: a monotonic time that moves only when a test moves it."""

from __future__ import annotations


class Clock:
    """Callable like `time.monotonic`; `advance(s)` or assign `now` to move it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
