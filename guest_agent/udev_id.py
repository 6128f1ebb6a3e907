"""`edif-agent udev-id KERNEL`: a control disk's identity as udev properties, for the udev rule.

60-edif-control.rules runs it as ``IMPORT{program}="/usr/bin/edif-agent udev-id %k"`` on a block
device whose INQUIRY vendor and product match, and names the disk ``/dev/edif/<port wwpn>`` after
what it prints. udev itself cannot do this: the port's WWPN is in VPD page 0x83 (a binary sysfs
attribute) as an FC target-port designator, which neither udev's ATTR{} nor scsi_id's ID_* properties
carry (scsi_id exports the logical unit's designators, not the port's).

The identity is the one every agent command checks (`discovery.disk_for_device` and
`discovery.check_control_disk`: INQUIRY vendor/product from sysfs, the designator from
``device/vpd_pg83``), so the name udev gives a disk is the disk ``edif-agent --port WWPN`` picks.

Output, one ``KEY=value`` a line (udev's IMPORT format), exit 0:

  EDIF_CONTROL=1
  EDIF_PORT_WWPN=21:00:00:1b:32:00:00:a1      only when VPD 0x83 names the port

A disk that is not a control LUN prints nothing on stdout, says why on stderr and exits 3 (udev
then imports nothing); a kernel name that is not a plain device name is a usage error (exit 2).
`udev_properties` and `format_properties` are pure; `identify` reads sysfs.
"""

from __future__ import annotations

import os
import re
import sys

import click

from edifd.edges.command_line import CONTEXT_SETTINGS, EXIT_CODES_HELP, echo_error
from edifd.edges.logs import LEVELS, setup_logging
from edifd.fc import wwn_str

from .discovery import (
    DEFAULT_PRODUCT,
    DEFAULT_VENDOR,
    ControlDisk,
    DiscoveryError,
    check_control_disk,
    disk_for_device,
)
from .exits import EXIT_NO_DISK, EXIT_OK

__all__ = ["format_properties", "identify", "udev_id", "udev_properties"]

# What udev hands over as %k: a kernel device name, never a path (sdb, sdaa; no '/', not '.' or '..').
_KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:!-]*$")


def udev_properties(disk: ControlDisk) -> dict[str, str]:
    """The properties of a disk that passed `check_control_disk`: EDIF_CONTROL, and EDIF_PORT_WWPN in
    the colon form every tool prints (`edifd.fc.wwn_str`) when its VPD 0x83 names the port."""
    props = {"EDIF_CONTROL": "1"}
    if disk.wwpn is not None:
        props["EDIF_PORT_WWPN"] = wwn_str(disk.wwpn)
    return props


def format_properties(props: dict[str, str]) -> str:
    """udev's IMPORT{program} format: KEY=value lines (the values here never need quoting)."""
    return "".join(f"{k}={v}\n" for k, v in props.items())


def identify(kernel: str, *, vendor: str = DEFAULT_VENDOR, product: str = DEFAULT_PRODUCT,
             sys_root: str = "/sys") -> dict[str, str]:
    """The properties of block device `kernel` (e.g. "sdb"); DiscoveryError if it is not a control LUN
    (the text says what its INQUIRY says), ValueError for a name that is not a kernel device name."""
    if not _KERNEL_NAME.match(kernel) or kernel in (".", ".."):
        raise ValueError(f"{kernel!r} is not a kernel device name (udev's %k, e.g. sdb)")
    disk = disk_for_device(os.path.join("/dev", kernel), sys_root=sys_root)
    return udev_properties(check_control_disk(disk, vendor=vendor, product=product, name=kernel))


@click.command("udev-id", context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.argument("kernel", metavar="KERNEL")
@click.option("--vendor", default=DEFAULT_VENDOR, show_default=True, help="INQUIRY vendor to look for.")
@click.option("--product", default=DEFAULT_PRODUCT, show_default=True, help="INQUIRY product to look for.")
@click.option("--sys-root", default="/sys", hidden=True, help="sysfs root (tests).")
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(LEVELS),
              help="Logging threshold (stderr; udev keeps stdout for the properties).")
def udev_id(kernel: str, vendor: str, product: str, sys_root: str, log_level: str) -> None:
    """Print the udev properties of control disk KERNEL (udev's %k, e.g. sdb): EDIF_CONTROL=1 and,
    when its VPD page 0x83 names the HBA port, EDIF_PORT_WWPN. 60-edif-control.rules names the disk
    /dev/edif/$EDIF_PORT_WWPN and starts edif-agent@$EDIF_PORT_WWPN.service from it.

    \b
    Example:
      edif-agent udev-id sdb
    """
    setup_logging(log_level)
    try:
        props = identify(kernel, vendor=vendor, product=product, sys_root=sys_root)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="KERNEL") from None
    except DiscoveryError as e:
        echo_error("edif-agent", str(e))
        sys.exit(EXIT_NO_DISK)
    click.echo(format_properties(props), nl=False)
    sys.exit(EXIT_OK)
