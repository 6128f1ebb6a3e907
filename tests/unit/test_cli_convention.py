"""The convention of the four tools (edifd, edifctl, edif-agent, edif-target): --version from the package
metadata, -h on every command, the one exit-code table in every --help, an example line, --log-level
and check-config --json where they apply, invalid configuration exit 7 (never click's 2)."""

from __future__ import annotations

import json
from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from edifd.cli import edifd_main
from edifd.edges.command_line import EXIT_CONFIG, located, problem_lines
from edifd.edifctl import main as edifctl_main
from edifd.target.cli import main as target_main
from guest_agent.cli import main as agent_main

TOOLS = {"edifd": edifd_main, "edifctl": edifctl_main, "edif-agent": agent_main, "edif-target": target_main}


def _commands(group: click.Group):
    yield (), group
    for name, cmd in group.commands.items():
        yield (name,), cmd


@pytest.mark.parametrize("name", TOOLS)
def test_version_comes_from_the_package_metadata(name):
    r = CliRunner().invoke(TOOLS[name], ["--version"])
    assert r.exit_code == 0 and r.output == f"{name} {version('edif')}\n"


@pytest.mark.parametrize("name", TOOLS)
def test_every_command_has_h_the_exit_codes_and_an_example(name):
    for path, cmd in _commands(TOOLS[name]):
        if cmd.hidden:
            continue
        r = CliRunner().invoke(TOOLS[name], [*path, "-h"])
        assert r.exit_code == 0, (path, r.output)
        assert "Exit codes (the same for edifd, edifctl, edif-agent and edif-target):" in r.output, path
        assert "7  configuration or input file refused" in r.output and "2  usage error" in r.output
        assert "Example" in r.output, path


@pytest.mark.parametrize("name", ["edifd", "edif-agent", "edif-target"])
def test_check_config_has_json_and_log_level(name):
    r = CliRunner().invoke(TOOLS[name], ["check-config", "-h"])
    assert "--json" in r.output and "--log-level" in r.output


@pytest.mark.parametrize("name", TOOLS)
def test_log_level_everywhere(name):
    group = TOOLS[name]
    if name == "edifctl":  # on the group: for every command
        assert "--log-level" in {o for p in group.params for o in p.opts}
        return
    for cmd in group.commands.values():
        assert "--log-level" in {o for p in cmd.params for o in p.opts}, (name, cmd.name)


@pytest.mark.parametrize("name,args", [
    ("edifd", ["check-config"]), ("edif-target", ["check-config"]), ("edif-agent", ["check-config"]),
])
def test_an_invalid_configuration_is_7_with_bulleted_file_key_lines(tmp_path, name, args):
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n")
    r = CliRunner().invoke(TOOLS[name], [*args, "--config", str(bad)])
    assert r.exit_code == EXIT_CONFIG, r.output
    assert "configuration refused (" in r.output and f"  - {bad}:nonsense: unknown key" in r.output
    r = CliRunner().invoke(TOOLS[name], [*args, "--config", str(bad), "--json"])
    assert r.exit_code == EXIT_CONFIG and json.loads(r.output)["ok"] is False
    r = CliRunner().invoke(TOOLS[name], [*args, "--config", str(bad), "--no-such-option"])
    assert r.exit_code == 2  # click's own


def test_problem_lines_name_file_and_key():
    assert located("f.toml", "lun[1].size: required") == "f.toml:lun[1].size: required"
    assert located("f.toml", 'targets."21:00:00:1b:32:00:00:02".psk_file: mode 0644') \
        == 'f.toml:targets."21:00:00:1b:32:00:00:02".psk_file: mode 0644'
    assert located("f.toml", "cannot read: No such file or directory") == \
        "f.toml: cannot read: No such file or directory"
    assert problem_lines("f.toml", ["a: x", "b: y"]) == ["  - f.toml:a: x", "  - f.toml:b: y"]


def test_under_systemd_a_refused_configuration_carries_priority_err(tmp_path):
    """End to end: stderr is the stream $JOURNAL_STREAM names, as systemd sets it up for a unit."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n[daemon]\npark_time = 0\n")
    err = tmp_path / "stderr"
    with open(err, "w") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        rc = subprocess.run([sys.executable, "-m", "edifd", "check-config", "--config", str(bad)],
                            stderr=fh, stdout=subprocess.DEVNULL, env=env, check=False).returncode
    lines = err.read_text().splitlines()
    assert rc == EXIT_CONFIG and len(lines) == 3, lines
    assert lines[0] == "<3>edifd: configuration refused (2 problems):"
    assert all(line.startswith("<3>  - ") for line in lines[1:])


def test_check_config_json_describes_a_good_file(tmp_path):
    conf = tmp_path / "edifd.toml"
    conf.write_text('[daemon]\nstate_dir = "."\n[[lun]]\nname = "d0"\nsize = "1MiB"\n')
    r = CliRunner().invoke(edifd_main, ["check-config", "--config", str(conf), "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["ok"] and out["problems"] == []
    assert out["luns"] == [{"name": "d0", "type": "file", "size": 1 << 20, "block_size": 512,
                            "path": str(tmp_path / "d0.img"), "export": "not exported",
                            "export_mode": None}]
    target = tmp_path / "target.toml"
    target.write_text('[[port]]\nname = "t0"\nwwpn = "21:00:00:1b:32:00:00:02"\n'
                      'wwnn = "20:00:00:1b:32:00:00:02"\n'
                      '[[port.lun]]\nlun = 0\npath = "t0.img"\nsize = "1MiB"\n')
    r = CliRunner().invoke(target_main, ["check-config", "--config", str(target), "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["ok"] and out["ports"][0]["luns"][0]["path"] == str(tmp_path / "t0.img")
