"""What the daemon tests share: a storage target on its own loop thread, and fakes for LIO and the
TCMU handler so a Daemon runs without a kernel (test_daemon_remote, test_engine_daemon); `LioState`
and `RecordingHandler` keep what is in LIO across Daemons, as the kernel does (test_daemon_start)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer
from edifd.tcmu.lio import Export

T_WWPN, T_WWNN = 0x2100001B32000012, 0x2000001B32000012
MIB = 1 << 20


class FakeBackstore:
    def __init__(self, spec, removed: list[str] | None = None):
        self.spec = spec
        self.uio_name = f"tcm-user/0/{spec.name}/edif/{spec.cfg}"
        self.path = Path(f"user_0/{spec.name}")
        self.so = FakeStorageObject(spec.name, [] if removed is None else removed)


class FakeStorageObject:
    """rtslib's storage object behind a backstore: the LUNs that export it."""

    def __init__(self, name: str, removed: list[str]) -> None:
        self.name, self._removed = name, removed
        self.attached_luns: list[FakeLioLun] = []


class FakeLioLun:
    """A LIO LUN (in a TPG) of a storage object; delete() is recorded as 'LUN of <name>'."""

    def __init__(self, so: FakeStorageObject, wwn: str) -> None:
        self.so, self.wwn = so, wwn
        so.attached_luns.append(self)

    def delete(self) -> None:
        self.so.attached_luns.remove(self)
        self.so._removed.append(f"LUN of {self.so.name}")


class FakeLio:
    """Records the backstores the daemon creates; no LIO, no kernel."""

    def __init__(self):
        self.specs = []

    def prepare(self, fabrics):
        pass

    def find_backstore(self, spec):
        return None

    def create_backstore(self, spec):
        self.specs.append(spec)
        return FakeBackstore(spec)


class LioState(FakeLio):
    """A LIO whose objects outlive a Daemon, as the kernel's do.

    `leave(name)` puts a backstore with one exported LUN in place as an earlier edifd left it;
    `backstores` is what LIO holds now, `created` what a Daemon created and `removed` what it deleted
    ('export <wwn>', 'LUN of <name>', 'backstore <name>'), in order. `on_create(spec)` runs as a
    backstore is created (e.g. a SIGTERM arriving during start-up)."""

    def __init__(self, on_create: Callable[[object], None] | None = None) -> None:
        super().__init__()
        self.backstores: dict[str, FakeBackstore] = {}
        self.created: list[str] = []
        self.removed: list[str] = []
        self.on_create = on_create

    def leave(self, name: str, cfg: str = "file") -> FakeBackstore:
        bs = FakeBackstore(SimpleNamespace(name=name, cfg=cfg), self.removed)
        FakeLioLun(bs.so, f"iqn.2026-11.io.edifd:{name}")  # the earlier edifd's export
        self.backstores[name] = bs
        return bs

    def find_backstore(self, spec):
        return self.backstores.get(spec.name)

    def create_backstore(self, spec):
        super().create_backstore(spec)
        bs = self.backstores[spec.name] = FakeBackstore(spec, self.removed)
        self.created.append(f"backstore {spec.name}")
        if self.on_create is not None:
            self.on_create(spec)
        return bs

    def setup(self, spec, export, start_handler):
        bs = self.create_backstore(spec)
        handler = start_handler(bs)
        wwn = getattr(export, "iqn", None) or f"naa.5001405{len(self.created):09x}"
        lun = FakeLioLun(bs.so, wwn)
        self.created.append(f"export {wwn}")
        target = SimpleNamespace(lun=lun)
        return bs, handler, Export(export.fabric, wwn, 1, export.lun, target, None)

    def unexport(self, export):
        export.target.lun.so.attached_luns.remove(export.target.lun)
        self.removed.append(f"export {export.wwn}")

    def remove_backstore(self, backstore):
        del self.backstores[backstore.spec.name]
        backstore.so.attached_luns.clear()
        self.removed.append(f"backstore {backstore.spec.name}")


class FakeTcmuHandler:
    """A TCMU handler that starts and stops at once."""

    stats: dict = {}

    def start(self) -> None:
        pass

    def stop(self) -> bool:
        return True


class RecordingHandler(FakeTcmuHandler):
    """A FakeTcmuHandler that remembers its device and whether it was started and stopped (a stop
    keeps the device blocked, as TcmuHandler's default does)."""

    def __init__(self, uio_name: str, disk: object = None) -> None:
        self.uio_name, self.disk = uio_name, disk
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> bool:
        self.stopped = True
        return True


class TargetThread:
    """A storage target on its own event loop, as edif-target runs it."""

    def __init__(self, tmp: Path) -> None:
        self.backing = tmp / "lun0.img"
        self.server = TargetServer(TargetConfig((TargetPortConfig(
            "t0", T_WWPN, T_WWNN, ("127.0.0.1", 0), (LunConfig(0, str(self.backing), 8 * MIB),)),)))
        self.server.start_thread(10)
        self.address = self.server.ports[0].address

    def close(self) -> None:
        self.server.stop_thread(10)
