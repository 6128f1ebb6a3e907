"""The edifd daemon: serves the configured LUNs through LIO, one TCMU ring owner per LUN.

This module does what is the same for every LUN; what depends on its type (file, control,
remote) is that type's class in `edifd.lun_kinds`.

Start order per LUN (the kernel's LUN scan blocks until a handler answers):
backstore (attributes before any export) -> ring handler -> export.

Restart: the LIO objects outlive the process on purpose. A new edifd finds its backstore by
name and re-attaches to the ring (block_dev -> reset_ring -> open -> unblock): commands the dead
process held come back to the initiator as BUSY and are retried, so a guest sees a pause, not EIO.

A start that fails, or that a stop request (SIGTERM) interrupts, undoes only what this run created
(`Daemon.start`): each LIO object belongs to the run that created it. A backstore re-attached from an
earlier edifd (`ServedLun.adopted`) and the exports it came with stay in place, its ring released as
`stop()` releases it (the device stays blocked: late commands get BUSY and are retried, and the next
edifd re-attaches). A backstore and an export this run created are removed, the export first, while
its ring still answers. Were this run to create an export on top of an adopted backstore (today an
adopted backstore is served with the exports it has, none is added), the export would go and the
backstore stay: what guests had before this run, they keep. One log line per LUN says what was
removed, what was left in place and why. `stop(teardown=True)` of a daemon that started is
unchanged: it removes every LIO object it serves, adopted or not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edifd.config import Config, LunConfig
from edifd.edges.heartbeat import HeartbeatTicker
from edifd.edges.logs import Waiting
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


class StartInterrupted(DaemonError):
    """A stop was requested while the LUNs were starting; what this start created is removed."""


@dataclass
class ServedLun:
    """One LUN as served: its kind (all that depends on its type), what executes its CDBs, its LIO
    objects and the ring owner."""

    kind: LunKind
    disk: Executor
    backstore: Backstore | None = None
    handler: TcmuHandler | None = None
    export: Export | None = None  # created by this run; an adopted backstore's exports are its own
    adopted: bool = False  # the backstore was found in LIO from an earlier edifd, not created by this run

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
        if ex.demo_mode:
            return IscsiExport(iqn=ex.iqn, portals=(ex.portal,), acls=())
        return IscsiExport(iqn=ex.iqn, portals=(ex.portal,), acls=ex.initiators, chap=ex.chap)
    if ex.fabric == "vhost":
        return VhostExport(wwpn=ex.wwn)
    return None


class Daemon:
    """The HBA (if configured) and every LUN of one configuration, from start() to stop()."""

    def __init__(self, config: Config, *, lio: Lio | None = None,
                 open_handler: Callable[[str, Executor], TcmuHandler] | None = None,
                 stop_requested: threading.Event | None = None) -> None:
        self.config = config
        self.lio = lio or Lio()
        self._open_handler = open_handler  # None: the kernel's TCMU ring
        # Set by SIGTERM (edifd run): start() checks it before each LUN and stops starting.
        self._stop_requested = stop_requested or threading.Event()
        self.luns: list[ServedLun] = []
        self._ticker: HeartbeatTicker | None = None
        self.hba: Hba | None = None
        self._stopping = threading.Event()
        self.engines: dict[str, EdifEngine] = {}  # control LUN name -> the EDIF engine of its HBA port

    def start(self) -> None:
        """Serve every LUN, or raise DaemonError having undone what this call did.

        Undone means: the LIO objects this call created are removed, the adopted ones (re-attached
        from an earlier edifd) stay with their rings released, the HBA and the engines stop (see the
        module docstring). A stop request during start-up raises StartInterrupted, undone the same way.
        """
        fabrics = sorted({Fabric(lun.export.fabric) for lun in self.config.luns
                          if lun.export.fabric != "none"}, key=lambda f: f.value)
        try:
            self.lio.prepare(fabrics)
            self._start_hba()
            # Control and file LUNs first (see RemoteLunKind.start_order).
            for lun in sorted(self.config.luns, key=lambda x: KINDS[x.type].start_order):
                self._check_stop_requested(f"before lun {lun.name}")
                self.luns.append(self._serve(lun_kind(lun)))
            self._check_stop_requested("after the last LUN")
        except StartInterrupted as e:
            self._undo_start("start stopped", str(e))
            raise
        except (TcmuError, OSError, ValueError) as e:
            self._undo_start("start failed", str(e))
            raise DaemonError(str(e)) from None
        except BaseException as e:
            self._undo_start("start failed", f"{type(e).__name__}: {e}")
            raise
        self._ticker = HeartbeatTicker([s.kind.channel for s in self.luns if s.kind.channel is not None])
        self._ticker.start()

    def _check_stop_requested(self, where: str) -> None:
        if self._stop_requested.is_set():
            raise StartInterrupted(f"stopped during start-up, {where}")

    def _undo_start(self, why: str, cause: str) -> None:
        """A failed or interrupted start: remove what it created, leave what it adopted (and say so)."""
        self._stopping.set()
        if self.luns:
            log.warning("%s (%s): removing what this start created, leaving what it re-attached", why, cause)
        for served in reversed(self.luns):
            try:
                self._stop_lun(served, teardown=False, undo=why)
            except Exception:  # the start's own error is the one to report; go on with the rest
                log.exception("lun %s: undoing the failed start", served.config.name)
        self.luns.clear()
        try:
            self._stop_engines_and_hba()
        except Exception:
            log.exception("undoing the failed start: stopping the HBA")

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
            # Creating and exporting a LUN waits for the kernel's LUN scan, which waits for the ring
            # handler: say so rather than stay silent if that takes a while.
            with Waiting(log, f"LIO to create and export lun {kind.lun.name} (the kernel's LUN scan)"):
                return self._export(served, backstore_spec(kind, self.config))
        except BaseException:
            if served.adopted and served.backstore is not None:
                log.warning("lun %s: failed to start; left in place: backstore %s and its %d LUN(s), "
                            "re-attached from an earlier edifd (guests see a pause)", kind.lun.name,
                            _bs_name(served.backstore), _attached(served.backstore))
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
            try:
                served.handler = self._start_handler(served.backstore, served)
            except BaseException:
                # This start created it: roll it back, as Lio.setup does for an exported LUN.
                try:
                    self.lio.remove_backstore(served.backstore)
                except TcmuError as e:
                    log.error("lun %s: removing the backstore this start created: %s", lun.name, e)
                served.backstore = None
                raise
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
                with Waiting(log, f"the SCSI scan to show tcm_loop {ex.wwn} as a /dev/sdX", limit=10):
                    return f"tcm_loop {ex.wwn} as {loopback_disk(ex)}"
            except TcmuError as e:
                return f"tcm_loop {ex.wwn} ({e})"
        if ex.fabric is Fabric.ISCSI:
            host, port = served.config.export.portal
            return f"iSCSI {ex.wwn} LUN {ex.lun} on {host}:{port}"
        return f"vhost-scsi {ex.wwn} (libvirt <hostdev type='scsi_host'> wwpn)"

    def _remove_luns(self, served: ServedLun, *, created_only: bool = False) -> bool:
        """Remove the LUN's exports (with created_only, only the one this run created); False if
        rtslib refused."""
        try:
            if served.export is not None:
                self.lio.unexport(served.export)
            elif served.backstore is not None and not created_only:
                # adopted: the exports came from an earlier edifd
                for lun in list(served.backstore.so.attached_luns):
                    lun.delete()
        except Exception as e:  # rtslib raises RTSLibError/OSError; teardown goes on with the rest
            log.error("lun %s: removing its LUNs: %s", served.config.name, e)
            return False
        return True

    def _stop_lun(self, served: ServedLun, *, teardown: bool, undo: str | None = None) -> None:
        """Quiesce, stop the ring (the device stays blocked), close. teardown: remove every LIO
        object of the LUN; undo (a failed or stopped start, named in the log): only those this run
        created."""
        name = served.config.name
        created_only = undo is not None
        removed: list[str] = []
        served.kind.quiesce()
        if teardown or (created_only and served.export is not None):
            # Remove the LUNs while the ring is still served: an initiator removing its disk
            # sends SYNCHRONIZE CACHE, which only a running handler can answer.
            if self._remove_luns(served, created_only=created_only) and served.export is not None:
                removed.append(f"{_fabric_name(served.export)} export {served.export.wwn}")
        if served.handler is not None:
            drained = served.handler.stop()
            stats = served.handler.stats
            log.info("lun %s: ring %s; %s", name, "drained" if drained else "NOT drained", stats)
        bs = served.backstore
        if bs is not None and (teardown or (created_only and not served.adopted)):
            try:
                self.lio.remove_backstore(bs)
                log.info("lun %s: removed from LIO", name)
                removed.append(f"backstore {_bs_name(bs)}")
            except TcmuError as e:
                log.error("lun %s: %s: %s", name, "teardown" if teardown else "removing its backstore", e)
        if created_only:
            kept = "nothing"
            if served.adopted and bs is not None:
                kept = (f"backstore {_bs_name(bs)} and its {_attached(bs)} LUN(s), re-attached from an "
                        "earlier edifd (guests see a pause; its ring is released with the device blocked, "
                        "so late commands get BUSY, and the next start re-attaches)")
            elif bs is not None and f"backstore {_bs_name(bs)}" not in removed:
                kept = f"backstore {_bs_name(bs)} (removing it failed, see above)"
            log.warning("lun %s: %s: removed %s; left in place: %s", name, undo,
                        " and ".join(removed) + " (created by this start)" if removed else "nothing", kept)
        served.kind.close()

    def stop(self, *, teardown: bool = False) -> None:
        """Complete everything in flight, drain the rings; with teardown also remove LIO objects."""
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.stop()
        for served in reversed(self.luns):
            self._stop_lun(served, teardown=teardown)
        self.luns.clear()
        self._stop_engines_and_hba()

    def _stop_engines_and_hba(self) -> None:
        for engine in self.engines.values():
            engine.stop()
        self.engines.clear()
        if self.hba is not None:
            # Last: removing a remote LUN above sent SYNCHRONIZE CACHE through the HBA.
            self.hba.stop_thread()
            self.hba = None


def _bs_name(bs: Backstore) -> str:
    """user_N/<name>, as in configfs core/."""
    return f"{bs.path.parent.name}/{bs.path.name}"


def _attached(bs: Backstore) -> int:
    try:
        return len(bs.so.attached_luns)
    except Exception:  # rtslib reads configfs; a log line must not fail the undo
        return 0


def _fabric_name(ex: Export) -> str:
    return {Fabric.LOOPBACK: "tcm_loop", Fabric.ISCSI: "iSCSI", Fabric.VHOST: "vhost-scsi"}[ex.fabric]
