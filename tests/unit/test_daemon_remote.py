"""edifd serving a remote (tenant) LUN: config -> HBA -> RemoteLun -> TCMU backstore sized by the
target's READ CAPACITY, CDBs forwarded unchanged, a real target on loopback TCP, no kernel."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edifd.config import ConfigError, parse_config
from edifd.daemon import Daemon
from edifd.scsi import ScsiCommand, ScsiResponse, Status
from tests.support.daemon import MIB, T_WWPN
from tests.support.daemon import FakeLio as _Lio
from tests.support.daemon import FakeTcmuHandler as _Handler
from tests.support.daemon import TargetThread as _TargetThread


def _config(tmp: Path, host: str, port: int):
    return parse_config({
        "daemon": {"state_dir": str(tmp)},
        "hba": {"io_timeout": 5, "port": [{"name": "p0", "wwpn": "21:00:00:1b:32:00:00:a1",
                                          "wwnn": "20:00:00:1b:32:00:00:a1", "target": f"{host}:{port}"}]},
        "lun": [{"name": "tenant0", "type": "remote", "hba_port": "p0",
                 "target_wwpn": f"{T_WWPN:016x}", "remote_lun": 0}],
    })


def _run(disk, command: ScsiCommand) -> ScsiResponse:
    r = disk.execute(command)
    if isinstance(r, ScsiResponse):
        return r
    done = threading.Event()
    out: list[ScsiResponse] = []
    r.on_done(lambda resp: (out.append(resp), done.set()))
    assert done.wait(10)
    return out[0]


def test_remote_lun_is_sized_by_the_target_and_forwards_io(tmp_path):
    target = _TargetThread(tmp_path)
    lio = _Lio()
    d = Daemon(_config(tmp_path, *target.address), lio=lio, open_handler=lambda uio, disk: _Handler())
    try:
        d.start()
        (served,) = d.luns
        (spec,) = lio.specs
        assert (spec.size, spec.block_size, spec.cfg) == (8 * MIB, 512, "remote")
        # TCMU must outlast the HBA's own I/O timeout plus an ABTS
        assert spec.effective_cmd_time_out >= 5 + 4
        inq = _run(served.disk, ScsiCommand(bytes([0x12, 0, 0, 0, 96, 0]), data_in_len=96))
        assert inq.status == Status.GOOD and inq.data[8:12] == b"EDIF"  # the target's own identity
        data = bytes(range(256)) * 16 * 64  # 256 KiB
        w = ScsiCommand(bytes([0x2A, 0]) + (2048).to_bytes(4, "big") + bytes([0]) + (512).to_bytes(2, "big")
                        + bytes([0]), data_out=data)
        assert _run(served.disk, w).status == Status.GOOD
        r = ScsiCommand(bytes([0x28, 0]) + (2048).to_bytes(4, "big") + bytes([0]) + (512).to_bytes(2, "big")
                        + bytes([0]), data_in_len=len(data))
        back = _run(served.disk, r)
        assert back.status == Status.GOOD and back.data == data
        with open(target.backing, "rb") as f:
            f.seek(2048 * 512)
            assert f.read(len(data)) == data
    finally:
        d.stop()
        target.close()
    assert d.hba is None


def test_remote_lun_config_problems_are_named():
    with pytest.raises(ConfigError) as e:
        parse_config({"lun": [{"name": "t", "type": "remote", "hba_port": "nope", "target_wwpn": "zz",
                               "size": "1M"}]})
    text = str(e.value)
    assert "lun[0].target_wwpn" in text
    assert "no [[hba.port]] named 'nope'" in text


def _config_sized(tmp: Path, host: str, port: int, size: str):
    cfg = _config(tmp, host, port)
    import dataclasses
    lun = dataclasses.replace(cfg.luns[0], size=int(size))
    return dataclasses.replace(cfg, luns=(lun,))


@pytest.mark.parametrize("size,expect", [(8 * MIB, "target capacity matches"), (4 * MIB, "target reports")])
def test_configured_size_serves_at_once_and_is_checked_after_login(tmp_path, caplog, size, expect):
    import logging
    import time

    caplog.set_level(logging.INFO, logger="edifd.daemon")
    target = _TargetThread(tmp_path)
    lio = _Lio()
    d = Daemon(_config_sized(tmp_path, *target.address, str(size)), lio=lio,
               open_handler=lambda uio, disk: _Handler())
    try:
        d.start()
        (spec,) = lio.specs
        assert spec.size == size  # served with the configured geometry, no READ CAPACITY first
        deadline = time.monotonic() + 10
        while expect not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expect in caplog.text
    finally:
        d.stop()
        target.close()


def test_status_lists_the_hba_ports_remote_port_and_login(tmp_path):
    from edifd.status import check_status, collect

    target = _TargetThread(tmp_path)
    d = Daemon(_config(tmp_path, *target.address), lio=_Lio(), open_handler=lambda uio, disk: _Handler())
    try:
        d.start()  # returns once the remote LUN answered READ CAPACITY: the port is logged in
        st = check_status(collect(d))
    finally:
        d.stop()
        target.close()
    (s,) = st["sessions"]
    assert s["port"] == "p0" and s["wwpn"] == "21:00:00:1b:32:00:00:a1" and s["connected"] is True
    assert s["remote_wwpn"] == ":".join(f"{T_WWPN:016x}"[i:i + 2] for i in range(0, 16, 2))
    assert s["state"] == "ready" and s["control_lun"] is None and "auth" not in s  # no EDIF engine here
    assert st["sas"] == []
