"""The control LUN as edifd serves it: config -> ChannelCore, key file, state file across a restart,
VPD 0x83 port WWPN, the heartbeat ticker, and the core under concurrent threads."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from edifd.channel import ChannelCore
from edifd.channel.hoststate import RECORD_SIZE
from edifd.channel.loopback import Loopback, write_cdb
from edifd.config import ConfigError, parse_config
from edifd.daemon import Daemon, DaemonError
from edifd.edges.heartbeat import HeartbeatTicker
from edifd.proto import Keepalive, PortOnline, PortRef
from edifd.scsi import ScsiCommand, ScsiDisk
from edifd.scsi import Status as ScsiStatus
from edifd.scsi.sense import SenseData
from guest_agent.client import ChannelClient
from tests.support.channel import KEY, established
from tests.support.clock import Clock

WWPN = 0x2100_0024_FF00_0001


class _Backstore:
    uio_name = "uio-test"
    path = Path("user_0/ctl0")


class _Lio:
    def prepare(self, fabrics):
        pass

    def find_backstore(self, spec):
        return None

    def create_backstore(self, spec):
        return _Backstore()


class _Handler:
    stats: dict = {}

    def __init__(self, disk: ScsiDisk) -> None:
        self.disk = disk

    def start(self) -> None:
        pass

    def stop(self) -> bool:
        return True


def _config(tmp_path: Path, **lun):
    t = {"name": "ctl0", "type": "control", "size": "16MiB", "wwpn": "21:00:00:24:ff:00:00:01", **lun}
    return parse_config({"daemon": {"state_dir": str(tmp_path)}, "lun": [t]})


def _key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    p = tmp_path / "vm1.key"
    p.write_text(KEY.material.hex() + "\n")
    os.chmod(p, mode)
    return p


def _serve(cfg) -> tuple[Daemon, ScsiDisk, ChannelCore]:
    handlers: list[_Handler] = []

    def open_handler(uio, disk):
        handlers.append(_Handler(disk))
        return handlers[-1]

    d = Daemon(cfg, lio=_Lio(), open_handler=open_handler)
    d.start()
    core = d.luns[0].medium
    assert isinstance(core, ChannelCore)
    return d, handlers[0].disk, core


def test_daemon_serves_the_channel_and_a_restart_recognises_the_retried_write(tmp_path):
    cfg = _config(tmp_path, channel_key=str(_key_file(tmp_path)), port_index=0)
    d, disk, core = _serve(cfg)
    try:
        vpd83 = disk.execute(ScsiCommand(bytes([0x12, 1, 0x83, 0, 255, 0]), data_in_len=255)).data
        assert WWPN.to_bytes(8, "big") in vpd83  # the port this control LUN represents
        client = ChannelClient(KEY, capacity_blocks=core.num_blocks)
        lb = Loopback(disk, client)
        client.start()
        lb.pump()
        assert client.established
        from edifd.status import collect

        entry = collect(d)["luns"][0]
        assert entry["parked_reads"] == 4 and entry["medium"]["epochs"] == 1
        assert KEY.material.hex() not in repr(entry)
        client.request(Keepalive())
        w = client.next_write()
        last = write_cdb(w.lba, w.payload, 512)
        assert disk.execute(last).status == ScsiStatus.GOOD
    finally:
        d.stop()
    assert (tmp_path / "ctl0.channel-state").stat().st_size == RECORD_SIZE == 72
    d2, disk2, core2 = _serve(cfg)
    try:
        assert disk2.execute(last).status == ScsiStatus.GOOD and core2.counters["retries"] == 1
        assert core2.counters["events_posted"] == 1  # HOST_RESET for the next epoch
    finally:
        d2.stop()


def test_control_lun_without_key_refuses_every_write(tmp_path, caplog):
    # Another test's in-process CLI run may have set the root logger's level (logging.basicConfig).
    caplog.set_level(logging.WARNING, logger="edifd.daemon")
    d, disk, core = _serve(_config(tmp_path))
    try:
        client = ChannelClient(KEY, capacity_blocks=core.num_blocks)
        client.start()
        w = client.next_write()
        resp = disk.execute(write_cdb(w.lba, w.payload, 512))
        assert resp.status == ScsiStatus.CHECK_CONDITION
        assert SenseData.parse(resp.sense).asc == 0x74
    finally:
        d.stop()
    assert "no channel_key" in caplog.text


def test_unsafe_key_file_stops_the_daemon_with_the_path_not_the_key(tmp_path):
    p = _key_file(tmp_path, 0o644)
    with pytest.raises(DaemonError) as e:
        _serve(_config(tmp_path, channel_key=str(p)))
    assert str(p) in str(e.value) and KEY.material.hex() not in str(e.value)


@pytest.mark.parametrize(("lun", "problem"), [
    ({"port_index": 70000}, "lun[0].port_index"),
    ({"wwpn": "xyz"}, "lun[0].wwpn"),
    ({"queue_limit": 500}, "lun[0].queue_limit: 2..91"),
    ({"size": "4MiB"}, "lun[0].size"),
])
def test_control_config_problems_are_named_by_key_path(tmp_path, lun, problem):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, **lun)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_control_keys_on_a_file_lun_and_two_luns_for_one_port_are_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_config({"lun": [{"name": "d", "size": "1MiB", "channel_key": "k"},
                              {"name": "a", "type": "control", "size": "16MiB"},
                              {"name": "b", "type": "control", "size": "16MiB"}]})
    text = "; ".join(e.value.problems)
    assert "lun[0].channel_key: only for type" in text and "port_index 0" in text


def test_heartbeat_ticker_completes_parked_reads():
    lb, core, client = established(time.monotonic, park_time=0.1)  # the real clock, as in the daemon
    assert core.status()["parked"] == 4
    ticker = HeartbeatTicker([core], interval=0.02)
    ticker.start()
    try:
        deadline = time.monotonic() + 5
        while core.status()["parked"] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        ticker.stop()
    assert core.status()["parked"] == 0 and len(lb.done_reads()) == 4


def test_events_from_many_threads_arrive_once_in_order():
    lb, core, client = established(Clock(), queue_limit=64)
    n_threads, per = 4, 50
    posted: list[int] = []
    lock = threading.Lock()

    def post(k: int) -> None:
        for i in range(per):
            while True:
                seq = core.post_event(PortOnline(PortRef(k * 1000 + i + 1)))
                if seq is not None:
                    with lock:
                        posted.append(seq)
                    break
                time.sleep(0.001)  # full: let the agent drain (nothing here is timed)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    got = []
    for _ in range(100_000):  # a bound, not a timing assertion
        if not any(t.is_alive() for t in threads) and len(got) >= len(posted):
            break
        got += lb.pump()
    for t in threads:
        t.join()
    got += lb.pump()
    events = [m for m in got if isinstance(m.body, PortOnline)]
    assert [m.sequence for m in got] == sorted({m.sequence for m in got})
    assert sorted(m.sequence for m in events) == sorted(posted)
    per_thread = {}
    for m in events:  # each thread's events keep their order
        k, i = divmod(m.body.port.wwpn - 1, 1000)
        assert per_thread.get(k, -1) < i
        per_thread[k] = i
    assert len(events) == n_threads * per


def test_write16_cdb_is_accepted_too():
    lb, core, client = established(Clock())
    client.request(Keepalive())
    w = client.next_write()
    cdb = struct.pack(">BBQIBB", 0x8A, 0, w.lba, len(w.payload) // 512, 0, 0)
    resp = lb.disk.execute(ScsiCommand(cdb, data_out=w.payload))
    assert resp.status == ScsiStatus.GOOD and core.counters["messages_in"] == 1
