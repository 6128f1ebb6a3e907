"""InitiatorPort: the asyncio edge of one HBA port — a TCP connection to one target port.

One FC link = one TCP connection (point-to-point). The port connects, feeds received bytes to an
`FcipStreamDecoder`, hands frames to its `InitiatorSession` and writes what the session returns.
Bulk FCP_DATA moves as `WireBurst`s (one buffer per sequence, one `writelines` per batch) and
`DataRun`s (edifd/fc/burst.py); everything else as frames. Link reset = drop the connection,
`decoder.reset()`, reconnect with bounded exponential backoff plus jitter, and log in again (FLOGI).
Timers are one `loop.call_later` for the next deadline of the session or of its login's SAs (a
delayed RX delete); the clock is the loop's (tests may pass their own `clock`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from edifd.fc import (
    FCIP_TCP_PORT,
    DataRun,
    FcipStreamDecoder,
    Frame,
    LinkError,
    WireBurst,
    encode_frame,
    wwn_str,
)
from edifd.fc.pcap import LinkType, PcapWriter
from edifd.scsi import ScsiCommand, ScsiResponse, Status

from .counters import PortCounters
from .events import Completed, ResetLink, SessionState, StateChanged
from .fcp import SENSE_TARGET_GONE
from .port_security import PortSecurity
from .session import InitiatorSession
from .transform import FrameTransform, LoginPolicy

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class PortConfig:
    """One initiator port. `target` is the (host, TCP port) of the target port it links to;
    `remote_wwpn` optionally names the target port so commands can be routed before the first login."""

    name: str
    wwpn: int
    wwnn: int
    target: tuple[str, int]
    remote_wwpn: int | None = None
    security: bool = False
    pcap_path: str | None = None

    def __post_init__(self) -> None:
        for n in ("wwpn", "wwnn"):
            v = getattr(self, n)
            if not isinstance(v, int) or not 0 < v < 1 << 64:
                raise ValueError(f"port {self.name}: {n} must be a non-zero 64-bit value")
        host, tcp = self.target
        if not isinstance(host, str) or not host or not isinstance(tcp, int) or not 0 < tcp < 65536:
            raise ValueError(f"port {self.name}: target must be (host, tcp port 1..65535)")


@dataclass(frozen=True)
class Timers:
    """Seconds. io_timeout bounds a command from submit to completion, across relogins."""

    io_timeout: float = 30.0
    login_timeout: float = 4.0
    abts_timeout: float = 4.0
    connect_timeout: float = 3.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        for name in ("io_timeout", "login_timeout", "abts_timeout", "connect_timeout",
                     "backoff_initial", "backoff_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")


@dataclass
class _Link:
    writer: asyncio.StreamWriter
    up: bool = True


@dataclass
class PortStatus:
    name: str
    wwpn: int
    remote_wwpn: int | None
    state: str
    connected: bool
    outstanding: int
    counters: dict[str, object] = field(default_factory=dict)
    remote_counters: dict[str, int] = field(default_factory=dict)


class InitiatorPort:
    def __init__(
        self,
        config: PortConfig,
        timers: Timers | None = None,
        *,
        policy: LoginPolicy | None = None,
        transform: FrameTransform | None = None,
        clock: Callable[[], float] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.timers = timers or Timers()
        self.session = InitiatorSession(
            config.wwpn, config.wwnn, security=config.security, policy=policy, transform=transform,
            login_timeout=self.timers.login_timeout, abts_timeout=self.timers.abts_timeout, bursts=True,
        )
        self.counters = PortCounters()
        self.decoder = FcipStreamDecoder(data_runs=True)
        self._clock = clock
        self._jitter = jitter
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._callbacks: dict[int, tuple[Callable[[ScsiResponse], None], int]] = {}
        self._next_tag = 0
        self._state_waiters: list[asyncio.Future[None]] = []
        self._pcap_file: BinaryIO | None = None
        self._pcap: PcapWriter | None = None
        # EDIF: the one way the engine drives this port's secure login, SAs and AUTH_ELS relay.
        self.security = PortSecurity(self)

    # --- lifecycle --------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start the connect/relogin loop on the running event loop."""
        if self.config.pcap_path and self._pcap is None:
            self._pcap_file = open(self.config.pcap_path, "wb")  # noqa: SIM115 - closed in stop()
            self._pcap = PcapWriter(self._pcap_file, LinkType.FC_2_WITH_FRAME_DELIMS)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"hba-{self.config.name}")

    async def stop(self, *, logout: bool = True) -> None:
        self._stopping = True
        if logout and self._link is not None and self._link.up:
            self._send(self.session.logout(self._now()))
            try:
                await asyncio.wait_for(self._link.writer.drain(), 1.0)
            except (TimeoutError, OSError):
                pass
        self._drop_link("port stopped")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._timer is not None:
            self._timer.cancel()
        self.session.disconnected(self._now(), "port stopped")
        for tag, (_, n_in) in list(self._callbacks.items()):  # nothing will complete them now
            gone = ScsiResponse(Status.CHECK_CONDITION, bytes(n_in), SENSE_TARGET_GONE, data_len=0)
            self._finish(tag, gone)
        if self._pcap_file is not None:
            self._pcap_file.close()
            self._pcap_file = self._pcap = None

    # --- the SCSI side (loop thread only) ---------------------------------------------------------

    def submit(self, lun: int, cmd: ScsiCommand, done: Callable[[ScsiResponse], None],
               timeout: float | None = None) -> None:
        """Queue `cmd` for `lun`; `done(response)` runs on the loop thread exactly once."""
        self._next_tag += 1
        tag = self._next_tag
        self._callbacks[tag] = (done, cmd.data_in_len)
        t = self.timers.io_timeout if timeout is None else timeout
        self._send(self.session.submit(tag, lun, cmd, self._now(), t))
        self._after()

    async def execute(self, lun: int, cmd: ScsiCommand, timeout: float | None = None) -> ScsiResponse:
        fut: asyncio.Future[ScsiResponse] = asyncio.get_running_loop().create_future()
        self.submit(lun, cmd, lambda r: fut.done() or fut.set_result(r), timeout)
        return await fut

    async def wait_state(self, *states: SessionState, timeout: float) -> bool:
        """Wait until the session is in one of `states` (True) or `timeout` passes (False)."""
        async def waiter() -> None:
            while self.session.state not in states:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._state_waiters.append(fut)
                await fut
        try:
            await asyncio.wait_for(waiter(), timeout)
            return True
        except TimeoutError:
            return False

    def auth_complete(self) -> None:
        self._send(self.session.auth_complete(self._now()))
        self._after()

    def now(self) -> float:
        """The port's clock (loop thread)."""
        return self._now()

    def push(self, frames: list[Frame]) -> None:
        """Loop thread: send what a direct call on `session` returned, then process its events."""
        self._send(frames)
        self._after()

    def status(self) -> PortStatus:
        return PortStatus(
            self.config.name, self.config.wwpn, self.session.remote_wwpn or self.config.remote_wwpn,
            self.session.state.value, self._link is not None and self._link.up, self.session.outstanding,
            self.counters.snapshot(), self.session.counters.snapshot(),
        )

    # --- fault injection (tests, bench) -----------------------------------------------------------

    def drop_link(self) -> None:
        """Simulate link loss: abort the TCP connection (the port reconnects and logs in again)."""
        self._drop_link("link dropped on request")

    def inject_raw(self, data: bytes) -> None:
        """Write raw bytes on the link (garbage injection)."""
        if self._link is not None and self._link.up:
            self._link.writer.write(data)

    # --- internals --------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        host, tcp = self.config.target
        while not self._stopping:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, tcp), self.timers.connect_timeout)
            except (TimeoutError, OSError) as e:
                self.counters.connect_failures += 1
                attempt += 1
                delay = self._backoff(attempt)
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("port %s: cannot connect to %s:%d (%s); retrying in %.2fs",
                                self.config.name, host, tcp, type(e).__name__, delay)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                # stop() cancelled us while the connection completed: Python 3.11's wait_for can then
                # return the connection instead of raising CancelledError, and a link opened now would
                # keep this task (and stop()'s await of it) alive until the peer hangs up.
                writer.close()
                break
            attempt = 0
            self.counters.connects += 1
            self.decoder.reset()
            link = self._link = _Link(writer)
            log.info("port %s: link up to %s:%d", self.config.name, host, tcp)
            self._send(self.session.connected(self._now()))
            self._after()
            try:
                await self._read_loop(reader, link)
            finally:
                self._close(link)
                if self._link is link:
                    self._link = None
                self.session.disconnected(self._now())
                self._after()
            if self._stopping:
                break
            self.counters.link_resets += 1  # lost, reset by us (decode error, timeout) or by the peer
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        base = min(self.timers.backoff_max, self.timers.backoff_initial * 2 ** min(attempt - 1, 30))
        return base * (0.5 + 0.5 * self._jitter())  # jitter: reconnect storms of many ports spread out

    async def _read_loop(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while link.up:
            try:
                data = await reader.read(READ_CHUNK)
            except OSError:
                return
            if not link.up:  # we dropped it ourselves; leftover bytes are not a decode error
                return
            self.counters.bytes_in += len(data)
            if not self._receive(self.decoder.feed(data) if data else self.decoder.feed_eof()):
                return
            self._after()
            if not data:
                log.info("port %s: peer closed the link", self.config.name)
                return
            if link.writer.transport.get_write_buffer_size() > 4 << 20:
                try:
                    await link.writer.drain()
                except OSError:
                    return

    def _receive(self, events: list[Frame | DataRun | LinkError]) -> bool:
        """Hand what the decoder made of one read to the session; False on a link error. (A method of
        its own so no DataRun outlives it: the decoder then reuses its buffer instead of copying.)"""
        for ev in events:
            if isinstance(ev, LinkError):
                self.counters.decode_error(ev.reason.value)
                log.warning("port %s: link error %s (%s); resetting the link",
                            self.config.name, ev.reason.value, ev.detail)
                return False
            if type(ev) is DataRun:
                self.counters.frames_in += ev.count
                if self._pcap is not None:
                    for f in ev.frames():
                        self._pcap.write(f, inbound=True)
                self._send(self.session.receive_data(ev, self._now()))
                continue
            self.counters.frames_in += 1
            if self._pcap is not None:
                self._pcap.write(ev, inbound=True)
            self._send(self.session.receive(ev, self._now()))
        return True

    def _send(self, frames: list[Frame | WireBurst]) -> None:
        if not frames:
            return
        link = self._link
        if link is None or not link.up:
            return  # the session re-sends what matters after relogin
        send_frames(link.writer, frames, self.counters, self._pcap)

    def _after(self) -> None:
        """Process session events and re-arm the deadline timer."""
        events = self.session.take_events()
        for ev in events:
            if isinstance(ev, Completed):
                self._finish(ev.tag, ev.response)
            elif isinstance(ev, StateChanged):
                log.info("port %s: remote port %s %s (%s)", self.config.name,
                         wwn_str(self.session.remote_wwpn), ev.state.value, ev.text)
                waiters, self._state_waiters = self._state_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
            elif isinstance(ev, ResetLink):
                log.warning("port %s: resetting the link: %s", self.config.name, ev.reason)
                self._drop_link(ev.reason)
        self.security.deliver(events)  # every batch, possibly empty, after the port acted on it
        self._arm()

    def _finish(self, tag: int, resp: ScsiResponse) -> None:
        entry = self._callbacks.pop(tag, None)
        if entry is not None:
            try:
                entry[0](resp)
            except Exception:  # noqa: BLE001 - a submitter's callback must not kill the link
                log.exception("completion callback failed")

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        times = [t for t in (self.session.next_deadline(), self.security.next_deadline()) if t is not None]
        if not times:
            return
        when = min(times)
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - self._now())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._send(self.session.poll(self._now()))
        self._after()

    def _drop_link(self, reason: str) -> None:
        link = self._link
        if link is not None:
            self._close(link)

    @staticmethod
    def _close(link: _Link) -> None:
        if link.up:
            link.up = False
            link.writer.transport.abort()



def send_frames(writer: asyncio.StreamWriter, frames: list[Frame | WireBurst], counters: PortCounters,
                pcap: PcapWriter | None) -> None:
    """A session's output to the link, for both ends: frames encoded as FCIP records, bursts as the
    records they already are; counted, traced, and handed over in one batch (write_records)."""
    chunks: list[bytes | bytearray] = []
    for f in frames:
        if type(f) is WireBurst:
            chunks.append(f.data)
            counters.frames_out += f.count
            counters.bytes_out += len(f.data)
            if pcap is not None:
                for g in f.frames():
                    pcap.write(g)
            continue
        rec = encode_frame(f)
        chunks.append(rec)
        counters.frames_out += 1
        counters.bytes_out += len(rec)
        if pcap is not None:
            pcap.write(f)
    write_records(writer, chunks)


def write_records(writer: asyncio.StreamWriter, chunks: list[bytes | bytearray]) -> None:
    """One batch of records to the transport: one `writelines` where the transport sends a list as it is
    (Python >= 3.12's selector transport, uvloop); the stock default joins the list into one new buffer
    first (a copy of every burst), so there each chunk goes by `write`, which copies only what the socket
    did not take at once."""
    if len(chunks) == 1:
        writer.write(chunks[0])
    elif type(writer.transport).writelines is asyncio.WriteTransport.writelines:
        for chunk in chunks:
            writer.write(chunk)
    else:
        writer.writelines(chunks)


__all__ = ["FCIP_TCP_PORT", "InitiatorPort", "PortConfig", "PortStatus", "Timers", "send_frames",
           "write_records"]
