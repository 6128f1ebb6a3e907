"""EDIF control-plane figures: secure sessions established per second, and the I/O stall of a rekey.

1. Sessions per second for 1, 64 and 1,000 targets (in-process, native). One session = our `Initiator`
   and a `Responder` (FC profile: ID_FC_NAME, FC_ESP_HEADER, TS type 9; PSK; X25519; child AES-GCM-128)
   through IKE_SA_INIT + IKE_AUTH, then the child SA pair installed into a `SaDatabase` on each side.
   For N targets, N initiators start at once and one thread serves every IKE message in arrival order
   (a FIFO), as one control plane would after a host boot; for 1 target, sessions run one after another.
   Reported: sessions/s, per-session latency (start to both sides' SAs installed: includes queueing
   behind the other sessions) and per-session service time (the CPU spent on its own messages), p50/p99
   in ms. The messages are handed over in memory: no AUTH_ELS framing, no FC link, no control channel.
   The same through the whole edifd path for 1 and 64 targets (--engine-targets): per target an HBA port
   with its EdifEngine, a control LUN (ChannelCore over the in-process loopback SCSI) and the agent's
   SecurityApp + ChannelClient, an FC link over 127.0.0.1 to its own EDIF target port (AuthResponder, PSK);
   latency = application start (APP_START done) to PRLI done after AUTH_OK. One thread pumps every agent.
2. The longest I/O stall during a rekey under load: 64 KiB READs and WRITEs (alternating, QD 4) through
   a secure `Hba` <-> `TargetPort` session over 127.0.0.1 (bench/edif.py's rig: both ends on one asyncio
   loop, SAs from an in-memory IKE negotiation). Run once without and once with --rekeys evenly spaced:
   CREATE_CHILD_SA (REKEY_SA) between the two IKE SAs; target: new RX; initiator: new RX, new TX (the
   switch), delete old TX, delete old RX (deferred until 3 frames on the new SA); target: new TX on the
   first frame verified on its new RX SA; then the INFORMATIONAL Delete of the old pair, and the target
   deletes it. Reported for the windows around the rekeys (and the same windows of the run without): max and
   p99 per-I/O latency, the longest gap between two I/O completions, and I/O errors (must be 0).
   Then the same with the whole path: a session secured by the agent through the control channel and
   the engine, and the rekey the agent starts itself (lifetime policy) halfway through the stream.
The final line of output is one JSON object. MB = 10^6 bytes.

    python3 bench/edif_scale.py [--quick] [--targets 1,64,1000] [--engine-targets 1,64] [--seconds 3]
                                [--rekeys 3] [--budget 240]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cryptography  # noqa: E402
from edif import (  # noqa: E402
    BENCH_PSK,
    I_WWPN,
    MIB,
    T_WWPN,
    Rig,
    close_rig,
    ike_configs,
    install_pair,
    open_rig,
)
from engine_rig import Agent, BenchFailure, wait_for  # noqa: E402

from edifd.edif import SaDatabase  # noqa: E402
from edifd.hba import Hba, PortConfig, RequireAuthWhenSecure, SessionState, Timers  # noqa: E402
from edifd.ike import (  # noqa: E402
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    Initiator,
    NegotiationFailed,
    Responder,
    Send,
)
from edifd.proto import ChannelKey, SaDirection  # noqa: E402
from edifd.runtime.engine import EdifEngine  # noqa: E402
from edifd.secapp.config import IkePolicy, PeerPolicy, PskCredentials, RekeyPolicy, SecConfig  # noqa: E402
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer  # noqa: E402

KIB = 1024
HOST_WWPN = 0x2000001B32C00001
TARGET_BASE = 0x2100001B32D00000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- 1. sessions per second ---------------------------------------------------------------------------------


@dataclass
class _Session:
    ini: Initiator
    res: Responder
    sadb_i: SaDatabase = field(default_factory=SaDatabase)
    sadb_r: SaDatabase = field(default_factory=SaDatabase)
    sides: int = 0  # sides with their child SA pair installed
    service: float = 0.0  # seconds spent on this session's messages and installs
    started: float = 0.0
    done: float | None = None


def _establish(targets: int, deadline: float) -> list[_Session]:
    """Start `targets` sessions at once and serve their IKE messages first come, first served."""
    sessions = []
    for k in range(targets):
        ci, cr = ike_configs(HOST_WWPN, TARGET_BASE + k)
        sessions.append(_Session(Initiator(ci), Responder(cr)))
    queue: deque[tuple[int, bool, bytes]] = deque()
    t0 = time.perf_counter()
    for k, s in enumerate(sessions):
        a = time.perf_counter()
        s.started = a
        queue.append((k, True, s.ini.start()))
        s.service += time.perf_counter() - a
    served = 0
    while queue:
        k, to_responder, data = queue.popleft()
        s = sessions[k]
        a = time.perf_counter()
        peer, sadb = (s.res, s.sadb_r) if to_responder else (s.ini, s.sadb_i)
        for ev in peer.receive(data):
            if isinstance(ev, Send):
                queue.append((k, not to_responder, ev.data))
            elif isinstance(ev, ChildSaEstablished):
                install_pair(sadb, ev)
                s.sides += 1
            elif isinstance(ev, AuthFailed | NegotiationFailed | ChildSaFailed):
                raise BenchFailure(f"session {k}: {type(ev).__name__}: {ev.reason}")
        b = time.perf_counter()
        s.service += b - a
        if s.sides == 2 and s.done is None:
            s.done = b
        served += 1
        if served % 256 == 0 and b > deadline:
            raise BenchFailure(f"over the time budget after {b - t0:.1f} s ({targets} targets)")
    for k, s in enumerate(sessions):
        if s.done is None or not (s.sadb_i.both_confirmed and s.sadb_r.both_confirmed):
            raise BenchFailure(f"session {k} did not end with RX and TX SAs on both sides")
    return sessions


def sessions_per_second(targets: int, *, rounds: int = 1, budget: float = 240.0) -> dict[str, object]:
    """Secure sessions established per second to `targets` targets at once (`rounds` times, in sequence)."""
    _establish(1, time.perf_counter() + budget)  # warm-up (first-use costs), not counted
    deadline = time.perf_counter() + budget
    latencies: list[float] = []
    services: list[float] = []
    elapsed = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        sessions = _establish(targets, deadline)
        elapsed += time.perf_counter() - t0
        latencies += [s.done - t0 for s in sessions if s.done is not None]
        services += [s.service for s in sessions]
    n = targets * rounds
    return {"targets": targets, "rounds": rounds, "sessions": n,
            "sessions_per_s": round(n / elapsed, 1), "seconds": round(elapsed, 3),
            "latency_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
                           "max": ms(max(latencies))},
            "service_ms": {"p50": ms(percentile(services, 50)), "p99": ms(percentile(services, 99))}}


def _engine_round(targets: int, tmp: Path, timeout: float) -> list[float]:
    """`targets` HBA ports, each linked to its own EDIF target port (AuthResponder, PSK) and driven by
    its own engine + agent; every agent starts at once. Seconds from APP start to PRLI done, per port."""
    hosts = [HOST_WWPN + k for k in range(targets)]
    tgts = [TARGET_BASE + k for k in range(targets)]
    ports = tuple(
        TargetPortConfig(f"t{k}", t, t - (1 << 56), ("127.0.0.1", 0),
                         (LunConfig(0, str(tmp / f"t{k}.img"), 1 << 20),), True,
                         SecConfig(peers={h: PeerPolicy(h, PskCredentials(BENCH_PSK))}, ike=IkePolicy()))
        for k, (h, t) in enumerate(zip(hosts, tgts, strict=True)))
    server = TargetServer(TargetConfig(ports))
    server.start_thread(30)
    hba = Hba([PortConfig(f"p{k}", h, h - 1, server.port(f"t{k}").address, remote_wwpn=t)
               for k, (h, t) in enumerate(zip(hosts, tgts, strict=True))],
              Timers(io_timeout=timeout), policy=RequireAuthWhenSecure())
    hba.start_thread()
    engines = [EdifEngine(hba, p) for p in hba.ports]
    try:
        for e in engines:
            e.start()
        end = time.monotonic() + timeout
        # First logins are not secure (no application yet): the targets hold them in AUTH_PENDING.
        wait_for(lambda: all(p.session.state is SessionState.AUTH_PENDING for p in hba.ports), end,
                 "the first logins did not complete")
        key = ChannelKey(os.urandom(32))
        agents = [Agent(e, t, key) for e, t in zip(engines, tgts, strict=True)]
        started = [0.0] * targets
        done: list[float | None] = [None] * targets
        for k, a in enumerate(agents):
            started[k] = time.perf_counter()
            a.send(a.app.start())
        while any(d is None for d in done):
            if time.monotonic() > end:
                raise BenchFailure(f"{sum(d is None for d in done)} of {targets} sessions not secure in time")
            for k, a in enumerate(agents):
                a.pump()
                if done[k] is None and hba.ports[k].session.state is SessionState.READY:
                    done[k] = time.perf_counter()
            time.sleep(0.0005)  # the agents' threads would sleep too; lets the HBA and target loops run
        for e in engines:
            sas = e.sec.query_sa()
            if not (e.login and e.login.secure and sas is not None and sas.both_confirmed):
                raise BenchFailure("a session reached READY without both SAs")
        return [d - s for d, s in zip(done, started, strict=True) if d is not None]
    finally:
        for e in engines:
            e.stop()
        hba.stop_thread()
        server.stop_thread(30)


def engine_sessions(targets: int, *, rounds: int = 1, timeout: float = 60.0) -> dict[str, object]:
    """Secure sessions through the whole edifd path (agent, channel, engine, AUTH_ELS on the FC link,
    target responder, SA_UPDATE, AUTH_OK, PRLI), `targets` at once; fresh ports per round."""
    lat: list[float] = []
    elapsed = 0.0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="edif-bench-") as d:
            r = _engine_round(targets, Path(d), timeout)
        lat += r
        elapsed += max(r)  # the round ends with its last session
    n = targets * rounds
    return {"targets": targets, "rounds": rounds, "sessions": n, "sessions_per_s": round(n / elapsed, 1),
            "seconds": round(elapsed, 3),
            "latency_ms": {"p50": ms(percentile(lat, 50)), "p99": ms(percentile(lat, 99)),
                           "max": ms(max(lat))}}


# --- 2. the I/O stall of a rekey ----------------------------------------------------------------------------


@dataclass
class _Io:
    start: float
    end: float
    ok: bool


async def _stream(rig: Rig, *, seconds: float, qd: int, block: int) -> list[_Io]:
    """Alternating 64 KiB WRITE/READ per worker, `qd` workers, for `seconds`; every I/O's timing."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    payload = os.urandom(block)
    nb = block // 512
    span = min(rig.lun_blocks, 32 << 11) // nb  # a 32 MiB region, so writes and reads overlap
    out: list[_Io] = []

    async def worker(w: int) -> None:
        i = w
        while loop.time() < end:
            lba = (i * 7919 % span) * nb
            a = time.perf_counter()
            ok = await rig.io(lba, block, write=i % 2 == 0, payload=payload)
            out.append(_Io(a, time.perf_counter(), ok))
            i += qd

    await asyncio.gather(*(worker(w) for w in range(qd)))
    return out


async def _rekey(rig: Rig, marks: dict[str, float]) -> None:
    """One child-SA rekey in the order qla2xxx is built for, both ends; `marks` gets each step's time."""
    assert rig.ike_i and rig.ike_r and rig.child_i and rig.esp_i and rig.esp_t
    loop = asyncio.get_running_loop()
    old_i = rig.child_i
    sadb_i, tesp = rig.esp_i.sadb, rig.esp_t
    # A previous rekey's deferred RX delete must finish first: each direction holds 2 SAs at most.
    waited = time.perf_counter()
    while tesp.sadb.pending_rx_delete is not None or sadb_i.pending_rx_delete is not None:
        if time.perf_counter() - waited > 10.0:
            raise BenchFailure("the previous rekey's old RX SA was not removed within 10 s")
        await asyncio.sleep(0.002)
    old_t_rx, old_t_tx = tesp.sadb.sas(SaDirection.RX)[0].spi, tesp.sadb.tx_sa.spi  # type: ignore[union-attr]
    marks["start"] = time.perf_counter()
    request = rig.ike_i.rekey_child(old_i.spi_in)  # CREATE_CHILD_SA with N(REKEY_SA)
    await asyncio.sleep(0)  # each step is a separate message in the real flow: let I/O run between them
    response = None
    for ev in rig.ike_r.receive(request):
        if isinstance(ev, Send):
            response = ev.data
        elif isinstance(ev, ChildSaEstablished):
            install_pair(tesp.sadb, ev, tx=False, rekey=True)  # target: new RX at once
            tesp.pending_tx = ev  # its TX when the initiator is seen on the new RX SA
    if response is None or tesp.pending_tx is None:
        raise BenchFailure("the responder did not answer the rekey")
    marks["target_new_rx"] = time.perf_counter()
    await asyncio.sleep(0)
    new_i = next((e for e in rig.ike_i.receive(response) if isinstance(e, ChildSaEstablished)), None)
    if new_i is None:
        raise BenchFailure("the rekey did not produce a new child SA")
    install_pair(sadb_i, new_i, tx=False, rekey=True)  # 1. new RX
    marks["initiator_new_rx"] = time.perf_counter()
    await asyncio.sleep(0)
    install_pair(sadb_i, new_i, rx=False, rekey=True)  # 2. new TX: the switch
    marks["initiator_tx_switch"] = time.perf_counter()
    await asyncio.sleep(0)
    sadb_i.delete(SaDirection.TX, old_i.spi_out, now=loop.time())  # 3. old TX, immediate
    sadb_i.delete(SaDirection.RX, old_i.spi_in, now=loop.time())  # 4. old RX, deferred
    marks["initiator_deletes_requested"] = time.perf_counter()
    rig.child_i = new_i
    # Make-before-break ends when 3 frames verified on the new RX SA (I/O keeps flowing meanwhile).
    while sadb_i.pending_rx_delete is not None or tesp.pending_tx is not None:
        if time.perf_counter() - marks["start"] > 10.0:
            raise BenchFailure("the old RX SA / the target's TX switch did not complete within 10 s")
        await asyncio.sleep(0.002)
    if tesp.problem:
        raise BenchFailure(f"the target's TX switch failed: {tesp.problem}")
    marks["initiator_old_rx_gone"] = time.perf_counter()
    marks["target_tx_switch"] = tesp.tx_switched_at or time.perf_counter()
    deleted = False
    for ev in rig.ike_r.receive(rig.ike_i.delete_child(old_i.spi_in)):  # INFORMATIONAL Delete, old pair
        if isinstance(ev, Send):
            rig.ike_i.receive(ev.data)
        elif isinstance(ev, Deleted):
            deleted = True
    if not deleted:
        raise BenchFailure("the responder did not delete the old child SA")
    tesp.sadb.delete(SaDirection.TX, old_t_tx, now=loop.time())
    tesp.sadb.delete(SaDirection.RX, old_t_rx, now=loop.time())  # deferred if frames may still be in flight
    marks["end"] = time.perf_counter()


def _window_stats(ios: list[_Io], windows: list[tuple[float, float]]) -> dict[str, object]:
    """I/Os in flight at any time in any of the windows: max/p50/p99 latency, the longest gap between two
    completions (window edges count as completions), errors."""
    sel = [x for x in ios if any(x.end >= lo and x.start <= hi for lo, hi in windows)]
    if not sel:
        return {"ios": 0}
    lat = [x.end - x.start for x in sel]
    gap = 0.0
    for lo, hi in windows:
        ends = [lo] + sorted(x.end for x in sel if lo <= x.end <= hi) + [hi]
        gap = max(gap, max(b - a for a, b in zip(ends, ends[1:], strict=False)))
    return {"ios": len(sel), "max_latency_ms": ms(max(lat)), "p99_latency_ms": ms(percentile(lat, 99)),
            "p50_latency_ms": ms(percentile(lat, 50)), "longest_gap_ms": ms(gap),
            "errors": sum(not x.ok for x in sel)}


def _whole(ios: list[_Io]) -> dict[str, object]:
    return _window_stats(ios, [(min(x.start for x in ios), max(x.end for x in ios))]) if ios else {"ios": 0}


async def _rekey_stall_async(tmp: Path, seconds: float, qd: int, block: int, margin: float,
                             rekeys: int) -> dict[str, object]:
    rig = await open_rig(tmp, secure=True, io_timeout=30.0)
    try:
        await _stream(rig, seconds=min(0.5, seconds / 4), qd=qd, block=block)  # warm-up, fills blocks
        base = await _stream(rig, seconds=seconds, qd=qd, block=block)
        marks: list[dict[str, float]] = []
        t0 = time.perf_counter()

        async def rekey_now_and_then() -> None:
            for i in range(rekeys):  # evenly spaced, so the windows around them do not overlap
                await asyncio.sleep(max(0.0, t0 + seconds * (i + 1) / (rekeys + 1) - time.perf_counter()))
                m: dict[str, float] = {}
                await _rekey(rig, m)
                marks.append(m)

        ios, _ = await asyncio.gather(_stream(rig, seconds=seconds, qd=qd, block=block), rekey_now_and_then())
        windows = [(m["start"] - margin, m["initiator_old_rx_gone"] + margin) for m in marks]
        b0 = base[0].start if base else t0
        same_in_base = [(b0 + lo - t0, b0 + hi - t0) for lo, hi in windows]  # the same windows, no rekey
        steps = [{k: ms(v - m["start"]) for k, v in sorted(m.items(), key=lambda kv: kv[1])} for m in marks]
        return {
            "block": block, "qd": qd, "seconds": seconds, "rekeys": rekeys, "window_margin_s": margin,
            "window_ms": [ms(hi - lo) for lo, hi in windows], "rekey_steps_ms": steps,
            "with_rekey": _window_stats(ios, windows), "without_rekey": _window_stats(base, same_in_base),
            "per_rekey": [{"with_rekey": _window_stats(ios, [w]), "without_rekey": _window_stats(base, [b])}
                          for w, b in zip(windows, same_in_base, strict=True)],
            "whole_run": {"with_rekey": _whole(ios), "without_rekey": _whole(base)},
            "io_errors": sum(not x.ok for x in ios + base), "esp": rig.esp_summary(),
            "sas_after": {"initiator": rig.esp_i.sadb.snapshot() if rig.esp_i else None},
            "errors_seen": rig.errors[:5],
        }
    finally:
        await close_rig(rig)


def rekey_stall(seconds: float = 3.0, qd: int = 4, block: int = 64 * KIB, margin: float = 0.25,
                rekeys: int = 3) -> dict[str, object]:
    """The longest I/O stall of `rekeys` rekeys under load, against the same windows without a rekey."""
    with tempfile.TemporaryDirectory(prefix="edif-bench-") as d:
        return asyncio.run(_rekey_stall_async(Path(d), seconds, qd, block, margin, rekeys))


def engine_rekey_stall(seconds: float = 3.0, qd: int = 4, block: int = 64 * KIB, margin: float = 0.25,
                       timeout: float = 60.0) -> dict[str, object]:
    """The same I/O stream through a session secured by the whole edifd path, with the rekey the agent
    itself starts (SecurityApp lifetime policy): CREATE_CHILD_SA over AUTH_ELS, SA_UPDATE RX/TX through
    the channel, AUTH_OK, deletes, IKE Delete. The SA steps are seen by polling the HBA port's SA
    database from the agent's pump thread (about 1 ms resolution)."""
    with tempfile.TemporaryDirectory(prefix="edif-bench-") as d:
        tmp = Path(d)
        auth = SecConfig(peers={I_WWPN: PeerPolicy(I_WWPN, PskCredentials(BENCH_PSK))}, ike=IkePolicy())
        lun = LunConfig(0, str(tmp / "t0.img"), 64 * MIB)
        tport = TargetPortConfig("t0", T_WWPN, T_WWPN - 1, ("127.0.0.1", 0), (lun,), True, auth)
        server = TargetServer(TargetConfig((tport,)))
        server.start_thread(30)
        hba = Hba([PortConfig("p0", I_WWPN, I_WWPN - 1, server.port("t0").address, remote_wwpn=T_WWPN)],
                  Timers(io_timeout=30.0), policy=RequireAuthWhenSecure())
        hba.start_thread()
        engine = EdifEngine(hba, hba.ports[0])
        stop = threading.Event()
        pumper: threading.Thread | None = None
        try:
            engine.start()
            end = time.monotonic() + timeout
            wait_for(lambda: hba.ports[0].session.state is SessionState.AUTH_PENDING, end,
                     "the first login did not complete")
            warm = min(0.5, seconds / 4)
            # The pair's lifetime runs from its installation: it ends halfway through the second stream.
            agent = Agent(engine, T_WWPN, ChannelKey(os.urandom(32)),
                           RekeyPolicy(lifetime=warm + 1.5 * seconds + 0.1, bytes=0))
            marks: dict[str, float] = {}

            def pump() -> None:
                while not stop.is_set():
                    agent.pump()
                    sas = hba.ports[0].security.login_sas  # the HBA holds the login's SAs
                    if sas is not None and sas.sadb.both_confirmed:
                        rx, now = len(sas.sadb.sas(SaDirection.RX)), time.perf_counter()
                        if rx == 2 and "initiator_new_rx" not in marks:
                            marks["initiator_new_rx"] = now
                        if sas.esp.counters.rekeys >= 1 and "initiator_tx_switch" not in marks:
                            marks["initiator_tx_switch"] = now
                        switched = "initiator_tx_switch" in marks
                        if rx == 1 and switched and "initiator_old_rx_gone" not in marks:
                            marks["initiator_old_rx_gone"] = now
                    time.sleep(0.001)

            agent.send(agent.app.start())
            pumper = threading.Thread(target=pump, name="bench-agent", daemon=True)
            pumper.start()
            wait_for(lambda: hba.ports[0].session.state is SessionState.READY, end,
                     "the session did not become secure", poll=0.005)
            rig = Rig(hba, server.port("t0"), True, lun_blocks=lun.size // 512)

            def stream(secs: float) -> list[_Io]:
                coro = _stream(rig, seconds=secs, qd=qd, block=block)
                return hba.run_sync(coro, secs + 60)  # type: ignore[no-any-return]

            stream(warm)
            base = stream(seconds)
            t0 = time.perf_counter()
            ios = stream(seconds)
            t_wait = time.perf_counter()
            while "initiator_old_rx_gone" not in marks and time.perf_counter() - t_wait < 25.0:
                time.sleep(0.01)  # a late rekey: its window is reported, though the stream has ended
            if "initiator_tx_switch" not in marks:
                raise BenchFailure("the agent did not rekey during the stream")
            lo = marks.get("initiator_new_rx", marks["initiator_tx_switch"]) - margin
            hi = marks.get("initiator_old_rx_gone", marks["initiator_tx_switch"]) + margin
            b0 = base[0].start if base else t0
            sas = hba.ports[0].security.query_sa()
            return {
                "block": block, "qd": qd, "seconds": seconds, "window_margin_s": margin,
                "window_ms": ms(hi - lo),
                "rekey_steps_ms": {k: ms(v - marks.get("initiator_new_rx", v)) for k, v in
                                   sorted(marks.items(), key=lambda kv: kv[1])},
                "rekey_offset_in_stream_s": round(marks["initiator_tx_switch"] - t0, 3),
                "with_rekey": _window_stats(ios, [(lo, hi)]),
                "without_rekey": _window_stats(base, [(b0 + lo - t0, b0 + hi - t0)]),
                "io_errors": sum(not x.ok for x in ios + base),
                "esp_drops": sum(sas.counters.drops.values()) if sas else None,
                "esp_rekeys": sas.counters.rekeys if sas else None,
                "errors_seen": rig.errors[:5],
            }
        finally:
            stop.set()
            if pumper is not None:
                pumper.join(5)
            engine.stop()
            hba.stop_thread()
            server.stop_thread(30)


# --- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="1,64,1000", help="comma-separated target counts")
    ap.add_argument("--rounds-single", type=int, default=50, help="sessions in sequence for 1 target")
    ap.add_argument("--seconds", type=float, default=3.0, help="each I/O stream of the rekey bench")
    ap.add_argument("--qd", type=int, default=4)
    ap.add_argument("--rekeys", type=int, default=3, help="rekeys during the I/O stream")
    ap.add_argument("--no-engine-rekey", action="store_true", help="skip the rekey through the whole path")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds allowed per session count")
    ap.add_argument("--engine-targets", default="1,64",
                    help="target counts for the full engine/channel path ('' = skip)")
    ap.add_argument("--engine-rounds-single", type=int, default=10, help="rounds of the 1-target engine case")
    ap.add_argument("--quick", action="store_true", help="1 and 64 targets, 5 single rounds, 1 s streams")
    args = ap.parse_args(argv)
    # The engine path logs a warning per port before its application starts (expected here).
    logging.getLogger("edifd").setLevel(logging.ERROR)
    logging.getLogger("guest_agent").setLevel(logging.ERROR)
    if args.quick:
        args.targets = "1,64"
        args.rounds_single, args.seconds = min(args.rounds_single, 5), min(args.seconds, 1.0)
        args.engine_rounds_single, args.rekeys = min(args.engine_rounds_single, 2), 1
    counts = [int(x) for x in args.targets.split(",") if x.strip()]
    scale = []
    print("Secure sessions (IKE_SA_INIT + IKE_AUTH PSK X25519 + SA install both sides, in memory):")
    for n in counts:
        r = sessions_per_second(n, rounds=args.rounds_single if n == 1 else 1, budget=args.budget)
        scale.append(r)
        lat, svc = r["latency_ms"], r["service_ms"]
        assert isinstance(lat, dict) and isinstance(svc, dict)
        print(f"  {n:5d} target(s): {r['sessions_per_s']:8.1f} sessions/s; latency p50 {lat['p50']:.2f} ms"
              f" p99 {lat['p99']:.2f} ms; service p50 {svc['p50']:.2f} ms p99 {svc['p99']:.2f} ms",
              flush=True)
    engine = []
    counts = [int(x) for x in args.engine_targets.split(",") if x.strip()]
    if counts:
        print("Secure sessions through the whole path (agent, channel, engine, AUTH_ELS on the link, target"
              " responder, SA_UPDATE, AUTH_OK, PRLI):")
    for n in counts:
        r = engine_sessions(n, rounds=args.engine_rounds_single if n == 1 else 1, timeout=args.budget)
        engine.append(r)
        lat = r["latency_ms"]
        assert isinstance(lat, dict)
        print(f"  {n:5d} target(s): {r['sessions_per_s']:8.1f} sessions/s; latency p50 {lat['p50']:.2f} ms"
              f" p99 {lat['p99']:.2f} ms", flush=True)
    stall = rekey_stall(args.seconds, args.qd, rekeys=args.rekeys)
    w, wo = stall["with_rekey"], stall["without_rekey"]
    assert isinstance(w, dict) and isinstance(wo, dict)
    print(f"Rekey under load (64 KiB READ/WRITE, QD {args.qd}; {args.rekeys} rekey(s); windows"
          f" {stall['window_ms']} ms around them, and the same windows of a run without):")
    for label, x in (("with rekey", w), ("without", wo)):
        print(f"  {label:11} {x['ios']:5d} I/Os  max {x['max_latency_ms']:8.2f} ms"
              f"  p99 {x['p99_latency_ms']:8.2f} ms  p50 {x['p50_latency_ms']:7.2f} ms"
              f"  longest gap {x['longest_gap_ms']:8.2f} ms  errors {x['errors']}")
    for steps in stall["rekey_steps_ms"]:  # type: ignore[union-attr]
        print(f"  rekey steps (ms from its start): {steps}")
    print(f"  I/O errors over both runs: {stall['io_errors']}; ESP: {stall['esp']}")
    eng = None
    if not args.no_engine_rekey:
        eng = engine_rekey_stall(args.seconds, args.qd, timeout=args.budget)
        print(f"Rekey started by the agent through the whole path (64 KiB READ/WRITE, QD {args.qd}; window"
              f" {eng['window_ms']} ms, {eng['rekey_offset_in_stream_s']} s into the stream):")
        for label, key in (("with rekey", "with_rekey"), ("without", "without_rekey")):
            x = eng[key]
            assert isinstance(x, dict)
            print(f"  {label:11} {x['ios']:5d} I/Os  max {x['max_latency_ms']:8.2f} ms"
                  f"  p99 {x['p99_latency_ms']:8.2f} ms  p50 {x['p50_latency_ms']:7.2f} ms"
                  f"  longest gap {x['longest_gap_ms']:8.2f} ms  errors {x['errors']}")
        print(f"  SA steps (ms from the new RX SA): {eng['rekey_steps_ms']}; I/O errors {eng['io_errors']},"
              f" ESP drops {eng['esp_drops']}")
    summary = {
        "bench": "edif_scale", "quick": args.quick, "python": platform.python_version(),
        "cryptography": cryptography.__version__, "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "sessions": {"path": "in-memory IKE (FC profile, PSK, X25519, AES-GCM-128 child) + SaDatabase "
                             "install on both sides; no AUTH_ELS framing, link or channel",
                     "results": scale},
        "engine_sessions": {"path": "SecurityApp -> ChannelClient -> loopback SCSI -> ChannelCore -> "
                                    "EdifEngine -> Hba (FC over TCP 127.0.0.1) -> TargetServer with "
                                    "AuthResponder (PSK); latency = application start to PRLI done",
                            "results": engine},
        "rekey_stall": stall,
        "engine_rekey_stall": eng,
    }
    print(json.dumps(summary, sort_keys=True))
    return 1 if stall["io_errors"] or (eng is not None and eng["io_errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
