"""Burst-limited logging of refused control-LUN WRITEs: one line per burst per reason."""

from __future__ import annotations

import logging
from collections.abc import Callable

from edifd.proto.reject import Reject


class BurstLog:
    """Log the first rejection of a burst per reason; a burst ends after `quiet` seconds without one.

    The next first-of-burst line says how many were suppressed. Messages name the reason and the
    counts only: never message content, never key material.
    """

    def __init__(self, log: logging.Logger, clock: Callable[[], float], quiet: float = 10.0) -> None:
        self._log = log
        self._clock = clock
        self._quiet = quiet
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def rejected(self, where: str, reason: Reject, detail: str) -> bool:
        """Returns True if this one was logged."""
        now = self._clock()
        name = reason.counter
        last = self._last.get(name)
        self._last[name] = now
        if last is not None and now - last < self._quiet:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            return False
        n = self._suppressed.pop(name, 0)
        more = f" ({n} more suppressed in the previous burst)" if n else ""
        self._log.warning("%s: WRITE rejected (%s): %s%s", where, name, detail, more)
        return True
