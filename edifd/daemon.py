"""The edifd daemon: serves the configured LUNs through LIO, one TCMU ring owner per LUN.

This module does what is the same for every LUN; what depends on its type (file, control,
remote) is that type's class in `edifd.lun_kinds`.

Start order per LUN (the kernel's LUN scan blocks until a handler answers):
backstore (attributes before any export) -> ring handler -> export.

Restart: the LIO objects outlive the process on purpose. A new edifd finds its backstore by
name and re-attaches to the ring (block_dev -> reset_ring -> open -> unblock): commands the dead
process held come back to the initiator as BUSY and are retried, so a guest sees a pause, not EIO.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edifd.config import Config, LunConfig
from edifd.edges.heartbeat import HeartbeatTicker
from edifd.hba import Hba, PortConfig, RequireAuthWhenSecure, Timers
from edifd.lun_kinds import KINDS, LunContext, LunKind, LunMedium, lun_kind
from edifd.runtime.engine import EdifEngine
from edifd.tcmu.device import TcmuHandler
from edifd.tcmu.dispatch import Executor
from edifd.tcmu.errors import TcmuError
from edifd.tcmu.lio import (
    Backstore,
    BackstoreSpec,
    Export,
    ExportSpec,
    Fabric,
    IscsiExport,
    Lio,
    LoopbackExport,
    VhostExport,
    loopback_disk,
)

log = logging.getLogger("edifd.daemon")

SUBTYPE = "edif"  # UIO name tcm-user/<hba>/<lun name>/edif/<lun type>


class DaemonError(Exception):
    """edifd cannot serve its configuration; the message says what to fix."""


@dataclass
class ServedLun:
    """One LUN as served: its kind (all that depends on its type), what executes its CDBs, its LIO
    objects and the ring owner."""

    kind: LunKind
    disk: Executor
    backstore: Backstore | None = None
    handler: TcmuHandler | None = None
    export: Export | None = None
    adopted: bool = False  # found in LIO from an earlier edifd

    @property
    def config(self) -> LunConfig:
        return self.kind.lun

    @property
    def medium(self) -> LunMedium | None:
        return self.kind.medium


def backstore_spec(kind: LunKind, config: Config) -> BackstoreSpec:
    lun = kind.lun
    return BackstoreSpec(
        name=lun.name, subtype=SUBTYPE, cfg=lun.type, size=kind.size, block_size=kind.block_size,
        wwn=lun.serial, park_time=config.daemon.park_time, cmd_time_out=kind.cmd_time_out(config))


def export_spec(lun: LunConfig) -> ExportSpec | None:
    ex = lun.export
    if ex.fabric == "loopback":
        return LoopbackExport(wwn=ex.wwn)
    if ex.fabric == "iscsi":
        assert ex.iqn is not None  # config fills in a default
        return IscsiExport(iqn=ex.iqn, portals=(ex.portal,), acls=() if ex.demo_mode else ex.initiators)
    if ex.fabric == "vhost":
        return VhostExport(wwpn=ex.wwn)
    return None


class Daemon:
    """The HBA (if configured) and every LUN of one configuration, from start() to stop()."""

    def __init__(self, config: Config, *, lio: Lio | None = None,
                 open_handler: Callable[[str, Executor], TcmuHandler] | None = None) -> None:
        self.config = config
        self.lio = lio or Lio()
        self._open_handler = open_handler  # None: the kernel's TCMU ring
        self.luns: list[ServedLun] = []
        self._ticker: HeartbeatTicker | None = None
        self.hba: Hba | None = None
        self._stopping = threading.Event()
        self.engines: dict[str, EdifEngine] = {}  # control LUN name -> the EDIF engine of its HBA port

    def start(self) -> None:
        """Serve every LUN, or raise DaemonError having undone what this call did."""
        fabrics = sorted({Fabric(lun.export.fabric) for lun in self.config.luns
                          if lun.export.fabric != "none"}, key=lambda f: f.value)
        try:
            self.lio.prepare(fabrics)
            self._start_hba()
            # Control and file LUNs first (see RemoteLunKind.start_order).
            for lun in sorted(self.config.luns, key=lambda x: KINDS[x.type].start_order):
                self.luns.append(self._serve(lun_kind(lun)))
        except (TcmuError, OSError, ValueError) as e:
            raise DaemonError(str(e)) from None
        self._ticker = HeartbeatTicker([s.kind.channel for s in self.luns if s.kind.channel is not None])
        self._ticker.start()

    def _start_hba(self) -> None:
        h = self.config.hba
        if not h.ports:
            return
        ports = [PortConfig(p.name, p.wwpn, p.wwnn, p.target, security=p.security,
                            pcap_path=str(p.pcap) if p.pcap else None) for p in h.ports]
        # EDIF: a secure login waits for AUTH_OK (no PRLI, no FCP) when both ends set the security bit.
        self.hba = Hba(ports, Timers(io_timeout=h.io_timeout), policy=RequireAuthWhenSecure())
        self.hba.start_thread()
        for p in h.ports:
            log.info("hba port %s: WWPN %016x, link to %s:%d%s", p.name, p.wwpn, *p.target,
                     " (security bit)" if p.security else "")

    def _serve(self, kind: LunKind) -> ServedLun:
        served = ServedLun(kind, kind.open(LunContext(self.config, self.hba, self.engines, self._stopping)))
        try:
            return self._export(served, backstore_spec(kind, self.config))
        except BaseException:
            kind.close()
            raise

    def _export(self, served: ServedLun, spec: BackstoreSpec) -> ServedLun:
        lun = served.config
        existing = self.lio.find_backstore(spec)
        if existing is not None:
            # An earlier edifd left it (crash, restart): keep the exports guests are using.
            served.backstore, served.adopted = existing, True
            served.handler = self._start_handler(existing, served)
            log.info("lun %s: re-attached to existing backstore %s (%s)", lun.name,
                     existing.path.name, existing.uio_name)
            return served
        ex = export_spec(lun)
        if ex is None:
            served.backstore = self.lio.create_backstore(spec)
            served.handler = self._start_handler(served.backstore, served)
        else:
            served.backstore, served.handler, served.export = self.lio.setup(
                spec, ex, lambda bs: self._start_handler(bs, served))
        log.info("lun %s: %d MiB %s, %s", lun.name, spec.size >> 20, served.kind.describe(),
                 self._where(served))
        return served

    def _start_handler(self, bs: Backstore, served: ServedLun) -> TcmuHandler:
        if self._open_handler is not None:
            handler = self._open_handler(bs.uio_name, served.disk)
        else:
            handler = TcmuHandler.open(bs.uio_name, served.disk, stop_response=served.kind.stop_response)
        handler.start()
        return handler

    def _where(self, served: ServedLun) -> str:
        ex = served.export
        if ex is None:
            return "not exported"
        if ex.fabric is Fabric.LOOPBACK:
            try:
                return f"tcm_loop {ex.wwn} as {loopback_disk(ex)}"
            except TcmuError as e:
                return f"tcm_loop {ex.wwn} ({e})"
        if ex.fabric is Fabric.ISCSI:
            host, port = served.config.export.portal
            return f"iSCSI {ex.wwn} LUN {ex.lun} on {host}:{port}"
        return f"vhost-scsi {ex.wwn} (libvirt <hostdev type='scsi_host'> wwpn)"

    def _remove_luns(self, served: ServedLun) -> None:
        try:
            if served.export is not None:
                self.lio.unexport(served.export)
            elif served.backstore is not None:  # adopted: the exports came from an earlier edifd
                for lun in list(served.backstore.so.attached_luns):
                    lun.delete()
        except Exception as e:  # rtslib raises RTSLibError/OSError; teardown goes on with the rest
            log.error("lun %s: removing its LUNs: %s", served.config.name, e)

    def stop(self, *, teardown: bool = False) -> None:
        """Complete everything in flight, drain the rings; with teardown also remove LIO objects."""
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.stop()
        for served in reversed(self.luns):
            name = served.config.name
            served.kind.quiesce()
            if teardown:
                # Remove the LUNs while the ring is still served: an initiator removing its disk
                # sends SYNCHRONIZE CACHE, which only a running handler can answer.
                self._remove_luns(served)
            if served.handler is not None:
                drained = served.handler.stop()
                stats = served.handler.stats
                log.info("lun %s: ring %s; %s", name, "drained" if drained else "NOT drained", stats)
            if teardown and served.backstore is not None:
                try:
                    self.lio.remove_backstore(served.backstore)
                    log.info("lun %s: removed from LIO", name)
                except TcmuError as e:
                    log.error("lun %s: teardown: %s", name, e)
            served.kind.close()
        self.luns.clear()
        for engine in self.engines.values():
            engine.stop()
        self.engines.clear()
        if self.hba is not None:
            # Last: removing a remote LUN above sent SYNCHRONIZE CACHE through the HBA.
            self.hba.stop_thread()
            self.hba = None
