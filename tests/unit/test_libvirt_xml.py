"""`edifctl libvirt-xml` and edifd.libvirt_xml: the devices of each export, the libvirt secret of a CHAP
export (never its value), stable vhost WWPNs, and every variant accepted by libvirt's own schema
(virt-xml-validate, Debian's libvirt-clients; it runs xmllint, libxml2-utils)."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd import libvirt_xml as lx
from edifd.config import parse_config
from edifd.edges.command_line import EXIT_CONFIG, EXIT_USAGE
from edifd.edifctl import main
from tests.support.ci import unavailable

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edifd.toml"
MID = "4f1c2a3b5d6e7f8091a2b3c4d5e6f708"
VM = "iqn.2026-12.org.example:edif-vm"
SECRET = "0123456789abcdef"



@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch):
    """edifctl sets up the process's logging; the tests after these must find it as it was."""
    monkeypatch.setattr("edifd.edifctl.setup_logging", lambda level: None)

def _cfg(text: str):
    return parse_config(tomllib.loads(text), machine_id=MID)


def _example():
    return _cfg(EXAMPLE.read_text())


_PORTS = iter(range(1 << 16))


def _lun(export: str, name: str = "ctl0", type_: str = "control") -> str:
    port = f"port_index = {next(_PORTS)}\n" if type_ == "control" else ""
    return f'[[lun]]\nname = "{name}"\ntype = "{type_}"\nsize = "16MiB"\n{port}[lun.export]\n{export}\n'


CHAP = f'fabric = "iscsi"\ninitiators = ["{VM}"]\nchap_user = "edif-vm"\nchap_secret_file = "/k/c"\n'
VARIANTS = {
    "chap": _lun(CHAP),
    "mutual": _lun(CHAP + 'mutual_user = "edifd"\nmutual_secret_file = "/k/m"\n'),
    "acl": _lun(f'fabric = "iscsi"\ninitiators = ["{VM}"]\nportal = "0.0.0.0:3261"\n'),
    "demo": _lun('fabric = "iscsi"\ndemo_mode = true\nportal = "[::1]:3260"\n'),
    "vhost": _lun('fabric = "vhost"'),
    "mixed": _lun(CHAP) + _lun('fabric = "vhost"', "ctl1") + _lun('fabric = "iscsi"\ndemo_mode = true\n'
                                                                    'iqn = "iqn.2026-11.io.edifd:t"', "t",
                                                                    "file"),
}


# --- the XML -------------------------------------------------------------------------------------------


def test_iscsi_disk_of_the_example() -> None:
    found = lx.plan(lx.select_luns(_example()))
    controller, disk = (ET.fromstring(d.xml) for d in found.devices)
    assert controller.attrib == {"type": "scsi", "index": "0", "model": "virtio-scsi"}
    assert disk.attrib == {"type": "network", "device": "lun"}
    src = disk.find("source")
    assert src is not None and src.attrib == {"protocol": "iscsi", "name": "iqn.2026-11.io.edifd:ctl0/0"}
    assert src.find("host").attrib == {"name": "127.0.0.1", "port": "3260"}  # type: ignore[union-attr]
    assert src.find("auth").attrib == {"username": "edif-vm"}  # type: ignore[union-attr]
    assert src.find("auth/secret").attrib == {  # type: ignore[union-attr]
        "type": "iscsi", "usage": "edifd-chap-iqn.2026-11.io.edifd:ctl0"}
    assert src.find("initiator/iqn").attrib == {"name": VM}  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "sda", "bus": "scsi"}  # type: ignore[union-attr]
    assert disk.find("address").attrib == {  # type: ignore[union-attr]
        "type": "drive", "controller": "0", "bus": "0", "target": "0", "unit": "0"}
    (secret,) = found.secrets
    assert secret.secret_file == Path("/etc/edifd/keys/ctl0.chap") and found.notes == ()


def test_vhost_hostdev_carries_the_exports_wwpn_and_needs_no_controller() -> None:
    found = lx.plan(lx.select_luns(_example(), every=True, via="vhost"))
    assert [ET.fromstring(d.xml).tag for d in found.devices] == ["hostdev", "hostdev"]
    first = ET.fromstring(found.devices[0].xml)
    assert first.attrib == {"mode": "subsystem", "type": "scsi_host", "managed": "no"}
    assert first.find("source").attrib == {"protocol": "vhost", "wwpn": "naa.5001405e1d1f0002"}  # type: ignore


def test_units_names_and_controller() -> None:
    cfg = _cfg(_lun(CHAP) + _lun(CHAP.replace("fabric", 'iqn = "iqn.2026-11.io.edifd:b"\nfabric'), "b"))
    found = lx.plan(lx.select_luns(cfg), controller=3, first_unit=25)
    disks = [ET.fromstring(d.xml) for d in found.devices[1:]]
    assert [d.find("target").get("dev") for d in disks] == ["sdz", "sdaa"]  # type: ignore[union-attr]
    assert [d.find("address").get("unit") for d in disks] == ["25", "26"]  # type: ignore[union-attr]
    assert {d.find("address").get("controller") for d in disks} == {"3"}  # type: ignore[union-attr]
    assert ET.fromstring(found.devices[0].xml).get("index") == "3"
    assert [lx.scsi_target_dev(n) for n in (0, 25, 26, 701, 702)] == ["sda", "sdz", "sdaa", "sdzz", "sdaaa"]


def test_modes_without_chap_have_no_auth_and_say_so() -> None:
    acl = lx.plan(lx.select_luns(_cfg(VARIANTS["acl"])))
    disk = ET.fromstring(acl.devices[1].xml)
    assert disk.find("source/auth") is None and disk.find("source/initiator/iqn").get("name") == VM  # type: ignore
    assert disk.find("source/host").attrib == {"name": "127.0.0.1", "port": "3261"}  # type: ignore # 0.0.0.0
    assert acl.secrets == ()
    assert acl.notes == ("LUN ctl0: export in acl mode, no CHAP: the disk has no <auth>",)
    demo = ET.fromstring(lx.plan(lx.select_luns(_cfg(VARIANTS["demo"]))).devices[1].xml)
    assert demo.find("source/initiator") is None and demo.find("source/host").get("name") == "::1"  # type: ignore


def test_mutual_chap_is_one_way_under_libvirt() -> None:
    found = lx.plan(lx.select_luns(_cfg(VARIANTS["mutual"])))
    assert len(found.secrets) == 1 and "does one-way CHAP only" in found.notes[0]


def test_initiator_and_host_choices() -> None:
    luns = lx.select_luns(_example())
    disk = ET.fromstring(lx.plan(luns, host="192.0.2.9").devices[1].xml)
    assert disk.find("source/host").get("name") == "192.0.2.9"  # type: ignore[union-attr]
    with pytest.raises(lx.LibvirtXmlError, match="not one of the export's initiators"):
        lx.plan(luns, initiator="iqn.2026-12.org.example:other")


def test_secret_xml_and_commands_hold_no_secret(tmp_path: Path) -> None:
    (secret,) = lx.plan(lx.select_luns(_example())).secrets
    root = ET.fromstring(secret.xml)
    assert root.attrib == {"ephemeral": "no", "private": "yes"}
    assert root.findtext("uuid") == secret.uuid and root.find("usage").get("type") == "iscsi"  # type: ignore
    assert root.findtext("usage/target") == secret.usage
    assert secret.virsh_commands("s.xml") == [
        "virsh secret-define s.xml",
        f"virsh secret-set-value --secret {secret.uuid} --file /etc/edifd/keys/ctl0.chap --plain"]
    again = lx.plan(lx.select_luns(_example())).secrets[0]
    assert again.uuid == secret.uuid  # one UUID per target and user, on every run


@pytest.mark.parametrize("kw, needle", [
    ({"names": ("nope",)}, "no LUN named nope"),
    ({"names": ("data0",), "via": "iscsi"}, "LUN data0 is exported over vhost"),
    ({"via": "vhost"}, "no control LUN exported over vhost"),
    ({"via": "fc"}, "--via fc: iscsi or vhost"),
])
def test_selection_errors(kw: dict, needle: str) -> None:
    with pytest.raises(lx.LibvirtXmlError, match=needle):
        lx.select_luns(_example(), **kw)


def test_a_lun_that_is_not_exported_cannot_be_named() -> None:
    cfg = _cfg('[[lun]]\nname = "x"\nsize = "1MiB"\n')
    with pytest.raises(lx.LibvirtXmlError, match="LUN x is exported over none"):
        lx.select_luns(cfg, names=("x",))


# --- the command ---------------------------------------------------------------------------------------


def _run(tmp_path: Path, text: str, *args: str):
    conf = tmp_path / "edifd.toml"
    conf.write_text(text)
    # click 8.1 (Debian 12) mixes stderr into output unless told not to; 8.2 keeps them apart always.
    split = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**split).invoke(main, ["--config", str(conf), "libvirt-xml", *args])


def test_cli_prints_one_commented_element_per_device(tmp_path: Path) -> None:
    res = _run(tmp_path, EXAMPLE.read_text(), "--all")
    assert res.exit_code == 0, res.stderr
    blocks = [b for b in res.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 4  # controller, ctl0's disk, data0's and tenant0's hostdev
    for block in blocks:
        comment, _, element = block.partition("\n")
        assert comment.startswith("<!-- ") and comment.endswith(" -->")
        ET.fromstring(element)


def _with_secret(tmp_path: Path, mode: int = 0o600) -> str:
    key = tmp_path / "ctl0.chap"
    key.write_text(SECRET)
    key.chmod(mode)
    return EXAMPLE.read_text().replace("/etc/edifd/keys/ctl0.chap", str(key))


def test_cli_secret_script_sets_the_value_from_the_file(tmp_path: Path) -> None:
    res = _run(tmp_path, _with_secret(tmp_path), "--secret-xml")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("#!/bin/sh\n")
    assert "cat > edifd-secret-ctl0.xml <<'EOF'\n<secret " in res.stdout
    assert f"--file {tmp_path}/ctl0.chap --plain" in res.stdout and SECRET not in res.stdout
    assert _run(tmp_path, VARIANTS["acl"], "--secret-xml").exit_code == EXIT_CONFIG


def test_cli_secret_script_refuses_a_file_edifd_would_refuse(tmp_path: Path) -> None:
    res = _run(tmp_path, _with_secret(tmp_path, 0o644), "--secret-xml")
    assert res.exit_code == EXIT_CONFIG and res.stdout == ""
    assert (f"{tmp_path}/edifd.toml:lun[0].export.chap_secret_file: CHAP secret file {tmp_path}/ctl0.chap "
            "is accessible by") in res.stderr
    assert SECRET not in res.stderr


def test_cli_never_reads_the_secret(tmp_path: Path) -> None:
    key = tmp_path / "c"
    key.write_text(SECRET)
    key.chmod(0o600)
    text = VARIANTS["chap"].replace("/k/c", str(key))
    for args in ((), ("--secret-xml",), ("--domain-xml",)):
        res = _run(tmp_path, text, *args)
        assert res.exit_code == 0 and SECRET not in res.stdout + res.stderr


def test_cli_errors(tmp_path: Path) -> None:
    res = _run(tmp_path, EXAMPLE.read_text(), "--lun", "nope")
    assert res.exit_code == EXIT_CONFIG and "no LUN named nope" in res.stderr
    res = _run(tmp_path, "[[lun]]\nname = 1\n")
    assert res.exit_code == EXIT_CONFIG and "lun[0].name: expected a string" in res.stderr
    res = _run(tmp_path, EXAMPLE.read_text(), "--live")
    assert res.exit_code == EXIT_USAGE and "--attach DOMAIN" in res.stderr


def test_cli_vhost_wwpn_is_stable_across_runs(tmp_path: Path) -> None:
    """No export.wwn: two invocations (two boots of the same host) print the same WWPN, the one edifd
    gives LIO (edifd.daemon.export_spec)."""
    from edifd.config import load_config
    from edifd.daemon import export_spec

    text = _lun('fabric = "vhost"', "data0", "file")
    first, second = _run(tmp_path, text, "--all").stdout, _run(tmp_path, text, "--all").stdout
    assert first == second
    wwpn = ET.fromstring(first.partition("\n")[2]).find("source").get("wwpn")  # type: ignore[union-attr]
    spec = export_spec(load_config(tmp_path / "edifd.toml").luns[0])
    assert wwpn is not None and spec is not None and spec.wwpn == wwpn  # type: ignore[union-attr]


# --- libvirt's schema ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validate():
    tool = shutil.which("virt-xml-validate")
    if tool is None or shutil.which("xmllint") is None:
        unavailable("virt-xml-validate and xmllint needed (Debian: libvirt-clients, libxml2-utils)")

    def check(path: Path, schema: str) -> None:
        res = subprocess.run([tool, str(path), schema], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{path.name}: {res.stderr}\n{path.read_text()}"
    return check


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("via", [None, "iscsi", "vhost"])
def test_every_variant_validates(tmp_path: Path, validate, variant: str, via: str | None) -> None:
    cfg = _cfg(VARIANTS[variant])
    try:
        found = lx.plan(lx.select_luns(cfg, every=True, via=via), controller=1, first_unit=2)
    except lx.LibvirtXmlError:
        assert via is not None  # a variant without an export over `via`
        return
    doc = tmp_path / "domain.xml"
    doc.write_text(lx.domain_document(found.devices))
    validate(doc, "domain")
    for sec in found.secrets:
        path = tmp_path / f"secret-{sec.lun}.xml"
        path.write_text(sec.xml)
        validate(path, "secret")


def test_cli_domain_document_of_the_example_validates(tmp_path: Path, validate) -> None:
    res = _run(tmp_path, EXAMPLE.read_text(), "--all", "--domain-xml")
    assert res.exit_code == 0, res.stderr
    doc = tmp_path / "domain.xml"
    doc.write_text(res.stdout)
    validate(doc, "domain")
    assert len(ET.fromstring(res.stdout).findall("devices/*")) == 4


def test_the_validator_refuses_a_broken_device(tmp_path: Path, validate) -> None:
    """The check can fail: libvirt's schema knows no protocol 'vhosx'."""
    found = lx.plan(lx.select_luns(_example(), every=True, via="vhost"))
    doc = tmp_path / "bad.xml"
    doc.write_text(lx.domain_document(found.devices).replace('"vhost"', '"vhosx"'))
    with pytest.raises(AssertionError, match="fails to validate"):
        validate(doc, "domain")
