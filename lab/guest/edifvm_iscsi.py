"""VM-S: find the disk that QEMU's iSCSI initiator passes through (scsi-block), read its identity with sg_inq,
and do a 1 MiB O_DIRECT write/read round trip. Run as ``python3 -m lab.guest.edifvm_iscsi``.

Environment: ``LAB_VENDOR`` (INQUIRY vendor to look for, default ``LIO-ORG``), ``LAB_IO_OFFSET`` (byte offset,
default 1 MiB), ``LAB_IO_SEED`` (seed of the pseudo-random pattern; the host recomputes its SHA-256).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from .common import log, run, write_result

IO_LEN = 1 << 20


def find_disk(vendor: str, timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sorted(Path("/sys/block").glob("sd*")):
            v = d / "device/vendor"
            if v.exists() and v.read_text().strip() == vendor:
                return d.name
        time.sleep(0.25)
    return None


def parse_sg_inq(text: str) -> dict[str, str]:
    out = {}
    for key, rx in (
        ("vendor", r"Vendor identification:\s*(.*)"),
        ("product", r"Product identification:\s*(.*)"),
        ("revision", r"Product revision level:\s*(.*)"),
        ("serial", r"Unit serial number:\s*(.*)"),
    ):
        m = re.search(rx, text)
        if m:
            out[key] = m.group(1).strip()
    return out


def pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(IO_LEN)


def round_trip(dev: str, offset: int, data: bytes) -> dict[str, Any]:
    # O_DIRECT needs an aligned buffer: an anonymous mmap is page aligned.
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        t = time.monotonic()
        n = os.pwritev(fd, [buf], offset)
        os.fsync(fd)
        tw = time.monotonic() - t
        rbuf = mmap.mmap(-1, len(data))
        t = time.monotonic()
        m = os.preadv(fd, [rbuf], offset)
        tr = time.monotonic() - t
    finally:
        os.close(fd)
    back = bytes(rbuf)
    return {
        "written": n,
        "read": m,
        "match": back == data,
        "write_s": round(tw, 3),
        "read_s": round(tr, 3),
        "written_sha256": hashlib.sha256(data).hexdigest(),
        "read_sha256": hashlib.sha256(back).hexdigest(),
    }


def main() -> int:
    vendor = os.environ.get("LAB_VENDOR", "LIO-ORG")
    offset = int(os.environ.get("LAB_IO_OFFSET", str(1 << 20)))
    seed = int(os.environ.get("LAB_IO_SEED", "1"))
    res: dict[str, Any] = {}
    name = find_disk(vendor)
    res["disk"] = name
    if name is None:
        res["error"] = f"no /sys/block/sd* with vendor {vendor!r}"
        res["lsscsi"] = run(
            ["sh", "-c", "grep -H . /sys/block/sd*/device/vendor /sys/block/sd*/device/model"]
        )
        write_result(res)
        return 1
    dev = f"/dev/{name}"
    std = run(["sg_inq", dev])
    vpd80 = run(["sg_inq", "-p", "0x80", dev])
    res["sg_inq"] = {
        **parse_sg_inq(std["stdout"] + vpd80["stdout"]),
        "rc": std["rc"],
        "rc_vpd80": vpd80["rc"],
    }
    res["sg_inq_raw"] = std["stdout"] + vpd80["stdout"]
    res["io"] = {"offset": offset, "len": IO_LEN, **round_trip(dev, offset, pattern(seed))}
    log(f"initiator: {res['sg_inq']} {res['io']}")
    write_result(res)
    return 0 if res["io"]["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
