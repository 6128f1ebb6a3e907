"""edif-target configuration parsing and the CLI's check-config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edifd.edges.command_line import EXIT_CONFIG
from edifd.target.cli import main
from edifd.target.config import ConfigError, parse_listen, parse_target_config, parse_wwn

GOOD = """
pcap = "trace.pcap"
[[port]]
name = "t0"
wwpn = "21:00:00:1b:32:00:00:02"
wwnn = "0x2000001b32000002"
listen = "127.0.0.1:4000"
security = true
  [[port.lun]]
  lun = 0
  path = "l0.img"
  size = "64MiB"
  [[port.lun]]
  lun = 7
  path = "/abs/l7.img"
  size = 1048576
  block_size = 4096
  read_only = true
[[port]]
name = "t1"
wwpn = "2100001b32000003"
wwnn = "2000001b32000003"
listen = "[::1]"
"""


def test_good_config(tmp_path: Path) -> None:
    import tomllib
    cfg = parse_target_config(tomllib.loads(GOOD), tmp_path)
    t0, t1 = cfg.ports
    assert (t0.wwpn, t0.wwnn, t0.listen, t0.security) == (
        0x2100001B32000002, 0x2000001B32000002, ("127.0.0.1", 4000), True)
    assert [(lc.lun, lc.size, lc.block_size, lc.read_only) for lc in t0.luns] == [
        (0, 64 << 20, 512, False), (7, 1 << 20, 4096, True)]
    assert t0.luns[0].path == str(tmp_path / "l0.img") and t0.luns[1].path == "/abs/l7.img"
    assert t1.listen == ("::1", 3225) and t1.luns == () and cfg.pcap_path == str(tmp_path / "trace.pcap")


def test_every_problem_is_reported_with_its_key() -> None:
    bad = {"port": [{"name": "a b", "wwpn": "21:00", "wwnn": 0, "listen": "h:99999", "extra": 1,
                     "lun": [{"lun": 1, "path": "x", "size": "3000", "block_size": 4096},
                             {"lun": 1, "path": "y", "size": "1M", "block_size": 100}]}], "foo": 1}
    with pytest.raises(ConfigError) as e:
        parse_target_config(bad)
    text = "\n".join(e.value.problems)
    for key in ("foo: unknown key", "port[0].name", "port[0].wwpn", "port[0].wwnn", "port[0].listen",
                "port[0].extra", "port[0].lun[0].size", "port[0].lun[1].block_size"):
        assert key in text


def test_duplicates_across_ports_are_refused() -> None:
    p = {"wwpn": "2100001b32000002", "wwnn": "2000001b32000002", "listen": "127.0.0.1:1"}
    with pytest.raises(ConfigError, match="duplicate"):
        parse_target_config({"port": [dict(p, name="a"), dict(p, name="b")]})


@pytest.mark.parametrize("text,value", [("21:00:00:1b:32:00:00:02", 0x2100001B32000002),
                                        ("0x2100001B32000002", 0x2100001B32000002), (5, 5)])
def test_parse_wwn(text: object, value: int) -> None:
    assert parse_wwn(text) == value


@pytest.mark.parametrize("text", ["", "21:00", "0x0000000000000000", True, None, "zz" * 8])
def test_parse_wwn_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_wwn(text)


def test_parse_listen() -> None:
    assert parse_listen("host") == ("host", 3225)
    assert parse_listen("[fe80::1]:9") == ("fe80::1", 9)
    for bad in ("", ":5", "h:x", 5):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "t.toml"
    good.write_text(GOOD.replace("/abs/", f"{tmp_path}/"))  # check-config: the LUN directories must exist
    r = CliRunner().invoke(main, ["check-config", "--config", str(good)])
    assert r.exit_code == 0 and "configuration OK" in r.output and "2100001b32000002" in r.output
    bad = tmp_path / "b.toml"
    bad.write_text("[[port]]\nwwpn = 1\n")
    r = CliRunner().invoke(main, ["check-config", "--config", str(bad)])
    assert r.exit_code == EXIT_CONFIG and "port[0].wwnn" in r.output
    r = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == EXIT_CONFIG and "cannot read" in r.output


def test_run_reports_an_unopenable_backing_file(tmp_path: Path) -> None:
    conf = tmp_path / "t.toml"
    conf.write_text('[[port]]\nwwpn = "2100000000000002"\nwwnn = "2000000000000002"\nlisten = "127.0.0.1:0"\n'
                    '[[port.lun]]\nlun = 0\npath = "no/such/dir/l0.img"\nsize = "1MiB"\n')
    r = CliRunner().invoke(main, ["run", "--config", str(conf), "--log-level", "error"])
    assert r.exit_code == 1 and "LUN 0: cannot open backing file" in r.output
    assert not (tmp_path / "no").exists()


def test_target_server_on_its_own_thread(tmp_path):
    import socket

    from edifd.target import LunConfig as TLun
    from edifd.target import TargetConfig as TCfg
    from edifd.target import TargetPortConfig as TPort
    from edifd.target import TargetServer as TServer

    server = TServer(TCfg((TPort("t0", 0x2100001B32000F01, 0x2000001B32000F01, ("127.0.0.1", 0),
                                 (TLun(0, str(tmp_path / "l0.img"), 1 << 20),)),)))
    with pytest.raises(RuntimeError, match="start_thread"):
        server.call_soon(lambda: None)
    server.start_thread(10)
    try:
        with pytest.raises(RuntimeError, match="already started"):
            server.start_thread(10)
        with socket.create_connection(server.ports[0].address, timeout=5):
            pass  # it listens as soon as start_thread returns
        import threading
        ran = threading.Event()
        server.call_soon(ran.set)
        assert ran.wait(5)
    finally:
        server.stop_thread(10)
    server.stop_thread(10)  # a second stop is a no-op


# -- issue 10: every problem in one pass, TOML words, directories, no traceback ---------------------------

PY_TYPE_WORDS = re.compile(r"\b(int|str|NoneType|bool|list|dict|None)\b")


def _problems(data: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_target_config(data, **kw)
    assert not [p for p in e.value.problems if PY_TYPE_WORDS.search(p)], e.value.problems
    return e.value.problems


def test_duplicates_are_named_in_the_same_pass_as_other_problems() -> None:
    p = {"name": "t0", "wwpn": "2100001b32000002", "wwnn": "2000001b32000002", "listen": "127.0.0.1:1"}
    got = _problems({"port": [p, dict(p, security="yes"), dict(p, name="t2", wwpn="2100001b32000003",
                                                            lun=[{"lun": 1, "path": "/x", "size": 512},
                                                                 {"lun": 1, "path": "/x", "size": 512}])]})
    for want in ("port[1].security: expected a boolean (true or false), got a string",
                 "port[1].name: duplicate port name 't0', also port[0].name",
                 "port[1].wwpn: duplicate WWPN 2100001b32000002, also port[0].wwpn",
                 "port[1].listen: duplicate listen address 127.0.0.1:1, also port[0].listen",
                 "port[2].listen: duplicate listen address 127.0.0.1:1, also port[0].listen",
                 "port[2].lun[1].lun: duplicate LUN number 1, also port[2].lun[0].lun",
                 "port[2].lun[1].path: duplicate backing file /x, also port[2].lun[0].path"):
        assert want in got, (want, got)
    assert not any(x.startswith("port[2].wwpn") for x in got)
    # Two ports on TCP port 0 each get their own ephemeral port: not a duplicate.
    q = {"wwnn": "2000001b32000002", "listen": "127.0.0.1:0"}
    cfg = parse_target_config({"port": [dict(q, wwpn="2100001b32000002"), dict(q, wwpn="2100001b32000003")]})
    assert len(cfg.ports) == 2


def test_a_missing_key_is_required_not_none() -> None:
    got = _problems({"port": [{"lun": [{}]}]})
    for want in ("port[0].wwpn: required", "port[0].wwnn: required", "port[0].lun[0].lun: required",
                 "port[0].lun[0].path: required", "port[0].lun[0].size: required"):
        assert want in got, (want, got)


def test_type_errors_name_toml_types() -> None:
    got = _problems({"pcap": 1, "port": [
        {"name": 5, "wwpn": 0x2100001B32000002, "wwnn": True, "listen": 3225, "security": "yes", "auth": 1,
         "lun": [{"lun": "0", "path": 7, "size": 1.5, "block_size": "512", "read_only": 1}, 3]},
        {"wwpn": "2100001b32000003", "wwnn": "2000001b32000003", "lun": {"lun": 0}},
    ]})
    for want in ("pcap: expected a string (a file path), got an integer",
                 "port[0].name: expected a string, got an integer",
                 "port[0].wwpn: expected a string like 21:00:00:1b:32:00:00:02 or 0x2100001b32000002, "
                 "got an integer",
                 "port[0].wwnn: expected a string like 21:00:00:1b:32:00:00:02 or 0x2100001b32000002, "
                 "got a boolean",
                 "port[0].listen: expected a string host[:port], got an integer",
                 "port[0].security: expected a boolean (true or false), got a string",
                 "port[0].auth: expected a string (the path of an initiator-credentials file), "
                 "got an integer",
                 "port[0].lun[0].lun: expected an integer 0..16383, got a string",
                 "port[0].lun[0].path: expected a string (a file path), got an integer",
                 "port[0].lun[0].size: expected a size such as 64MiB (a string or an integer), got a float",
                 "port[0].lun[0].block_size: expected an integer (512, 1024, 2048 or 4096), got a string",
                 "port[0].lun[0].read_only: expected a boolean (true or false), got an integer",
                 "port[0].lun[1]: expected a table, got an integer",
                 "port[1].lun: expected an array of [[port.lun]] tables, got a table"):
        assert want in got, (want, got)
    assert _problems({"port": "t0"}) == ["port: expected an array of [[port]] tables, got a string"]
    assert _problems({"port": [1]}) == ["port[0]: expected a table, got an integer"]
    import datetime
    got = _problems({"port": [{"wwpn": datetime.date(2026, 1, 1), "wwnn": "2000001b32000003"}]})
    assert got == ["port[0].wwpn: expected a string like 21:00:00:1b:32:00:00:02 or 0x2100001b32000002, "
                   "got a date"]


def test_a_path_with_a_nul_character_is_refused() -> None:
    base = {"wwpn": "2100001b32000003", "wwnn": "2000001b32000003"}
    got = _problems({"pcap": "a\0b", "port": [dict(base, lun=[{"lun": 0, "path": "l\0.img", "size": 512}])]})
    assert got == ["pcap: a file path cannot contain a NUL character",
                   "port[0].lun[0].path: a file path cannot contain a NUL character"]


def test_check_config_checks_the_lun_and_pcap_directories(tmp_path: Path) -> None:
    conf = tmp_path / "t.toml"
    conf.write_text(f'pcap = "{tmp_path}/no/trace.pcap"\n'
                    '[[port]]\nwwpn = "2100000000000002"\nwwnn = "2000000000000002"\n'
                    '[[port.lun]]\nlun = 0\npath = "missing/l0.img"\nsize = "1MiB"\n'
                    '[[port.lun]]\nlun = 1\npath = "."\nsize = "1MiB"\n'
                    '[[port.lun]]\nlun = 2\npath = "ok.img"\nsize = "1MiB"\n')
    r = CliRunner().invoke(main, ["check-config", "--config", str(conf)])
    assert r.exit_code == EXIT_CONFIG, r.output
    assert f"pcap: directory {tmp_path}/no does not exist" in r.output
    assert f"port[0].lun[0].path: directory {tmp_path}/missing does not exist" in r.output
    assert f"port[0].lun[1].path: {tmp_path} is a directory, not a file" in r.output
    assert "lun[2]" not in r.output
    from edifd.target.config import load_target_config
    assert len(load_target_config(conf).ports[0].luns) == 3  # run opens them itself (and says why not)


def test_check_config_non_utf8_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "t.toml"
    conf.write_bytes(b'[[port]]\nname = "t\xe9"\n')  # Latin-1
    r = CliRunner().invoke(main, ["check-config", "--config", str(conf)])
    assert r.exit_code == EXIT_CONFIG and isinstance(r.exception, SystemExit), r.output
    assert "not valid TOML: not UTF-8 text (byte 0xe9 on line 2); TOML files are UTF-8" in r.output
    assert "Traceback" not in r.output
