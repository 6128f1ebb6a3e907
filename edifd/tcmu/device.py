"""The thin I/O edge of a TCMU device: find the UIO device, map it, own the ring in one thread.

Start (tcmu-runner's reopen sequence, safe whether or not commands are already queued):
    action/block_dev=1 -> action/reset_ring=1 (queued commands fail with BUSY, the initiator
    retries) -> open /dev/uioN + mmap exactly maps/map0/size -> check the mailbox -> block_dev=0.
Stop (so LUN removal never waits on us):
    block_dev=1 -> complete every in-flight command (parked ones with BUSY) -> write(4) ->
    wait until cmd_head == cmd_tail (bounded) -> close. The device stays blocked unless asked
    otherwise: late commands then fail at once with BUSY instead of waiting for cmd_time_out.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from edifd.scsi.command import ScsiResponse
from edifd.tcmu.dispatch import BUSY, DispatchStats, Executor, RingDispatcher
from edifd.tcmu.errors import DeviceError, RingError
from edifd.tcmu.ring import Ring

log = logging.getLogger(__name__)

UIO_CLASS = Path("/sys/class/uio")
CONFIGFS_CORE = Path("/sys/kernel/config/target/core")
UIO_PREFIX = "tcm-user"
_EVENT = b"\0\0\0\0"  # UIO reads and writes must be exactly 4 bytes


@dataclass(frozen=True)
class UioName:
    """The UIO name TCMU gives a device: tcm-user/<hba>/<device>/<subtype>/<cfg>."""

    hba: int
    device: str
    config: str  # "<subtype>/<cfg>", the backstore's dev_config

    @classmethod
    def parse(cls, name: str) -> UioName:
        parts = name.strip().split("/", 3)
        if len(parts) != 4 or parts[0] != UIO_PREFIX or not parts[1].isdigit() or not parts[2]:
            raise DeviceError(f"not a TCMU uio name: {name!r} (expected {UIO_PREFIX}/<hba>/<dev>/<config>)")
        return cls(int(parts[1]), parts[2], parts[3])

    def __str__(self) -> str:
        return f"{UIO_PREFIX}/{self.hba}/{self.device}/{self.config}"

    @property
    def subtype(self) -> str:
        return self.config.split("/", 1)[0]

    def configfs_dir(self, core: Path = CONFIGFS_CORE) -> Path:
        return core / f"user_{self.hba}" / self.device


@dataclass(frozen=True)
class UioInfo:
    name: UioName
    node: Path  # /dev/uioN
    map_size: int  # bytes; mmap exactly this (the kernel rejects any other length)


def find_uio(name: str | UioName, sysfs_class: Path = UIO_CLASS, dev_dir: Path = Path("/dev")) -> UioInfo:
    """Find the UIO device whose name is `name`; raises DeviceError if there is none."""
    want = UioName.parse(name) if isinstance(name, str) else name
    try:
        entries = sorted(sysfs_class.iterdir())
    except OSError as exc:
        raise DeviceError(f"cannot list {sysfs_class}: {exc.strerror}; is the uio module loaded?") from None
    for d in entries:
        try:
            if (d / "name").read_text().strip() != str(want):
                continue
            size = int((d / "maps" / "map0" / "size").read_text().strip(), 0)  # printed as 0x...
        except (OSError, ValueError):
            continue
        return UioInfo(want, dev_dir / d.name, size)
    raise DeviceError(f"no uio device named {str(want)!r} under {sysfs_class}")


def wait_for_uio(name: str | UioName, timeout: float = 5.0, sysfs_class: Path = UIO_CLASS,
                 dev_dir: Path = Path("/dev")) -> UioInfo:
    """find_uio, retried while udev/devtmpfs catch up with a backstore just enabled."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = find_uio(name, sysfs_class, dev_dir)
            if info.node.exists():
                return info
            if time.monotonic() >= deadline:
                raise DeviceError(f"{info.node} does not exist (is devtmpfs mounted on /dev?)")
        except DeviceError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


class Port(Protocol):
    """The UIO file: shared memory plus the 4-byte event read/write."""

    buffer: mmap.mmap | bytearray

    def fileno(self) -> int: ...
    def clear_event(self) -> None: ...
    def notify(self) -> None: ...
    def close(self) -> None: ...


class Control(Protocol):
    """The configfs action/ files of the device."""

    def block(self) -> None: ...
    def unblock(self) -> None: ...
    def reset_ring(self) -> None: ...


class UioFile:
    """/dev/uioN opened and mapped as tcmu-runner does (O_RDWR|O_NONBLOCK|O_CLOEXEC, MAP_SHARED)."""

    def __init__(self, info: UioInfo) -> None:
        try:
            self._fd = os.open(info.node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (another handler, e.g. tcmu-runner, has it open)" if exc.errno == errno.EBUSY else ""
            raise DeviceError(f"cannot open {info.node}: {exc.strerror}{hint}") from None
        try:
            self.buffer = mmap.mmap(self._fd, info.map_size, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as exc:
            os.close(self._fd)
            raise DeviceError(f"cannot map {info.map_size:#x} bytes of {info.node}: {exc}") from None

    def fileno(self) -> int:
        return self._fd

    def clear_event(self) -> None:
        try:
            os.read(self._fd, 4)
        except BlockingIOError:
            pass

    def notify(self) -> None:
        os.write(self._fd, _EVENT)  # runs tcmu_handle_completions in this syscall

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:  # a view is still alive somewhere; the fd must be released anyway
            log.error("%s: mapping still referenced at close", self._fd)
        finally:
            os.close(self._fd)


class ConfigfsControl:
    """Writes action/block_dev and action/reset_ring of core/user_N/<dev>."""

    def __init__(self, device_dir: Path) -> None:
        self.dir = device_dir

    def _write(self, attr: str, value: str) -> None:
        path = self.dir / "action" / attr
        try:
            path.write_text(value)
        except OSError as exc:
            raise DeviceError(f"cannot write {value} to {path}: {exc.strerror}") from None

    def block(self) -> None:
        self._write("block_dev", "1")

    def unblock(self) -> None:
        self._write("block_dev", "0")

    def reset_ring(self) -> None:
        self._write("reset_ring", "1")  # 1: in-flight commands fail with BUSY (retryable)


class _RingOwner:
    """What both owners share: attach, one service step, recovery, close."""

    def __init__(self, port_factory: Callable[[], Port], control: Control, executor: Executor, *,
                 stop_response: ScsiResponse = BUSY, drain_timeout: float = 5.0,
                 unblock_on_stop: bool = False, name: str = "tcmu") -> None:
        self._port_factory = port_factory  # called after block + reset_ring
        self._control = control
        self._executor = executor
        self.stop_response = stop_response
        self.drain_timeout = drain_timeout
        self.unblock_on_stop = unblock_on_stop
        self.name = name
        self._port: Port | None = None
        self._dispatcher: RingDispatcher | None = None
        self._stopping = False
        self.drained = False
        self.recoveries = 0

    @classmethod
    def open(cls, uio_name: str, executor: Executor, *, configfs_core: Path = CONFIGFS_CORE,
             sysfs_class: Path = UIO_CLASS, dev_dir: Path = Path("/dev"), open_timeout: float = 5.0,
             stop_response: ScsiResponse = BUSY, drain_timeout: float = 5.0,
             unblock_on_stop: bool = False) -> Self:
        """Find the UIO device by name (waiting up to open_timeout for it) and prepare a handler;
        nothing is touched until start()."""
        info = wait_for_uio(uio_name, open_timeout, sysfs_class=sysfs_class, dev_dir=dev_dir)
        control = ConfigfsControl(info.name.configfs_dir(configfs_core))
        return cls(lambda: UioFile(info), control, executor, name=str(info.name),
                   stop_response=stop_response, drain_timeout=drain_timeout,
                   unblock_on_stop=unblock_on_stop)

    @property
    def stats(self) -> DispatchStats:
        return self._dispatcher.stats if self._dispatcher else DispatchStats()

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight if self._dispatcher else 0

    @property
    def ring_pads(self) -> int:
        """PAD entries seen so far, i.e. how often the kernel wrapped the ring."""
        return self._dispatcher.ring.pads if self._dispatcher else 0

    def _wake(self) -> None:
        raise NotImplementedError

    def _ring_drained(self) -> bool:
        return self._dispatcher is not None and self._dispatcher.ring.drained

    def _attach(self) -> None:
        """block_dev=1, reset_ring=1, open + map + check; the caller unblocks once it polls.
        On failure the device is unblocked again and nothing stays open."""
        if self._port is not None or self.drained:
            raise DeviceError(f"{self.name}: already started")
        self._control.block()
        try:
            self._control.reset_ring()
            port = self._port_factory()
            try:
                ring = Ring(port.buffer)
            except RingError:
                port.close()
                raise
        except BaseException:
            self._control.unblock()
            raise
        self._port = port
        self._dispatcher = RingDispatcher(ring, self._executor, self._wake)
        log.info("%s: attached, ring %d bytes", self.name, ring.size)

    def _step(self) -> None:
        """Serve the ring once (a RingError resets it); while stopping, force every in-flight
        command with stop_response. Ends with one write(4) if the tail moved."""
        assert self._port is not None and self._dispatcher is not None
        disp = self._dispatcher
        try:
            disp.service()
        except RingError as exc:
            self._recover(exc)
        if self._stopping:
            disp.complete_all(self.stop_response)
        if disp.ring.take_notify():
            self._port.notify()

    def _drain_over(self, now: float, deadline: float) -> bool:
        """While stopping, after a step: True once the ring is drained (then `drained` is set) or
        the drain deadline passed (logged)."""
        if self._ring_drained():
            self.drained = True
            return True
        if now > deadline:
            log.error("%s: ring not drained after %.1f s", self.name, self.drain_timeout)
            return True
        return False

    def _begin_stop(self) -> None:
        self._stopping = True
        try:
            self._control.block()
        except DeviceError as exc:  # e.g. the backstore is already gone
            log.warning("%s: %s", self.name, exc)

    def _recover(self, exc: RingError) -> None:
        """The ring holds something we cannot parse: let the kernel fail what is queued (BUSY)
        and start again from an empty ring, as tcmu-runner does on reopen."""
        assert self._port is not None and self._dispatcher is not None
        log.error("%s: %s; resetting the ring", self.name, exc)
        self.recoveries += 1
        self._control.block()
        try:
            self._control.reset_ring()
            self._dispatcher.ring.release()
            self._dispatcher.reset(Ring(self._port.buffer))
        finally:
            self._control.unblock()

    def _close(self) -> None:
        assert self._port is not None and self._dispatcher is not None
        self._dispatcher.ring.release()
        self._port.close()
        if self._stopping and self.unblock_on_stop:
            try:
                self._control.unblock()
            except DeviceError as exc:
                log.error("%s: %s", self.name, exc)
        log.info("%s: closed (%s)", self.name, "drained" if self.drained else "not drained")


class TcmuHandler(_RingOwner):
    """Owns one TCMU ring from a thread that polls the UIO fd and a wakeup eventfd.

    `executor.execute()` runs on that thread and must return quickly (anything slow returns a
    `Pending`, which may be resolved from any thread). Use `TcmuHandler.open(uio_name, executor)`
    on a real device; the constructor takes injectable port/control for tests (see fakekernel).
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_lock = threading.Lock()
        self._efd = -1

    def start(self) -> None:
        """Attach (block, reset_ring, open, check, unblock) and start the owner thread."""
        self._attach()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"tcmu:{self.name}", daemon=True)
        self._thread.start()
        self._control.unblock()

    def stop(self, timeout: float | None = None) -> bool:
        """Complete everything in flight, drain and close. Returns True if the ring drained."""
        if self._thread is None:
            return self.drained
        self._stop.set()
        self._wake()
        self._thread.join(timeout if timeout is not None else self.drain_timeout + 5.0)
        if self._thread.is_alive():
            log.error("%s: owner thread did not finish", self.name)
            return False
        return self.drained

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake(self) -> None:
        # A Pending may resolve after we closed: never write to a closed (maybe reused) fd.
        with self._wake_lock:
            if self._efd >= 0:
                os.eventfd_write(self._efd, 1)

    def _run(self) -> None:
        assert self._port is not None and self._dispatcher is not None
        port = self._port
        poller = select.poll()
        poller.register(port.fileno(), select.POLLIN)
        poller.register(self._efd, select.POLLIN)
        deadline: float | None = None
        try:
            while True:
                gone = False
                for fd, ev in poller.poll(None if deadline is None else 50):
                    if fd == self._efd:
                        try:
                            os.eventfd_read(self._efd)
                        except BlockingIOError:
                            pass
                    elif ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        gone = True
                    else:
                        port.clear_event()  # before draining, so no event is lost
                if gone:
                    log.warning("%s: uio device went away", self.name)
                    break
                if self._stop.is_set() and deadline is None:
                    deadline = time.monotonic() + self.drain_timeout
                    self._begin_stop()
                self._step()
                if deadline is not None and self._drain_over(time.monotonic(), deadline):
                    break
        except Exception:
            log.exception("%s: ring owner failed", self.name)
        finally:
            with self._wake_lock:
                os.close(self._efd)
                self._efd = -1
            self._close()
