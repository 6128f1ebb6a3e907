"""edifd wiring of the EDIF engine: a control LUN becomes the channel of its HBA port (by WWPN, else
by port_index), control LUNs are served before remote LUNs, and a control LUN with no HBA port
behind it keeps the static answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edifd.channel import BasicHandler, ChannelCore
from edifd.config import parse_config
from edifd.daemon import Daemon, DaemonError
from edifd.hba import RequireAuthWhenSecure
from edifd.proto import ChannelKey
from edifd.runtime.engine import EdifEngine
from tests.support.daemon import T_WWPN
from tests.support.daemon import FakeLio as _Lio
from tests.support.daemon import FakeTcmuHandler as _Handler
from tests.support.daemon import TargetThread as _TargetThread

KEY = ChannelKey(bytes(range(7, 39)))
P0, P1 = "21:00:00:1b:32:00:00:a1", "21:00:00:1b:32:00:00:a2"


def _key(tmp: Path) -> str:
    p = tmp / "vm.key"
    p.write_text(KEY.material.hex() + "\n")
    os.chmod(p, 0o600)
    return str(p)


def _config(tmp: Path, host: str, port: int, control: list[dict]):
    hba_ports = [{"name": n, "wwpn": w, "wwnn": w.replace("21:", "20:", 1), "target": f"{host}:{port}"}
                 for n, w in (("p0", P0), ("p1", P1))]
    luns = [{"name": "tenant0", "type": "remote", "hba_port": "p0", "target_wwpn": f"{T_WWPN:016x}"},
            *({"type": "control", "size": "16MiB", "channel_key": _key(tmp), **c} for c in control)]
    return parse_config({"daemon": {"state_dir": str(tmp)}, "hba": {"io_timeout": 5, "port": hba_ports},
                         "lun": luns})


def test_control_luns_get_the_engine_of_their_hba_port(tmp_path):
    target = _TargetThread(tmp_path)
    cfg = _config(tmp_path, *target.address, [{"name": "ctl1", "port_index": 1, "wwpn": P1},
                                             {"name": "ctl0", "port_index": 0}])
    d = Daemon(cfg, lio=_Lio(), open_handler=lambda uio, disk: _Handler())
    try:
        d.start()
        assert [s.config.type for s in d.luns] == ["control", "control", "remote"]  # remote last
        assert d.hba is not None and isinstance(d.hba.ports[0].session.policy, RequireAuthWhenSecure)
        by_name = {s.config.name: s.medium for s in d.luns}
        for name, port in (("ctl1", d.hba.ports[1]), ("ctl0", d.hba.ports[0])):
            core = by_name[name]
            assert isinstance(core, ChannelCore) and isinstance(core.handler, EdifEngine)
            assert core.handler is d.engines[name] and core.state is core.handler
            assert d.engines[name].port is port  # ctl1 by its WWPN, ctl0 by port_index
        assert d.engines["ctl1"].port_info().wwpn == 0x2100001B320000A2
    finally:
        d.stop()
        target.close()
    assert d.engines == {} and d.hba is None


def test_two_control_luns_for_one_hba_port_are_refused(tmp_path):
    target = _TargetThread(tmp_path)
    cfg = _config(tmp_path, *target.address, [{"name": "ctlA", "port_index": 0, "wwpn": P1},
                                             {"name": "ctlB", "port_index": 1}])
    d = Daemon(cfg, lio=_Lio(), open_handler=lambda uio, disk: _Handler())
    try:
        with pytest.raises(DaemonError, match="hba port p1 already has a control LUN"):
            d.start()
    finally:
        d.stop()
        target.close()


def test_control_lun_without_an_hba_port_keeps_static_answers(tmp_path):
    target = _TargetThread(tmp_path)
    cfg = _config(tmp_path, *target.address, [{"name": "ctl9", "port_index": 5}])
    d = Daemon(cfg, lio=_Lio(), open_handler=lambda uio, disk: _Handler())
    try:
        d.start()
        core = next(s.medium for s in d.luns if s.config.name == "ctl9")
        assert isinstance(core, ChannelCore) and isinstance(core.handler, BasicHandler)
        assert d.engines == {}
    finally:
        d.stop()
        target.close()
