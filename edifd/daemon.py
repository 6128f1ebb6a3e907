"""The edifd daemon: serves the configured LUNs through LIO, one TCMU ring owner per LUN.

Start order per LUN (the kernel's LUN scan blocks until a handler answers):
backstore (attributes before any export) -> ring handler -> export.

Restart: the LIO objects outlive the process on purpose. A new edifd finds its backstore by
name and re-attaches to the ring (block_dev -> reset_ring -> open -> unblock): commands the dead
process held come back to the initiator as BUSY and are retried, so a guest sees a pause, not EIO.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edifd.channel import ChannelCore, StaticState
from edifd.config import Config, LunConfig
from edifd.edges.file_medium import FileMedium
from edifd.edges.heartbeat import HeartbeatTicker
from edifd.edges.secret_file import load_channel_key
from edifd.edges.state_file import StateFile
from edifd.hba import Hba, InitiatorPort, PortConfig, RequireAuthWhenSecure, Timers
from edifd.hba.remote_lun import RemoteLun
from edifd.proto import ChannelKey
from edifd.runtime.engine import EdifEngine
from edifd.scsi import Identity, ScsiDisk, ScsiResponse, Status
from edifd.tcmu.device import TcmuHandler
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
    """One LUN as served: the emulation, its LIO objects and the ring owner."""

    config: LunConfig
    disk: ScsiDisk | RemoteLun  # what the ring owner executes CDBs with
    medium: FileMedium | ChannelCore | RemoteLun
    backstore: Backstore | None = None
    handler: TcmuHandler | None = None
    export: Export | None = None
    adopted: bool = False  # found in LIO from an earlier edifd
    extra: dict[str, Any] = field(default_factory=dict)


def backstore_spec(lun: LunConfig, config: Config, *, size: int | None = None,
                   block_size: int | None = None) -> BackstoreSpec:
    cmd_time_out = config.daemon.cmd_time_out
    if lun.type == "remote":
        # TCMU must never give up on a forwarded command before the HBA does (io_timeout, then
        # an ABTS): the initiator then gets the HBA's clear sense, not a LUN communication failure.
        floor = math.ceil(config.hba.io_timeout + Timers().abts_timeout + 10)
        cmd_time_out = max(cmd_time_out or 0, floor) if cmd_time_out != 0 else 0
    return BackstoreSpec(
        name=lun.name, subtype=SUBTYPE, cfg=lun.type, size=size or lun.size,
        block_size=block_size or lun.block_size, wwn=lun.serial, park_time=config.daemon.park_time,
        cmd_time_out=cmd_time_out)


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


# A control LUN's READs that are still in flight when its ring owner stops end as an ordinary
# "nothing" (GOOD, zero-filled, full length), never as BUSY: a BUSY READ would be retried by the
# guest against a blocked device until the LUN disappears, and the reader would see ENODEV.
_CONTROL_STOP = ScsiResponse(Status.GOOD)


def _open_tcmu(uio: str, disk: ScsiDisk | RemoteLun) -> TcmuHandler:
    if isinstance(getattr(disk, "medium", None), ChannelCore):
        return TcmuHandler.open(uio, disk, stop_response=_CONTROL_STOP)
    return TcmuHandler.open(uio, disk)


class Daemon:
    def __init__(self, config: Config, *, lio: Lio | None = None,
                 open_handler: Callable[[str, ScsiDisk], TcmuHandler] | None = None) -> None:
        self.config = config
        self.lio = lio or Lio()
        self._open_handler = open_handler or _open_tcmu
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
            # Control and file LUNs first: a remote LUN behind a secure target attaches only once
            # the EDIF VM has authenticated it through its control LUN.
            for lun in sorted(self.config.luns, key=lambda x: x.type == "remote"):
                self.luns.append(self._serve(lun))
        except (TcmuError, OSError, ValueError) as e:
            raise DaemonError(str(e)) from None
        self._ticker = HeartbeatTicker([s.medium for s in self.luns if isinstance(s.medium, ChannelCore)])
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

    def _remote(self, lun: LunConfig) -> RemoteLun:
        assert self.hba is not None and lun.target_wwpn is not None  # config guarantees both
        rl = RemoteLun(self.hba, lun.target_wwpn, lun.remote_lun, io_timeout=self.config.hba.io_timeout)
        if lun.size:
            # Configured geometry: serve now (the target may first need the EDIF VM to authenticate
            # us); check it against the target's READ CAPACITY in the background once logged in.
            rl.assume(lun.size, lun.block_size)
            threading.Thread(target=self._verify_remote, args=(lun, rl), name=f"verify:{lun.name}",
                             daemon=True).start()
            return rl
        try:
            rl.attach(self.config.hba.io_timeout)
        except Exception as e:
            raise DaemonError(f"lun {lun.name}: target {lun.target_wwpn:016x} LUN {lun.remote_lun} via "
                              f"hba port {lun.hba_port}: {e}") from None
        return rl

    def _serve(self, lun: LunConfig) -> ServedLun:
        if lun.type == "remote":
            return self._serve_remote(lun)
        medium: FileMedium | ChannelCore
        extra: dict[str, Any] = {}
        if lun.type == "control":
            medium = self._control_channel(lun, extra)
        else:
            lun.path.parent.mkdir(parents=True, exist_ok=True)
            medium = FileMedium(lun.path, lun.size, lun.block_size)
        identity = Identity(vendor=lun.vendor, product=lun.product, revision=lun.revision,
                            serial=lun.serial, port_wwpn=lun.wwpn if lun.type == "control" else None)
        disk = ScsiDisk(medium, identity)
        return self._export(ServedLun(lun, disk, medium, extra=extra), backstore_spec(lun, self.config))

    def _verify_remote(self, lun: LunConfig, rl: RemoteLun) -> None:
        # Until the login completes (a slow EDIF VM is not an error) or edifd stops.
        while not self._stopping.is_set():
            try:
                problem = rl.verify(30.0)
            except Exception as e:  # not logged in yet, or the HBA is going away
                log.debug("lun %s: capacity check: %s; retrying", lun.name, e)
                self._stopping.wait(1.0)
                continue
            if problem:
                log.error("lun %s: %s; I/O past the smaller of the two will fail", lun.name, problem)
            else:
                log.info("lun %s: target capacity matches the configured %d bytes", lun.name, lun.size)
            return

    def _serve_remote(self, lun: LunConfig) -> ServedLun:
        """A tenant LUN whose CDBs go, unchanged, as FCP to a LUN of a storage target."""
        rl = self._remote(lun)
        spec = backstore_spec(lun, self.config, size=rl.size, block_size=rl.block_size)
        return self._export(ServedLun(lun, rl, rl), spec)

    def _export(self, served: ServedLun, spec: BackstoreSpec) -> ServedLun:
        lun, disk, medium = served.config, served.disk, served.medium
        existing = self.lio.find_backstore(spec)
        try:
            if existing is not None:
                # An earlier edifd left it (crash, restart): keep the exports guests are using.
                served.backstore, served.adopted = existing, True
                served.handler = self._start_handler(existing, disk)
                log.info("lun %s: re-attached to existing backstore %s (%s)", lun.name,
                         existing.path.name, existing.uio_name)
                return served
            ex = export_spec(lun)
            if ex is None:
                served.backstore = self.lio.create_backstore(spec)
                served.handler = self._start_handler(served.backstore, disk)
            else:
                served.backstore, served.handler, served.export = self.lio.setup(
                    spec, ex, lambda bs: self._start_handler(bs, disk))
        except BaseException:
            if isinstance(medium, FileMedium):
                medium.close()
            self._close_extra(served)
            raise
        what = {"control": "control LUN",
                "remote": f"remote LUN {lun.remote_lun} of target {lun.target_wwpn or 0:016x}"}.get(
                    lun.type, str(lun.path))
        log.info("lun %s: %d MiB %s, %s", lun.name, spec.size >> 20, what, self._where(served))
        return served

    def _control_channel(self, lun: LunConfig, extra: dict[str, Any]) -> ChannelCore:
        """The channel of one HBA port: its key, its state file (what survives a restart), its core."""
        d = self.config.daemon
        if lun.channel_key is None:
            # Nobody holds a random key: READs still park and heartbeat, every WRITE is refused.
            log.warning("lun %s: no channel_key configured; every WRITE will be refused", lun.name)
            key = ChannelKey(secrets.token_bytes(32))
        else:
            key = load_channel_key(lun.channel_key)  # ChannelKeyError names the path, never the key
            log.info("lun %s: channel key %s (fingerprint %s)", lun.name, lun.channel_key, key.fingerprint)
        d.state_dir.mkdir(parents=True, exist_ok=True)
        store = StateFile(d.state_dir / f"{lun.name}.channel-state")
        extra["channel_state"] = store
        restored = store.load()
        port = self._hba_port_for(lun)
        if port is not None and any(e.port is port for e in self.engines.values()):
            store.close()
            raise ValueError(f"lun {lun.name}: hba port {port.config.name} already has a control LUN")
        engine = EdifEngine(self.hba, port) if self.hba is not None and port is not None else None
        try:
            core = ChannelCore(
                key, num_blocks=lun.size // lun.block_size, block_size=lun.block_size,
                port_index=lun.port_index, handler=engine,
                state=engine if engine is not None else StaticState(wwpn=lun.wwpn or 0),
                park_time=d.park_time, queue_limit=lun.queue_limit, redeliver_after=d.redeliver_after,
                restored=restored if restored is not None and restored.port_index == lun.port_index else None,
                persist=store.save, name=lun.name)
        except BaseException:
            store.close()
            raise
        if engine is not None:
            engine.attach(core.post_event)
            engine.start()
            self.engines[lun.name] = engine
            assert port is not None
            log.info("lun %s: EDIF engine of hba port %s (WWPN %016x)", lun.name, port.config.name,
                     port.config.wwpn)
        return core

    def _hba_port_for(self, lun: LunConfig) -> InitiatorPort | None:
        """The HBA port a control LUN represents: the one with its `wwpn`, else the `port_index`-th
        [[hba.port]]. None (no HBA, or no such port): the channel answers from a static state."""
        if self.hba is None:
            return None
        if lun.wwpn is not None:
            port = next((p for p in self.hba.ports if p.config.wwpn == lun.wwpn), None)
            if port is None:
                log.warning("lun %s: no [[hba.port]] has WWPN %016x; HBA requests are not supported",
                            lun.name, lun.wwpn)
            return port
        if lun.port_index < len(self.hba.ports):
            return self.hba.ports[lun.port_index]
        log.warning("lun %s: port_index %d names no [[hba.port]]; HBA requests are not supported", lun.name,
                    lun.port_index)
        return None

    @staticmethod
    def _close_extra(served: ServedLun) -> None:
        store = served.extra.pop("channel_state", None)
        if store is not None:
            store.close()

    def _start_handler(self, bs: Backstore, disk: ScsiDisk) -> TcmuHandler:
        handler = self._open_handler(bs.uio_name, disk)
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
            if isinstance(served.medium, ChannelCore):
                # A parked READ ends as an ordinary "nothing" completion, not as an error.
                n = served.medium.close()
                log.info("lun %s: completed %d parked READ(s) with the heartbeat", name, n)
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
            if isinstance(served.medium, FileMedium):
                served.medium.close()
            self._close_extra(served)
        self.luns.clear()
        for engine in self.engines.values():
            engine.stop()
        self.engines.clear()
        if self.hba is not None:
            # Last: removing a remote LUN above sent SYNCHRONIZE CACHE through the HBA.
            self.hba.stop_thread()
            self.hba = None
