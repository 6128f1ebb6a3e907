"""VM-H with edifd: the daemon serves TCMU LUNs through LIO; this script checks them from inside the VM.

Run as ``python3 -m lab.guest.host_luns`` (Debian's python3, project source on PYTHONPATH). Phases, each
recorded in ``result.json``:

1. edifd starts with a tcm_loop data LUN (``loop0``) and an iSCSI data LUN
   (``disk0``, demo mode, 0.0.0.0:3260);
2. ``loop0`` appears as /dev/sdX with our INQUIRY identity (sg_inq), and a 1 MiB O_DIRECT round trip matches,
   in the backing file too;
3. edifd is killed with SIGKILL and restarted while a writer loops over ``loop0``: the writer must see no
   error and every block must verify;
4. ``ready``: the host now uses ``disk0`` over iSCSI (iscsi-inq, iscsi-test-cu, VM-S) until it
   touches ``stop``;
5. parked READs: readers block on the control LUN ``ctl0`` (its READs park until the heartbeat); edifd is
   stopped with SIGTERM and must exit within 10 s having completed them; ``ctl0`` is then deleted from LIO.
   A last edifd run with ``--teardown`` then removes every remaining LIO object.

Environment: ``LAB_IQN`` (iSCSI name of disk0), ``LAB_HOLD_S`` (give up waiting for stop; default 900).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import aligned, log, mark_ready, run, wait_stop, write_json, write_result
from .edifd_process import Edifd
from .edifvm_iscsi import parse_sg_inq

STATE = Path("/tmp/edifd")  # tmpfs: backing files on the 9p share would be slow
CONFIG = Path("/tmp/edifd.toml")
READY = Path("/tmp/edifd.ready")
MIB = 1 << 20
PARK_TIME = 30.0  # long on purpose: stop must not wait for the heartbeat
IDENT = {"vendor": "EDIF", "product": "LAB DISK", "revision": "0001"}


def config_text(iqn: str) -> str:
    return f"""
[daemon]
state_dir = "{STATE}"
park_time = {PARK_TIME}
log_level = "info"

[[lun]]
name = "loop0"
size = "64MiB"
vendor = "{IDENT["vendor"]}"
product = "{IDENT["product"]}"
serial = "EDIFLAB-LOOP0"
[lun.export]
fabric = "loopback"

[[lun]]
name = "disk0"
size = "64MiB"
vendor = "{IDENT["vendor"]}"
product = "{IDENT["product"]}"
serial = "EDIFLAB-DISK0"
[lun.export]
fabric = "iscsi"
iqn = "{iqn}"
portal = "0.0.0.0:3260"
demo_mode = true
insecure_demo = true  # VM-H's slirp: reachable only through the lab host's 127.0.0.1 forward (libiscsi tests)

[[lun]]
name = "ctl0"
type = "control"
size = "16MiB"
vendor = "EDIF"
product = "CTRL"
serial = "EDIFLAB-CTL0"
[lun.export]
fabric = "loopback"
"""


def find_disk(serial: str, timeout: float = 30) -> str | None:
    """/dev/sdX whose VPD 0x80 unit serial is `serial` (sysfs exposes it as vpd_pg80)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sorted(Path("/sys/block").glob("sd*")):
            try:
                pg80 = (d / "device/vpd_pg80").read_bytes()
            except OSError:
                continue
            if pg80[4:].rstrip(b"\0 ").decode(errors="replace") == serial:
                return f"/dev/{d.name}"
        time.sleep(0.2)
    return None


def round_trip(dev: str, backing: Path, offset: int, data: bytes) -> dict[str, Any]:
    buf = aligned(len(data))
    buf[:] = data
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        t = time.monotonic()
        os.pwritev(fd, [buf], offset)
        os.fsync(fd)
        tw = time.monotonic() - t
        rbuf = aligned(len(data))
        t = time.monotonic()
        os.preadv(fd, [rbuf], offset)
        tr = time.monotonic() - t
    finally:
        os.close(fd)
    with open(backing, "rb") as fh:
        fh.seek(offset)
        on_disk = fh.read(len(data))
    return {
        "offset": offset,
        "len": len(data),
        "match": bytes(rbuf) == data,
        "backing_match": on_disk == data,
        "write_MBps": round(len(data) / tw / MIB, 1),
        "read_MBps": round(len(data) / tr / MIB, 1),
    }


class Writer(threading.Thread):
    """Writes then reads back 64 KiB blocks over a 16 MiB window with O_DIRECT, round after round."""

    BLOCK = 64 << 10
    WINDOW = 16 * MIB

    def __init__(self, dev: str, base: int) -> None:
        super().__init__(daemon=True)
        self.dev, self.base = dev, base
        self.stop = threading.Event()
        self.ops = 0
        self.errors: list[str] = []
        self.mismatches = 0
        self.max_latency = 0.0
        self.written: dict[int, bytes] = {}

    def pattern(self, i: int) -> bytes:
        return random.Random(i).randbytes(self.BLOCK)

    def run(self) -> None:
        fd = os.open(self.dev, os.O_RDWR | os.O_DIRECT)
        wbuf, rbuf = aligned(self.BLOCK), aligned(self.BLOCK)
        slots = self.WINDOW // self.BLOCK
        i = 0
        try:
            while not self.stop.is_set():
                off = self.base + (i % slots) * self.BLOCK
                data = self.pattern(i)
                wbuf[:] = data
                t = time.monotonic()
                try:
                    os.pwritev(fd, [wbuf], off)
                    os.preadv(fd, [rbuf], off)
                except OSError as e:
                    self.errors.append(f"op {i} at {off}: {e}")
                    if len(self.errors) > 20:
                        return
                    continue
                finally:
                    self.max_latency = max(self.max_latency, time.monotonic() - t)
                if bytes(rbuf) != data:
                    self.mismatches += 1
                self.written[off] = hashlib.sha256(data).digest()
                self.ops += 1
                i += 1
        finally:
            os.close(fd)

    def verify_all(self) -> int:
        """Re-reads every block this writer last wrote; returns the number that differ."""
        fd = os.open(self.dev, os.O_RDONLY | os.O_DIRECT)
        rbuf = aligned(self.BLOCK)
        bad = 0
        try:
            for off, digest in self.written.items():
                os.preadv(fd, [rbuf], off)
                bad += hashlib.sha256(rbuf).digest() != digest
        finally:
            os.close(fd)
        return bad


def kill_restart(edifd: Edifd, dev: str) -> dict[str, Any]:
    w = Writer(dev, 32 * MIB)
    w.start()
    while w.ops < 20 and w.is_alive():
        time.sleep(0.05)
    ops_before = w.ops
    edifd.signal(signal.SIGKILL)
    edifd.wait(10)
    t = time.monotonic()
    restart_s = edifd.start()
    while w.ops < ops_before + 40 and w.is_alive():
        time.sleep(0.05)
    w.stop.set()
    w.join(60)
    res = {
        "ops_before_kill": ops_before,
        "ops_total": w.ops,
        "io_errors": w.errors,
        "mismatches": w.mismatches,
        "restart_s": round(restart_s, 2),
        "resumed_after_s": round(time.monotonic() - t, 2),
        "max_io_latency_s": round(w.max_latency, 2),
        "verify_failures": w.verify_all(),
        "blocks_verified": len(w.written),
    }
    return res


def parked_stop(edifd: Edifd, ctl_dev: str | None) -> dict[str, Any]:
    """Readers park on the control LUN; SIGTERM must complete them and let edifd exit within 10 s."""
    res: dict[str, Any] = {"ctl_dev": ctl_dev}
    outcomes: list[str] = []

    # Park where an agent would: READ-window slots from the channel's LBA layout (cursor 0, one lane
    # each). Elsewhere (the guards) READs complete at once, as partition scans must.
    from edifd.proto.lba import ChannelGeometry

    geometry = None
    if ctl_dev:
        sectors = int(Path(f"/sys/block/{Path(ctl_dev).name}/size").read_text())
        geometry = ChannelGeometry(512, sectors)

    def reader(k: int) -> None:
        assert geometry is not None
        length = geometry.slot_blocks * 512
        fd = os.open(ctl_dev, os.O_RDONLY | os.O_DIRECT)
        buf = aligned(length)
        try:
            os.preadv(fd, [buf], geometry.read_lba(0, k) * 512)
            outcomes.append("completed")
        except OSError as e:
            outcomes.append(f"error: {e.strerror}")
        finally:
            os.close(fd)

    readers = []
    if ctl_dev:
        readers = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(4)]
        for r in readers:
            r.start()
        time.sleep(2.0)  # let them reach the ring and park
    res["parked_before_stop"] = sum(r.is_alive() for r in readers)
    t = time.monotonic()
    edifd.signal(signal.SIGTERM)
    rc = edifd.wait(30)
    res["edifd_stop_s"] = round(time.monotonic() - t, 2)
    res["edifd_rc"] = rc
    for r in readers:
        r.join(10)
    res["readers"] = outcomes
    res["readers_stuck"] = sum(r.is_alive() for r in readers)
    # The control LUN must now delete without hanging: a parked command would block the configfs rmdir.
    # (The data LUNs are left to edifd's own teardown below: removing their /dev/sdX sends
    # SYNCHRONIZE CACHE, which only a running edifd can answer.)
    from rtslib_fb import RTSRoot

    t = time.monotonic()
    for so in RTSRoot().storage_objects:
        if so.name == "ctl0":
            so.delete()
    res["ctl0_delete_s"] = round(time.monotonic() - t, 2)
    # edifd once more, with --teardown: it removes the remaining LUNs while their rings are still
    # served (removing a /dev/sdX sends SYNCHRONIZE CACHE), then everything else it created.
    t = time.monotonic()
    edifd.start(extra=["--teardown"])
    edifd.signal(signal.SIGTERM)
    # A hang detector: generous, because a loaded TCG host stretches the rmdirs (84 s seen once).
    res["teardown_rc"] = edifd.wait(150)
    res["teardown_s"] = round(time.monotonic() - t, 2)
    res["uio_left"] = sorted(p.name for p in Path("/sys/class/uio").glob("uio*"))
    res["backstores_left"] = sorted(so.name for so in RTSRoot().storage_objects)
    return res


def main() -> int:
    iqn = os.environ.get("LAB_IQN", "iqn.2026-11.io.edifd.lab:disk0")
    hold = float(os.environ.get("LAB_HOLD_S", "900"))
    res: dict[str, Any] = {"iqn": iqn, "identity": IDENT}
    STATE.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(config_text(iqn))
    edifd = Edifd(CONFIG, READY)
    try:
        res["check_config"] = run([sys.executable, "-m", "edifd", "check-config", "--config", str(CONFIG)])
        res["start_s"] = round(edifd.start(), 2)
        log(f"edifd ready in {res['start_s']} s")
        dev = find_disk("EDIFLAB-LOOP0")
        res["loop_dev"] = dev
        if dev is None:
            raise RuntimeError("the tcm_loop LUN loop0 did not appear as /dev/sdX")
        inq = run(["sg_inq", dev])
        vpd80 = run(["sg_inq", "-p", "0x80", dev])
        res["loop_inq"] = {**parse_sg_inq(inq["stdout"] + vpd80["stdout"]), "rc": inq["rc"]}
        res["loop_vpd83"] = run(["sg_vpd", "-p", "di", dev])["stdout"]
        res["loop_io"] = round_trip(dev, STATE / "loop0.img", 4 * MIB + 4096, random.Random(7).randbytes(MIB))
        log(f"loop0 {dev}: {res['loop_inq']} {res['loop_io']}")
        res["kill_restart"] = kill_restart(edifd, dev)
        log(f"kill/restart: {res['kill_restart']}")
        write_json("phase1.json", res)
        mark_ready()
        res["stop_requested"] = wait_stop(hold)
        with open(STATE / "disk0.img", "rb") as fh:
            off = int(os.environ.get("LAB_CHECK_OFFSET", str(3 * MIB)))
            fh.seek(off)
            res["disk0_sha256"] = hashlib.sha256(fh.read(MIB)).hexdigest()
        res["parked_stop"] = parked_stop(edifd, find_disk("EDIFLAB-CTL0", timeout=5))
        log(f"parked stop: {res['parked_stop']}")
    except Exception as e:  # the host reads the reason from result.json
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
        mark_ready("failed")
        write_result(res)
        return 1
    write_result(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
