"""What `edifd check-config` refuses or warns about on this host, and that `edifd run` refuses the
same things with the same words (edifd.config.check_host, one function for both)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd.cli import edifd_main
from edifd.config import ConfigError, check_host, load_config, parse_config
from edifd.edges.command_line import EXIT_CONFIG
from edifd.edges.file_medium import FileMedium

KEY_HEX = bytes(range(32)).hex()


def _key(tmp: Path, mode: int = 0o600, name: str = "vm.key") -> Path:
    p = tmp / name
    p.write_text(KEY_HEX + "\n")
    os.chmod(p, mode)
    return p


def _conf(tmp: Path, luns: str, state: Path | None = None) -> Path:
    p = tmp / "edifd.toml"
    p.write_text(f'[daemon]\nstate_dir = "{state or tmp}"\n' + luns)
    return p


def _file_lun(name: str, path: str | Path | None = None, size: str = "1MiB", extra: str = "") -> str:
    return (f'[[lun]]\nname = "{name}"\nsize = "{size}"\n' + (f'path = "{path}"\n' if path else "")
            + extra)


def _ctl(key: Path | None, size: str = "16MiB", extra: str = "") -> str:
    return ('[[lun]]\nname = "ctl0"\ntype = "control"\n'
            f'size = "{size}"\n' + (f'channel_key = "{key}"\n' if key else "") + extra)


def _check(p: Path):
    return CliRunner().invoke(edifd_main, ["check-config", "--config", str(p)])


def _run(p: Path, *extra: str):
    return CliRunner().invoke(edifd_main, ["run", "--config", str(p), *extra])


@pytest.fixture
def no_lio(monkeypatch):
    """`edifd run` must refuse before the daemon exists: any attempt to build one fails the test."""
    def boom(*a, **k):
        raise AssertionError("edifd run went on to start the daemon")
    monkeypatch.setattr("edifd.daemon.Daemon", boom)


# --- key files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,needle", [(0o644, "run chmod g-r,o-r"), (0o604, "run chmod o-r"),
                                         (0o640, "run chmod g-r")])
def test_check_config_refuses_a_readable_key_file_naming_the_chmod(tmp_path, mode, needle):
    key = _key(tmp_path, mode)
    r = _check(_conf(tmp_path, _ctl(key)))
    assert r.exit_code == EXIT_CONFIG and needle in r.output and "lun[0].channel_key" in r.output
    assert KEY_HEX not in r.output


def test_check_config_refuses_an_absent_or_malformed_key_file(tmp_path):
    r = _check(_conf(tmp_path, _ctl(tmp_path / "nope.key")))
    assert r.exit_code == EXIT_CONFIG and f"cannot open channel key file {tmp_path / 'nope.key'}" in r.output
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    os.chmod(bad, 0o600)
    r = _check(_conf(tmp_path, _ctl(bad)))
    assert r.exit_code == EXIT_CONFIG and f"channel key file {bad}" in r.output


def test_check_config_warns_when_a_control_lun_has_no_key(tmp_path):
    r = _check(_conf(tmp_path, _ctl(None)))
    assert r.exit_code == 0, r.output
    assert ":lun[0].channel_key: not set; control LUN ctl0 will refuse every message" in r.output


def test_a_good_key_passes(tmp_path):
    r = _check(_conf(tmp_path, _ctl(_key(tmp_path))))
    assert r.exit_code == 0 and "OK, 1 LUN(s)" in r.output and "warning" not in r.output


# --- backing files --------------------------------------------------------------------------------

def test_check_config_refuses_an_existing_file_of_another_size(tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    r = _check(_conf(tmp_path, _file_lun("d", victim)))
    assert r.exit_code == EXIT_CONFIG
    assert f"lun[0].path: {victim} exists with 32 bytes, the LUN's size is 1048576 bytes" in r.output
    assert "lun[0].resize = true" in r.output
    assert victim.stat().st_size == 32


def test_etc_passwd_is_refused_by_check_config_and_run(tmp_path, no_lio):
    p = _conf(tmp_path, _file_lun("d", "/etc/passwd"))
    before = os.stat("/etc/passwd").st_size
    for r in (_check(p), _run(p)):
        assert r.exit_code == EXIT_CONFIG and "lun[0].path: /etc/passwd exists with" in r.output
    assert os.stat("/etc/passwd").st_size == before


def test_resize_true_accepts_a_file_of_another_size(tmp_path):
    f = tmp_path / "d.img"
    f.write_bytes(b"x" * 4096)
    r = _check(_conf(tmp_path, _file_lun("d", f, extra="resize = true\n")))
    assert r.exit_code == 0, r.output
    assert load_config(tmp_path / "edifd.toml").luns[0].resize is True


def test_an_existing_file_of_the_right_size_is_served(tmp_path):
    f = tmp_path / "d.img"
    f.write_bytes(bytes(1 << 20))
    assert _check(_conf(tmp_path, _file_lun("d", f))).exit_code == 0


@pytest.mark.parametrize("path,needle", [("/tmp", "/tmp is a directory"),
                                         ("/dev/null", "/dev/null is a device node")])
def test_check_config_and_run_refuse_a_directory_or_a_device(tmp_path, path, needle, no_lio):
    p = _conf(tmp_path, _file_lun("d", path))
    for r in (_check(p), _run(p)):
        assert r.exit_code == EXIT_CONFIG and f"lun[0].path: {needle}" in r.output


def test_resize_is_only_for_file_luns():
    with pytest.raises(ConfigError, match=r"lun\[0\].resize: only for type = \"file\""):
        parse_config(tomllib.loads('[[lun]]\nname="c"\ntype="control"\nsize="16MiB"\nresize=true\n'))


def test_two_luns_on_one_backing_file_are_refused(tmp_path):
    one = _file_lun("a", tmp_path / "x.img") + _file_lun("b", tmp_path / "x.img")
    r = _check(_conf(tmp_path, one))
    assert r.exit_code == EXIT_CONFIG
    assert f"lun[1].path: {tmp_path / 'x.img'} is also lun[0]'s backing file" in r.output
    # two names of one file: a relative path (to the config file's directory) and the absolute one,
    # or a hard link
    (tmp_path / "y.img").write_bytes(bytes(1 << 20))
    os.link(tmp_path / "y.img", tmp_path / "z.img")
    two = _file_lun("a", "y.img") + _file_lun("b", tmp_path / "z.img")
    r = _check(_conf(tmp_path, two))
    assert r.exit_code == EXIT_CONFIG and "is also lun[0]'s backing file" in r.output


def test_file_medium_refuses_to_resize_when_told(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with pytest.raises(ValueError, match="has 3 bytes, not 4096; refusing to resize"):
        FileMedium(f, 4096, resize=False)
    assert f.read_bytes() == b"abc"
    with FileMedium(tmp_path / "new", 4096, resize=False) as m:  # a new file is created at its size
        assert m.num_blocks == 8
    assert (tmp_path / "new").stat().st_size == 4096


@pytest.mark.parametrize("path", ["/tmp", "/dev/null"])
def test_file_medium_serves_only_a_regular_file(path):
    with pytest.raises(ValueError, match="is a directory|is not a regular file"):
        FileMedium(path, 4096)


def test_the_file_lun_refuses_at_open_with_check_configs_words(tmp_path):
    from types import SimpleNamespace

    from edifd.lun_kinds import lun_kind

    f = tmp_path / "d.img"
    f.write_bytes(b"x" * 512)
    cfg = load_config(_conf(tmp_path, _file_lun("d", f)))
    (expected,) = check_host(cfg).problems
    with pytest.raises(ValueError) as e:
        lun_kind(cfg.luns[0]).open(SimpleNamespace(config=cfg))
    assert str(e.value) == expected.replace("lun[0]", "lun d")
    assert f.stat().st_size == 512


# --- directories ----------------------------------------------------------------------------------

def test_a_missing_lun_directory_is_refused_by_both(tmp_path, no_lio):
    p = _conf(tmp_path, _file_lun("d", tmp_path / "nodir" / "d.img"))
    for r in (_check(p), _run(p)):
        assert r.exit_code == EXIT_CONFIG
        assert f"lun[0].path: directory {tmp_path / 'nodir'} does not exist" in r.output
    assert not (tmp_path / "nodir").exists()


def test_a_missing_state_dir_is_reported_and_run_creates_it(tmp_path):
    state = tmp_path / "state"
    r = _check(_conf(tmp_path, _file_lun("d"), state=state))
    assert r.exit_code == 0 and f".toml:daemon.state_dir: {state} does not exist; edifd run will create" \
        in r.output
    assert not state.exists()
    cfg = load_config(tmp_path / "edifd.toml")
    assert check_host(cfg).problems == ()


def test_a_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    r = _check(_conf(tmp_path, _file_lun("d", tmp_path / "d.img"), state=tmp_path / "f"))
    assert r.exit_code == EXIT_CONFIG and "daemon.state_dir: " in r.output
    assert "is not a directory" in r.output


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ('[[lun]]\nname="a"\nsize="1M"\n[lun.export]\nfabric="loopback"\nwwn="naa.5001405000000001"\n'
     '[[lun]]\nname="b"\nsize="1M"\n[lun.export]\nfabric="vhost"\nwwn="naa.5001405000000001"\n',
     "lun[1].export.wwn: naa.5001405000000001 is also lun[0]'s"),
    ('[[lun]]\nname="a"\nsize="1M"\n[lun.export]\nfabric="iscsi"\ndemo_mode=true\niqn="iqn.2026-11.x:t"\n'
     '[[lun]]\nname="b"\nsize="1M"\n[lun.export]\nfabric="iscsi"\ndemo_mode=true\niqn="iqn.2026-11.x:t"\n',
     "lun[1].export.iqn: iqn.2026-11.x:t is also lun[0]'s"),
    ('[[lun]]\nname="a"\nsize="1M"\nserial="S1"\n[[lun]]\nname="b"\nsize="1M"\nserial="S1"\n',
     "lun[1].serial: S1 is also lun[0]'s"),
])
def test_two_exports_with_one_wwn_are_refused(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text))
    assert needle in str(e.value)


def test_an_empty_config_warns(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text("")
    r = _check(p)
    assert r.exit_code == 0 and ".toml: no [[lun]]: edifd would serve nothing" in r.output


# --- no traceback, TOML words ---------------------------------------------------------------------

def test_a_non_utf8_config_is_refused_without_a_traceback(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_bytes(b'[daemon]\nstate_dir = "/tmp/\xff"\n')
    r = _check(p)
    assert r.exit_code == EXIT_CONFIG and isinstance(r.exception, SystemExit)
    assert "not valid TOML: not UTF-8 text (byte 0xff on line 2)" in r.output


@pytest.mark.parametrize("text,needle", [
    ('[daemon]\nstate_dir = 5\n', "daemon.state_dir: expected a string, got an integer"),
    ('[daemon]\nlog_level = ["info"]\n', "daemon.log_level: expected a string, got an array"),
    ('[[lun]]\nname = "a"\nsize = 1.5\n', "lun[0].size: expected a string or an integer, got a float"),
    ('[[lun]]\nname = "a"\nsize = "1M"\n[lun.export]\ndemo_mode = "yes"\n',
     "lun[0].export.demo_mode: expected a boolean, got a string"),
    ('lun = 3\n', "lun: expected an array, got an integer"),
    ('daemon = 2026-11-01\n', "daemon: expected a table, got a date"),
])
def test_type_errors_name_toml_types(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text))
    assert needle in str(e.value)
    assert f"config: {needle}" in str(e.value) or f"; {needle}" in str(e.value)
    assert " int," not in str(e.value) and "got int" not in str(e.value) and "got str" not in str(e.value)


def test_the_default_queue_limit_fits_a_small_control_lun(tmp_path):
    cfg = load_config(_conf(tmp_path, _ctl(_key(tmp_path), size="8MiB")))
    assert 2 <= cfg.luns[0].queue_limit < 64
    big = load_config(_conf(tmp_path, _ctl(_key(tmp_path), size="32MiB")))
    assert big.luns[0].queue_limit == 64


def test_a_written_queue_limit_too_large_names_both_settings(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_conf(tmp_path, _ctl(_key(tmp_path), size="8MiB", extra="queue_limit = 64\n")))
    assert "lun[0].queue_limit: 2.." in str(e.value) and "lower queue_limit or raise size" in str(e.value)


def test_ready_file_in_a_missing_directory_is_refused_before_serving(tmp_path, no_lio):
    p = _conf(tmp_path, _file_lun("d"))
    r = _run(p, "--ready-file", str(tmp_path / "nodir" / "ready"))
    assert r.exit_code == EXIT_CONFIG
    assert f"--ready-file {tmp_path / 'nodir' / 'ready'}: directory" in r.output
    assert "does not exist" in r.output
