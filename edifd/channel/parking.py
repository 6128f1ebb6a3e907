"""The parked READs of one control LUN: the agent's READs waiting for a message or their heartbeat.

A READ that finds nothing to deliver parks; it completes with the next message, or with a MAC'd
heartbeat after park_time. Not thread-safe on its own: ChannelCore holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from edifd.scsi import Pending, ScsiCommand


@dataclass
class Parked:
    pending: Pending
    since: float
    length: int
    cursor: int | None  # the acknowledged cursor this READ carried (None: stale or none)


class ParkedReads:
    """Parked READs in arrival order."""

    def __init__(self) -> None:
        self._parked: OrderedDict[int, Parked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parked)

    def __iter__(self) -> Iterator[Parked]:
        return iter(self._parked.values())

    def park(self, p: Parked) -> None:
        self._parked[id(p.pending)] = p

    def abort(self, cmd: ScsiCommand) -> None:
        """Forget the READ of `cmd` (the transport ended it)."""
        for k, p in self._parked.items():
            if p.pending.command is cmd:
                del self._parked[k]
                return

    def newest(self) -> Parked | None:
        return next(reversed(self._parked.values()), None)

    def remove(self, p: Parked) -> None:
        del self._parked[id(p.pending)]

    def take_due(self, now: float, park_time: float) -> list[Parked]:
        """Remove and return the READs parked for park_time or longer."""
        due = [k for k, p in self._parked.items() if now - p.since >= park_time]
        return [self._parked.pop(k) for k in due]

    def take_all(self) -> list[Parked]:
        out = list(self._parked.values())
        self._parked.clear()
        return out
