"""The two-VM iSCSI path, as one call: VM-H exports a LUN, the host and VM-S use it through QEMU's initiator.

VM-H runs ``lab.guest.host_iscsi`` (probe, LIO fileio LUN over iSCSI, demo mode) with its port 3260
forwarded to a free host port; once it is ready the host runs ``iscsi-inq``; VM-S maps the LUN as
``scsi-block`` and runs ``lab.guest.edifvm_iscsi`` (sg_inq, 1 MiB O_DIRECT round trip); then the host
stops VM-H, which reports the SHA-256 of the backing-file range VM-S wrote. Two boots in all; the smoke tests
assert on the returned object.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guest.edifvm_iscsi import IO_LEN, pattern
from .guestrun import GuestRun, collect, guest_python, guest_vm, run_guest
from .image import GuestImage
from .vm import Drive, HostFwd, free_port

PAIR_IQN = "iqn.2003-01.org.linux-iscsi.edifd-lab:pair"


@dataclass
class PairResult:
    port: int
    iqn: str
    seed: int
    offset: int
    probe: dict[str, Any]  # VM-H's lab.guest.probe facts
    endpoint: dict[str, Any]  # what VM-H created: vendor, product, serial (configfs wwn), size
    host_inq: dict[str, Any]  # iscsi-inq on the host: rc, stdout, stderr
    vm_h: GuestRun
    vm_s: GuestRun
    expected_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.expected_sha256 = hashlib.sha256(pattern(self.seed)).hexdigest()

    def problems(self) -> list[str]:
        """Everything that is not as it should be; empty when the path works end to end."""
        p: list[str] = []
        if self.probe.get("modules_missing"):
            p.append(f"VM-H modules missing: {self.probe['modules_missing']}")
        vendor = self.endpoint.get("vendor") or "?"
        if self.host_inq.get("rc") != 0 or vendor not in self.host_inq.get("stdout", ""):
            p.append(f"host iscsi-inq failed or shows no {self.endpoint.get('vendor')}: {self.host_inq}")
        if self.vm_s.rc != 0:
            p.append(f"VM-S run.sh rc={self.vm_s.rc}")
        inq = self.vm_s.result.get("sg_inq", {})
        for k in ("vendor", "product", "serial"):
            if inq.get(k) != self.endpoint.get(k):
                p.append(f"VM-S sees {k}={inq.get(k)!r}, VM-H exported {self.endpoint.get(k)!r}")
        io = self.vm_s.result.get("io", {})
        if not io.get("match") or io.get("read_sha256") != self.expected_sha256:
            p.append(f"O_DIRECT round trip mismatch: {io}")
        if self.vm_h.rc != 0:
            p.append(f"VM-H run.sh rc={self.vm_h.rc}")
        if self.vm_h.result.get("backing_sha256") != self.expected_sha256:
            p.append("VM-H backing file does not hold the data VM-S wrote")
        return p

    def summary(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "iqn": self.iqn,
            "endpoint": self.endpoint,
            "vm_s_sg_inq": self.vm_s.result.get("sg_inq"),
            "vm_s_io": self.vm_s.result.get("io"),
            "boots": {
                r.name: {"wall_s": r.wall_s and round(r.wall_s, 1), "markers": r.markers}
                for r in (self.vm_h, self.vm_s)
            },  # fmt: skip
            "problems": self.problems(),
        }


def _fresh(d: Path) -> Path:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def run_iscsi_pair(
    image: GuestImage,
    workdir: Path,
    *,
    iqn: str = PAIR_IQN,
    seed: int | None = None,
    offset: int = 3 << 20,  # not block 0: a partition scan reading LBA 0 would not hide a wrong offset
    timeout: float = 240,
    log: Callable[[str], None] = print,
) -> PairResult:
    seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
    port = free_port()
    tag = f"{os.getpid()}"
    env_h = {
        "LAB_IQN": iqn,
        "LAB_HOLD_S": "900",
        "LAB_CHECK_OFFSET": str(offset),
        "LAB_CHECK_LEN": str(IO_LEN),
    }
    vm_h = guest_vm(
        image, f"pair-h-{tag}", _fresh(workdir / "vm-h"), guest_python("lab.guest.host_iscsi"), env_h,
        hostfwd=[HostFwd(port, 3260)],
    )  # fmt: skip
    with vm_h:
        log(f"VM-H booting (iSCSI forwarded to 127.0.0.1:{port}); console {vm_h.console}")
        vm_h.wait_file("ready", timeout)
        probe = json.loads((vm_h.share / "probe.json").read_text())
        endpoint = json.loads((vm_h.share / "endpoint.json").read_text())
        log(f"VM-H ready: {endpoint}")
        url = f"iscsi://127.0.0.1:{port}/{iqn}/0"
        inq = subprocess.run(["iscsi-inq", url], capture_output=True, text=True, timeout=60)
        host_inq = {"rc": inq.returncode, "stdout": inq.stdout, "stderr": inq.stderr}
        # VM-S is the initiator side only: QEMU itself speaks iSCSI, so no NIC, and no LIO modules to load.
        env_s = {"LAB_VENDOR": endpoint.get("vendor") or "LIO-ORG", "LAB_IO_OFFSET": str(offset),
                 "LAB_IO_SEED": str(seed)}  # fmt: skip
        log("VM-S booting with the LUN as scsi-block")
        share_s = _fresh(workdir / "vm-s")
        vm_s = run_guest(
            image, f"pair-s-{tag}", share_s, guest_python("lab.guest.edifvm_iscsi"), env_s,
            timeout=timeout, net=False, lio=False, drives=[Drive.iscsi(port, iqn, 0)],
        )  # fmt: skip
        log(f"VM-S done: rc={vm_s.rc} in {vm_s.wall_s and round(vm_s.wall_s, 1)}s; stopping VM-H")
        vm_h.request_stop()
        vm_h.wait_exit(120)
        h = collect(vm_h)
    return PairResult(port, iqn, seed, offset, probe, endpoint, host_inq, h, vm_s)
