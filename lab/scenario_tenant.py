"""The tenant data path in the lab: edif-target on the lab host, edifd's HBA in VM-H, a tenant disk.

The target (edifd.target, the code behind ``edif-target``) runs in this process on 127.0.0.1; VM-H reaches it
through slirp as 10.0.2.2. VM-H runs ``lab.guest.host_tenant``: edifd logs in over FC-over-TCP, serves the
remote LUN through TCMU/tcm_loop, and a tenant writes then reads back a known pattern with O_DIRECT. Half way
through the writes the host drops the FC link (TCP) under it: every I/O must still complete correctly after
the relogin (or fail with a clear sense), and the target's backing file must hold the pattern byte for byte.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer

from .guest.host_tenant import MIB, chunk
from .guestrun import collect, guest_python, guest_vm
from .image import GuestImage

T_WWPN, T_WWNN = 0x2100001B32000C01, 0x2000001B32000C01


class TargetThread:
    """edif-target's server on its own event loop thread."""

    def __init__(self, backing: Path, size: int) -> None:
        self.backing = backing
        port = TargetPortConfig("t0", T_WWPN, T_WWNN, ("127.0.0.1", 0), (LunConfig(0, str(backing), size),))
        self.server = TargetServer(TargetConfig((port,)))
        self.server.start_thread(15)
        self.port = self.server.ports[0].address[1]

    def drop_links(self) -> None:
        self.server.call_soon(self.server.ports[0].drop_links)

    def close(self) -> None:
        self.server.stop_thread(15)


def run_tenant_lab(
    image: GuestImage,
    workdir: Path,
    *,
    mib: int = 64,
    log: Callable[[str], None] = print,
    timeout: float = 900,
) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.monotonic()
    target = TargetThread(workdir / "target-lun0.img", 2 * mib * MIB)
    summary: dict[str, Any] = {"mib": mib, "target_port": target.port}
    try:
        log(
            f"[host] edif-target listening on 127.0.0.1:{target.port} (WWPN {T_WWPN:016x}), "
            f"LUN 0 of {2 * mib} MiB"
        )
        vm = guest_vm(
            image,
            f"tenant-h-{os.getpid()}",
            workdir / "vm-h",
            guest_python("lab.guest.host_tenant"),
            {
                "LAB_TARGET": f"10.0.2.2:{target.port}",
                "LAB_TARGET_WWPN": f"{T_WWPN:016x}",
                "LAB_MIB": str(mib),
            },
        )
        with vm:
            log("[VM-H] booting; edifd's HBA logs in to the target and serves its LUN as a tenant disk")
            vm.wait_file("midway", timeout)
            target.drop_links()
            summary["link_reset_at_s"] = round(time.monotonic() - t0, 1)
            log("[host] half the data written: FC link (TCP) dropped under the tenant's I/O")
            vm.wait_exit(timeout)
            h = collect(vm)
        summary["vm_h_rc"] = h.rc
        summary["guest"] = {k: v for k, v in h.result.items() if k not in ("inquiry", "edifd_status")}
        summary["hba_status"] = (h.result.get("edifd_status") or {}).get("luns")
        with open(target.backing, "rb") as f:
            bad = [i for i in range(mib) if f.read(MIB) != chunk(i)]
        summary["backing_mismatched_mib"] = bad
        summary["backing_sha256_ok"] = not bad
        log(f"[host] target backing file holds the {mib} MiB pattern byte for byte: {not bad}")
    finally:
        target.close()
    io = summary.get("guest", {}).get("io", {})
    log(
        f"[VM-H] tenant: wrote {mib} MiB at {io.get('write_MBps')} MB/s, "
        f"read back at {io.get('read_MBps')} MB/s; "
        f"{len(io.get('write_errors') or [])} write / {len(io.get('read_errors') or [])} read errors, "
        f"{len(io.get('mismatched_mib') or [])} MiB mismatched"
    )
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["problems"] = tenant_problems(summary)
    return summary


def tenant_problems(s: dict[str, Any]) -> list[str]:
    out = []
    g = s.get("guest", {})
    if g.get("error"):
        out.append(f"VM-H: {g['error']}")
    io = g.get("io") or {}
    if not io:
        out.append("no tenant I/O result")
    # The link reset must be invisible: relogin and re-send, within io_timeout (60 s here).
    if io.get("write_errors") or io.get("read_errors") or io.get("mismatched_mib"):
        out.append(f"tenant I/O errors or corruption: {io}")
    if s.get("backing_mismatched_mib"):
        out.append(f"target backing file differs in MiB {s['backing_mismatched_mib'][:10]}")
    if s.get("vm_h_rc") != 0:
        out.append(f"VM-H rc={s.get('vm_h_rc')}")
    return out
