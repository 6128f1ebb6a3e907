"""libvirt device XML for the LUNs edifd exports: configuration in, XML strings out, no I/O.

`edifctl libvirt-xml` prints what this module builds; `edifd.edges.libvirt_attach` hands the same
strings to libvirtd. An iSCSI export becomes a pass-through network disk (`<disk type='network'
device='lun'>`, so the guest sees edifd's INQUIRY, VPD pages and sense data) on a virtio-scsi
controller, with the export's first initiator name and, with CHAP, the `<auth>` of a libvirt secret
whose value the operator sets from the export's secret file (the value never passes through here).
A vhost-scsi export becomes `<hostdev type='scsi_host'>` with the export's WWPN; that device is a
virtio-scsi HBA of its own (QEMU's vhost-scsi-pci), so it needs no controller.

The element names follow libvirt's formatdomain and formatsecret documentation; every variant is
validated with virt-xml-validate by the tests (tests/unit/test_libvirt_xml.py).
"""

from __future__ import annotations

import shlex
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from edifd.config import Config, LunConfig

VIAS = ("iscsi", "vhost")
# uuid5 namespace of the libvirt secrets edifctl defines: one UUID per (target IQN, CHAP user), the same
# on every run, so `virsh secret-set-value --secret UUID` can be printed before the secret exists.
SECRET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edifd:libvirt-secret")
MAX_UNITS = 16384  # virtio-scsi: LUNs per target (QEMU's VIRTIO_SCSI_MAX_LUN is 16383)


class LibvirtXmlError(ValueError):
    """The selection cannot be expressed as libvirt XML (the text says which LUN and why)."""


@dataclass(frozen=True)
class Device:
    """One device element for a domain: what `virsh attach-device` takes, one per file."""

    lun: str
    via: str  # iscsi | vhost | controller
    xml: str
    comment: str  # one line for a human: what the device is


@dataclass(frozen=True)
class LibvirtSecret:
    """The libvirt secret an iSCSI disk's <auth> names; its value is the export's CHAP secret file."""

    lun: str
    usage: str
    uuid: str
    xml: str
    secret_file: Path

    def virsh_commands(self, xml_file: str) -> list[str]:
        """The commands that define the secret from `xml_file` (the `xml` above, saved) and set its value
        from the secret file, which holds exactly the secret (`--plain`: the file is not base64)."""
        return [f"virsh secret-define {shlex.quote(xml_file)}",
                f"virsh secret-set-value --secret {self.uuid} --file {shlex.quote(str(self.secret_file))} "
                "--plain"]


@dataclass(frozen=True)
class Plan:
    """The devices to give the domain, in order (a controller before its disks), the secrets they need,
    and notes for the operator (limits of libvirt's iSCSI initiator)."""

    devices: tuple[Device, ...]
    secrets: tuple[LibvirtSecret, ...]
    notes: tuple[str, ...]


def _xml(el: ET.Element) -> str:
    ET.indent(el, space="  ")
    return ET.tostring(el, encoding="unicode")


def secret_usage(lun: LunConfig) -> str:
    """The usage name of the libvirt secret of an iSCSI export's CHAP credentials."""
    return f"edifd-chap-{lun.export.iqn}"


def secret_uuid(lun: LunConfig) -> str:
    return str(uuid.uuid5(SECRET_NAMESPACE, f"iscsi-chap\0{lun.export.iqn}\0{lun.export.chap_user}"))


def scsi_target_dev(unit: int) -> str:
    """sda, sdb, ..., sdz, sdaa, ...: the name libvirt's <target dev> takes for the unit-th SCSI disk."""
    name, n = "", unit + 1
    while n:
        n, rem = divmod(n - 1, 26)
        name = chr(ord("a") + rem) + name
    return "sd" + name


def virtio_scsi_controller(index: int) -> Device:
    el = ET.Element("controller", type="scsi", index=str(index), model="virtio-scsi")
    return Device("", "controller", _xml(el), f"virtio-scsi controller {index} for the iSCSI disks")


def _portal_host(host: str, override: str | None) -> str:
    """The address libvirt's QEMU connects to: the portal's, or this host for a wildcard portal."""
    if override:
        return override
    bare = host.strip("[]")
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bare, bare)


def iscsi_disk(lun: LunConfig, *, controller: int, unit: int, initiator: str | None = None,
               host: str | None = None) -> Device:
    """The pass-through network disk of an iSCSI export at `unit` of virtio-scsi `controller`."""
    ex = lun.export
    if ex.fabric != "iscsi" or ex.iqn is None:
        raise LibvirtXmlError(f"LUN {lun.name} is exported over {ex.fabric}, not iSCSI")
    if initiator is not None and ex.initiators and initiator not in ex.initiators:
        raise LibvirtXmlError(f"LUN {lun.name}: initiator {initiator} is not one of the export's initiators "
                              f"({', '.join(ex.initiators)}); LIO would refuse its login")
    initiator = initiator or (ex.initiators[0] if ex.initiators else None)
    disk = ET.Element("disk", type="network", device="lun")
    ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
    source = ET.SubElement(disk, "source", protocol="iscsi", name=f"{ex.iqn}/0")
    ET.SubElement(source, "host", name=_portal_host(ex.portal[0], host), port=str(ex.portal[1]))
    if ex.chap_user is not None:
        auth = ET.SubElement(source, "auth", username=ex.chap_user)
        ET.SubElement(auth, "secret", type="iscsi", usage=secret_usage(lun))
    if initiator is not None:
        ET.SubElement(ET.SubElement(source, "initiator"), "iqn", name=initiator)
    ET.SubElement(disk, "target", dev=scsi_target_dev(unit), bus="scsi")
    ET.SubElement(disk, "address", type="drive", controller=str(controller), bus="0", target="0",
                  unit=str(unit))
    what = f"{lun.type} LUN {lun.name}: iSCSI {ex.iqn} LUN 0 as {initiator or 'QEMU default initiator'}"
    if ex.chap_user is not None:
        what += f", CHAP user {ex.chap_user} (libvirt secret {secret_usage(lun)})"
    return Device(lun.name, "iscsi", _xml(disk), what)


def vhost_hostdev(lun: LunConfig) -> Device:
    """The vhost-scsi host device of a vhost export (its own virtio-scsi HBA in the guest)."""
    ex = lun.export
    if ex.fabric != "vhost" or ex.wwn is None:
        raise LibvirtXmlError(f"LUN {lun.name} is exported over {ex.fabric}, not vhost-scsi")
    hostdev = ET.Element("hostdev", mode="subsystem", type="scsi_host", managed="no")
    ET.SubElement(hostdev, "source", protocol="vhost", wwpn=ex.wwn)
    return Device(lun.name, "vhost", _xml(hostdev), f"{lun.type} LUN {lun.name}: vhost-scsi WWPN {ex.wwn}")


def chap_secret(lun: LunConfig) -> LibvirtSecret:
    """The libvirt secret (private, persistent) an iSCSI disk with CHAP names by usage."""
    ex = lun.export
    if ex.chap_user is None or ex.chap_secret_file is None:
        raise LibvirtXmlError(f"LUN {lun.name}: its export has no CHAP")
    sec = ET.Element("secret", ephemeral="no", private="yes")
    ET.SubElement(sec, "uuid").text = secret_uuid(lun)
    ET.SubElement(sec, "description").text = f"edifd: CHAP secret of {ex.chap_user} for {ex.iqn}"
    ET.SubElement(ET.SubElement(sec, "usage", type="iscsi"), "target").text = secret_usage(lun)
    return LibvirtSecret(lun.name, secret_usage(lun), secret_uuid(lun), _xml(sec), ex.chap_secret_file)


def select_luns(cfg: Config, *, names: tuple[str, ...] = (), every: bool = False,
                via: str | None = None) -> tuple[LunConfig, ...]:
    """The LUNs to give a guest: those named, else every exported LUN (`every`), else the control LUNs;
    only those exported over `via` when it is given. A named LUN that cannot be given is an error."""
    if via is not None and via not in VIAS:
        raise LibvirtXmlError(f"--via {via}: iscsi or vhost")
    by_name = {lun.name: lun for lun in cfg.luns}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise LibvirtXmlError(f"no LUN named {', '.join(unknown)} in the configuration (LUNs: "
                                  f"{', '.join(by_name) or 'none'})")
        chosen = [by_name[n] for n in names]
        for lun in chosen:
            fabric = lun.export.fabric
            if fabric not in VIAS or (via is not None and fabric != via):
                raise LibvirtXmlError(f"LUN {lun.name} is exported over {fabric}; a guest reaches a LUN "
                                      f"exported over {via or 'iscsi or vhost'}")
    else:
        chosen = [lun for lun in cfg.luns if (every or lun.type == "control")
                  and lun.export.fabric in ((via,) if via else VIAS)]
    if not chosen:
        what = "exported LUN" if every else "control LUN"
        raise LibvirtXmlError(f"no {what} exported over {via or 'iscsi or vhost'} in the configuration")
    return tuple(chosen)


def plan(luns: tuple[LunConfig, ...], *, controller: int = 0, first_unit: int = 0,
         initiator: str | None = None, host: str | None = None) -> Plan:
    """The devices for `luns` (see `select_luns`): the iSCSI disks on virtio-scsi `controller` from
    `first_unit` on (the controller element first), each vhost export as its host device."""
    if not 0 <= controller < 65536:
        raise LibvirtXmlError(f"controller index {controller}: 0..65535")
    iscsi = [lun for lun in luns if lun.export.fabric == "iscsi"]
    if iscsi and not 0 <= first_unit <= MAX_UNITS - len(iscsi):
        raise LibvirtXmlError(f"first unit {first_unit}: 0..{MAX_UNITS - len(iscsi)} for "
                              f"{len(iscsi)} disk(s)")
    devices: list[Device] = [virtio_scsi_controller(controller)] if iscsi else []
    secrets: list[LibvirtSecret] = []
    notes: list[str] = []
    for unit, lun in enumerate(iscsi, start=first_unit):
        devices.append(iscsi_disk(lun, controller=controller, unit=unit, initiator=initiator, host=host))
        mode = lun.export.mode
        if lun.export.chap_user is not None:
            secrets.append(chap_secret(lun))
        if mode == "mutual-chap":
            notes.append(f"LUN {lun.name}: mutual CHAP is configured, but libvirt's (QEMU's) iSCSI initiator "
                         "does one-way CHAP only: it will not authenticate the target")
        elif mode in ("acl", "demo", "insecure-demo"):
            notes.append(f"LUN {lun.name}: export in {mode} mode, no CHAP: the disk has no <auth>")
    devices += [vhost_hostdev(lun) for lun in luns if lun.export.fabric == "vhost"]
    return Plan(tuple(devices), tuple(secrets), tuple(notes))


def domain_document(devices: tuple[Device, ...], *, name: str = "edif-vm") -> str:
    """A minimal whole <domain> holding `devices`: what virt-xml-validate checks (it validates documents,
    not fragments), and a starting point for a new EDIF VM's definition."""
    dom = ET.Element("domain", type="kvm")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = "512"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    devs = ET.SubElement(dom, "devices")
    for d in devices:
        devs.append(ET.fromstring(d.xml))
    return _xml(dom)
