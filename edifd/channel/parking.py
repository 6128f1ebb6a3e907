"""Parked READs: the agent queues READs in advance; each waits for an upstream message or the heartbeat.

Sans-IO: the caller passes `now` (monotonic seconds) and decides when to call `expire()`. A READ is
never parked forever: after `park_time` it completes with the heartbeat payload, so neither the guest,
nor LIO's LUN removal, nor edifd's own shutdown ever waits on it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edifd.scsi import IoRequest, Pending, ScsiCommand, ScsiResponse, Status


@dataclass(frozen=True)
class ParkedRead:
    pending: Pending
    request: IoRequest
    parked_at: float
    length: int  # bytes the READ asked for


class ParkedReads:
    """READs waiting on one control LUN, oldest first."""

    def __init__(self, park_time: float, heartbeat: bytes = b"") -> None:
        if not park_time > 0:
            raise ValueError("park_time must be positive")
        self.park_time = park_time
        self.heartbeat = heartbeat  # payload of a "nothing" completion (zero padded by the disk)
        self._parked: OrderedDict[int, ParkedRead] = OrderedDict()
        self.heartbeats = 0
        self.parked_total = 0

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, req: IoRequest, block_size: int, now: float) -> Pending:
        pending = Pending(req.command)
        self._parked[id(pending)] = ParkedRead(pending, req, now, req.nblocks * block_size)
        self.parked_total += 1
        return pending

    def take(self) -> ParkedRead | None:
        """The oldest parked READ, for delivering a message into; None if none is parked."""
        if not self._parked:
            return None
        return self._parked.popitem(last=False)[1]

    def next_deadline(self) -> float | None:
        if not self._parked:
            return None
        return next(iter(self._parked.values())).parked_at + self.park_time

    def expire(self, now: float) -> int:
        """Complete every READ parked for park_time or longer with the heartbeat."""
        due = [k for k, p in self._parked.items() if now - p.parked_at >= self.park_time]
        for k in due:
            self._complete(self._parked.pop(k))
        return len(due)

    def release_all(self) -> int:
        """Complete everything with the heartbeat now (stop, LUN removal, TMR)."""
        n = len(self._parked)
        while self._parked:
            self._complete(self._parked.popitem(last=False)[1])
        return n

    def abort(self, pending: Pending) -> bool:
        """Forget a READ the transport gave up on (TMR ABORT TASK); it must not be completed later."""
        return self._parked.pop(id(pending), None) is not None

    def abort_command(self, cmd: ScsiCommand) -> bool:
        for key, p in self._parked.items():
            if p.pending.command is cmd:
                del self._parked[key]
                return True
        return False

    def _complete(self, p: ParkedRead) -> None:
        self.heartbeats += 1
        p.pending.resolve(ScsiResponse(Status.GOOD, self.heartbeat[: p.length]))
