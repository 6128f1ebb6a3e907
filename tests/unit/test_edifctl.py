"""edifctl's command group: the listings from the control socket or the status file (with its age), the
live commands (log-level, reload) through `edifd.cli.ControlCommands`, gen-key, and an SA listing built
from a real EDIF engine's status that shows SPIs and ages but no key."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edifd.cli import ControlCommands
from edifd.config import load_config
from edifd.edges.command_line import EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE
from edifd.edges.control_socket import SOCKET_FILE, ControlSocket
from edifd.edges.secret_file import load_channel_key
from edifd.edifctl import main
from edifd.hba import InitiatorPort, PortConfig, RequireAuthWhenSecure, SessionState
from edifd.proto import (
    AuthNeeded,
    Cipher,
    GetPortInfo,
    Message,
    PortRef,
    SaDirection,
    SaUpdate,
    SecureConnect,
)
from edifd.runtime.engine import EdifEngine
from edifd.status import _sessions, write_status
from edifd.target import TargetSession

CONF = '[daemon]\nstate_dir = "{state}"\nlog_level = "{level}"\n[[lun]]\nname = "disk0"\nsize = "64MiB"\n'

STATUS = {
    "pid": 42, "state": "running", "luns": [
        {"name": "disk0", "type": "file", "size": 64 << 20, "block_size": 512, "uio": "uio0", "adopted": True,
         "export": {"fabric": "iscsi", "wwn": "iqn.2026-11.io.edifd:disk0"}, "ring": {"fetched": 3}},
        {"name": "ctl0", "type": "control", "size": 16 << 20, "block_size": 512, "export": {"fabric": "none"},
         "channel": {"established": True, "parked": 4, "queued": 1, "upstream_issued": 9, "upstream_acked": 8,
                     "downstream_next": 5, "counters": {"rejected_bad_mac": 2, "rejected_stale": 0,
                                                        "heartbeats": 7}}},
    ],
    "sessions": [{"port": "p0", "wwpn": "21:00:00:1b:32:00:00:a1", "remote_wwpn": "21:00:00:1b:32:a0:b0:c2",
                  "state": "auth_pending", "connected": True, "outstanding": 0, "control_lun": "ctl0",
                  "generation": 3, "auth": "NEEDED", "secure": True, "app_active": True}],
    "sas": [],
}


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """edifctl and the edifd under test share this process: edifctl must not reset edifd's log level."""
    monkeypatch.setattr("edifd.edifctl.setup_logging", lambda level: None)


@pytest.fixture
def conf(tmp_path):
    p = tmp_path / "edifd.toml"
    p.write_text(CONF.format(state=tmp_path, level="info"))
    return p


@pytest.fixture
def live(conf, tmp_path):
    """A control socket answering like edifd, with STATUS as its status."""
    commands = ControlCommands(load_config(conf), conf, lambda: {**STATUS, "time": time.time()})
    sock = ControlSocket(tmp_path / SOCKET_FILE, commands.table())
    sock.start()
    root = logging.getLogger()
    level = root.level
    yield sock
    sock.stop()
    root.setLevel(level)


def edifctl(*args: str):
    return CliRunner().invoke(main, list(args))


def test_listings_from_the_running_edifd(conf, live):
    r = edifctl("--config", str(conf), "status")
    assert r.exit_code == 0, r.output
    assert "edifd pid 42: running" in r.output and "does not answer" not in r.output
    r = edifctl("--config", str(conf), "luns")
    assert r.exit_code == 0 and "disk0" in r.output and "64 MiB" in r.output and "(re-attached)" in r.output
    r = edifctl("--config", str(conf), "sessions")
    assert r.exit_code == 0, r.output
    assert ("port p0 21:00:00:1b:32:00:00:a1 -> 21:00:00:1b:32:a0:b0:c2: auth_pending, link up" in r.output
            and "generation 3, auth NEEDED, secure login" in r.output)
    r = edifctl("--config", str(conf), "channel")
    assert r.exit_code == 0 and "upstream issued 9 acked 8 queued 1" in r.output
    assert "parked READs 4" in r.output and "rejected: bad_mac 2" in r.output


def test_every_listing_has_json(conf, live):
    for cmd, check in (("status", lambda d: d["pid"] == 42), ("luns", lambda d: d[0]["name"] == "disk0"),
                       ("sessions", lambda d: d[0]["auth"] == "NEEDED"), ("sas", lambda d: d == []),
                       ("channel", lambda d: d[0]["rejected"] == {"bad_mac": 2})):
        r = edifctl("--config", str(conf), cmd, "--json")
        assert r.exit_code == 0 and check(json.loads(r.output)), (cmd, r.output)
    r = edifctl("--config", str(conf), "--json")  # no command: status
    assert r.exit_code == 0 and json.loads(r.output)["pid"] == 42


def test_without_edifd_the_status_file_is_shown_with_its_age(conf, tmp_path):
    write_status(tmp_path / "status.json", {**STATUS, "time": time.time() - 3})
    r = edifctl("--config", str(conf), "luns")
    assert r.exit_code == 0, r.output
    assert f"edifd does not answer (nobody answers on {tmp_path / SOCKET_FILE}); showing " in r.output
    assert "written 3 s ago" in r.output and "disk0" in r.output
    write_status(tmp_path / "status.json", {**STATUS, "time": time.time() - 60})
    r = edifctl("--config", str(conf), "status")
    assert r.exit_code == EXIT_FAILURE and "may have died" in r.output


def test_status_file_option_reads_that_file(tmp_path):
    f = tmp_path / "copy.json"
    write_status(f, {**STATUS, "state": "stopped", "time": 1})
    r = edifctl("--status-file", str(f), "sessions", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["port"] == "p0"
    r = edifctl("--status-file", str(tmp_path / "none.json"), "luns")
    assert r.exit_code == EXIT_UNAVAILABLE and "no " in r.output


def test_live_commands_need_edifd(conf):
    r = edifctl("--config", str(conf), "log-level", "debug")
    assert r.exit_code == EXIT_UNAVAILABLE and "edifd is not running" in r.output


def test_log_level_is_shown_and_set(conf, live):
    r = edifctl("--config", str(conf), "log-level", "error")
    assert r.exit_code == 0 and "log level error" in r.output
    assert logging.getLogger().getEffectiveLevel() == logging.ERROR
    r = edifctl("--config", str(conf), "log-level")
    assert r.exit_code == 0 and r.output.strip() == "log level error"
    r = edifctl("--config", str(conf), "log-level", "loud")
    assert r.exit_code == 2  # click: not one of the choices


def test_reload_applies_the_log_level_and_lists_the_rest(conf, live, tmp_path):
    logging.getLogger().setLevel(logging.INFO)
    conf.write_text(CONF.format(state=tmp_path, level="debug").replace('"64MiB"', '"128MiB"'))
    r = edifctl("--config", str(conf), "reload")
    assert r.exit_code == 0, r.output
    assert "applied: daemon.log_level: info -> debug" in r.output
    assert "needs a restart of edifd (not applied): lun" in r.output
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    conf.write_text("[daemon]\nlog_level = 3\n")
    r = edifctl("--config", str(tmp_path / "edifd.toml"), "--socket", str(live.path), "reload")
    assert r.exit_code == EXIT_FAILURE and "configuration refused, nothing changed" in r.output
    assert "daemon.log_level: expected a string, got an integer" in r.output
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG


def test_gen_key_writes_an_owner_only_key_and_never_overwrites(tmp_path):
    path = tmp_path / "vm1.key"
    old_umask = os.umask(0)  # even a careless umask gives 0600
    try:
        r = edifctl("gen-key", str(path))
    finally:
        os.umask(old_umask)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n") and int(text, 16) >= 0
    key = load_channel_key(path)
    assert r.output.strip() == f"{path}: new channel key, fingerprint {key.fingerprint}"
    assert text.strip() not in r.output
    r = edifctl("gen-key", str(path))
    assert r.exit_code == EXIT_CONFIG and "exists" in r.output and path.read_text() == text
    r = edifctl("gen-key", "--force", str(path))
    assert r.exit_code == 0 and path.read_text() != text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vm1.key"]  # no temporary file left
    r = edifctl("gen-key", str(tmp_path / "nodir" / "k"))
    assert r.exit_code == 6 and "cannot write" in r.output


# -- an SA listing from a real engine -------------------------------------------------------------------

HOST, TGT = 0x2100001B320000A1, 0x2100001B32A0B0C2


class _Port(InitiatorPort):
    def __init__(self) -> None:
        super().__init__(PortConfig("p0", HOST, HOST - 1, ("127.0.0.1", 1)), policy=RequireAuthWhenSecure())
        self.wire: list = []

    def _now(self) -> float:
        return 100.0

    def _send(self, frames: list) -> None:
        self.wire += frames


def test_sas_show_spis_and_ages_never_keys(tmp_path):
    async def secure_login() -> tuple[EdifEngine, _Port, list[SaUpdate]]:
        port = _Port()
        target = TargetSession(TGT, TGT - 1, [0], security=True)
        hba = SimpleNamespace(ports=[port], call_soon=lambda fn, *a: fn(*a),
                              status=lambda timeout: [p.status() for p in [port]])
        engine = EdifEngine(hba, port)  # type: ignore[arg-type]
        events: list = []
        engine.attach(events.append)
        engine._start_on_loop()

        def req(body):
            engine.handle(Message(body, 0, 1, 1, 1))
            for _ in range(20):  # frames both ways until the link is quiet
                out, port.wire = port.wire, []
                if not out:
                    break
                for back in [b for frame in out for b in target.receive(frame)]:
                    port.push(port.session.receive(back, 100.0))

        req(GetPortInfo())
        req(SecureConnect(PortRef(TGT)))
        port.session.security = True
        port.push(port.session.connected(100.0))
        req(GetPortInfo())
        assert port.session.state is SessionState.AUTH_PENDING
        ref = next(e for e in events if isinstance(e, AuthNeeded)).port
        updates = [SaUpdate(ref, spi, d, Cipher.AES_GCM_256, os.urandom(32), os.urandom(4))
                   for spi, d in ((0x101, SaDirection.RX), (0x202, SaDirection.TX))]
        for u in updates:
            req(u)
        return engine, port, updates

    engine, port, updates = asyncio.run(secure_login())
    first = engine.status(now=1000.0)
    later = engine.status(now=1012.0)
    assert [e["age"] for e in first["sa"]["rx"] + first["sa"]["tx"]] == [0.0, 0.0]
    assert [e["age"] for e in later["sa"]["rx"] + later["sa"]["tx"]] == [12.0, 12.0]
    daemon = SimpleNamespace(hba=engine.hba)
    sessions, sas = _sessions(daemon, [{"name": "ctl0", "edif": later}])  # type: ignore[arg-type]
    assert sessions[0]["control_lun"] == "ctl0" and sessions[0]["auth"] == later["auth"]
    status = {**STATUS, "time": time.time(), "sessions": sessions, "sas": sas}
    f = tmp_path / "status.json"
    write_status(f, status)
    text = edifctl("--status-file", str(f), "sas")
    js = edifctl("--status-file", str(f), "sas", "--json")
    assert text.exit_code == 0 and js.exit_code == 0, text.output
    assert "RX  SPI 0x00000101  AES_GCM_256  age 12 s" in text.output
    assert "TX  SPI 0x00000202" in text.output and "0 rekeys" in text.output
    (row,) = json.loads(js.output)
    assert row["port"] == "p0" and {e["spi"] for e in row["sas"]} == {0x101, 0x202}
    blob = f.read_bytes() + text.output.encode() + js.output.encode()
    for u in updates:
        assert u.key.hex().encode() not in blob and u.key not in blob and u.salt.hex().encode() not in blob
