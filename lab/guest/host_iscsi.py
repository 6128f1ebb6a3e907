"""VM-H without edifd: export a LIO ``fileio`` LUN over iSCSI with rtslib-fb (demo mode) and hold it.

Proves the lab's two-VM plumbing before the edifd daemon exists (``lab up --backend fileio``, smoke test b).
Run as ``python3 -m lab.guest.host_iscsi``; environment:

* ``LAB_IQN``       target IQN (default below), LUN 0, portal 0.0.0.0:3260 (the host forwards to it);
* ``LAB_SIZE_MIB``  backing file size (default 64);
* ``LAB_HOLD_S``    give up waiting for ``/lab/stop`` after this many seconds (0 = wait forever);
* ``LAB_CHECK_OFFSET`` / ``LAB_CHECK_LEN``  the byte range of the backing file whose SHA-256 goes into
  ``result.json`` at the end, so the host can check that an initiator's write really landed in the target.

Writes ``probe.json`` (lab.guest.probe) and ``endpoint.json`` then ``ready``; ``result.json`` after ``stop``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import log, mark_ready, wait_stop, write_json, write_result
from .probe import probe

DEFAULT_IQN = "iqn.2003-01.org.linux-iscsi.edifd-lab:vm-h"
BACKING = Path("/tmp/lun0.img")  # tmpfs: fileio does buffered I/O with O_DSYNC, fine on tmpfs


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def export(iqn: str, size: int) -> tuple[Any, dict[str, Any]]:
    from rtslib_fb import LUN, TPG, FabricModule, FileIOStorageObject, NetworkPortal, Target

    t0 = time.monotonic()
    with open(BACKING, "wb") as fh:
        fh.truncate(size)
    so = FileIOStorageObject("lun0", dev=str(BACKING), size=size, write_back=False)
    tgt = Target(FabricModule("iscsi"), iqn)
    tpg = TPG(tgt, 1)
    # Demo mode: any initiator (QEMU's libiscsi, iscsi-inq) logs in without ACLs or CHAP; lab only.
    for k, v in (
        ("authentication", "0"),
        ("generate_node_acls", "1"),
        ("demo_mode_write_protect", "0"),
        ("cache_dynamic_acls", "1"),
    ):
        tpg.set_attribute(k, v)
    NetworkPortal(tpg, "0.0.0.0", 3260)
    LUN(tpg, 0, so)
    tpg.enable = True
    wwn = Path(so.path) / "wwn"
    ident = {
        "iqn": iqn,
        "lun": 0,
        "guest_port": 3260,
        "backstore": "fileio",
        "size": size,
        "serial": so.wwn,
        "vendor": _read(wwn / "vendor_id"),
        "product": _read(wwn / "product_id"),
        "setup_s": round(time.monotonic() - t0, 3),
    }
    return tgt, ident


def main() -> int:
    iqn = os.environ.get("LAB_IQN", DEFAULT_IQN)
    size = int(os.environ.get("LAB_SIZE_MIB", "64")) << 20
    hold = float(os.environ.get("LAB_HOLD_S", "0"))
    off = int(os.environ.get("LAB_CHECK_OFFSET", "0"))
    ln = int(os.environ.get("LAB_CHECK_LEN", "0"))
    res: dict[str, Any] = {"probe": probe()}
    write_json("probe.json", res["probe"])
    log("probe done; creating the iSCSI export")
    try:
        _, ident = export(iqn, size)
    except Exception as e:
        res["error"] = f"export failed: {type(e).__name__}: {e}"
        write_result(res)
        raise
    res["endpoint"] = ident
    write_json("endpoint.json", ident)
    mark_ready(iqn)
    log(f"exported {ident}; waiting for /lab/stop")
    res["stopped_by_host"] = wait_stop(hold)
    if ln:
        with open(BACKING, "rb") as fh:
            fh.seek(off)
            res["backing_sha256"] = hashlib.sha256(fh.read(ln)).hexdigest()
    from rtslib_fb import RTSRoot

    t = time.monotonic()
    RTSRoot().clear_existing(confirm=True)
    res["teardown_s"] = round(time.monotonic() - t, 3)
    write_result(res)
    log("torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
