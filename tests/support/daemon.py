"""What the daemon tests share: a storage target on its own loop thread, and fakes for LIO and the
TCMU handler so a Daemon runs without a kernel (test_daemon_remote, test_engine_daemon)."""

from __future__ import annotations

from pathlib import Path

from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer

T_WWPN, T_WWNN = 0x2100001B32000012, 0x2000001B32000012
MIB = 1 << 20


class FakeBackstore:
    def __init__(self, spec):
        self.spec = spec
        self.uio_name = f"tcm-user/0/{spec.name}/edif/{spec.cfg}"
        self.path = Path(f"user_0/{spec.name}")


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


class FakeTcmuHandler:
    """A TCMU handler that starts and stops at once."""

    stats: dict = {}

    def start(self) -> None:
        pass

    def stop(self) -> bool:
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
