"""HBA ↔ target over real TCP on 127.0.0.1: login, discovery, I/O checked against the backing file,
several initiators, ABTS, link loss, RSCN, garbage on the socket, the tenant RemoteLun, SIGTERM.

Every test runs its own event loop under a hard time bound (`run`); waiting is on events and states,
never on sleeps used as assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from edifd.hba import SENSE_IO_TIMEOUT, SENSE_TARGET_GONE, Hba, PortConfig, SessionState, Timers
from edifd.hba.remote_lun import RemoteLun
from edifd.scsi import ScsiCommand, ScsiResponse, Status, cdb
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer

T_WWPN, T_WWNN = 0x2100001B32000002, 0x2000001B32000002
I_WWPN, I_WWNN = 0x2100001B320000A1, 0x2000001B320000A1
MIB = 1 << 20
FAST = Timers(io_timeout=5.0, login_timeout=1.0, abts_timeout=1.0, backoff_initial=0.02, backoff_max=0.2)


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@asynccontextmanager
async def rig(tmp: Path, *, initiators: int = 1, timers: Timers = FAST, pcap: bool = False,
              security: bool = False) -> AsyncIterator[tuple[TargetServer, Hba]]:
    luns = (LunConfig(0, str(tmp / "lun0.img"), 64 * MIB),
            LunConfig(3, str(tmp / "lun3.img"), 16 * MIB, 4096))
    ts = TargetServer(TargetConfig((TargetPortConfig("t0", T_WWPN, T_WWNN, ("127.0.0.1", 0), luns),)))
    await ts.start()
    addr = ts.ports[0].address
    ports = [PortConfig(f"p{n}", I_WWPN + n, I_WWNN + n, addr, security=security,
                        pcap_path=str(tmp / f"hba{n}.pcap") if pcap else None) for n in range(initiators)]
    hba = Hba(ports, timers)
    await hba.start()
    try:
        assert await hba.wait_ready(T_WWPN, 5.0)
        yield ts, hba
    finally:
        await hba.stop()
        await ts.stop()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def file_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def pattern(seed: int, n: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 64  # 2 KiB
    while len(out) < n:
        out += block
    return bytes(out[:n])


def test_login_discovery_and_counters(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (ts, hba):
            assert await hba.report_luns(T_WWPN) == [0, 3]
            (st,) = hba.remote_ports()
            assert (st.state, st.remote_wwpn, st.connected) == ("ready", T_WWPN, True)
            assert st.remote_counters["logins"] == 1 and st.counters["frames_out"] >= 3
            (ts_sess,) = ts.ports[0].sessions
            assert ts_sess.image_pair and ts_sess.initiator_wwpn == I_WWPN
            inq = await hba.execute(T_WWPN, 3, ScsiCommand(cdb.inquiry(255), data_in_len=255))
            # FCP_RESID_UNDER carries the short answer: data_len = the INQUIRY's own length
            assert inq.ok and inq.data[8:16] == b"EDIF    " and inq.data_len == inq.data[4] + 5 < 255
            cap = await hba.execute(T_WWPN, 3, ScsiCommand(cdb.read_capacity16(32), data_in_len=32))
            assert int.from_bytes(cap.data[:8], "big") == 16 * MIB // 4096 - 1
            assert int.from_bytes(cap.data[8:12], "big") == 4096
            for c in (cdb.tur(), cdb.mode_sense6(0x3F, 255)):
                r = await hba.execute(T_WWPN, 0, ScsiCommand(c, data_in_len=255 if c[0] == 0x1A else 0))
                assert r.ok
            bad = await hba.execute(T_WWPN, 9, ScsiCommand(cdb.tur()))
            assert bad.status == Status.CHECK_CONDITION and bad.sense[2] == 0x05 and bad.sense[12] == 0x25
    run(body())


def test_write_read_verify_sync_1_to_8_mib_against_backing_file(tmp_path: Path, monkeypatch: Any) -> None:
    import edifd.edges.file_medium as fm
    syncs: list[int] = []
    real_fdatasync = fm.os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        syncs.append(fd)
    monkeypatch.setattr(fm.os, "fdatasync", counting_fdatasync)

    async def body() -> None:
        async with rig(tmp_path) as (_ts, hba):
            lba = 0
            for n, size in enumerate((1 * MIB, 3 * MIB + 512, 8 * MIB)):
                data = pattern(n, size)
                blocks = size // 512
                w = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.write(lba, blocks, size=16, fua=n == 1),
                                                              data_out=data))
                assert w.ok, w.sense.hex()
                assert len(syncs) == (1 if n >= 1 else 0)  # the FUA write was flushed before GOOD
                rd = ScsiCommand(cdb.read(lba, blocks, size=16), data_in_len=size)
                r = await hba.execute(T_WWPN, 0, rd)
                assert r.ok and hashlib.sha256(r.data).digest() == hashlib.sha256(data).digest()
                assert file_range(tmp_path / "lun0.img", lba * 512, size) == data
                v = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.verify(lba, blocks, size=16), data_out=data))
                assert v.ok
                lba += blocks
            s = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.synchronize_cache()))
            assert s.ok and len(syncs) == 2  # SYNCHRONIZE CACHE flushed before GOOD
            wrong = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.verify(0, 1), data_out=bytes(512)))
            assert wrong.status == Status.CHECK_CONDITION and wrong.sense[2] == 0x0E  # MISCOMPARE
    run(body(), 40)


def test_several_initiators_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path, initiators=3) as (ts, hba):
            await until(lambda: all(p.session.ready for p in hba.ports))
            jobs = []
            for n, port in enumerate(hba.ports):
                for k in range(4):
                    data = pattern(100 + 4 * n + k, 256 * 1024)
                    lba = (n * 4 + k) * 512
                    jobs.append((lba, data, port.execute(0, ScsiCommand(cdb.write(lba, 512), data_out=data))))
            results = await asyncio.gather(*(j[2] for j in jobs))
            assert all(r.ok for r in results)
            for lba, data, _ in jobs:
                assert file_range(tmp_path / "lun0.img", lba * 512, len(data)) == data
            assert len(ts.ports[0].sessions) == 3
            assert {s.initiator_wwpn for s in ts.ports[0].sessions} == {I_WWPN, I_WWPN + 1, I_WWPN + 2}
    run(body(), 30)


def test_two_target_ports_each_with_its_own_wwpn(tmp_path: Path) -> None:
    t2 = T_WWPN + 0x10

    async def body() -> None:
        ports = tuple(TargetPortConfig(f"t{n}", w, w - 1, ("127.0.0.1", 0),
                                       (LunConfig(0, str(tmp_path / f"t{n}.img"), 4 * MIB),))
                      for n, w in enumerate((T_WWPN, t2)))
        ts = TargetServer(TargetConfig(ports))
        await ts.start()
        hba = Hba([PortConfig(f"p{n}", I_WWPN + n, I_WWNN + n, p.address) for n, p in enumerate(ts.ports)],
                  FAST)
        await hba.start()
        try:
            assert await hba.wait_ready(T_WWPN, 5.0) and await hba.wait_ready(t2, 5.0)
            for n, wwpn in enumerate((T_WWPN, t2)):
                data = pattern(300 + n, 8192)
                assert (await hba.execute(wwpn, 0, ScsiCommand(cdb.write(0, 16), data_out=data))).ok
                assert file_range(tmp_path / f"t{n}.img", 0, 8192) == data
            assert {p.remote_wwpn for p in hba.remote_ports()} == {T_WWPN, t2}
        finally:
            await hba.stop()
            await ts.stop()
    run(body())


def test_command_timeout_aborts_with_abts(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (ts, hba):
            ts.ports[0].stall = True  # the target accepts the command and never answers it
            r = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.read(0, 8), data_in_len=4096), timeout=0.3)
            assert r.status == Status.CHECK_CONDITION and r.sense == SENSE_IO_TIMEOUT
            c = hba.ports[0].session.counters
            assert (c.aborts, c.timeouts) == (1, 1)
            assert ts.ports[0].sessions[0].counters.aborts == 1  # BA_ACC came from the target
            assert hba.ports[0].counters.link_resets == 0  # ABTS answered: no link reset needed
            ts.ports[0].stall = False
            assert (await hba.execute(T_WWPN, 0, ScsiCommand(cdb.tur()))).ok
    run(body())


def test_link_loss_mid_io_relogin_completes_everything_correctly(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (ts, hba):
            port = ts.ports[0]
            port.stall = True  # hold the commands in flight ...
            datas = [pattern(200 + k, 512 * 1024) for k in range(8)]
            tasks = [asyncio.ensure_future(hba.execute(T_WWPN, 0, ScsiCommand(
                cdb.write(k * 1024, 1024), data_out=d))) for k, d in enumerate(datas)]
            await until(lambda: port.sessions and port.sessions[0].active_exchanges == 8)
            port.stall = False
            port.drop_links()  # ... and lose the link under them
            results = await asyncio.gather(*tasks)
            assert all(r.ok for r in results), [r.sense.hex() for r in results]
            for k, d in enumerate(datas):
                assert file_range(tmp_path / "lun0.img", k * 1024 * 512, len(d)) == d
            st = hba.ports[0]
            assert st.counters.link_resets == 1 and st.counters.connects == 2
            assert st.session.counters.requeued == 8 and st.session.counters.logins == 2
            rd = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.read(0, 1024), data_in_len=512 * 1024))
            assert rd.data == datas[0]
    run(body())


def test_repeated_link_cuts_during_streaming_writes_lose_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (_ts, hba):
            port = hba.ports[0]
            datas = [pattern(400 + k, 256 * 1024) for k in range(24)]
            sem = asyncio.Semaphore(4)

            async def one(k: int) -> ScsiResponse:
                async with sem:
                    cmd = ScsiCommand(cdb.write(k * 512, 512), data_out=datas[k])
                    return await hba.execute(T_WWPN, 0, cmd)

            tasks = [asyncio.ensure_future(one(k)) for k in range(24)]
            cuts = 0
            mark = port.counters.frames_out
            while not all(t.done() for t in tasks) and cuts < 3:
                if port.session.ready and port.session.outstanding and port.counters.frames_out > mark + 150:
                    port.drop_link()  # cut wherever the byte stream happens to be
                    cuts += 1
                    mark = port.counters.frames_out
                await asyncio.sleep(0.002)
            results = await asyncio.gather(*tasks)
            assert all(r.ok for r in results), [r.sense.hex() for r in results if not r.ok]
            for k, d in enumerate(datas):
                assert file_range(tmp_path / "lun0.img", k * 512 * 512, len(d)) == d
            assert cuts == 3 and port.session.counters.requeued >= 3
            assert port.counters.link_resets == cuts and port.session.counters.logins == cuts + 1
    run(body(), 30)


def test_link_down_longer_than_io_timeout_fails_with_documented_sense(tmp_path: Path) -> None:
    timers = Timers(io_timeout=0.5, login_timeout=1.0, abts_timeout=1.0, backoff_initial=0.02,
                    backoff_max=0.1)

    async def body() -> None:
        async with rig(tmp_path, timers=timers) as (ts, hba):
            await ts.ports[0].stop()  # the target port disappears: connection refused from now on
            await hba.ports[0].wait_state(SessionState.DOWN, timeout=5.0)
            cmds = [ScsiCommand(cdb.write(k, 1), data_out=bytes(512)) for k in range(4)]
            rs = await asyncio.gather(*(hba.execute(T_WWPN, 0, c) for c in cmds))
            assert all(r.status == Status.CHECK_CONDITION and r.sense == SENSE_IO_TIMEOUT for r in rs)
            assert hba.ports[0].counters.connect_failures >= 1
            assert hba.ports[0].session.counters.timeouts == 4
    run(body())


def test_rscn_target_gone_fails_commands_cleanly(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (ts, hba):
            ts.ports[0].stall = True
            inflight = asyncio.ensure_future(hba.execute(T_WWPN, 0, ScsiCommand(cdb.tur())))
            await until(lambda: ts.ports[0].sessions[0].active_exchanges == 1)
            ts.ports[0].go_offline()  # RSCN naming itself, then LS_RJT to the re-PLOGI
            await hba.ports[0].wait_state(SessionState.GONE, timeout=5.0)
            r = await inflight
            assert r.status == Status.CHECK_CONDITION and r.sense == SENSE_TARGET_GONE
            r2 = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.read(0, 1), data_in_len=512))
            assert r2.sense == SENSE_TARGET_GONE and r2.data == bytes(512)
            assert hba.ports[0].session.counters.errors == 2
    run(body())


def test_garbage_on_the_socket_resets_the_link_and_recovers(tmp_path: Path) -> None:
    async def body() -> None:
        async with rig(tmp_path) as (ts, hba):
            ts.ports[0].inject_raw(b"GARBAGE! not an FCIP header" * 3)  # target -> HBA
            await until(lambda: hba.ports[0].counters.link_resets == 1)
            assert await hba.wait_ready(T_WWPN, 5.0)
            assert hba.ports[0].counters.decode_errors == {"bad_encap_header": 1}
            data = pattern(7, 64 * 1024)
            assert (await hba.execute(T_WWPN, 0, ScsiCommand(cdb.write(0, 128), data_out=data))).ok
            hba.ports[0].inject_raw(bytes(64))  # HBA -> target
            await until(lambda: ts.ports[0].counters.link_resets == 1)
            assert ts.ports[0].counters.decode_errors == {"bad_encap_header": 1}
            await until(lambda: hba.ports[0].counters.connects == 3)
            r = await hba.execute(T_WWPN, 0, ScsiCommand(cdb.read(0, 128), data_in_len=len(data)))
            assert r.ok and r.data == data
    run(body())


def test_remote_lun_from_another_thread(tmp_path: Path) -> None:
    luns = (LunConfig(0, str(tmp_path / "lun0.img"), 32 * MIB),)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def target_thread() -> None:
        async def serve() -> None:
            ts = TargetServer(TargetConfig((TargetPortConfig("t0", T_WWPN, T_WWNN, ("127.0.0.1", 0), luns),)))
            await ts.start()
            holder["addr"], holder["stop"] = ts.ports[0].address, asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await holder["stop"].wait()
            await ts.stop()
        asyncio.run(serve())

    th = threading.Thread(target=target_thread, daemon=True)
    th.start()
    assert ready.wait(10)
    hba = Hba([PortConfig("p0", I_WWPN, I_WWNN, holder["addr"], remote_wwpn=T_WWPN)], FAST)
    hba.start_thread()
    try:
        rl = RemoteLun(hba, T_WWPN, 0, io_timeout=5.0)
        rl.attach(5.0)
        assert (rl.block_size, rl.num_blocks) == (512, 32 * MIB // 512)
        data = pattern(9, MIB)
        done: list[ScsiResponse] = []
        ev = threading.Event()
        p = rl.execute(ScsiCommand(cdb.write(2048, 2048), data_out=data))
        p.on_done(lambda r: (done.append(r), ev.set()))
        assert ev.wait(10) and done[0].ok
        fut = hba.submit(T_WWPN, 0, ScsiCommand(cdb.read(2048, 2048), data_in_len=MIB))
        assert fut.result(10).data == data
        assert file_range(tmp_path / "lun0.img", 2048 * 512, MIB) == data
        (st,) = hba.status()
        assert st.state == "ready" and st.remote_counters["completed"] >= 3
        unknown = hba.submit(0x2100DEADBEEF0000, 0, ScsiCommand(cdb.tur())).result(5)
        assert unknown.sense == SENSE_TARGET_GONE
    finally:
        hba.stop_thread()
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        th.join(10)


def test_edif_target_cli_sigterm_logs_out_and_exits(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tcp = s.getsockname()[1]
    conf = tmp_path / "target.toml"
    conf.write_text(f"""
[[port]]
name = "t0"
wwpn = "21:00:00:1b:32:00:00:02"
wwnn = "20:00:00:1b:32:00:00:02"
listen = "127.0.0.1:{tcp}"
  [[port.lun]]
  lun = 0
  path = "{tmp_path / 'cli-lun0.img'}"
  size = "8MiB"
""")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "edifd.target.cli", "run", "--config", str(conf)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        async def body() -> None:
            hba = Hba([PortConfig("p0", I_WWPN, I_WWNN, ("127.0.0.1", tcp), remote_wwpn=T_WWPN)], FAST)
            await hba.start()
            try:
                assert await hba.wait_ready(T_WWPN, 10.0)
                data = pattern(11, 128 * 1024)
                assert (await hba.execute(T_WWPN, 0, ScsiCommand(cdb.write(0, 256), data_out=data))).ok
                proc.send_signal(signal.SIGTERM)
                await hba.ports[0].wait_state(SessionState.PLOGI, SessionState.DOWN, timeout=10.0)
            finally:
                await hba.stop()
        run(body(), 30)
        err = proc.communicate(timeout=15)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "LOGO sent to initiator 21:00:00:1b:32:00:00:a1" in err and "stopped" in err, err
    assert file_range(tmp_path / "cli-lun0.img", 0, 128 * 1024) == pattern(11, 128 * 1024)
    assert os.stat(tmp_path / "cli-lun0.img").st_size == 8 * MIB
