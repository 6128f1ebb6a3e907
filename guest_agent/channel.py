"""One control disk's channel as the commands use it: options, the client, the endpoint, the state file.

`ChannelSession` opens the endpoint on the chosen disk around a fresh (or restored) `ChannelClient`
and keeps the application's record (ping's tally) in the same `--state` file as the client's
snapshot, so both are saved together (docs/agent.md, "Restart safety").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from edifd.edges.secret_file import load_channel_key
from edifd.proto import Body, ChannelKey, ChannelKeyError, Message
from edifd.proto.lba import GeometryError

from .discovery import (
    DEFAULT_PRODUCT,
    DEFAULT_VENDOR,
    ControlDisk,
    check_control_disk,
    discover,
    disk_for_device,
    parse_wwpn,
    select,
)
from .disk import ChannelCore, ControlDiskEndpoint
from .exits import EXIT_IO, EXIT_KEY, EXIT_NO_DISK, EXIT_NOT_ESTABLISHED, AgentExit
from .state import StateFile, StateFileError, decode_state, encode_state

T = TypeVar("T")


@dataclass(frozen=True)
class ChannelOptions:
    """The options every command shares (cli's `_common`)."""

    key_path: str | None = None
    port: str | None = None  # WWPN text of the HBA port whose control disk to use
    device: str | None = None  # skip discovery
    vendor: str = DEFAULT_VENDOR
    product: str = DEFAULT_PRODUCT
    port_index: int = 0
    parked: int = 4
    state_path: str | None = None
    timeout: float = 60.0  # handshake, and each reply
    direct: bool = True  # O_DIRECT
    sys_root: str = "/sys"


class AgentClient(ChannelCore, Protocol):
    """What the commands use of guest_agent.client.ChannelClient beyond the edge's part."""

    @property
    def established(self) -> bool: ...

    def start(self) -> None: ...

    def request(self, body: Body) -> int: ...


def make_client(key: ChannelKey, *, port_index: int, block_size: int, capacity_blocks: int, parked_reads: int,
                state: bytes | None, **extra: int) -> AgentClient:
    """The sans-IO channel client (guest_agent.client); a seam for tests. `extra`: e.g. keepalive_ms."""
    from .client import ChannelClient

    return ChannelClient(key, port_index=port_index, block_size=block_size, capacity_blocks=capacity_blocks,
                         parked_reads=parked_reads, state=state, **extra)


def describe_device(path: str, *, sys_root: str) -> ControlDisk:
    """What --device names, as discovery sees it: INQUIRY vendor/product and VPD 0x83 from sysfs, or a
    regular file (no identity). A seam for tests, like `make_client`: their stand-in disk is a regular
    file, so they give it a control LUN's identity here; `find_disk` still checks what this returns."""
    return disk_for_device(path, sys_root=sys_root)


def find_disk(o: ChannelOptions) -> ControlDisk:
    """The control disk of --device, or the one discovery finds (for --port, if given).

    --device is checked before anything opens it (`check_control_disk`): a disk without the control
    LUN's identity, or a regular file, is refused with DiscoveryError (exit 3), so nothing is written."""
    wwpn = parse_wwpn(o.port) if o.port else None
    if o.device:
        return check_control_disk(describe_device(o.device, sys_root=o.sys_root), vendor=o.vendor,
                                  product=o.product, wwpn=wwpn, name=o.device)
    return select(discover(o.vendor, o.product, sys_root=o.sys_root), wwpn=wwpn, vendor=o.vendor,
                  product=o.product, where=os.path.join(o.sys_root, "block"))


def load_key(path: str) -> ChannelKey:
    try:
        return load_channel_key(path)
    except ChannelKeyError as e:
        raise AgentExit(EXIT_KEY, str(e)) from None


class ChannelSession:
    """One endpoint plus the application's record, persisted together in the --state file.

    Every client call goes through the endpoint lock (`ep.call`, `locked`, or a handler, which the
    reader threads run under it): the client itself is not thread-safe.
    """

    def __init__(self, disk: ControlDisk, key: ChannelKey, o: ChannelOptions, *, app_key: str | None = None,
                 keepalive_ms: int = 0) -> None:
        self.disk = disk
        self.app_key = app_key
        self.app: dict[str, Any] = {}
        self.event = threading.Event()  # set on every delivery: wakes the application thread
        self.handlers: list[Callable[[Message], None]] = []
        self.state = StateFile(o.state_path) if o.state_path else None
        saved: bytes | None = None
        try:
            raw = self.state.load() if self.state else None
            if raw is not None:
                saved, self.app = decode_state(raw)
        except StateFileError as e:
            raise AgentExit(EXIT_IO, str(e)) from None
        self.record: Callable[[], dict[str, Any]] = lambda: {}
        # keepalive_ms goes into APP_START so the host can tell our death (only the security service sets it).
        extra = {"keepalive_ms": keepalive_ms} if keepalive_ms else {}
        try:
            self.client = make_client(key, port_index=o.port_index, block_size=disk.block_size,
                                      capacity_blocks=disk.capacity_blocks, parked_reads=o.parked,
                                      state=saved, **extra)
        except GeometryError as e:  # e.g. a control LUN configured too small for the channel layout
            raise AgentExit(EXIT_NO_DISK, f"{disk.devnode} cannot carry the channel: {e}") from None
        self.ep = ControlDiskEndpoint(self.client, disk.devnode, block_size=disk.block_size, parked=o.parked,
                                      direct=o.direct, persist=self._persist if self.state else None,
                                      on_message=self._deliver)
        try:
            self.ep.open()
        except OSError as e:
            raise AgentExit(EXIT_IO, str(e)) from None

    def _persist(self, snapshot: bytes) -> None:
        assert self.state is not None
        app = {self.app_key: self.record()} if self.app_key else {}
        self.state.save(encode_state(snapshot, app))

    def _deliver(self, msg: Message) -> None:  # reader thread, under the endpoint lock
        for h in self.handlers:
            h(msg)
        self.event.set()

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def locked(self, fn: Callable[[], T]) -> T:
        with self.ep.lock:
            return fn()

    @property
    def established(self) -> bool:
        """Under the lock, and wakes the writer (a handshake step may be due)."""
        return bool(self.ep.call(lambda c: c.established))

    def establish(self, timeout: float, *, again: bool = False) -> None:
        """Run the APP_START handshake unless the restored state is already established (`again`: always,
        e.g. after the host stopped answering while the client still counts the channel as up)."""
        ep = self.ep
        if again or not self.established:
            ep.call(lambda c: c.start())
        deadline = time.monotonic() + timeout
        while not self.established:
            if ep.fatal:
                raise AgentExit(EXIT_NOT_ESTABLISHED, f"channel failed: {ep.fatal}")
            if time.monotonic() > deadline:
                st = ep.status()
                raise AgentExit(
                    EXIT_NOT_ESTABLISHED,
                    f"no APP_START answer from edifd on {ep.path} within {timeout:g} s (wrong key? edifd "
                    f"not serving this LUN?) edge={st['edge']} last_error={st['last_error']}",
                )
            self.wait(0.2)

    def request(self, body: Body) -> int:
        """Queue a request (caller holds the endpoint lock, e.g. in a handler) and wake the writer."""
        rid = self.client.request(body)
        self.ep.kick()
        return rid

    def drop_responses(self) -> None:
        """Nobody waits on these answers: do not hoard them in the client (caller holds the lock)."""
        take = getattr(self.client, "take_responses", None)
        if take is not None:
            take()
