"""Real-kernel check of edifd.tcmu: `python3 -m lab.guest.host_tcmu_check` as root, with configfs and
the LIO modules available (e.g. in the QEMU lab guest). It creates its own backstores and removes
them; it prints one JSON object of figures and exits 0 only if every check passed.

Checks: a tcm_loop LUN appears as /dev/sdX; a 1 MiB O_DIRECT write/read round trip matches (and is
in the medium); a parked READ aborted by the initiator's SCSI EH arrives as a TMR entry and the
retry is served; stopping the handler with a READ parked completes within seconds and the LUN then
deletes cleanly; a handler started on a device that already has commands queued (the LUN scan that
blocks without a handler) attaches, and the disk works; iSCSI (demo mode and ACL) and
vhost-scsi exports are created and removed; the asyncio owner passes the same round trip and stop;
10,400 4 KiB reads, half completed out of order from another thread, wrap a 1 MiB ring and all match;
a handler process that dies with a READ in flight is replaced by a new one that serves the retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edifd.scsi.command import Pending, ScsiCommand, ScsiResponse, Status
from edifd.scsi.disk import ScsiDisk
from edifd.scsi.identity import Identity
from edifd.scsi.medium import IoRequest, MemoryMedium
from edifd.tcmu.aio import AsyncTcmuHandler
from edifd.tcmu.device import TcmuHandler
from edifd.tcmu.lio import (
    Backstore,
    BackstoreSpec,
    IscsiExport,
    Lio,
    LoopbackExport,
    VhostExport,
    loopback_disk,
)

SIZE = 64 << 20
BS = 512
PARK_LBA = 100_000  # a block no partition or blkid scan reads
MIB = 1 << 20

log = logging.getLogger("lab.guest.host_tcmu_check")


class ParkingMedium(MemoryMedium):
    """RAM blocks; a READ touching PARK_LBA is parked (never answered) while `parking` is set."""

    def __init__(self) -> None:
        super().__init__(SIZE // BS, BS)
        self.parking = False
        self.parked: list[Pending] = []
        self.aborted: list[ScsiCommand] = []

    def read(self, req: IoRequest) -> bytes | Pending:  # type: ignore[override]
        if self.parking and req.lba <= PARK_LBA < req.lba + req.nblocks:
            p = Pending(req.command)
            self.parked.append(p)
            return p
        return super().read(req)

    def abort(self, cmd: ScsiCommand) -> None:
        self.aborted.append(cmd)


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _direct_io(dev: Path, offset: int, length: int, pattern: bytes | None) -> bytes:
    """O_DIRECT pwritev (if pattern) + fsync, then preadv; page-aligned mmap buffers."""
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, length)
        if pattern is not None:
            buf[:] = pattern
            assert os.pwritev(fd, [buf], offset) == length
            os.fsync(fd)
            buf[:] = bytes(length)
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[:n])
    finally:
        os.close(fd)


def _reader(dev: Path, out: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        out["data"] = _direct_io(dev, PARK_LBA * BS, 4096, None)
        out["result"] = "ok"
    except OSError as exc:
        out["result"] = f"error {exc.errno} {exc.strerror}"
    out["seconds"] = round(time.monotonic() - t0, 3)


def _start(disk: ScsiDisk) -> Callable[[Backstore], TcmuHandler]:
    def start(bs: Backstore) -> TcmuHandler:
        h = TcmuHandler.open(bs.uio_name, disk)
        h.start()
        return h
    return start


class ShufflingMedium(MemoryMedium):
    """Odd 4 KiB blocks are answered later, from another thread, in shuffled order: real
    out-of-order completion while the ring wraps."""

    def __init__(self) -> None:
        super().__init__(SIZE // BS, BS)
        self.buf[:] = os.urandom(SIZE)
        self.q: queue.Queue[tuple[Pending, bytes] | None] = queue.Queue()
        self.deferred = 0

    def read(self, req: IoRequest) -> bytes | Pending:  # type: ignore[override]
        data = super().read(req)
        if (req.lba // 8) % 2:
            p = Pending(req.command)
            self.deferred += 1
            self.q.put((p, data))
            return p
        return data

    def resolver(self) -> None:
        rng = random.Random(1)
        held: list[tuple[Pending, bytes]] = []
        while True:
            try:
                item: tuple[Pending, bytes] | None | bool = self.q.get(timeout=0.005)
            except queue.Empty:
                item = False  # idle: release one held answer so no reader waits forever
            if item is None:
                break
            if isinstance(item, tuple):
                held.append(item)
            if held and (len(held) >= 3 or item is False):
                p, data = held.pop(rng.randrange(len(held)))
                p.resolve(ScsiResponse(Status.GOOD, data))
        for p, data in held:
            p.resolve(ScsiResponse(Status.GOOD, data))


def _ooo_check(lio: Lio, n_threads: int = 4, per_thread: int = 2600) -> dict[str, Any]:
    """4 KiB O_DIRECT reads from several threads through a 1 MiB ring (8191 READ entries per lap),
    half of them completed out of order from another thread."""
    medium = ShufflingMedium()
    disk = ScsiDisk(medium, Identity(vendor="EDIF", product="LABCHECK5", serial="LABCHK05"))
    spec = BackstoreSpec("edifchk4", "edif", "chk4", SIZE, wwn="LABCHK05", cmd_ring_size_mb=1)
    bs, h, exp = lio.setup(spec, LoopbackExport(), _start(disk))
    dev = loopback_disk(exp, timeout=60)
    Path("/sys/block", dev.name, "queue", "nomerges").write_text("2")
    res = threading.Thread(target=medium.resolver, daemon=True)
    res.start()
    bad: list[int] = []
    done: list[int] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            for _ in range(per_thread):
                off = rng.randrange(SIZE // 4096) * 4096
                os.preadv(fd, [buf], off)
                if buf[:] != medium.buf[off:off + 4096]:
                    bad.append(off)
                done.append(1)
        finally:
            os.close(fd)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    secs = time.monotonic() - t0
    medium.q.put(None)
    res.join(10)
    out = {"reads": len(done), "mismatches": len(bad), "deferred_out_of_order": medium.deferred,
           "ring_size": (bs.path / "info").read_text().split("CmdRingSizeMB:")[-1].split()[0] + " MiB",
           "ring_wraps_pads": h.ring_pads, "seconds": round(secs, 2),
           "reads_per_s": round(len(done) / secs, 1) if secs else None}
    out["stop_drained"] = h.stop()
    out["stats"] = vars(h.stats)
    lio.unexport(exp)
    lio.remove_backstore(bs)
    return out


def _crash_child(uio_name: str) -> None:
    """Serve the ring until a READ is parked, then die without completing it (an edifd crash)."""
    medium = ParkingMedium()
    medium.parking = True
    disk = ScsiDisk(medium, Identity(vendor="EDIF", product="LABCHECK6", serial="LABCHK06"))
    h = TcmuHandler.open(uio_name, disk)
    h.start()
    print("ready", flush=True)
    while not medium.parked:
        time.sleep(0.02)
    print("parked", flush=True)
    os._exit(3)  # no stop(): the kernel closes the uio fd, the READ stays on the ring


def _restart_check(lio: Lio) -> dict[str, Any]:
    """A handler process dies with a READ fetched but not completed; a new handler attaches
    (block_dev, reset_ring: the READ fails with BUSY, sd retries it) and serves the retry."""
    spec = BackstoreSpec("edifchk5", "edif", "chk5", SIZE, wwn="LABCHK06")
    bs = lio.create_backstore(spec)
    child = subprocess.Popen([sys.executable, "-m", "lab.guest.host_tcmu_check", "--crash-child",
                              bs.uio_name], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    out: dict[str, Any] = {"child_ready": child.stdout.readline().strip() == "ready"}
    exp = lio.export(bs, LoopbackExport())
    dev = loopback_disk(exp, timeout=60)
    r: dict[str, Any] = {}
    t = threading.Thread(target=_reader, args=(dev, r), daemon=True)
    t.start()
    out["child_parked"] = child.stdout.readline().strip() == "parked"
    out["child_exit"] = child.wait(30)
    time.sleep(1.0)
    out["reader_blocked_after_crash"] = t.is_alive()
    medium = ParkingMedium()  # a fresh edifd: same (zero) content, no parking
    disk = ScsiDisk(medium, Identity(vendor="EDIF", product="LABCHECK6", serial="LABCHK06"))
    t0 = time.monotonic()
    h = TcmuHandler.open(lio.find_backstore(spec).uio_name, disk)  # type: ignore[union-attr]
    h.start()
    t.join(60)
    out["reader_done_after_restart_s"] = round(time.monotonic() - t0, 3)
    out["reader"] = r.get("result")
    out["data_ok"] = r.get("data") == bytes(4096)
    out["stop_drained"] = h.stop()
    lio.unexport(exp)
    lio.remove_backstore(bs)
    return out


async def _async_check(lio: Lio) -> dict[str, Any]:
    """Blocking calls (configfs writes that wait for the LUN scan, O_DIRECT I/O) run in worker
    threads, so the loop keeps serving the ring meanwhile."""
    loop = asyncio.get_running_loop()
    medium = ParkingMedium()
    disk = ScsiDisk(medium, Identity(vendor="EDIF", product="LABCHECK4", serial="LABCHK04"))
    bs = lio.create_backstore(BackstoreSpec("edifchk3", "edif", "chk3", SIZE, wwn="LABCHK04"))
    h = AsyncTcmuHandler.open(bs.uio_name, disk)
    await h.start()
    out: dict[str, Any] = {}
    t0 = loop.time()
    exp = await loop.run_in_executor(None, lio.export, bs, LoopbackExport())
    dev = await loop.run_in_executor(None, lambda: loopback_disk(exp, timeout=60))
    out["export_to_disk_s"] = round(loop.time() - t0, 3)
    pattern = os.urandom(MIB)
    back = await loop.run_in_executor(None, _direct_io, dev, 4096, MIB, pattern)
    out["rt_match"] = back == pattern
    medium.parking = True
    r: dict[str, Any] = {}
    reader = loop.run_in_executor(None, _reader, dev, r)
    while not medium.parked:
        await asyncio.sleep(0.02)
    t0 = loop.time()
    out["stop_drained"] = await h.stop()
    out["stop_s"] = round(loop.time() - t0, 3)
    t0 = loop.time()
    await loop.run_in_executor(None, lio.unexport, exp)
    await loop.run_in_executor(None, lio.remove_backstore, bs)
    out["delete_s"] = round(loop.time() - t0, 3)
    await asyncio.wait_for(reader, 60)
    out["parked_reader_after_stop"] = r.get("result")
    out["stats"] = vars(h.stats)
    return out


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    lio = Lio()
    fig: dict[str, Any] = {}
    ok = True

    # 1. tcm_loop LUN and a 1 MiB O_DIRECT round trip ------------------------------------------
    medium = ParkingMedium()
    disk = ScsiDisk(medium, Identity(vendor="EDIF", product="LABCHECK", serial="LABCHK01"))
    t0 = time.monotonic()
    spec1 = BackstoreSpec("edifchk0", "edif", "chk0", SIZE, wwn="LABCHK01")
    bs, h, exp = lio.setup(spec1, LoopbackExport(), _start(disk))
    dev = loopback_disk(exp, timeout=60)
    fig["setup_to_disk_s"] = round(time.monotonic() - t0, 3)
    fig["disk"] = str(dev)
    fig["uio_name"] = bs.uio_name
    found = lio.find_backstore(spec1)
    fig["find_backstore_matches"] = found is not None and found.uio_name == bs.uio_name
    ok &= fig["find_backstore_matches"]
    fig["attrib"] = {a: (bs.path / "attrib" / a).read_text().strip()
                     for a in ("cmd_time_out", "qfull_time_out", "tmr_notification")}
    pattern = os.urandom(MIB)
    t0 = time.monotonic()
    back = _direct_io(dev, 4096, MIB, pattern)
    fig["rt_1mib_s"] = round(time.monotonic() - t0, 3)
    fig["rt_1mib_match"] = back == pattern and bytes(medium.buf[4096:4096 + MIB]) == pattern
    ok &= fig["rt_1mib_match"]

    # 2. initiator timeout -> ABORT TASK -> TMR entry; the retry is served -----------------------
    timeout_file = Path("/sys/block") / dev.name / "device" / "timeout"
    old_timeout = timeout_file.read_text().strip()
    timeout_file.write_text("3")
    medium.parking = True
    r2: dict[str, Any] = {}
    t = threading.Thread(target=_reader, args=(dev, r2), daemon=True)
    t.start()
    got_abort = _wait(lambda: h.stats.aborted >= 1, 90)
    medium.parking = False
    t.join(90)
    timeout_file.write_text(old_timeout)
    fig["tmr"] = {"aborted_by_tmr": h.stats.aborted, "executor_abort_hook": len(medium.aborted),
                  "reader": r2.get("result"), "reader_s": r2.get("seconds"),
                  "data_ok": r2.get("data") == bytes(4096)}
    ok &= got_abort and r2.get("result") == "ok"

    # 3. stop with a READ parked, then delete the LUN -------------------------------------------
    medium.parking = True
    medium.parked.clear()
    r3: dict[str, Any] = {}
    t = threading.Thread(target=_reader, args=(dev, r3), daemon=True)
    t.start()
    parked = _wait(lambda: len(medium.parked) >= 1, 30)
    t0 = time.monotonic()
    drained = h.stop()
    fig["stop_with_parked_read_s"] = round(time.monotonic() - t0, 3)
    fig["stop_drained"] = drained
    fig["stop_forced"] = h.stats.forced
    t0 = time.monotonic()
    lio.unexport(exp)
    lio.remove_backstore(bs)
    fig["lun_and_backstore_delete_s"] = round(time.monotonic() - t0, 3)
    t.join(60)
    fig["parked_reader_after_stop"] = r3.get("result", "still blocked")
    ok &= parked and drained
    ok &= fig["stop_with_parked_read_s"] < 10 and fig["lun_and_backstore_delete_s"] < 10
    fig["stats_1"] = vars(h.stats)

    # 4. attach to a device whose ring already holds commands -----------------------------------
    medium2 = ParkingMedium()
    disk2 = ScsiDisk(medium2, Identity(vendor="EDIF", product="LABCHECK2", serial="LABCHK02"))
    bs2 = lio.create_backstore(BackstoreSpec("edifchk1", "edif", "chk1", SIZE, wwn="LABCHK02"))
    res: dict[str, Any] = {}

    def export_without_handler() -> None:
        res["export"] = lio.export(bs2, LoopbackExport())
        res["t"] = time.monotonic()

    t = threading.Thread(target=export_without_handler, daemon=True)
    t.start()
    time.sleep(3.0)  # the kernel's LUN scan now waits on a ring nobody serves
    fig["attach_export_blocked_before_handler"] = t.is_alive()
    t0 = time.monotonic()
    h2 = TcmuHandler.open(bs2.uio_name, disk2)
    h2.start()
    t.join(60)
    fig["attach_export_done_after_handler_s"] = round(res.get("t", float("nan")) - t0, 3)
    exp2 = res.get("export")
    if exp2 is not None:
        dev2 = loopback_disk(exp2, timeout=60)
        pat2 = os.urandom(64 * 1024)
        fig["attach_rt_match"] = _direct_io(dev2, 8192, len(pat2), pat2) == pat2
        ok &= fig["attach_rt_match"]
    else:
        ok = False
    fig["attach_stop_drained"] = h2.stop()
    fig["stats_2"] = vars(h2.stats)
    if exp2 is not None:
        lio.unexport(exp2)
    lio.remove_backstore(bs2)
    # 5. iSCSI (demo mode, then ACL) and vhost-scsi exports on Debian's rtslib-fb ---------------
    medium3 = ParkingMedium()
    disk3 = ScsiDisk(medium3, Identity(vendor="EDIF", product="LABCHECK3", serial="LABCHK03"))
    spec3 = BackstoreSpec("edifchk2", "edif", "chk2", SIZE, wwn="LABCHK03")
    for name, espec in (
        ("iscsi_demo", IscsiExport("iqn.2003-01.org.example.edif:chk2")),
        ("iscsi_acl", IscsiExport("iqn.2003-01.org.example.edif:chk2",
                                  acls=("iqn.2024-01.org.example:vm1",))),
        ("vhost", VhostExport()),
    ):
        bs3, h3, exp3 = lio.setup(spec3, espec, _start(disk3))
        tpg = Path(exp3.tpg_obj.path)
        fig[name] = {
            "wwn": exp3.wwn,
            "lun_linked": (tpg / "lun" / "lun_0").is_dir(),
            "enable": (tpg / "enable").read_text().strip() if (tpg / "enable").exists() else None,
            "portals": sorted(p.name for p in (tpg / "np").iterdir()) if (tpg / "np").is_dir() else None,
            "acls": sorted(p.name for p in (tpg / "acls").iterdir()) if (tpg / "acls").is_dir() else None,
            "demo": (tpg / "attrib" / "generate_node_acls").read_text().strip()
            if (tpg / "attrib" / "generate_node_acls").exists() else None,
        }
        ok &= fig[name]["lun_linked"]
        h3.stop()
        lio.unexport(exp3)
        lio.remove_backstore(bs3)
    # 7. out-of-order completion across ring wraps (1 MiB ring) --------------------------------
    ooo = _ooo_check(lio)
    fig["ooo_wrap"] = ooo
    ok &= ooo["mismatches"] == 0 and ooo["reads"] == 4 * 2600 and ooo["ring_wraps_pads"] >= 1
    ok &= ooo["stats"]["failures"] == 0 and ooo["stop_drained"]

    # 8. edifd dies with a READ in flight; a new handler attaches and serves the retry ----------
    rs = _restart_check(lio)
    fig["restart"] = rs
    ok &= rs["reader"] == "ok" and rs["data_ok"] and rs["reader_blocked_after_crash"] and rs["stop_drained"]

    # 6. the asyncio owner: export, round trip, stop with a parked READ, delete ------------------
    asy = asyncio.run(_async_check(lio))
    fig["asyncio"] = asy
    ok &= asy["rt_match"] and asy["stop_drained"] and asy["stop_s"] < 10
    fig["ok"] = bool(ok)
    print(json.dumps(fig, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--crash-child":
        _crash_child(sys.argv[2])
    sys.exit(main())
