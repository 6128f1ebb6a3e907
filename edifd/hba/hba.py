"""Hba: the software HBA — its initiator ports on one asyncio loop, and a thread-safe front.

Two ways to use it:
- inside a running loop: `await hba.start()`, `await hba.execute(wwpn, lun, cmd)`, `await hba.stop()`;
- from other threads (the TCMU ring thread): `hba.start_thread()` runs the loop in a daemon thread;
  `hba.submit(wwpn, lun, cmd)` returns a `concurrent.futures.Future[ScsiResponse]`, and
  `hba.submit_callback(...)` calls back on the HBA thread (what `RemoteLun` uses).

Every command completes: with the target's response, or CHECK CONDITION with the sense documented
in `edifd.hba.fcp` (io timeout, target gone) — never with an exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from edifd.edges.loop_thread import LoopThread
from edifd.scsi import ScsiCommand, ScsiResponse, Status

from .events import SessionState
from .fcp import SENSE_TARGET_GONE
from .port import InitiatorPort, PortConfig, PortStatus, Timers
from .transform import FrameTransform, LoginPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")


class HbaError(Exception):
    """A discovery call failed (remote port unknown, not logged in in time, bad REPORT LUNS)."""


class Hba:
    def __init__(
        self,
        ports: Iterable[PortConfig],
        timers: Timers | None = None,
        *,
        policy: LoginPolicy | None = None,
        transform_factory: Callable[[PortConfig], FrameTransform] | None = None,
    ) -> None:
        self.timers = timers or Timers()
        configs = list(ports)
        names = [p.name for p in configs]
        wwpns = [p.wwpn for p in configs]
        if len(set(names)) != len(names) or len(set(wwpns)) != len(wwpns):
            raise ValueError("port names and WWPNs must be unique")
        self.ports = [
            InitiatorPort(c, self.timers, policy=policy,
                          transform=transform_factory(c) if transform_factory else None)
            for c in configs
        ]
        self._runner = LoopThread("edif-hba")

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner.use_running_loop()
        for p in self.ports:
            p.start()

    async def stop(self, *, logout: bool = True) -> None:
        await asyncio.gather(*(p.stop(logout=logout) for p in self.ports))

    def start_thread(self, timeout: float = 30.0) -> None:
        """Run the HBA on its own event loop in a daemon thread; returns once its ports started."""
        self._runner.start(self.start, timeout)

    def stop_thread(self, timeout: float = 10.0) -> None:
        self._runner.stop(self.stop, timeout)

    # --- routing ----------------------------------------------------------------------------------

    def port_for(self, remote_wwpn: int) -> InitiatorPort | None:
        """The port linked to `remote_wwpn` (learnt at login, or named in its config)."""
        for p in self.ports:
            if p.session.remote_wwpn == remote_wwpn:
                return p
        for p in self.ports:
            if p.session.remote_wwpn is None and p.config.remote_wwpn == remote_wwpn:
                return p
        return None

    # --- commands ---------------------------------------------------------------------------------

    def _submit_in_loop(self, remote_wwpn: int, lun: int, cmd: ScsiCommand,
                        done: Callable[[ScsiResponse], None], timeout: float | None) -> None:
        port = self.port_for(remote_wwpn)
        if port is None:
            done(ScsiResponse(Status.CHECK_CONDITION, bytes(cmd.data_in_len), SENSE_TARGET_GONE, data_len=0))
            return
        port.submit(lun, cmd, done, timeout)

    def submit_callback(self, remote_wwpn: int, lun: int, cmd: ScsiCommand,
                        done: Callable[[ScsiResponse], None], timeout: float | None = None) -> None:
        """Thread-safe: queue `cmd`; `done(response)` runs once, on the HBA loop thread."""
        self._runner.call_soon(self._submit_in_loop, remote_wwpn, lun, cmd, done, timeout)

    def submit(self, remote_wwpn: int, lun: int, cmd: ScsiCommand,
               timeout: float | None = None) -> concurrent.futures.Future[ScsiResponse]:
        """Thread-safe: a Future that always resolves with a ScsiResponse."""
        fut: concurrent.futures.Future[ScsiResponse] = concurrent.futures.Future()
        self.submit_callback(remote_wwpn, lun, cmd, fut.set_result, timeout)
        return fut

    async def execute(self, remote_wwpn: int, lun: int, cmd: ScsiCommand,
                      timeout: float | None = None) -> ScsiResponse:
        """On the HBA loop: run one command."""
        fut: asyncio.Future[ScsiResponse] = asyncio.get_running_loop().create_future()
        self._submit_in_loop(remote_wwpn, lun, cmd, lambda r: fut.done() or fut.set_result(r), timeout)
        return await fut

    # --- discovery and status ---------------------------------------------------------------------

    async def wait_ready(self, remote_wwpn: int, timeout: float) -> bool:
        """True once the remote port is logged in (PRLI done), False after `timeout`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            port = self.port_for(remote_wwpn)
            left = end - loop.time()
            if port is not None and port.session.ready:
                return True
            if left <= 0:
                return False
            if port is None:
                await asyncio.sleep(min(0.02, left))
                continue
            await port.wait_state(SessionState.READY, timeout=min(left, 0.5))

    async def report_luns(self, remote_wwpn: int, timeout: float | None = None) -> list[int]:
        cdb = struct.pack(">BBBxxxIxx", 0xA0, 0, 0, 4096)
        resp = await self.execute(remote_wwpn, 0, ScsiCommand(cdb, data_in_len=4096), timeout)
        if resp.status != Status.GOOD:
            raise HbaError(f"REPORT LUNS failed: status {resp.status.name}, sense {resp.sense[:14].hex()}")
        return parse_report_luns(resp.data[: resp.valid_len])

    def remote_ports(self) -> list[PortStatus]:
        """Snapshot of every port and its remote port (call on the loop, or use `status()`)."""
        return [p.status() for p in self.ports]

    def status(self, timeout: float = 5.0) -> list[PortStatus]:
        """Thread-safe `remote_ports()`."""
        if not self._runner.threaded:
            return self.remote_ports()

        async def snap() -> list[PortStatus]:
            return self.remote_ports()
        return self._runner.run(snap(), timeout)

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Thread-safe: run a coroutine of this HBA (e.g. `wait_ready`, `report_luns`) and wait."""
        return self._runner.run(coro, timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Thread-safe: run `fn(*args)` on the HBA loop (the EDIF engine keeps its state there)."""
        self._runner.call_soon(fn, *args)

    def auth_complete(self, remote_wwpn: int) -> None:
        """Thread-safe: AUTH_OK for `remote_wwpn`; PRLI follows (EDIF). Nothing before start."""
        port = self.port_for(remote_wwpn)
        if port is not None:
            try:
                self._runner.call_soon(port.auth_complete)
            except RuntimeError:
                pass


def parse_report_luns(data: bytes) -> list[int]:
    """LUN numbers from REPORT LUNS parameter data (peripheral and flat addressing)."""
    if len(data) < 8:
        raise HbaError("REPORT LUNS data shorter than its header")
    (length,) = struct.unpack_from(">I", data, 0)
    luns = []
    for off in range(8, min(8 + length, len(data)) - 7, 8):
        b0, b1 = data[off], data[off + 1]
        method = b0 >> 6
        if method == 0:
            luns.append(b1)
        elif method == 1:
            luns.append((b0 & 0x3F) << 8 | b1)
        else:
            raise HbaError(f"unsupported LUN addressing in {data[off:off + 8].hex()}")
    return luns
