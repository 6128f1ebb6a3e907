"""Lab smoke tests with real TCG boots: two boots for the whole module (lab.scenario_iscsi.run_iscsi_pair).

VM-H boots the cached guest, records what the guest offers (lab.guest.probe: LIO modules, configfs, Debian's
python packages, ``import edifd`` from the read-only source share), then exports a LIO fileio LUN over iSCSI
(demo mode) with its port 3260 forwarded to a free host port. The host runs ``iscsi-inq`` against it; VM-S
maps the LUN through QEMU's iSCSI initiator as ``scsi-block``, reads the LIO identity with ``sg_inq`` and does
a 1 MiB O_DIRECT round trip; after the host stops VM-H, VM-H reports the hash of the backing-file range.
The VM shares (console.log, out.log, dmesg.log, result.json) stay in lab/out/smoke/<pid>/ for inspection or CI
upload.
"""

from __future__ import annotations

import json

import pytest

from lab.control import run_dir
from lab.guest.edifvm_iscsi import IO_LEN
from lab.image import GuestImage
from lab.scenario_iscsi import PairResult, run_iscsi_pair
from lab.vm import pids_with_tag

pytestmark = pytest.mark.lab

# Debian 12's packages: the floors our code must run on (README.md, Supported versions).
FLOORS = {"rtslib_fb": (2, 1, 75), "cryptography": (38,), "click": (8, 1), "pyudev": (0, 24)}


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


@pytest.fixture(scope="module")
def pair(lab_image: GuestImage) -> PairResult:
    res = run_iscsi_pair(lab_image, run_dir("smoke"), timeout=300)
    print("lab pair:", json.dumps(res.summary()))
    return res


# -- (a) VM-H: the guest is what the project needs ---------------------------------------


def test_vm_h_boots_and_loads_lio(pair: PairResult, lab_image: GuestImage) -> None:
    texts = [t for t, _ in pair.vm_h.markers]
    assert texts[0] == "booted" and "modules ok" in texts, texts
    p = pair.probe
    assert p["kernel"] == lab_image.kernel_version
    assert p["modules_missing"] == [], p
    assert p["configfs_mounted"] is True
    assert p["target_version"].startswith("Target Engine Core ConfigFS Infrastructure")
    assert lab_image.kernel_version in p["target_version"]


def test_guest_has_debian_python_packages(pair: PairResult) -> None:
    p = pair.probe
    assert p["python"].startswith("3.11."), p["python"]
    for name, floor in FLOORS.items():
        imp = p["imports"][name]
        assert imp["ok"], imp
        assert imp["file"].startswith("/usr/lib/python3/dist-packages/"), imp  # Debian's, not a pip copy
        assert _ver(imp["version"]) >= floor, (name, imp["version"])
    print("guest versions:", {n: p["imports"][n]["version"] for n in FLOORS}, "python", p["python"])


def test_project_importable_from_readonly_src(pair: PairResult) -> None:
    p = pair.probe
    assert p["import_edifd"]["rc"] == 0, p["import_edifd"]["stderr"]
    assert p["import_edifd"]["file"] == "/src/edifd/__init__.py"
    assert p["mounts_9p"] == ["/lab:rw", "/src:ro"]
    assert p["src_readonly"] is True


# -- (b) two VMs over iSCSI ---------------------------------------


def test_host_iscsi_inq_sees_lio(pair: PairResult) -> None:
    inq = pair.host_inq
    assert inq["rc"] == 0, inq["stderr"]
    fields = dict(line.split(":", 1) for line in inq["stdout"].splitlines() if ":" in line)
    assert fields["Vendor"].strip() == pair.endpoint["vendor"] == "LIO-ORG"
    assert fields["Product"].strip() == pair.endpoint["product"]


def test_vm_s_sees_the_targets_own_identity(pair: PairResult) -> None:
    assert pair.vm_s.rc == 0, pair.vm_s.describe()
    inq = pair.vm_s.result["sg_inq"]
    assert inq["rc"] == 0 and inq["rc_vpd80"] == 0, pair.vm_s.result.get("sg_inq_raw")
    # scsi-block passes LIO's INQUIRY through; scsi-hd would say "QEMU QEMU HARDDISK".
    assert inq["vendor"] == pair.endpoint["vendor"]
    assert inq["product"] == pair.endpoint["product"]
    assert inq["serial"] == pair.endpoint["serial"]  # VPD 0x80 read in VM-S == configfs wwn in VM-H


def test_o_direct_round_trip_matches(pair: PairResult) -> None:
    io = pair.vm_s.result["io"]
    assert io["written"] == io["read"] == IO_LEN
    assert io["match"] is True
    assert io["written_sha256"] == io["read_sha256"] == pair.expected_sha256


def test_data_landed_in_target_backing_file(pair: PairResult) -> None:
    assert pair.vm_h.rc == 0, pair.vm_h.describe()
    assert pair.vm_h.result["stopped_by_host"] is True
    assert pair.vm_h.result["backing_sha256"] == pair.expected_sha256


def test_both_powered_off_and_no_qemu_left(pair: PairResult) -> None:
    assert pair.vm_h.qemu_rc == 0 and pair.vm_s.qemu_rc == 0  # both guests powered off by themselves
    assert [t for t, _ in pair.vm_s.markers][-1] == "DONE"
    for run in (pair.vm_h, pair.vm_s):
        assert pids_with_tag(f"edifd-lab-{run.name}") == []
    assert pair.problems() == []
