"""edif-target configuration parsing and the CLI's check-config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

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
    assert t1.listen == ("::1", 3225) and t1.luns == () and cfg.pcap_path == "trace.pcap"


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
    good.write_text(GOOD)
    r = CliRunner().invoke(main, ["check-config", "--config", str(good)])
    assert r.exit_code == 0 and "configuration OK" in r.output and "2100001b32000002" in r.output
    bad = tmp_path / "b.toml"
    bad.write_text("[[port]]\nwwpn = 1\n")
    r = CliRunner().invoke(main, ["check-config", "--config", str(bad)])
    assert r.exit_code == 2 and "port[0].wwnn" in r.output
    r = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "cannot read" in r.output


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
