"""Finding the EDIF control disks in the guest: which /dev/sdX is the control LUN of which HBA port.

A control LUN answers INQUIRY with vendor ``EDIF`` and product ``CTRL`` (both configurable) and, when
edifd knows the port, carries the port WWPN in VPD page 0x83 as an FC target-port NAA designator
(SPC-4 7.8.6: PIV=1, ASSOCIATION=01b target port, DESIGNATOR TYPE=3 NAA, PROTOCOL IDENTIFIER=0 FCP).

pyudev is asked first (``ID_VENDOR``/``ID_MODEL``/``ID_SCSI_SERIAL`` as written by systemd's scsi_id);
when udev is absent (no pyudev, no udev database: minimal guests, containers) the same facts come from
sysfs (``device/vendor``, ``device/model``, ``device/vpd_pg80``, ``device/vpd_pg83``). VPD 0x83 is always
read from sysfs: udev has no property for a target-port designator.

``check_control_disk`` is the same test for a ``--device`` (the disk described by ``disk_for_device``).

Parsing is pure (``parse_vpd83``, ``parse_vpd80``, ``parse_wwpn``); errors are ``DiscoveryError`` and
``VpdError`` only.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edifd.fc import wwn_str

DEFAULT_VENDOR = "EDIF"
DEFAULT_PRODUCT = "CTRL"
SECTOR = 512  # /sys/block/X/size is always in 512-byte units, whatever the logical block size

VPD_DEVICE_ID = 0x83
VPD_UNIT_SERIAL = 0x80
_ASSOC_TARGET_PORT = 1
_TYPE_NAA = 3
_PROTO_FC = 0
_PIV = 0x80


class DiscoveryError(Exception):
    """No usable control disk, or a disk that does not look like one; the text says where we looked."""


class VpdError(ValueError):
    """A VPD page that does not parse (truncated, wrong page code, a descriptor running past the end)."""


@dataclass(frozen=True)
class ControlDisk:
    """One control LUN as the guest sees it."""

    name: str  # kernel name, e.g. "sdb"
    devnode: str  # "/dev/sdb"
    vendor: str
    model: str
    serial: str  # VPD 0x80 unit serial ("" if the page is absent)
    wwpn: int | None  # FC target port WWPN from VPD 0x83, if the LUN reports one
    block_size: int  # queue/logical_block_size
    capacity_blocks: int  # in logical blocks
    source: str  # "udev" or "sysfs": which path found it (status output, troubleshooting)

    @property
    def wwpn_text(self) -> str:
        return wwn_str(self.wwpn) if self.wwpn is not None else "-"


_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def parse_wwpn(text: str) -> int:
    """A WWPN as operators write it: ``50:01:43:80:12:34:56:78``, ``0x5001438012345678``,
    ``5001438012345678`` or ``naa.5001438012345678``. Raises DiscoveryError otherwise."""
    if not isinstance(text, str):
        raise DiscoveryError("a WWPN must be given as text")
    t = text.strip().lower()
    for prefix in ("naa.", "0x"):
        if t.startswith(prefix):
            t = t[len(prefix):]
    t = t.replace(":", "").replace("-", "")
    if not _HEX16.match(t) or int(t, 16) == 0:
        raise DiscoveryError(
            f"bad WWPN {text!r}: expected 16 hex digits, e.g. 50:01:43:80:12:34:56:78 or 0x5001438012345678"
        )
    return int(t, 16)


def _page_body(data: bytes, code: int) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise VpdError("VPD data must be bytes")
    try:
        data = bytes(data)
    except (ValueError, TypeError, BufferError):  # e.g. a released memoryview
        raise VpdError("VPD data is not readable bytes") from None
    if len(data) < 4:
        raise VpdError(f"VPD page shorter than its 4-byte header ({len(data)} bytes)")
    if data[1] != code:
        raise VpdError(f"expected VPD page 0x{code:02x}, got 0x{data[1]:02x}")
    (length,) = struct.unpack_from(">H", data, 2)
    if 4 + length > len(data):
        raise VpdError(f"VPD page 0x{code:02x} declares {length} bytes, only {len(data) - 4} present")
    return data[4 : 4 + length]


def parse_vpd80(data: bytes) -> str:
    """The unit serial number of VPD page 0x80 (ASCII, trailing spaces and NULs trimmed)."""
    body = _page_body(data, VPD_UNIT_SERIAL)
    return body.rstrip(b"\0 ").decode("ascii", errors="replace")


def parse_vpd83(data: bytes) -> int | None:
    """The FC target-port WWPN from VPD page 0x83, or None if the page has no such designator.

    Only a designator with PIV=1, association target port, type NAA, protocol FCP and 8 bytes counts:
    the LU's own NAA (association 0) is not a port name.
    """
    body = _page_body(data, VPD_DEVICE_ID)
    off = 0
    found: int | None = None
    while off < len(body):
        if off + 4 > len(body):
            raise VpdError(f"designation descriptor header truncated at offset {off}")
        proto_codeset, piv_assoc_type, _, length = struct.unpack_from(">BBBB", body, off)
        value = body[off + 4 : off + 4 + length]
        if len(value) != length:
            raise VpdError(f"designation descriptor at offset {off} runs past the page")
        assoc = (piv_assoc_type >> 4) & 0x3
        dtype = piv_assoc_type & 0xF
        proto = proto_codeset >> 4
        if (piv_assoc_type & _PIV and assoc == _ASSOC_TARGET_PORT and dtype == _TYPE_NAA
                and proto == _PROTO_FC and length == 8 and found is None):
            (found,) = struct.unpack(">Q", value)
        off += 4 + length
    return found


def _norm(s: str) -> str:
    # scsi_id writes ID_VENDOR/ID_MODEL with spaces as '_'; sysfs pads with spaces.
    return s.strip().replace("_", " ").strip()


def _is_control(seen_vendor: str, seen_model: str, vendor: str, product: str) -> bool:
    """The INQUIRY match every path uses (discovery by udev or sysfs, and the --device check)."""
    return _norm(seen_vendor) == _norm(vendor) and _norm(seen_model) == _norm(product)


def _read_text(p: Path) -> str | None:
    try:
        return p.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_bytes(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def _wwpn_of(devdir: Path) -> int | None:
    raw = _read_bytes(devdir / "device" / "vpd_pg83")
    if not raw:
        return None
    try:
        return parse_vpd83(raw)
    except VpdError:
        return None  # a page we cannot read names no port; the disk is still listed


def _geometry(devdir: Path) -> tuple[int, int]:
    bs = _read_text(devdir / "queue" / "logical_block_size")
    size = _read_text(devdir / "size")
    block_size = int(bs) if bs and bs.isdigit() and int(bs) > 0 else SECTOR
    sectors = int(size) if size and size.isdigit() else 0
    return block_size, sectors * SECTOR // block_size


def _disk_from_sysfs(devdir: Path, dev_root: str, vendor: str, model: str, serial: str | None,
                     source: str) -> ControlDisk:
    if serial is None:
        raw = _read_bytes(devdir / "device" / "vpd_pg80")
        serial = ""
        if raw:
            try:
                serial = parse_vpd80(raw)
            except VpdError:
                serial = ""
    block_size, capacity = _geometry(devdir)
    return ControlDisk(
        name=devdir.name, devnode=os.path.join(dev_root, devdir.name), vendor=vendor, model=model,
        serial=serial, wwpn=_wwpn_of(devdir), block_size=block_size, capacity_blocks=capacity,
        source=source,
    )


def scan_sysfs(vendor: str = DEFAULT_VENDOR, product: str = DEFAULT_PRODUCT, *, sys_root: str = "/sys",
               dev_root: str = "/dev") -> list[ControlDisk]:
    """Control disks from /sys/block/* alone (no udev needed)."""
    out = []
    block = Path(sys_root) / "block"
    try:
        entries = sorted(block.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    for d in entries:
        v = _read_text(d / "device" / "vendor")
        m = _read_text(d / "device" / "model")
        if v is None or m is None:
            continue
        if _is_control(v, m, vendor, product):
            out.append(_disk_from_sysfs(d, dev_root, _norm(v), _norm(m), None, "sysfs"))
    return out


def scan_udev(vendor: str = DEFAULT_VENDOR, product: str = DEFAULT_PRODUCT,
              context: object | None = None) -> list[ControlDisk] | None:
    """Control disks from the udev database; None when udev cannot be used (fall back to sysfs)."""
    try:
        import pyudev  # Debian: python3-pyudev; optional on purpose
    except ImportError:
        return None
    if context is None and not Path("/run/udev/data").is_dir():
        return None  # udev not running: its properties would be empty, sysfs knows more
    try:
        ctx = context if context is not None else pyudev.Context()
        devices = list(ctx.list_devices(subsystem="block", DEVTYPE="disk"))
    except Exception:  # no libudev or an unreadable database: the sysfs path still works
        return None
    out = []
    for dev in devices:
        props = dev.properties
        v, m = props.get("ID_VENDOR"), props.get("ID_MODEL")
        sys_path = Path(dev.sys_path)
        if v is None or m is None:  # not probed by scsi_id (yet): ask sysfs
            v = _read_text(sys_path / "device" / "vendor")
            m = _read_text(sys_path / "device" / "model")
        if v is None or m is None or not _is_control(v, m, vendor, product):
            continue
        node = dev.device_node or f"/dev/{sys_path.name}"
        out.append(_disk_from_sysfs(sys_path, os.path.dirname(node), _norm(v), _norm(m),
                                    props.get("ID_SCSI_SERIAL"), "udev"))
    return out


def discover(vendor: str = DEFAULT_VENDOR, product: str = DEFAULT_PRODUCT, *, sys_root: str = "/sys",
             dev_root: str = "/dev", use_udev: bool = True) -> list[ControlDisk]:
    """Every control disk, by kernel name. udev first, sysfs when udev is unavailable or finds none."""
    if use_udev and sys_root == "/sys":
        found = scan_udev(vendor, product)
        if found:
            return found
    return scan_sysfs(vendor, product, sys_root=sys_root, dev_root=dev_root)


def disk_for_device(devnode: str, *, sys_root: str = "/sys") -> ControlDisk:
    """Describe the given block device from sysfs, whatever its INQUIRY says (`check_control_disk` then
    decides whether --device may use it)."""
    real = os.path.realpath(devnode)
    name = os.path.basename(real)
    devdir = Path(sys_root) / "block" / name
    if not devdir.is_dir():
        if os.path.isfile(real):  # a regular file stands in for a disk (tests, dry runs)
            size = os.path.getsize(real)
            return ControlDisk(name, real, "", "", "", None, SECTOR, size // SECTOR, "file")
        raise DiscoveryError(f"{devnode}: not a whole block device ({devdir} does not exist)")
    v = _read_text(devdir / "device" / "vendor") or ""
    m = _read_text(devdir / "device" / "model") or ""
    d = _disk_from_sysfs(devdir, os.path.dirname(real), _norm(v), _norm(m), None, "device")
    return ControlDisk(d.name, devnode, d.vendor, d.model, d.serial, d.wwpn, d.block_size,
                       d.capacity_blocks, d.source)


def check_control_disk(d: ControlDisk, *, vendor: str = DEFAULT_VENDOR, product: str = DEFAULT_PRODUCT,
                       wwpn: int | None = None, name: str | None = None) -> ControlDisk:
    """The --device check, before anything is opened or written: `d` (from `disk_for_device`) must have
    the identity discovery looks for, i.e. INQUIRY vendor and product (sysfs, compared as discovery
    compares them) and, when a port is asked for, that port's FC target-port designator in VPD 0x83
    (as `select` requires). DiscoveryError naming the device and what it found otherwise."""
    name = name or d.devnode
    why = f"{name} is not an EDIF control LUN"
    hint = "pick one from `edif-agent status`"
    if d.source == "file":
        raise DiscoveryError(f"{why}: it is a regular file, not a SCSI disk (no INQUIRY data); {hint}")
    if not d.vendor and not d.model:
        raise DiscoveryError(f"{why}: sysfs has no INQUIRY vendor or product for {d.name} (not a SCSI "
                             f"disk?); {hint}")
    if not _is_control(d.vendor, d.model, vendor, product):
        raise DiscoveryError(f"{why}: INQUIRY says vendor {d.vendor!r} product {d.model!r}, not vendor "
                             f"{_norm(vendor)!r} product {_norm(product)!r}; {hint}")
    if wwpn is not None and d.wwpn != wwpn:
        seen = (f"reports port {d.wwpn_text}" if d.wwpn is not None
                else "reports no port (no FC target-port designator in VPD 0x83)")
        raise DiscoveryError(f"{name} {seen}, not {wwn_str(wwpn)}; {hint}")
    return d


def select(disks: Iterable[ControlDisk], *, wwpn: int | None = None, vendor: str = DEFAULT_VENDOR,
           product: str = DEFAULT_PRODUCT, where: str = "/sys/block") -> ControlDisk:
    """The one disk to use: the one with this WWPN, or the only one. DiscoveryError otherwise."""
    disks = list(disks)
    looked = f"looked for vendor {vendor} product {product} on {where}"
    if not disks:
        raise DiscoveryError(f"no EDIF control disk found: {looked}")
    if wwpn is not None:
        hits = [d for d in disks if d.wwpn == wwpn]
        if not hits:
            have = ", ".join(f"{d.devnode}={d.wwpn_text}" for d in disks)
            raise DiscoveryError(f"no EDIF control disk for port {wwn_str(wwpn)}: {looked}; found {have}")
        if len(hits) > 1:
            raise DiscoveryError(
                f"several control disks report port {wwn_str(wwpn)}: "
                + ", ".join(d.devnode for d in hits) + " (multipath? pass --device)"
            )
        return hits[0]
    if len(disks) > 1:
        raise DiscoveryError(
            "several EDIF control disks found ("
            + ", ".join(f"{d.devnode} port {d.wwpn_text}" for d in disks)
            + "): choose one with --port WWPN or --device"
        )
    return disks[0]
