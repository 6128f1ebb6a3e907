"""edifd.edges.libvirt_attach and `edifctl libvirt-xml --attach`, without libvirtd: libvirt-python
missing, libvirtd not answering, no such domain, a missing CHAP secret, a refused device, a controller
already there, and the AFFECT flags (a recording stand-in for the libvirt module)."""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd.edges.command_line import EXIT_FAILURE, EXIT_UNAVAILABLE
from edifd.edges.libvirt_attach import AttachError, AttachUnavailable, DeviceXml, attach
from edifd.edifctl import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edifd.toml"
CONTROLLER = DeviceXml('<controller type="scsi" index="0" model="virtio-scsi" />', "controller 0")
DISK = DeviceXml('<disk type="network" device="lun"><source protocol="iscsi" name="iqn.x:y/0"/></disk>',
                 "disk")
DOMAIN_XML = "<domain><devices>{}</devices></domain>"



@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch):
    """edifctl sets up the process's logging; the tests after these must find it as it was."""
    monkeypatch.setattr("edifd.edifctl.setup_logging", lambda level: None)

class LibvirtError(Exception):
    def get_error_message(self) -> str:
        return f"libvirt says: {self.args[0]}"


def fake_libvirt(log: list, *, up: bool = True, domains: tuple[str, ...] = ("edif-vm",),
                 secrets: tuple[str, ...] = (), controllers: str = "", refuse: str | None = None):
    m = types.ModuleType("libvirt")
    m.libvirtError = LibvirtError
    m.VIR_DOMAIN_AFFECT_CURRENT, m.VIR_DOMAIN_AFFECT_LIVE, m.VIR_DOMAIN_AFFECT_CONFIG = 0, 1, 2
    m.VIR_DOMAIN_XML_INACTIVE = 2
    m.VIR_SECRET_USAGE_TYPE_ISCSI = 3

    class Domain:
        def XMLDesc(self, flags):
            log.append(("xmldesc", flags))
            return DOMAIN_XML.format(controllers)

        def attachDeviceFlags(self, xml, flags):
            if refuse and refuse in xml:
                raise LibvirtError("unsupported configuration")
            log.append(("attach", xml, flags))

    class Conn:
        def lookupByName(self, name):
            if name not in domains:
                raise LibvirtError(f"Domain not found: no domain with matching name '{name}'")
            return Domain()

        def secretLookupByUsage(self, kind, usage):
            log.append(("secret", kind, usage))
            if usage not in secrets:
                raise LibvirtError("Secret not found")

        def close(self):
            log.append(("close",))

    def open_(uri):
        log.append(("open", uri))
        if not up:
            raise LibvirtError("Failed to connect socket to '/run/libvirt/libvirt-sock': No such file")
        return Conn()

    m.open = open_
    return m


def test_libvirt_python_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt raises ImportError
    with pytest.raises(AttachUnavailable, match="libvirt-python is not installed: apt install python3-libv"):
        attach([DISK], "edif-vm")


def test_libvirtd_not_running() -> None:
    log: list = []
    with pytest.raises(AttachUnavailable) as e:
        attach([DISK], "edif-vm", uri="qemu:///system", libvirt=fake_libvirt(log, up=False))
    assert "cannot connect to libvirtd at qemu:///system: libvirt says: Failed to connect" in str(e.value)
    assert "systemctl status libvirtd" in str(e.value)


def test_no_such_domain() -> None:
    log: list = []
    with pytest.raises(AttachUnavailable, match=r"no domain 'vm9' at qemu:///system .*virsh list --all"):
        attach([DISK], "vm9", libvirt=fake_libvirt(log))
    assert log[-1] == ("close",) and not [e for e in log if e[0] == "attach"]


def test_a_missing_chap_secret_stops_before_any_device() -> None:
    log: list = []
    with pytest.raises(AttachUnavailable, match="libvirt has no iSCSI secret 'edifd-chap-x'.*--secret-xml"):
        attach([CONTROLLER, DISK], "edif-vm", iscsi_secret_usages=["edifd-chap-x"], libvirt=fake_libvirt(log))
    assert ("secret", 3, "edifd-chap-x") in log and not [e for e in log if e[0] == "attach"]


@pytest.mark.parametrize("live, config, flags", [(False, False, 0), (True, False, 1), (False, True, 2),
                                                 (True, True, 3)])
def test_devices_attached_in_order_with_the_affect_flags(live: bool, config: bool, flags: int) -> None:
    log: list = []
    done = attach([CONTROLLER, DISK], "edif-vm", live=live, config=config, iscsi_secret_usages=["s"],
                  libvirt=fake_libvirt(log, secrets=("s",)))
    assert done == ["controller 0", "disk"]
    assert [e for e in log if e[0] == "attach"] == [("attach", CONTROLLER.xml, flags),
                                                    ("attach", DISK.xml, flags)]
    assert ("xmldesc", 2 if config and not live else 0) in log and log[-1] == ("close",)


def test_a_controller_the_domain_has_is_not_attached_again() -> None:
    log: list = []
    have = '<controller type="scsi" index="0" model="virtio-scsi"/>'
    done = attach([CONTROLLER, DISK], "edif-vm", libvirt=fake_libvirt(log, controllers=have))
    assert done == ["controller 0 (already there)", "disk"]
    assert [e[1] for e in log if e[0] == "attach"] == [DISK.xml]
    with pytest.raises(AttachError, match="has scsi controller 0 of model lsilogic; give another index"):
        attach([CONTROLLER], "edif-vm",
               libvirt=fake_libvirt([], controllers='<controller type="scsi" index="0" model="lsilogic"/>'))


def test_a_refused_device_names_what_was_attached_before_it() -> None:
    log: list = []
    with pytest.raises(AttachError) as e:
        attach([CONTROLLER, DISK], "edif-vm", libvirt=fake_libvirt(log, refuse="<disk"))
    assert not isinstance(e.value, AttachUnavailable)
    assert str(e.value) == ("libvirt refused disk for edif-vm: libvirt says: unsupported configuration; "
                            "attached before it: controller 0")
    assert log[-1] == ("close",)


# --- through edifctl -----------------------------------------------------------------------------------


def _edifctl(tmp_path: Path, *args: str):
    key = tmp_path / "ctl0.chap"
    key.write_text("0123456789abcdef")
    key.chmod(0o600)
    conf = tmp_path / "edifd.toml"
    conf.write_text(EXAMPLE.read_text().replace("/etc/edifd/keys/ctl0.chap", str(key)))
    split = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**split).invoke(main, ["--config", str(conf), "libvirt-xml", *args])


def test_edifctl_attach_without_libvirt_python(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)
    res = _edifctl(tmp_path, "--attach", "edif-vm")
    assert res.exit_code == EXIT_UNAVAILABLE and "apt install python3-libvirt" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_edifctl_attach_through_libvirt(tmp_path: Path, monkeypatch) -> None:
    log: list = []
    usage = "edifd-chap-iqn.2026-11.io.edifd:ctl0"
    monkeypatch.setitem(sys.modules, "libvirt", fake_libvirt(log, secrets=(usage,)))
    res = _edifctl(tmp_path, "--attach", "edif-vm", "--live", "--config", "--connect", "qemu:///session")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[0] == "edif-vm: attached virtio-scsi controller 0 for the iSCSI disks"
    assert "edif-vm: attached control LUN ctl0: iSCSI iqn.2026-11.io.edifd:ctl0" in res.stdout
    assert log[0] == ("open", "qemu:///session") and ("secret", 3, usage) in log
    assert [e[2] for e in log if e[0] == "attach"] == [3, 3]


def test_edifctl_attach_refused_by_libvirt(tmp_path: Path, monkeypatch) -> None:
    usage = "edifd-chap-iqn.2026-11.io.edifd:ctl0"
    monkeypatch.setitem(sys.modules, "libvirt", fake_libvirt([], secrets=(usage,), refuse="<disk"))
    res = _edifctl(tmp_path, "--attach", "edif-vm")
    assert res.exit_code == EXIT_FAILURE and "libvirt refused control LUN ctl0" in res.stderr
