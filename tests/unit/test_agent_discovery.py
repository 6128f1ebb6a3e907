"""guest_agent.discovery: VPD parsing, WWPNs, and finding control disks in a fake sysfs tree."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edifd.fc import wwn_str
from edifd.scsi import Identity
from edifd.scsi.inquiry import VPD_DEVICE_ID, VPD_UNIT_SERIAL, vpd_page
from guest_agent.discovery import (
    ControlDisk,
    DiscoveryError,
    VpdError,
    discover,
    disk_for_device,
    parse_vpd80,
    parse_vpd83,
    parse_wwpn,
    scan_sysfs,
    scan_udev,
    select,
)
from tests.support.agent import WWPN_A, WWPN_B, make_disk

# -- VPD and WWPN parsing ---------------------------------------------------------------------------


def test_vpd83_from_our_scsi_layer_yields_the_port_wwpn():
    page = vpd_page(VPD_DEVICE_ID, Identity(serial="X", port_wwpn=WWPN_A), max_transfer_blocks=8)
    assert parse_vpd83(page) == WWPN_A


def test_vpd83_without_a_port_designator_is_none():
    # The LU's own NAA (association 0) is not a port name.
    page = vpd_page(VPD_DEVICE_ID, Identity(serial="X"), max_transfer_blocks=8)
    assert parse_vpd83(page) is None


def test_vpd83_ignores_port_naa_without_piv_or_of_another_protocol():
    def desig(proto: int, piv: bool) -> bytes:
        return bytes([(proto << 4) | 1, (0x80 if piv else 0) | 0x10 | 3, 0, 8]) + WWPN_B.to_bytes(8, "big")

    body = desig(5, True) + desig(0, False)  # iSCSI protocol id; FC but PIV=0
    assert parse_vpd83(bytes([0, 0x83]) + struct.pack(">H", len(body)) + body) is None
    body += desig(0, True)
    assert parse_vpd83(bytes([0, 0x83]) + struct.pack(">H", len(body)) + body) == WWPN_B


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "shorter"),
        (b"\x00\x80\x00\x00", "expected VPD page 0x83"),
        (b"\x00\x83\x00\x10\x01\x03", "declares 16 bytes"),
        (b"\x00\x83\x00\x02\x01\x03", "header truncated"),
        (b"\x00\x83\x00\x06\x01\x03\x00\x08\xaa\xbb", "runs past"),
    ],
)
def test_bad_vpd83_raises_vpd_error(data, why):
    with pytest.raises(VpdError, match=why):
        parse_vpd83(data)


@given(st.binary(max_size=300))
def test_vpd_parsers_raise_only_vpd_error(data):
    for parse in (parse_vpd83, parse_vpd80):
        try:
            parse(data)
        except VpdError:
            pass


def test_vpd_parsers_refuse_non_bytes():
    with pytest.raises(VpdError):
        parse_vpd83("not bytes")  # type: ignore[arg-type]
    m = memoryview(b"\x00\x83\x00\x00")
    m.release()
    with pytest.raises(VpdError):
        parse_vpd83(m)


def test_vpd80_serial():
    page = vpd_page(VPD_UNIT_SERIAL, Identity(serial="EDIFLAB-CTL0"), max_transfer_blocks=8)
    assert parse_vpd80(page) == "EDIFLAB-CTL0"


@pytest.mark.parametrize("text", ["50:01:43:80:12:34:56:7a", "0x500143801234567A", "500143801234567a",
                                  "naa.500143801234567A", " 50-01-43-80-12-34-56-7A "])
def test_wwpn_forms(text):
    assert parse_wwpn(text) == WWPN_A


@pytest.mark.parametrize("text", ["", "50:01", "0x0000000000000000", "zz01438012345678", "1" * 17])
def test_bad_wwpn(text):
    with pytest.raises(DiscoveryError, match="bad WWPN"):
        parse_wwpn(text)


@given(st.integers(1, (1 << 64) - 1))
def test_wwpn_format_round_trips(w):
    assert parse_wwpn(wwn_str(w)) == w


# -- sysfs scan -------------------------------------------------------------------------------------


def test_sysfs_scan_finds_only_control_disks(tmp_path):
    make_disk(tmp_path, "sda", vendor="QEMU", model="QEMU HARDDISK", wwpn=None)
    make_disk(tmp_path, "sdb", serial="CTL-B", wwpn=WWPN_B, block_size=4096, sectors=8 * 1024)
    make_disk(tmp_path, "sdc", model="LAB DISK")
    (tmp_path / "block" / "vda").mkdir()  # virtio-blk: no device/vendor
    disks = scan_sysfs(sys_root=str(tmp_path), dev_root="/dev")
    assert disks == [ControlDisk("sdb", "/dev/sdb", "EDIF", "CTRL", "CTL-B", WWPN_B, 4096, 1024, "sysfs")]
    assert disks[0].wwpn_text == "50:01:43:80:12:34:56:7b"


def test_vendor_and_product_are_configurable(tmp_path):
    make_disk(tmp_path, "sdb", vendor="ACME", model="CHANNEL")
    assert scan_sysfs(sys_root=str(tmp_path)) == []
    (d,) = scan_sysfs("ACME", "CHANNEL", sys_root=str(tmp_path))
    assert d.name == "sdb"


def test_unreadable_vpd83_still_lists_the_disk_without_a_port(tmp_path):
    make_disk(tmp_path, "sdb", vpd83=b"\x00\x83\x01\x00garbage")
    (d,) = scan_sysfs(sys_root=str(tmp_path))
    assert d.wwpn is None and d.wwpn_text == "-"


def test_missing_sysfs_is_empty(tmp_path):
    assert scan_sysfs(sys_root=str(tmp_path / "nope")) == []
    assert discover(sys_root=str(tmp_path / "nope")) == []


def test_discover_uses_sysfs_when_root_is_not_the_real_one(tmp_path):
    make_disk(tmp_path, "sdd")
    (d,) = discover(sys_root=str(tmp_path))
    assert d.source == "sysfs" and d.devnode == "/dev/sdd"


class FakeUdevDevice:
    def __init__(self, sys_path: Path, props: dict[str, str]) -> None:
        self.sys_path = str(sys_path)
        self.properties = props
        self.device_node = f"/dev/{sys_path.name}"


class FakeUdevContext:
    def __init__(self, devices: list[FakeUdevDevice]) -> None:
        self.devices = devices
        self.asked: dict = {}

    def list_devices(self, **kw):
        self.asked = kw
        return self.devices


def test_udev_scan_uses_properties_and_reads_vpd83_from_sysfs(tmp_path):
    a = make_disk(tmp_path, "sda", vendor="QEMU", model="QEMU HARDDISK")
    b = make_disk(tmp_path, "sdb", serial="from-sysfs", wwpn=WWPN_B)
    c = make_disk(tmp_path, "sdc")  # not probed by scsi_id: no ID_* properties
    ctx = FakeUdevContext([
        FakeUdevDevice(a, {"ID_VENDOR": "QEMU", "ID_MODEL": "QEMU_HARDDISK"}),
        FakeUdevDevice(b, {"ID_VENDOR": "EDIF", "ID_MODEL": "CTRL", "ID_SCSI_SERIAL": "from-udev"}),
        FakeUdevDevice(c, {}),
    ])
    disks = scan_udev(context=ctx)
    assert ctx.asked == {"subsystem": "block", "DEVTYPE": "disk"}
    assert disks is not None
    assert [(d.name, d.serial, d.wwpn, d.source) for d in disks] == [
        ("sdb", "from-udev", WWPN_B, "udev"),
        ("sdc", "CTL-1", WWPN_A, "udev"),
    ]


def test_udev_model_with_underscores_matches_a_spaced_product(tmp_path):
    d = make_disk(tmp_path, "sdb", model="EDIF CTRL")
    ctx = FakeUdevContext([FakeUdevDevice(d, {"ID_VENDOR": "EDIF", "ID_MODEL": "EDIF_CTRL"})])
    (disk,) = scan_udev(product="EDIF CTRL", context=ctx) or []
    assert disk.model == "EDIF CTRL"


def test_udev_failure_means_fall_back():
    class Broken:
        def list_devices(self, **kw):
            raise OSError("no udev")

    assert scan_udev(context=Broken()) is None


# -- choosing one disk ------------------------------------------------------------------------------


def _disk(name: str, wwpn: int | None) -> ControlDisk:
    return ControlDisk(name, f"/dev/{name}", "EDIF", "CTRL", name, wwpn, 512, 100, "sysfs")


def test_select_by_port_and_the_only_disk():
    a, b = _disk("sdb", WWPN_A), _disk("sdc", WWPN_B)
    assert select([a, b], wwpn=WWPN_B) is b
    assert select([a]) is a


def test_select_errors_say_what_was_looked_for():
    with pytest.raises(DiscoveryError, match="no EDIF control disk found: looked for vendor EDIF product "
                                             "CTRL on /sys/block"):
        select([])
    with pytest.raises(DiscoveryError, match="choose one with --port"):
        select([_disk("sdb", WWPN_A), _disk("sdc", WWPN_B)])
    with pytest.raises(DiscoveryError, match="no EDIF control disk for port 50:01:43:80:12:34:56:7b.*"
                                             "/dev/sdb=50:01:43:80:12:34:56:7a"):
        select([_disk("sdb", WWPN_A)], wwpn=WWPN_B)
    with pytest.raises(DiscoveryError, match="several control disks report port"):
        select([_disk("sdb", WWPN_A), _disk("sdc", WWPN_A)], wwpn=WWPN_A)


def test_device_override(tmp_path):
    make_disk(tmp_path, "sdq", vendor="OTHER", model="THING", wwpn=WWPN_B)
    d = disk_for_device("/dev/sdq", sys_root=str(tmp_path))
    assert (d.name, d.devnode, d.wwpn, d.source, d.vendor) == ("sdq", "/dev/sdq", WWPN_B, "device", "OTHER")
    f = tmp_path / "plain.img"
    f.write_bytes(bytes(512 * 10))
    d = disk_for_device(str(f), sys_root=str(tmp_path))
    assert (d.source, d.capacity_blocks, d.wwpn) == ("file", 10, None)
    with pytest.raises(DiscoveryError, match="not a whole block device"):
        disk_for_device("/dev/nonexistent-disk", sys_root=str(tmp_path))
