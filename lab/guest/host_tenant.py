"""VM-H, tenant data path: edifd's software HBA logs in to edif-target on the lab host (over slirp) and
serves its LUN through TCMU as a tenant disk; a tenant writes and reads it back with O_DIRECT.

Run as ``python3 -m lab.guest.host_tenant``. Environment: ``LAB_TARGET`` (host:port of the target port as
seen from the guest, e.g. ``10.0.2.2:40000``), ``LAB_TARGET_WWPN`` (hex), ``LAB_MIB`` (data size, default 64).

Phases: edifd starts (the HBA logs in; the LUN is sized by the target's READ CAPACITY); the tenant writes
``LAB_MIB`` MiB of a known pattern in 1 MiB O_DIRECT writes, writing ``midway`` into the share half way so
the host can reset the link under it; then reads everything back and compares. Every I/O is recorded as
completed, failed (with errno) or wrong; result.json carries the counts and the edifd HBA counters.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import SHARE, aligned, log, run, write_result
from .edifd_process import Edifd

CONFIG = Path("/tmp/edifd.toml")
READY = Path("/tmp/edifd.ready")
MIB = 1 << 20
I_WWPN = "21:00:00:1b:32:00:00:b1"
I_WWNN = "20:00:00:1b:32:00:00:b1"


def config_text(target: str, target_wwpn: str) -> str:
    return f"""
[daemon]
state_dir = "/tmp/edifd"
log_level = "info"

[hba]
io_timeout = 60

[[hba.port]]
name = "p0"
wwpn = "{I_WWPN}"
wwnn = "{I_WWNN}"
target = "{target}"

[[lun]]
name = "tenant0"
type = "remote"
hba_port = "p0"
target_wwpn = "{target_wwpn}"
remote_lun = 0
[lun.export]
fabric = "loopback"
"""


def chunk(i: int) -> bytes:
    """1 MiB number i of the pattern: position-dependent, so a misplaced block shows."""
    seed = hashlib.sha256(b"edifd-tenant-%d" % i).digest()
    return (seed * (MIB // len(seed)))[:MIB]


def find_tenant_disk(timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        disks = sorted(Path("/sys/block").glob("sd*"))
        if disks:
            return f"/dev/{disks[0].name}"
        time.sleep(0.2)
    return None


def tenant_io(dev: str, mib: int, progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Write `mib` MiB of the pattern with O_DIRECT, fsync, read back and compare; every error recorded.
    `progress(phase, mib_done)` runs after each MiB of the "write" and the "read" pass."""
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = aligned(MIB)
    res: dict[str, Any] = {"write_errors": [], "read_errors": [], "mismatched_mib": [], "mib": mib}
    try:
        t = time.monotonic()
        for i in range(mib):
            buf[:] = chunk(i)
            try:
                os.pwritev(fd, [buf], i * MIB)
            except OSError as e:
                res["write_errors"].append([i, e.strerror])
            if progress:
                progress("write", i + 1)
        os.fsync(fd)
        res["write_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        for i in range(mib):
            try:
                os.preadv(fd, [buf], i * MIB)
            except OSError as e:
                res["read_errors"].append([i, e.strerror])
                continue
            if bytes(buf) != chunk(i):
                res["mismatched_mib"].append(i)
            if progress:
                progress("read", i + 1)
        res["read_s"] = round(time.monotonic() - t, 1)
    finally:
        os.close(fd)
    res["write_MBps"] = round(mib / max(res["write_s"], 0.001), 2)
    res["read_MBps"] = round(mib / max(res["read_s"], 0.001), 2)
    return res


def main() -> int:
    target = os.environ["LAB_TARGET"]
    mib = int(os.environ.get("LAB_MIB", "64"))
    CONFIG.write_text(config_text(target, os.environ["LAB_TARGET_WWPN"]))
    res: dict[str, Any] = {"target": target}
    edifd = Edifd(CONFIG, READY)
    try:
        res["check_config"] = run([sys.executable, "-m", "edifd", "check-config", "--config", str(CONFIG)])
        # --teardown: on SIGTERM edifd removes the tenant LUN while the HBA still answers the
        # SYNCHRONIZE CACHE that disk removal sends (otherwise the guest's power-off would wait on it).
        res["start_s"] = round(edifd.start(extra=["--teardown"]), 2)
        dev = find_tenant_disk()
        res["dev"] = dev
        if dev is None:
            raise RuntimeError("the remote LUN did not appear as /dev/sdX")
        inq = run(["sg_inq", dev])
        res["inquiry"] = inq["stdout"][-600:]
        log(f"tenant disk {dev} ready after {res['start_s']} s")
        def midway(phase: str, done: int) -> None:
            if phase == "write" and done == mib // 2 + 1:
                (SHARE / "midway").write_text("midway\n")  # the host resets the FC link now

        res["io"] = tenant_io(dev, mib, midway)
        log(f"tenant I/O: {json.dumps({k: v for k, v in res['io'].items() if k != 'mismatched_mib'})}")
        status = Path("/tmp/edifd/status.json")
        if status.exists():
            res["edifd_status"] = json.loads(status.read_text())
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
        write_result(res)
        return 1
    finally:
        if edifd.running():
            res["edifd_rc"] = edifd.stop(signal.SIGTERM, 60)
    write_result(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
