"""LoopThread: an asyncio event loop on its own daemon thread, the front a synchronous caller uses.

The HBA (driven from the TCMU ring thread) and an in-process target server (labs, tests, bench)
each keep all their state on one loop; other threads reach it only through `call_soon` and `run`.
An owner that is already inside a running loop (`await hba.start()`) binds that loop instead
(`use_running_loop`), so the same two calls work in both cases.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """One event loop for one owner; `name` names the thread and the errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def threaded(self) -> bool:
        """True while the loop runs on our own thread (between `start` and `stop`)."""
        return self._thread is not None

    def use_running_loop(self) -> None:
        """Bind the loop the caller runs on (async use, or the owner's start on our thread)."""
        self._loop = asyncio.get_running_loop()

    def start(self, main: Callable[[], Coroutine[Any, Any, object]], timeout: float) -> None:
        """Start the loop on a daemon thread and run `main()` on it; returns once it is done."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(main(), loop).result(timeout)

    def stop(self, main: Callable[[], Coroutine[Any, Any, object]], timeout: float) -> None:
        """Run `main()` (the owner's stop) on the loop, then stop the loop and join the thread.
        A no-op when not started on a thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(main(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Thread-safe: run `fn(*args)` on the loop."""
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not running (start_thread, or start on a running loop)")
        self._loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Thread-safe: run `coro` on the loop and wait for its result (not from the loop thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running (start_thread, or start on a running loop)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)
