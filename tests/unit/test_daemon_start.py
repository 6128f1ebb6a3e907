"""A start that fails, or is stopped (SIGTERM) during start-up, removes only the LIO objects this run
created: a backstore re-attached from an earlier edifd, and its exports, stay in place (guests see a
pause), its ring released as the normal stop releases it. `edifd run` end to end on fake LIO."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edifd.cli import edifd_main
from edifd.config import parse_config
from edifd.daemon import Daemon, DaemonError, StartInterrupted
from edifd.edges.command_line import EXIT_CONFIG
from tests.support.daemon import LioState, RecordingHandler

KEY_HEX = bytes(range(32)).hex()


def _toml(tmp: Path, key: Path, luns: tuple[str, ...] = ("data0",)) -> Path:
    text = f'[daemon]\nstate_dir = "{tmp}"\n'
    for name in luns:
        text += (f'[[lun]]\nname = "{name}"\nsize = "1MiB"\n'
                 '[lun.export]\nfabric = "iscsi"\ndemo_mode = true\n')
    text += f'[[lun]]\nname = "ctl0"\ntype = "control"\nsize = "16MiB"\nchannel_key = "{key}"\n'
    p = tmp / "edifd.toml"
    p.write_text(text)
    return p


def _good_key(tmp: Path) -> Path:
    p = tmp / "vm1.key"
    p.write_text(KEY_HEX + "\n")
    os.chmod(p, 0o600)
    return p


@pytest.fixture
def kernel(monkeypatch):
    """`edifd run` against LioState and RecordingHandlers; SIGTERM is whatever the test calls."""
    lio = LioState()
    handlers: list[RecordingHandler] = []
    signals: dict[int, object] = {}

    def open_handler(uio_name, disk, stop_response=None):
        handlers.append(RecordingHandler(uio_name, disk))
        return handlers[-1]

    monkeypatch.setattr("edifd.daemon.Lio", lambda: lio)
    monkeypatch.setattr("edifd.daemon.TcmuHandler", SimpleNamespace(open=open_handler))
    monkeypatch.setattr("edifd.cli.signal.signal", lambda sig, fn: signals.__setitem__(sig, fn))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    return SimpleNamespace(lio=lio, handlers=handlers, signals=signals)


def _run(config: Path, *extra: str):
    return CliRunner().invoke(edifd_main, ["run", "--config", str(config), *extra])


def test_failed_start_leaves_the_adopted_lun_in_place(tmp_path, kernel, caplog):
    caplog.set_level(logging.INFO, logger="edifd")
    data0 = kernel.lio.leave("data0")  # the previous edifd's disk, exported to guests
    missing = tmp_path / "keys" / "vm1.kye"  # the typo
    config = _toml(tmp_path, missing)
    # check-config now catches the typo (issue 10, item 4); `run` must still fail safely without it.
    checked = CliRunner().invoke(edifd_main, ["check-config", "--config", str(config)])
    assert checked.exit_code == EXIT_CONFIG and f"cannot open channel key file {missing}" in checked.output

    r = _run(config)

    assert r.exit_code == 1
    assert f"cannot start: cannot open channel key file {missing}" in caplog.text
    assert kernel.lio.removed == []  # neither data0's LUN nor its backstore
    assert kernel.lio.backstores == {"data0": data0} and len(data0.so.attached_luns) == 1
    (h,) = kernel.handlers  # data0's ring: re-attached, then released (the device stays blocked)
    assert h.uio_name == data0.uio_name and h.started and h.stopped
    assert "lun data0: start failed: removed nothing; left in place: backstore user_0/data0 and its " \
           "1 LUN(s), re-attached from an earlier edifd" in caplog.text


def test_failed_start_removes_the_lun_it_created(tmp_path, kernel, caplog):
    caplog.set_level(logging.INFO, logger="edifd")
    r = _run(_toml(tmp_path, tmp_path / "nope.key"))

    assert r.exit_code == 1 and "cannot start: cannot open channel key file" in caplog.text
    assert kernel.lio.created == ["backstore data0", "export iqn.2026-11.io.edifd:data0"]
    # the export first (while the ring is served), then the backstore, after its ring stopped
    assert kernel.lio.removed == ["export iqn.2026-11.io.edifd:data0", "backstore data0"]
    assert kernel.lio.backstores == {} and kernel.handlers[0].stopped
    assert "lun data0: start failed: removed iSCSI export iqn.2026-11.io.edifd:data0 and backstore " \
           "user_0/data0 (created by this start); left in place: nothing" in caplog.text


def test_sigterm_during_start_up_removes_only_what_this_start_created(tmp_path, kernel, caplog):
    caplog.set_level(logging.INFO, logger="edifd")
    data0 = kernel.lio.leave("data0")

    def sigterm_while_data1_starts(spec):
        if spec.name == "data1":
            kernel.signals[signal.SIGTERM](signal.SIGTERM, None)

    kernel.lio.on_create = sigterm_while_data1_starts
    r = _run(_toml(tmp_path, _good_key(tmp_path), luns=("data0", "data1", "data2")))

    assert r.exit_code == 0, r.output
    assert kernel.lio.removed == ["export iqn.2026-11.io.edifd:data1", "backstore data1"]
    assert kernel.lio.created == ["backstore data1", "export iqn.2026-11.io.edifd:data1"]  # no data2
    assert kernel.lio.backstores == {"data0": data0} and len(data0.so.attached_luns) == 1
    assert [h.stopped for h in kernel.handlers] == [True, True]
    assert not (tmp_path / "status.json").exists()  # never announced as serving
    assert "stopped during start-up, before lun data2" in caplog.text
    assert "lun data1: start stopped: removed iSCSI export iqn.2026-11.io.edifd:data1 and backstore " \
           "user_0/data1 (created by this start); left in place: nothing" in caplog.text
    assert "lun data0: start stopped: removed nothing; left in place: backstore user_0/data0" in caplog.text


def test_sigterm_after_start_up_keeps_everything_by_default(tmp_path, kernel, monkeypatch):
    # Not a start-up any more: --keep-lio (the default) leaves the LUN this run created as well.
    kernel.lio.leave("data0")
    ready = tmp_path / "ready"
    import edifd.cli

    real = edifd.cli._write_status

    def write_status_then_sigterm(path, data):  # the first status write comes after start() returned
        real(path, data)
        kernel.signals[signal.SIGTERM](signal.SIGTERM, None)

    monkeypatch.setattr(edifd.cli, "_write_status", write_status_then_sigterm)
    r = _run(_toml(tmp_path, _good_key(tmp_path), luns=("data0", "data1")), "--ready-file", str(ready))
    assert r.exit_code == 0 and ready.exists()
    assert kernel.lio.removed == [] and sorted(kernel.lio.backstores) == ["ctl0", "data0", "data1"]


# -- the daemon alone -------------------------------------------------------------------------------
def _daemon(tmp: Path, lio: LioState, luns: list[dict], handlers: list[RecordingHandler], **kw) -> Daemon:
    cfg = parse_config({"daemon": {"state_dir": str(tmp)}, "lun": luns})

    def open_handler(uio_name, disk):
        handlers.append(RecordingHandler(uio_name, disk))
        return handlers[-1]

    return Daemon(cfg, lio=lio, open_handler=open_handler, **kw)


def test_stop_event_set_before_start_touches_nothing(tmp_path):
    import threading

    lio, handlers, stop = LioState(), [], threading.Event()
    stop.set()
    d = _daemon(tmp_path, lio, [{"name": "data0", "size": "1MiB"}], handlers, stop_requested=stop)
    with pytest.raises(StartInterrupted, match="before lun data0"):
        d.start()
    assert lio.created == [] and handlers == [] and d.luns == []


def test_a_backstore_whose_handler_fails_to_start_is_removed(tmp_path):
    # No export: the daemon creates the backstore itself (Lio.setup rolls back the exported case).
    lio, handlers = LioState(), []
    d = _daemon(tmp_path, lio, [{"name": "data0", "size": "1MiB"}], handlers)
    d._open_handler = lambda uio, disk: (_ for _ in ()).throw(OSError(16, "Device or resource busy"))
    with pytest.raises(DaemonError, match="busy"):
        d.start()
    assert lio.created == ["backstore data0"] and lio.removed == ["backstore data0"]


def test_an_adopted_backstore_whose_handler_fails_to_start_stays(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edifd")
    lio, handlers = LioState(), []
    lio.leave("data0")
    d = _daemon(tmp_path, lio, [{"name": "data0", "size": "1MiB"}], handlers)
    d._open_handler = lambda uio, disk: (_ for _ in ()).throw(OSError(16, "Device or resource busy"))
    with pytest.raises(DaemonError):
        d.start()
    assert lio.removed == [] and "data0" in lio.backstores
    assert "lun data0: failed to start; left in place: backstore user_0/data0" in caplog.text


def test_run_serves_status_on_the_control_socket_and_removes_it_at_exit(tmp_path, kernel, monkeypatch):
    import edifd.cli
    from edifd.edges.control_socket import SOCKET_FILE, request

    sock = tmp_path / SOCKET_FILE
    seen: dict = {}

    def at_ready(state):  # READY=1 comes once every LUN is served and the socket listens
        if state == "READY=1":
            seen["mode"] = os.stat(sock).st_mode & 0o777
            seen["status"] = request(sock, "status")
            seen["level"] = request(sock, "log-level")
            kernel.signals[signal.SIGTERM](signal.SIGTERM, None)

    monkeypatch.setattr(edifd.cli, "_notify_systemd", at_ready)
    r = _run(_toml(tmp_path, _good_key(tmp_path), luns=("data0",)))
    assert r.exit_code == 0, r.output
    assert seen["mode"] == 0o600 and seen["status"]["state"] == "running"
    assert sorted(lun["name"] for lun in seen["status"]["luns"]) == ["ctl0", "data0"]
    assert seen["level"]["level"] in ("debug", "info", "warning", "error")
    assert not sock.exists()
