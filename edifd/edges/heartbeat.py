"""The edge that drives every control LUN's clock: one ticker thread for all ChannelCores.

Each tick completes the parked READs whose park time is up with the heartbeat, and redelivers
what a parked READ shows was lost. The cores themselves never look at a clock on their own.
"""

from __future__ import annotations

import logging
import threading

from edifd.channel import ChannelCore

log = logging.getLogger("edifd.channel")


class HeartbeatTicker:
    """One thread that ticks every control LUN a few times per park_time."""

    def __init__(self, cores: list[ChannelCore], interval: float = 0.25) -> None:
        self.cores = cores
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self.cores:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for core in self.cores:
                try:
                    core.tick()
                except Exception:  # a broken completion must not stop the heartbeat of the others
                    log.exception("heartbeat tick failed on %s", core.name)
