"""iSCSI exports in edifd.toml: who may log in (demo mode, node ACLs, CHAP, mutual CHAP), what
check-config refuses, the CHAP secret files it loads, and the vhost WWN derived when none is written."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edifd.config import (
    ConfigError,
    check_host,
    load_config,
    parse_config,
    portal_is_loopback,
    read_machine_id,
)
from edifd.tcmu.lio import IscsiChap

VM = "iqn.2026-12.org.example:edif-vm"
SECRET, MUTUAL = "0123456789abcdef", "fedcba9876543210"
MID = "4f1c2a3b5d6e7f8091a2b3c4d5e6f708"


def _export(**keys: object) -> dict:
    return {"lun": [{"name": "ctl0", "size": "16MiB", "export": {"fabric": "iscsi", **keys}}]}


def _parse(data: dict, base: Path | None = None):
    return parse_config(data, base=base, machine_id=MID)


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        _parse(data)
    return e.value.problems


def _secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# --- the modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, mode, words", [
    ({"demo_mode": True}, "demo", "demo mode (any initiator on this host, no CHAP)"),
    ({"demo_mode": True, "portal": "127.0.0.2:3261"}, "demo", "on 127.0.0.2:3261: demo mode"),
    ({"demo_mode": True, "portal": "[::1]:3260"}, "demo", "on [::1]:3260: demo mode"),
    ({"demo_mode": True, "insecure_demo": True, "portal": "0.0.0.0:3260"}, "insecure-demo",
     "INSECURE demo mode"),
    ({"initiators": [VM]}, "acl", "ACL only (1 initiator; no CHAP"),
    ({"initiators": [VM, VM + "2"], "chap_user": "edif-vm", "chap_secret_file": "/k/c"}, "chap",
     "ACL + CHAP (2 initiators, CHAP user edif-vm)"),
    ({"initiators": [VM], "chap_user": "edif-vm", "chap_secret_file": "/k/c", "mutual_user": "edifd",
      "mutual_secret_file": "/k/m"}, "mutual-chap", "ACL + mutual CHAP (1 initiator, CHAP user edif-vm, "
                                                     "target user edifd)"),
])
def test_each_export_says_its_mode(keys: dict, mode: str, words: str) -> None:
    (lun,) = _parse(_export(**keys)).luns
    assert lun.export.mode == mode
    assert words in lun.export.describe()
    assert lun.export.describe().startswith("iSCSI iqn.2026-11.io.edifd:ctl0 on ")


def test_the_default_portal_is_loopback() -> None:
    (lun,) = _parse(_export(demo_mode=True)).luns
    assert lun.export.portal == ("127.0.0.1", 3260) and lun.export.mode == "demo"


def test_chap_settings_reach_lio_as_one_object(tmp_path: Path) -> None:
    data = _export(initiators=[VM], chap_user="edif-vm", chap_secret_file="keys/ctl0.chap",
                   mutual_user="edifd", mutual_secret_file="/abs/ctl0.mutual")
    (lun,) = _parse(data, base=tmp_path).luns
    assert lun.export.chap == IscsiChap("edif-vm", tmp_path / "keys/ctl0.chap", "edifd",
                                        Path("/abs/ctl0.mutual"))
    (plain,) = _parse(_export(initiators=[VM])).luns
    assert plain.export.chap is None


def test_the_daemon_gives_lio_the_acls_and_chap() -> None:
    from edifd.daemon import export_spec

    data = _export(initiators=[VM], chap_user="edif-vm", chap_secret_file="/k/c")
    (lun,) = _parse(data).luns
    spec = export_spec(lun)
    assert spec is not None and spec.acls == (VM,) and spec.chap == lun.export.chap  # type: ignore[union-attr]
    (demo,) = _parse(_export(demo_mode=True)).luns
    spec = export_spec(demo)
    assert spec is not None and spec.acls == () and spec.chap is None  # type: ignore[union-attr]


def test_relative_secret_files_are_relative_to_the_configuration_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "edifd.toml"
    conf.parent.mkdir()
    conf.write_text('[[lun]]\nname = "ctl0"\nsize = "16MiB"\n[lun.export]\nfabric = "iscsi"\n'
                    f'initiators = ["{VM}"]\nchap_user = "u"\nchap_secret_file = "keys/c"\n'
                    'mutual_user = "m"\nmutual_secret_file = "../m"\n')
    (lun,) = load_config(conf).luns
    assert lun.export.chap_secret_file == conf.parent / "keys/c"
    assert lun.export.mutual_secret_file == conf.parent / "../m"


# --- what the loader refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("keys, needle", [
    ({"demo_mode": True, "portal": "0.0.0.0:3260"},
     "lun[0].export.demo_mode: on portal 0.0.0.0:3260 anyone who reaches it logs in without CHAP"),
    ({"demo_mode": True, "portal": "192.0.2.1:3260"}, "or insecure_demo = true to mean it"),
    ({"demo_mode": True, "initiators": [VM]}, "lun[0].export.demo_mode: demo mode admits any initiator "
                                                "without CHAP; remove initiators or demo_mode"),
    ({"demo_mode": True, "chap_user": "u", "chap_secret_file": "/k"},
     "remove chap_user, chap_secret_file or"),
    ({"insecure_demo": True, "initiators": [VM]}, "lun[0].export.insecure_demo: only with demo_mode = true"),
    ({}, "lun[0].export: iscsi export needs initiators (ACLs) or demo_mode = true"),
    ({"chap_user": "u", "chap_secret_file": "/k"}, "lun[0].export.chap_user: CHAP is set per initiator ACL"),
    ({"initiators": [VM], "chap_user": "u"},
     "lun[0].export.chap_secret_file: required with chap_user (CHAP needs a user and a secret)"),
    ({"initiators": [VM], "chap_secret_file": "/k"},
     "lun[0].export.chap_user: required with chap_secret_file"),
    ({"initiators": [VM], "chap_user": "u", "chap_secret_file": "/k", "mutual_user": "m"},
     "lun[0].export.mutual_secret_file: required with mutual_user"),
    ({"initiators": [VM], "chap_user": "u", "chap_secret_file": "/k", "mutual_secret_file": "/m"},
     "lun[0].export.mutual_user: required with mutual_secret_file"),
    ({"initiators": [VM], "mutual_user": "m", "mutual_secret_file": "/m"},
     "lun[0].export.mutual_user: mutual CHAP needs one-way CHAP too"),
    ({"initiators": [VM], "chap_user": "two words", "chap_secret_file": "/k"},
     "lun[0].export.chap_user: 1..255 printable ASCII characters without spaces"),
    ({"initiators": [VM], "chap_user": "NULLuser", "chap_secret_file": "/k"}, "not beginning with NULL"),
    ({"initiators": [VM], "chap_user": 7, "chap_secret_file": "/k"},
     "lun[0].export.chap_user: expected a string, got an integer"),
    ({"demo_mode": True, "portal": "localhost:3260"},
     "lun[0].export.portal: 'localhost' is not an IP address"),
    ({"demo_mode": True, "portal": "::1:3260"}, "write an IPv6 address in brackets"),
])
def test_refused_iscsi_access(keys: dict, needle: str) -> None:
    problems = _problems(_export(**keys))
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("key", ["chap_user", "chap_secret_file", "mutual_user", "mutual_secret_file",
                                 "insecure_demo"])
def test_iscsi_only_keys_on_other_fabrics(key: str) -> None:
    data = {"lun": [{"name": "d", "size": "1MiB", "export": {"fabric": "vhost", key: "x"}}]}
    assert f'lun[0].export.{key}: only for fabric = "iscsi"' in _problems(data)


def test_loopback_portals() -> None:
    assert all(portal_is_loopback(h) for h in ("127.0.0.1", "127.255.0.9", "[::1]", "::1"))
    assert not any(portal_is_loopback(h) for h in ("0.0.0.0", "[::]", "192.0.2.1", "localhost", ""))


# --- check-config loads the secret files ---------------------------------------------------------------


def _chap_config(tmp_path: Path, **extra: str) -> dict:
    return _export(initiators=[VM], chap_user="edif-vm", chap_secret_file=str(tmp_path / "chap"), **extra)


def test_check_host_accepts_good_secret_files(tmp_path: Path) -> None:
    _secret(tmp_path / "chap", SECRET)
    _secret(tmp_path / "mutual", MUTUAL, 0o400)
    cfg = _parse(_chap_config(tmp_path, mutual_user="edifd", mutual_secret_file=str(tmp_path / "mutual")))
    found = check_host(cfg)
    assert found.problems == () and not any("export" in w for w in found.warnings)


@pytest.mark.parametrize("content, mode, needle", [
    (SECRET, 0o644, "is accessible by other users and its group (mode 0644); run chmod g-r,o-r"),
    (SECRET[:11], 0o600, "11 characters; a CHAP secret has 12 to 16 (RFC 3720 8.2.1)"),
    (SECRET + "x", 0o600, "17 characters"),
    (SECRET[:12] + "\n", 0o600, "ends with a newline"),
    ("0123456 89abcd", 0o600, "printable ASCII without spaces"),
    ("0123456789abcdé", 0o600, "printable ASCII without spaces"),
    ("NULL456789abcdef", 0o600, "must not begin with NULL"),
])
def test_check_host_refuses_bad_secret_files(tmp_path: Path, content: str, mode: int, needle: str) -> None:
    _secret(tmp_path / "chap", content, mode)
    problems = check_host(_parse(_chap_config(tmp_path))).problems
    assert len(problems) == 1 and problems[0].startswith("lun[0].export.chap_secret_file: ")
    assert needle in problems[0] and str(tmp_path / "chap") in problems[0]
    assert content.strip() not in problems[0]  # never the secret itself


def test_check_host_refuses_a_missing_secret_file(tmp_path: Path) -> None:
    (problem,) = check_host(_parse(_chap_config(tmp_path))).problems
    assert problem == (f"lun[0].export.chap_secret_file: cannot open CHAP secret file {tmp_path / 'chap'}: "
                       "No such file or directory")


def test_check_host_refuses_one_secret_for_both_directions(tmp_path: Path) -> None:
    _secret(tmp_path / "chap", SECRET)
    _secret(tmp_path / "mutual", SECRET)
    cfg = _parse(_chap_config(tmp_path, mutual_user="edifd", mutual_secret_file=str(tmp_path / "mutual")))
    (problem,) = check_host(cfg).problems
    assert problem.startswith("lun[0].export.mutual_secret_file: holds the same secret as chap_secret_file")
    assert SECRET not in problem


def test_check_host_warns_of_acls_without_chap_off_loopback() -> None:
    found = check_host(_parse(_export(initiators=[VM], portal="192.0.2.7:3260")))
    (lun_warning,) = [w for w in found.warnings if "export" in w]
    assert lun_warning.startswith("lun[0].export: initiators without CHAP on portal 192.0.2.7")
    assert not [w for w in check_host(_parse(_export(initiators=[VM]))).warnings if "export" in w]


# --- vhost WWNs are stable -----------------------------------------------------------------------------


def _vhost(**export: str) -> dict:
    return {"lun": [{"name": "data0", "size": "1MiB", "export": {"fabric": "vhost", **export}},
                    {"name": "data1", "size": "1MiB", "export": {"fabric": "vhost"}}]}


def test_vhost_wwn_is_derived_from_the_host_and_the_lun_name() -> None:
    first = [lun.export.wwn for lun in parse_config(_vhost(), machine_id=MID).luns]
    again = [lun.export.wwn for lun in parse_config(_vhost(), machine_id=MID).luns]
    other_host = [lun.export.wwn for lun in parse_config(_vhost(), machine_id="0" * 32).luns]
    assert first == again and first[0] != first[1]
    assert all(w.startswith("naa.5001405") and len(w) == 20 for w in first)
    assert set(first).isdisjoint(other_host)


def test_a_written_vhost_wwn_is_kept() -> None:
    lun = parse_config(_vhost(wwn="naa.5001405e1d1f0002"), machine_id=MID).luns[0]
    assert lun.export.wwn == "naa.5001405e1d1f0002"


def test_vhost_wwn_is_the_same_in_two_runs_and_is_what_lio_gets(tmp_path: Path) -> None:
    """Two loads of one file (two starts of edifd, on this host's machine-id) give one WWN, and the
    daemon's export spec carries that WWN to LIO (no generate_naa at start)."""
    from edifd.daemon import export_spec

    conf = tmp_path / "edifd.toml"
    conf.write_text('[[lun]]\nname = "data0"\nsize = "1MiB"\n[lun.export]\nfabric = "vhost"\n')
    first, second = load_config(conf).luns[0], load_config(conf).luns[0]
    assert first.export.wwn == second.export.wwn
    spec = export_spec(first)
    assert spec is not None and spec.wwpn == first.export.wwn  # type: ignore[union-attr]


def test_read_machine_id(tmp_path: Path) -> None:
    empty, good = tmp_path / "empty", tmp_path / "good"
    empty.write_text("\n")
    good.write_text(MID + "\n")
    assert read_machine_id((tmp_path / "absent", empty, good)) == MID
    assert read_machine_id((tmp_path / "absent",)) == ""


def test_the_example_parses_in_its_modes() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "edifd.toml"
    cfg = parse_config(tomllib.loads(example.read_text()), machine_id=MID)
    assert [lun.export.mode for lun in cfg.luns] == ["chap", None, None]


@pytest.fixture
def _restore_logging():
    """check-config sets up the process's logging (a root handler on CliRunner's stream, the root level);
    later tests must find it as it was."""
    import logging

    log = logging.getLogger()
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:] = handlers
    log.setLevel(level)


# --- through edifd check-config ---------------------------------------------------------------------------


@pytest.mark.parametrize("export, line", [
    ('demo_mode = true\nportal = "0.0.0.0:3260"', "lun[0].export.demo_mode: on portal 0.0.0.0:3260"),
    ('chap_user = "u"\nchap_secret_file = "c"', "lun[0].export.chap_user: CHAP is set per initiator ACL"),
    (f'initiators = ["{VM}"]\nchap_user = "u"', "lun[0].export.chap_secret_file: required with chap_user"),
    (f'initiators = ["{VM}"]\nmutual_user = "m"\nmutual_secret_file = "m"',
     "lun[0].export.mutual_user: mutual CHAP needs one-way CHAP too"),
    (f'initiators = ["{VM}"]\nchap_user = "u"\nchap_secret_file = "absent.chap"',
     "lun[0].export.chap_secret_file: cannot open CHAP secret file {dir}/absent.chap"),
])
@pytest.mark.usefixtures("_restore_logging")
def test_check_config_refuses(tmp_path: Path, export: str, line: str) -> None:
    import json

    from click.testing import CliRunner

    from edifd.cli import edifd_main

    conf = tmp_path / "edifd.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[[lun]]\nname = "ctl0"\ntype = "control"\n'
                    f'size = "16MiB"\n[lun.export]\nfabric = "iscsi"\n{export}\n')
    res = CliRunner().invoke(edifd_main, ["check-config", "--config", str(conf)])
    assert res.exit_code == 7 and f"{conf}:{line.format(dir=tmp_path)}" in res.output, res.output
    res = CliRunner().invoke(edifd_main, ["check-config", "--config", str(conf), "--json"])
    out = json.loads(res.output)
    assert res.exit_code == 7 and not out["ok"]
    assert any(p.startswith(line.format(dir=tmp_path)) for p in out["problems"]), out["problems"]
