"""Lab smoke tests with real TCG boots: two boots for the whole module.

VM-H boots the cached guest, records what the guest offers (lab.guest.probe: LIO modules, configfs, Debian's
python packages, ``import edifd`` from the read-only source share), then exports a LIO fileio LUN over iSCSI
(demo mode) with its port 3260 forwarded to a free host port. The host runs ``iscsi-inq`` against it; VM-S
maps the LUN through QEMU's iSCSI initiator as ``scsi-block``, reads the LIO identity with ``sg_inq`` and does
a 1 MiB O_DIRECT round trip; after the host stops VM-H, VM-H reports the hash of the backing file region.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.guest.iscsi_initiator import IO_LEN, pattern
from lab.image import GuestImage
from lab.scenario import GuestRun, collect, guest_python, guest_vm, run_guest
from lab.vm import VM, Drive, HostFwd, free_port, pids_with_tag

pytestmark = pytest.mark.lab

IQN = "iqn.2003-01.org.linux-iscsi.edifd-lab:smoke"
IO_OFFSET = 3 << 20  # not block 0: a stale partition-table scan would not hide a wrong offset
SEED = int.from_bytes(os.urandom(4), "big")  # fresh data every run: no stale backing file can pass
BOOT_TIMEOUT = 240  # generous: two TCG guests share two cores with other jobs
# Debian 12's packages: the floors our code must run on (DESIGN.md §5).
FLOORS = {"rtslib_fb": (2, 1, 75), "cryptography": (38,), "click": (8, 1), "pyudev": (0, 24)}


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


@dataclass
class VMH:
    vm: VM
    port: int
    probe: dict[str, Any]
    endpoint: dict[str, Any]


@pytest.fixture(scope="module")
def vm_h(lab_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    env = {
        "LAB_IQN": IQN,
        "LAB_HOLD_S": "600",  # the guest gives up on its own should the host vanish
        "LAB_CHECK_OFFSET": str(IO_OFFSET),
        "LAB_CHECK_LEN": str(IO_LEN),
    }
    share = tmp_path_factory.mktemp("vm-h")
    vm = guest_vm(
        lab_image, f"t-h-{os.getpid()}", share, guest_python("lab.guest.iscsi_export"), env,
        hostfwd=[HostFwd(port, 3260)],
    )  # fmt: skip
    with vm:
        vm.wait_file("ready", BOOT_TIMEOUT)
        probe = json.loads((vm.share / "probe.json").read_text())
        endpoint = json.loads((vm.share / "endpoint.json").read_text())
        yield VMH(vm, port, probe, endpoint)


@pytest.fixture(scope="module")
def host_inq(vm_h: VMH) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iscsi-inq", f"iscsi://127.0.0.1:{vm_h.port}/{IQN}/0"], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def vm_s(
    vm_h: VMH, host_inq: object, lab_image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> GuestRun:
    env = {"LAB_VENDOR": vm_h.endpoint["vendor"], "LAB_IO_OFFSET": str(IO_OFFSET), "LAB_IO_SEED": str(SEED)}
    # VM-S is the initiator side only: no NIC (QEMU itself speaks iSCSI) and no LIO modules to load.
    share = tmp_path_factory.mktemp("vm-s")
    return run_guest(
        lab_image, f"t-s-{os.getpid()}", share, guest_python("lab.guest.iscsi_initiator"), env,
        timeout=BOOT_TIMEOUT, net=False, lio=False, drives=[Drive.iscsi(vm_h.port, IQN, 0)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def vm_h_final(vm_h: VMH, vm_s: GuestRun) -> GuestRun:
    vm_h.vm.request_stop()
    vm_h.vm.wait_exit(120)
    return collect(vm_h.vm)


# -- (a) VM-H: the guest is what the project needs ---------------------------------------


def test_vm_h_boots_and_loads_lio(vm_h: VMH, lab_image: GuestImage) -> None:
    texts = [t for t, _ in vm_h.vm.markers()]
    assert texts[0] == "booted" and "modules ok" in texts, texts
    p = vm_h.probe
    assert p["kernel"] == lab_image.kernel_version
    assert p["modules_missing"] == [], p
    assert p["configfs_mounted"] is True
    assert p["target_version"].startswith("Target Engine Core ConfigFS Infrastructure")
    assert lab_image.kernel_version in p["target_version"]


def test_guest_has_debian_python_packages(vm_h: VMH) -> None:
    p = vm_h.probe
    assert p["python"].startswith("3.11."), p["python"]
    for name, floor in FLOORS.items():
        imp = p["imports"][name]
        assert imp["ok"], imp
        assert imp["file"].startswith("/usr/lib/python3/dist-packages/"), imp  # Debian's, not a pip copy
        assert _ver(imp["version"]) >= floor, (name, imp["version"])
    print("guest versions:", {n: p["imports"][n]["version"] for n in FLOORS}, "python", p["python"])


def test_project_importable_from_readonly_src(vm_h: VMH) -> None:
    p = vm_h.probe
    assert p["import_edifd"]["rc"] == 0, p["import_edifd"]["stderr"]
    assert p["import_edifd"]["file"] == "/src/edifd/__init__.py"
    assert p["mounts_9p"] == ["/lab:rw", "/src:ro"]
    assert p["src_readonly"] is True


# -- (b) two VMs over iSCSI ---------------------------------------


def test_host_iscsi_inq_sees_lio(vm_h: VMH, host_inq: subprocess.CompletedProcess[str]) -> None:
    assert host_inq.returncode == 0, host_inq.stderr
    fields = dict(line.split(":", 1) for line in host_inq.stdout.splitlines() if ":" in line)
    assert fields["Vendor"].strip() == vm_h.endpoint["vendor"] == "LIO-ORG"
    assert fields["Product"].strip() == vm_h.endpoint["product"]


def test_vm_s_sees_the_targets_own_identity(vm_s: GuestRun, vm_h: VMH) -> None:
    assert vm_s.rc == 0, vm_s.describe()
    inq = vm_s.result["sg_inq"]
    assert inq["rc"] == 0 and inq["rc_vpd80"] == 0, vm_s.result.get("sg_inq_raw")
    # scsi-block passes LIO's INQUIRY through; scsi-hd would say "QEMU QEMU HARDDISK".
    assert inq["vendor"] == vm_h.endpoint["vendor"]
    assert inq["product"] == vm_h.endpoint["product"]
    assert inq["serial"] == vm_h.endpoint["serial"]  # VPD 0x80 read in VM-S == configfs wwn in VM-H


def test_o_direct_round_trip_matches(vm_s: GuestRun) -> None:
    io = vm_s.result["io"]
    assert io["written"] == io["read"] == IO_LEN
    assert io["match"] is True
    want = hashlib.sha256(pattern(SEED)).hexdigest()
    assert io["written_sha256"] == io["read_sha256"] == want


def test_data_landed_in_target_backing_file(vm_h_final: GuestRun) -> None:
    assert vm_h_final.rc == 0, vm_h_final.describe()
    assert vm_h_final.result["stopped_by_host"] is True
    assert vm_h_final.result["backing_sha256"] == hashlib.sha256(pattern(SEED)).hexdigest()


def test_no_qemu_left_and_timings(vm_h: VMH, vm_h_final: GuestRun, vm_s: GuestRun, tmp_path: Path) -> None:
    assert pids_with_tag(vm_h.vm.tag) == [] and pids_with_tag(f"edifd-lab-{vm_s.name}") == []
    assert vm_h_final.qemu_rc == 0 and vm_s.qemu_rc == 0  # both powered off by themselves
    timings = {r.name: {"wall_s": round(r.wall_s or 0, 1), "markers": r.markers} for r in (vm_h_final, vm_s)}
    print("boot timings:", json.dumps(timings))
