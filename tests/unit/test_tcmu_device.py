"""The device edge: UIO discovery, configfs actions and the owner thread (on the fake kernel)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edifd.scsi.command import Pending, ScsiCommand, ScsiResponse, Status
from edifd.tcmu.device import ConfigfsControl, TcmuHandler, UioFile, UioInfo, UioName, find_uio, wait_for_uio
from edifd.tcmu.errors import DeviceError
from edifd.tcmu.fakekernel import FakeControl, FakeKernel, FakeUio
from tests.support.tcmu import PARK, READ10, queue, wait_until


class Disk:
    def __init__(self) -> None:
        self.parked: list[Pending] = []
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def execute(self, cmd: ScsiCommand) -> ScsiResponse | Pending:
        self.threads.add(threading.current_thread().name)
        if cmd.cdb[5] == 0x99:
            p = Pending(cmd)
            with self.lock:
                self.parked.append(p)
            return p
        return ScsiResponse(Status.GOOD, b"d" * cmd.data_in_len)


def make(kernel: FakeKernel | None = None):
    k = kernel or FakeKernel()
    uio = FakeUio(k)
    ctl = FakeControl(k)
    disk = Disk()
    h = TcmuHandler(lambda: uio, ctl, disk, drain_timeout=2.0, name="t")
    return k, uio, ctl, disk, h


def test_uio_name_round_trip_and_errors() -> None:
    n = UioName.parse("tcm-user/3/edisk0/edif/ctl0/x\n")
    assert (n.hba, n.device, n.config, n.subtype) == (3, "edisk0", "edif/ctl0/x", "edif")
    assert str(n) == "tcm-user/3/edisk0/edif/ctl0/x"
    assert n.configfs_dir(Path("/c")) == Path("/c/user_3/edisk0")
    for bad in ("uio0", "tcm-user/x/d/c/f", "tcm-user/1//a/b", "tcm-user/1/d"):
        with pytest.raises(DeviceError):
            UioName.parse(bad)


def _fake_sysfs(tmp_path: Path, names: dict[str, str]) -> tuple[Path, Path]:
    cls, dev = tmp_path / "class", tmp_path / "dev"
    dev.mkdir()
    for uio, name in names.items():
        (cls / uio / "maps" / "map0").mkdir(parents=True)
        (cls / uio / "name").write_text(name + "\n")
        (cls / uio / "maps" / "map0" / "size").write_text("0x40800000\n")
        (dev / uio).touch()
    return cls, dev


def test_find_uio_matches_the_whole_name(tmp_path: Path) -> None:
    cls, dev = _fake_sysfs(tmp_path, {"uio0": "tcm-user/0/other/edif/ctl0",
                                      "uio1": "tcm-user/1/edisk0/edif/ctl0"})
    info = find_uio("tcm-user/1/edisk0/edif/ctl0", sysfs_class=cls, dev_dir=dev)
    assert info.node == dev / "uio1" and info.map_size == 0x40800000
    assert wait_for_uio(info.name, 0.0, sysfs_class=cls, dev_dir=dev) == info
    with pytest.raises(DeviceError, match="no uio device"):
        find_uio("tcm-user/1/edisk0/edif/ctl1", sysfs_class=cls, dev_dir=dev)
    with pytest.raises(DeviceError, match="uio module"):
        find_uio("tcm-user/1/a/b/c", sysfs_class=tmp_path / "none")


def test_configfs_control_writes_actions(tmp_path: Path) -> None:
    (tmp_path / "action").mkdir()
    c = ConfigfsControl(tmp_path)
    c.block()
    assert (tmp_path / "action" / "block_dev").read_text() == "1"
    c.reset_ring()
    assert (tmp_path / "action" / "reset_ring").read_text() == "1"
    c.unblock()
    assert (tmp_path / "action" / "block_dev").read_text() == "0"
    with pytest.raises(DeviceError, match="block_dev"):
        ConfigfsControl(tmp_path / "gone").block()


def test_open_missing_node_is_a_device_error(tmp_path: Path) -> None:
    cls, dev = _fake_sysfs(tmp_path, {"uio0": "tcm-user/0/d/s/c"})
    (dev / "uio0").unlink()
    with pytest.raises(DeviceError, match="does not exist"):
        TcmuHandler.open("tcm-user/0/d/s/c", Disk(), sysfs_class=cls, dev_dir=dev, open_timeout=0.0)


def test_start_resets_a_ring_with_queued_commands_then_serves() -> None:
    k = FakeKernel()
    stale = k.queue_cmd(READ10, data_in_len=512)  # queued before any handler was attached
    k, uio, ctl, disk, h = make(k)
    h.start()
    try:
        assert ctl.log == ["block", "reset_ring", "unblock"] and k.busy == [stale]
        cid = queue(k, uio, READ10, data_in_len=512)
        assert wait_until(lambda: any(c.cmd_id == cid for c in k.completions))
        assert k.completions[-1].data == b"d" * 512 and disk.threads == {"tcmu:t"}
    finally:
        assert h.stop()
    assert uio.closed and ctl.log[-1] == "block"


def test_pending_resolved_from_another_thread_is_completed_by_the_owner() -> None:
    k, uio, ctl, disk, h = make()
    h.start()
    try:
        cid = queue(k, uio, PARK, data_in_len=512)
        assert wait_until(lambda: len(disk.parked) == 1)
        t = threading.Thread(target=disk.parked[0].resolve, args=(ScsiResponse(Status.GOOD, b"M" * 512),))
        t.start()
        t.join()
        assert wait_until(lambda: bool(k.completions))
        assert (k.completions[0].cmd_id, k.completions[0].data) == (cid, b"M" * 512)
    finally:
        h.stop()


def test_stop_completes_parked_reads_and_drains() -> None:
    k, uio, ctl, disk, h = make()
    h.start()
    for _ in range(4):
        queue(k, uio, PARK, data_in_len=512)
    assert wait_until(lambda: len(disk.parked) == 4)
    assert h.stop() is True
    assert [c.status for c in k.completions] == [Status.BUSY] * 4
    assert k.in_flight == 0 and not h.running and h.stats.forced == 4
    disk.parked[0].resolve(ScsiResponse(Status.GOOD, b"late"))  # after close: must be harmless
    assert k.free_blocks_untouched() and not k.broken


def test_tmr_through_the_owner_thread() -> None:
    k, uio, ctl, disk, h = make()
    h.start()
    try:
        cid = queue(k, uio, PARK, data_in_len=512)
        assert wait_until(lambda: len(disk.parked) == 1)
        k.queue_tmr([cid])
        uio.signal()
        assert wait_until(lambda: bool(k.completions))
        assert k.completions[0].aborted and h.stats.aborted == 1
    finally:
        h.stop()


def test_broken_entry_triggers_reset_and_the_handler_keeps_serving() -> None:
    k, uio, ctl, disk, h = make()
    h.start()
    try:
        k.queue_cmd(READ10, data_in_len=512)
        k.buf[128] = 0  # zero length: a ring we cannot parse
        k.buf[129] = 0
        uio.signal()
        assert wait_until(lambda: h.recoveries == 1)
        cid = queue(k, uio, READ10, data_in_len=512)
        assert wait_until(lambda: any(c.cmd_id == cid for c in k.completions))
        assert ctl.log[-3:] == ["block", "reset_ring", "unblock"]
    finally:
        h.stop()


def test_start_failure_restores_unblocked_state() -> None:
    k = FakeKernel(version=1)
    k, uio, ctl, disk, h = make(k)
    with pytest.raises(Exception, match="version"):
        h.start()
    assert ctl.log == ["block", "reset_ring", "unblock"] and not h.running


def test_unblock_on_stop_option() -> None:
    k = FakeKernel()
    uio, ctl = FakeUio(k), FakeControl(k)
    h = TcmuHandler(lambda: uio, ctl, Disk(), unblock_on_stop=True)
    h.start()
    assert h.stop()
    assert ctl.log[-2:] == ["block", "unblock"]


def test_uio_file_maps_exactly_the_given_size(tmp_path: Path) -> None:
    node = tmp_path / "uio9"
    node.write_bytes(bytes(8192))
    name = UioName.parse("tcm-user/0/d/s/c")
    f = UioFile(UioInfo(name, node, 8192))
    assert len(f.buffer) == 8192 and f.fileno() >= 0
    f.close()
    with pytest.raises(DeviceError, match="cannot map"):
        UioFile(UioInfo(name, node, 1 << 20))
    with pytest.raises(DeviceError, match="cannot open"):
        UioFile(UioInfo(name, tmp_path / "absent", 8192))
