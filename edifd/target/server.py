"""The storage side's asyncio edge: target ports listening on TCP, LUNs on sparse backing files.

Each `TargetPort` is one FC N_Port with its own WWPN and listening address; every accepted TCP
connection is one point-to-point link with one initiator (`TargetSession`), so several initiators
use a port at once. SCSI runs in one worker thread per LUN (`ScsiDisk` over `FileMedium`), which
keeps frame handling responsive during fdatasync and preserves per-LUN command order. FileMedium
flushes before GOOD on SYNCHRONIZE CACHE and on FUA writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from edifd.edges.file_medium import FileMedium
from edifd.edges.loop_thread import LoopThread
from edifd.fc import DataRun, FcipStreamDecoder, Frame, LinkError, WireBurst, wwn_str
from edifd.fc.pcap import LinkType, PcapWriter
from edifd.hba.counters import PortCounters
from edifd.hba.port import send_frames
from edifd.hba.transform import FrameTransform, LoginPolicy
from edifd.scsi import Identity, Pending, ScsiDisk, ScsiResponse

from .session import AuthElsReceived, Execute, LoginEvent, TargetSession

if TYPE_CHECKING:
    from edifd.metrics import MetricsConfig
    from edifd.secapp.config import SecConfig

    from .responder import LinkSecurity, PortResponder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LunConfig:
    lun: int
    path: str
    size: int
    block_size: int = 512
    read_only: bool = False


@dataclass(frozen=True)
class TargetPortConfig:
    name: str
    wwpn: int
    wwnn: int
    listen: tuple[str, int]
    luns: tuple[LunConfig, ...] = ()
    security: bool = False
    # EDIF responder credentials ([port] auth = "file.toml", [initiators."wwpn"] tables): with them the
    # port authenticates every initiator and serves FCP only over ESP (implies security = true).
    auth: SecConfig | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TargetConfig:
    ports: tuple[TargetPortConfig, ...]
    pcap_path: str | None = None
    metrics: MetricsConfig | None = None  # [metrics]: the Prometheus endpoint; None = off


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    session: TargetSession
    decoder: FcipStreamDecoder = field(default_factory=lambda: FcipStreamDecoder(data_runs=True))
    up: bool = True
    link: LinkSecurity | None = None  # EDIF state of this login (ports with auth)


class TargetPort:
    def __init__(
        self,
        config: TargetPortConfig,
        *,
        pcap: PcapWriter | None = None,
        policy: LoginPolicy | None = None,
        transform_factory: Callable[[], FrameTransform] | None = None,
    ) -> None:
        self.config = config
        self.counters = PortCounters()
        self._pcap = pcap
        self._policy = policy
        self._transform_factory = transform_factory
        self.disks: dict[int, ScsiDisk] = {}
        self._media: list[FileMedium] = []
        self._workers: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self.stall = False  # fault injection: accept commands but never execute them
        self.sessions_closed: list[dict[str, int]] = []  # counters of finished sessions
        self.edif: PortResponder | None = None
        if config.auth is not None:
            from .responder import PortResponder  # EDIF ports only: needs the IKE responder

            self.edif = PortResponder(config.wwpn, config.auth)
        for lc in config.luns:
            try:
                medium = FileMedium(lc.path, lc.size, lc.block_size)  # sparse, created on demand
            except OSError as e:
                for m in self._media:
                    m.close()
                raise OSError(e.errno, f"port {config.name} LUN {lc.lun}: cannot open backing file "
                                       f"{lc.path}: {e.strerror}") from None
            self._media.append(medium)
            ident = Identity(vendor="EDIF", product="FC DISK", serial=f"{config.wwpn:016x}-{lc.lun}",
                             port_wwpn=config.wwpn)
            self.disks[lc.lun] = ScsiDisk(medium, ident, read_only=lc.read_only,
                                          max_transfer_bytes=8 << 20, luns=[x.lun for x in config.luns])
            self._workers[lc.lun] = concurrent.futures.ThreadPoolExecutor(1, f"lun-{config.name}-{lc.lun}")

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful with port 0."""
        if self._server is None or not self._server.sockets:
            return self.config.listen
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def sessions(self) -> list[TargetSession]:
        return [c.session for c in self._conns]

    async def start(self) -> None:
        host, port = self.config.listen
        self._server = await asyncio.start_server(self._handle, host, port)
        log.info("target port %s (WWPN %s) listening on %s:%d with LUNs %s", self.config.name,
                 wwn_str(self.config.wwpn), *self.address, sorted(self.disks))

    async def stop(self) -> None:
        """LOGO to every initiator, close links, flush and close the backing files."""
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            logo = c.session.logout()
            if logo:
                log.info("target port %s: LOGO sent to initiator %s", self.config.name,
                         wwn_str(c.session.initiator_wwpn))
            self._send(c, logo)
            c.session.take_events()
            try:
                await asyncio.wait_for(c.writer.drain(), 1.0)
            except (TimeoutError, OSError):
                pass
            self._close(c)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for w in self._workers.values():
            w.shutdown(wait=True)
        for m in self._media:
            try:
                m.flush(None)  # type: ignore[arg-type]  # flush ignores its request
            except Exception:  # noqa: BLE001 - closing anyway; the error was logged by the medium
                log.error("flush of %s failed at shutdown", m.path)
            m.close()

    # --- fault injection / operations -------------------------------------------------------------

    def go_offline(self) -> None:
        """Announce this port's departure (RSCN) and refuse further logins."""
        for c in list(self._conns):
            self._send(c, c.session.go_offline())

    def drop_links(self) -> None:
        for c in list(self._conns):
            self._close(c)

    def inject_raw(self, data: bytes) -> None:
        for c in list(self._conns):
            if c.up:
                c.writer.write(data)

    # --- the link ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.config
        secure = c.security or self.edif is not None
        session = TargetSession(c.wwpn, c.wwnn, self.disks.keys(), security=secure, policy=self._policy,
                                transform=self._transform_factory() if self._transform_factory else None,
                                bursts=True)
        conn = _Conn(writer, session)
        if self.edif is not None:
            conn.link = self.edif.attach(session)
        self._conns.add(conn)
        self.counters.connects += 1
        peer = writer.get_extra_info("peername")
        log.info("target port %s: link up from %s", c.name, peer)
        try:
            while conn.up:
                try:
                    data = await reader.read(256 * 1024)
                except OSError:
                    break
                if not conn.up:
                    break
                self.counters.bytes_in += len(data)
                self._receive(conn, conn.decoder.feed(data) if data else conn.decoder.feed_eof(), peer)
                if self.edif is not None and conn.link is not None:
                    now = asyncio.get_running_loop().time()
                    self._send(conn, self.edif.after_frames(session, conn.link, now))
                    self._events(conn)
                if not data:
                    break
                if writer.transport.get_write_buffer_size() > 4 << 20:
                    try:
                        await writer.drain()
                    except OSError:
                        break
        finally:
            self._close(conn)
            self._conns.discard(conn)
            if self.edif is not None and conn.link is not None:
                conn.link = self.edif.new_login(session, conn.link)  # zeroize this link's keys
            self.sessions_closed.append(session.counters.snapshot())
            log.info("target port %s: link from %s down (initiator %s)", c.name, peer,
                     wwn_str(session.initiator_wwpn))

    def _receive(self, conn: _Conn, events: list[Frame | DataRun | LinkError], peer: object) -> None:
        """What the decoder made of one read, to the session. (A method of its own so no DataRun
        outlives it: the decoder then reuses its buffer instead of copying.)"""
        session = conn.session
        for ev in events:
            if isinstance(ev, LinkError):
                self.counters.decode_error(ev.reason.value)
                log.warning("target port %s: link error from %s: %s (%s); closing the link",
                            self.config.name, peer, ev.reason.value, ev.detail)
                self.counters.link_resets += 1
                conn.up = False
                break
            if type(ev) is DataRun:
                self.counters.frames_in += ev.count
                if self._pcap is not None:
                    for f in ev.frames():
                        self._pcap.write(f, inbound=True)
                self._send(conn, session.receive_data(ev))
            else:
                self.counters.frames_in += 1
                if self._pcap is not None:
                    self._pcap.write(ev, inbound=True)
                self._send(conn, session.receive(ev))
            self._events(conn)

    def _events(self, conn: _Conn) -> None:
        for ev in conn.session.take_events():
            if isinstance(ev, LoginEvent):
                log.info("target port %s: %s from initiator %s", self.config.name, ev.what, wwn_str(ev.wwpn))
                if self.edif is not None and conn.link is not None and ev.what not in ("prli", "prlo"):
                    conn.link = self.edif.new_login(conn.session, conn.link)
            elif isinstance(ev, AuthElsReceived):
                if self.edif is not None and conn.link is not None:
                    self._send(conn, self.edif.on_auth_els(conn.session, conn.link, ev.frame))
            elif isinstance(ev, Execute) and not self.stall:
                self._execute(conn, ev)

    def _execute(self, conn: _Conn, ev: Execute) -> None:
        loop = asyncio.get_running_loop()
        disk = self.disks[ev.lun]

        def done(resp: ScsiResponse) -> None:
            if resp.status != 0:
                log.info("target port %s LUN %d: opcode 0x%02x -> status 0x%02x sense %s", self.config.name,
                         ev.lun, ev.command.cdb[0], resp.status, resp.sense[:14].hex())
            if conn.up:
                self._send(conn, conn.session.complete(ev.rx_id, resp))

        def run() -> None:
            result = disk.execute(ev.command)
            if isinstance(result, Pending):
                result.on_done(lambda r: loop.call_soon_threadsafe(done, r))
            else:
                loop.call_soon_threadsafe(done, result)

        self._workers[ev.lun].submit(run)

    def _send(self, conn: _Conn, frames: list[Frame | WireBurst]) -> None:
        if not conn.up or not frames:
            return
        send_frames(conn.writer, frames, self.counters, self._pcap)

    @staticmethod
    def _close(conn: _Conn) -> None:
        if conn.up:
            conn.up = False
        conn.writer.transport.abort()


class TargetServer:
    """All target ports of one `edif-target` process."""

    def __init__(self, config: TargetConfig, *, policy: LoginPolicy | None = None) -> None:
        self.config = config
        self._pcap_file: BinaryIO | None = None
        pcap = None
        if config.pcap_path:
            self._pcap_file = open(config.pcap_path, "wb")  # noqa: SIM115 - closed in stop()
            pcap = PcapWriter(self._pcap_file, LinkType.FC_2_WITH_FRAME_DELIMS)
        self.ports = [TargetPort(p, pcap=pcap, policy=policy) for p in config.ports]
        self._runner = LoopThread("edif-target")

    async def start(self) -> None:
        for p in self.ports:
            await p.start()

    async def stop(self) -> None:
        for p in self.ports:
            await p.stop()
        if self._pcap_file is not None:
            self._pcap_file.close()
            self._pcap_file = None

    def port(self, name: str) -> TargetPort:
        return next(p for p in self.ports if p.config.name == name)

    # --- on its own event-loop thread (edifd.edges.loop_thread), for hosts of a target in a process ---

    def start_thread(self, timeout: float = 30.0) -> None:
        """Run the target on its own event loop in a daemon thread; returns once it listens."""
        self._runner.start(self.start, timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` on the target's loop (e.g. a port's `drop_links`); thread-safe."""
        self._runner.call_soon(fn, *args)

    def stop_thread(self, timeout: float = 30.0) -> None:
        self._runner.stop(self.stop, timeout)
