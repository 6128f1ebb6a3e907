"""The asyncio owner of a TCMU ring: the same attach/serve/stop as `device.TcmuHandler`, driven by
`loop.add_reader` on the UIO fd instead of a thread.

`executor.execute()` then runs on the event loop, so it must not block. A `Pending` may still be
resolved from any thread: its callback schedules one service pass with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edifd.tcmu.device import _RingOwner

log = logging.getLogger(__name__)

_DRAIN_POLL = 0.05  # seconds between drain checks while stopping


class AsyncTcmuHandler(_RingOwner):
    """Owns one TCMU ring from the running asyncio loop. `await start()`, `await stop()`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._scheduled = False  # coalesces wakeups: one pass serves every queued completion
        self._fd = -1

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closed

    async def start(self) -> None:
        """Attach (block, reset_ring, open, check), watch the UIO fd, unblock."""
        self._attach()
        assert self._port is not None
        self._loop = asyncio.get_running_loop()
        self._fd = self._port.fileno()
        self._loop.add_reader(self._fd, self._on_readable)
        self._control.unblock()
        self._loop.call_soon(self._serve)

    async def stop(self) -> bool:
        """Block, complete everything in flight, drain (bounded), close. True if drained."""
        loop = self._loop
        if loop is None or self._closed:
            return self.drained
        self._begin_stop()
        deadline = loop.time() + self.drain_timeout
        while True:
            self._serve()
            if self._closed:
                break
            if self._drain_over(loop.time(), deadline):
                break
            await asyncio.sleep(_DRAIN_POLL)
        self._teardown()
        return self.drained

    def _on_readable(self) -> None:
        assert self._port is not None
        try:
            self._port.clear_event()  # before draining, so no event is lost
        except OSError as exc:  # EIO once the uio device is gone
            log.warning("%s: uio device went away (%s)", self.name, exc.strerror)
            self._teardown()
            return
        self._serve()

    def _serve(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        try:
            self._step()
        except Exception:
            log.exception("%s: ring owner failed", self.name)
            self._teardown()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or self._closed or self._scheduled:
            return
        self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._serve)
        except RuntimeError:  # the loop is closed: nothing left to complete into
            pass

    def _teardown(self) -> None:
        if self._closed:
            return
        self._closed = True
        assert self._loop is not None and self._port is not None
        self._loop.remove_reader(self._fd)
        self._close()
