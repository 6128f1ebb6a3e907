"""The control LUN's medium: READs park until a message or the heartbeat; the edge that ticks it.

What a WRITE carries (a channel message) is decoded, authorized and dispatched by the channel
(issue 4). Until that lands, a WRITE to the control LUN is refused with ILLEGAL REQUEST / INVALID
FIELD IN PARAMETER LIST (05/26/00): nothing a WRITE carries is ever acted on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edifd.scsi import IoRequest, MediumError, Pending, ScsiCommand, SenseKey

from .parking import ParkedReads

log = logging.getLogger("edifd.channel")

ASC_INVALID_FIELD_IN_PARAMETER_LIST = 0x26


class ControlLun:
    """Medium of one control LUN. Thread-safe: the ring owner parks, the heartbeat ticker expires."""

    write_cache = False

    def __init__(self, size_bytes: int, block_size: int = 512, *, park_time: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if size_bytes < block_size or size_bytes % block_size:
            raise ValueError("control LUN size must be a positive multiple of the block size")
        self._block_size = block_size
        self._num_blocks = size_bytes // block_size
        self._clock = clock
        self._lock = threading.Lock()
        self.parked = ParkedReads(park_time)
        self.writes_refused = 0
        self._closing = False

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def read(self, req: IoRequest) -> bytes | Pending:
        with self._lock:
            if self._closing:  # shutting down: nothing parks any more, so LUN removal cannot wait on it
                return self.parked.heartbeat
            return self.parked.park(req, self._block_size, self._clock())

    def write(self, req: IoRequest, data: bytes) -> None:
        self.writes_refused += 1
        raise MediumError(SenseKey.ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST, 0)

    def flush(self, req: IoRequest) -> None:
        return None

    def abort(self, cmd: ScsiCommand) -> None:
        """The transport ended a parked READ (TMR, ring reset): drop it."""
        with self._lock:
            self.parked.abort_command(cmd)

    def tick(self) -> int:
        with self._lock:
            return self.parked.expire(self._clock())

    def release_all(self) -> int:
        with self._lock:
            return self.parked.release_all()

    def close(self) -> int:
        """Stop parking: complete what is parked and answer later READs at once."""
        with self._lock:
            self._closing = True
            return self.parked.release_all()


class HeartbeatTicker:
    """One thread that expires parked READs of every control LUN a few times per park_time."""

    def __init__(self, luns: list[ControlLun], interval: float = 0.25) -> None:
        self.luns = luns
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self.luns:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for lun in self.luns:
                try:
                    lun.tick()
                except Exception:  # a broken completion must not stop the heartbeat of the others
                    log.exception("heartbeat tick failed")
