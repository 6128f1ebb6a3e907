"""edifd check-config, the status file and edifctl status, without a kernel."""

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edifd.cli import edifd_main
from edifd.config import parse_config
from edifd.edifctl import main as edifctl_main
from edifd.lun_kinds import lun_kind
from edifd.status import collect, read_status, write_status

CONF = """
[daemon]
state_dir = "{state}"
[[lun]]
name = "disk0"
size = "64MiB"
[lun.export]
fabric = "iscsi"
demo_mode = true
"""


@dataclass
class Stats:
    fetched: int = 7
    completed: int = 7


def _daemon(cfg):
    lun = cfg.luns[0]
    served = SimpleNamespace(
        config=lun, kind=lun_kind(lun), export=SimpleNamespace(wwn="iqn.2026-11.io.edifd:disk0"),
        backstore=SimpleNamespace(uio_name="tcm-user/0/disk0/edif/file"), adopted=False,
        handler=SimpleNamespace(stats=Stats()), medium=SimpleNamespace(counters={"heartbeats": 3}))
    return SimpleNamespace(luns=[served])


def test_check_config_ok_and_bad(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path))
    r = CliRunner().invoke(edifd_main, ["check-config", "--config", str(p)])
    assert r.exit_code == 0 and "1 LUN(s)" in r.output and "iSCSI iqn.2026-11.io.edifd:disk0" in r.output
    p.write_text("[[lun]]\nname='x'\n")
    r = CliRunner().invoke(edifd_main, ["check-config", "--config", str(p)])
    assert r.exit_code == 7 and f"  - {p}:lun[0].size: required" in r.output  # 7: invalid config, not usage


def test_status_file_round_trip_and_edifctl(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path))
    import tomllib
    cfg = parse_config(tomllib.loads(p.read_text()))
    st = collect(_daemon(cfg))
    write_status(tmp_path / "status.json", st)
    back = read_status(tmp_path / "status.json")
    assert back["luns"][0]["ring"] == {"fetched": 7, "completed": 7}
    assert back["luns"][0]["medium"] == {"heartbeats": 3}
    r = CliRunner().invoke(edifctl_main, ["--config", str(p)])
    assert r.exit_code == 0, r.output
    assert "disk0" in r.output and "fetched=7" in r.output and "heartbeats=3" in r.output
    # --status-file: no note on stderr about the missing control socket (click 8.1 mixes it in)
    r = CliRunner().invoke(edifctl_main, ["--status-file", str(tmp_path / "status.json"), "--json"])
    assert json.loads(r.output)["luns"][0]["name"] == "disk0"


def test_edifctl_without_status_file(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path))
    r = CliRunner().invoke(edifctl_main, ["--config", str(p)])
    assert r.exit_code == 3 and "has not run" in r.output


def test_edifctl_flags_a_stale_status(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path))
    (tmp_path / "status.json").write_text(json.dumps({"pid": 1, "state": "running", "time": 0, "luns": []}))
    r = CliRunner().invoke(edifctl_main, ["--config", str(p)])
    assert r.exit_code == 1 and "may have died" in r.output


@pytest.mark.parametrize("content,needle", [
    ("[1, 2]", "expected a JSON object, got an array"),
    ('{"pid": 1, "state": "running", "time": "soon", "luns": []}', "time: expected a number, got 'soon'"),
    ('{"pid": 1, "state": "running", "time": 1, "luns": [{"name": "d", "size": 1}]}',
     "luns[0].type: missing or not a string"),
    ('{"pid": 1, "state": "running", "time": 1, "luns": {"d": 1}}', "luns: expected a list"),
    ('{"pid": 1, "state": "running", "time": 1, "luns": [{"name": "d", "type": "file", "size": 1, '
     '"ring": [1]}]}', "luns[0].ring: expected an object"),
    ('{"pid": 1, "state": "running", "time": 1, "luns": [{"name": "d", "type": "file", "size": "1M"}]}',
     "luns[0].size: missing or not a size in bytes"),
    ('{"pid": 1, "state": "runn', "not JSON"),
    (b'\xff\xfe', "not JSON"),
])
def test_edifctl_a_malformed_status_file_is_a_sentence_not_a_traceback(tmp_path, content, needle):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path))
    status = tmp_path / "status.json"
    status.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = CliRunner().invoke(edifctl_main, ["--config", str(p)])
    assert r.exit_code == 7 and isinstance(r.exception, SystemExit), r.output  # 7: input refused
    assert f"edifctl: cannot read {status}: " in r.output and needle in r.output
