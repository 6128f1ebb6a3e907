"""ESP frame-protection throughput, measured in-process at the frame-transform level.

For 1 MiB of I/O (512 FCP_DATA frames of 2048 bytes) it times, in the same run:
- plaintext: the frames through an identity transform (outbound + inbound), the baseline;
- encrypted: the frames through EspTransform.outbound on one session and .inbound on its peer;
- both again with the FC wire codec in the loop (pack_with_crc + unpack_fc), which is what a
  link does per frame anyway and makes the plaintext baseline less of a no-op;
- the AES-GCM ceiling of this CPU: AESGCM encrypt + decrypt of 2048-byte buffers, nothing else
  (for GMAC ciphers: tag + verify over the same bytes as AAD).
Each figure is the best of --repeat runs (MB = 10^6 bytes). The final line is JSON.

`hba_target_loopback()` adds the link-level figure: 1 MiB sequential WRITE and READ MB/s through a
real `Hba` <-> `TargetPort` over 127.0.0.1 (both on one asyncio loop in this process), once with
plaintext sessions and once with secure ones, beside raw TCP loopback MB/s and the AES-GCM ceiling
at 2048-byte frames, all in the same run. Secure = ESP transforms on both ends holding the SAs of a
real IKE negotiation (our `Initiator` <-> `Responder` in memory: IKE_SA_INIT + IKE_AUTH, PSK, X25519,
child AES-GCM-128), installed directly into each side's `SaDatabase`; the channel/engine path that
carries those keys in edifd is not in the loop (docs/engine.md §5 has its figures).

    python3 bench/edif.py [--quick] [--repeat 7] [--cipher AES_GCM_128 ...] [--seconds 2] [--qd 4]
                          [--rounds 3] [--no-loopback] [--target both|in-process|child]
                          [--loop asyncio|uvloop]

The loopback runs twice by default: both ends on one event loop (one core), and the target in a
process of its own (`--target-child`, as edif-target is; two cores serve), each with its own raw TCP
and AES-GCM baselines. The bulk-path rows time edifd/fc/burst.py's one-buffer sequences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cryptography  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from edifd.edif import EspTransform, SaDatabase, cipher_from_ike  # noqa: E402
from edifd.fc import (  # noqa: E402
    DataRun,
    DataSequence,
    FcipStreamDecoder,
    FcpCmnd,
    Frame,
    WireBurst,
    fcp_cmnd_frame,
    fcp_data_frames,
)
from edifd.fc.burst import REC_DATA, REC_FC, REC_OVERHEAD  # noqa: E402
from edifd.hba import Hba, PortConfig, Timers  # noqa: E402
from edifd.ike import ChildSaEstablished, FcSelector, Identity, IkeConfig, Initiator, Responder, Send  # noqa: E402
from edifd.proto import Cipher, SaDirection, SaFlags  # noqa: E402
from edifd.scsi import ScsiCommand, cdb  # noqa: E402
from edifd.target import LunConfig, TargetPort, TargetPortConfig  # noqa: E402

MIB = 1 << 20
T = TypeVar("T")
FRAME = 2048
SPI = 0x0001_0001


class _Identity:
    """The plaintext data path (the HBA's IdentityTransform has the same two methods)."""

    def outbound(self, frame: Frame) -> Frame:
        return frame

    def inbound(self, frame: Frame) -> Frame | None:
        return frame


def one_mib_of_frames() -> list[Frame]:
    cmnd = fcp_cmnd_frame(s_id=0x010101, d_id=0x010102, ox_id=1,
                          cmnd=FcpCmnd(lun=bytes(8), cdb=bytes([0x28]) + bytes(15), dl=MIB, read=True))
    return fcp_data_frames(cmnd, os.urandom(MIB), from_target=True, rx_id=0x100, seq_id=1)


def esp_pair(cipher: Cipher) -> tuple[EspTransform, EspTransform]:
    key, salt = os.urandom(cipher.key_size), os.urandom(4)
    tx, rx = EspTransform(SaDatabase()), EspTransform(SaDatabase())
    tx.sadb.install(SaDirection.TX, SPI, cipher, key, salt)
    rx.sadb.install(SaDirection.RX, SPI, cipher, key, salt)
    return tx, rx


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def transform_run(tx: object, rx: object, frames: list[Frame], codec: bool) -> Callable[[], None]:
    out, inn = tx.outbound, rx.inbound  # type: ignore[attr-defined]

    def run() -> None:
        for f in frames:
            p = out(f)
            if codec:
                p = Frame.unpack_fc(p.pack_with_crc(), p.sof, p.eof)
            if inn(p) is None:
                raise RuntimeError("a frame was dropped during the benchmark")

    return run


def bulk_run(tx: object, rx: object, data: bytes) -> Callable[[], None]:
    """The bulk data path (edifd/fc/burst.py) for 1 MiB: one FCP_DATA sequence built into one buffer of
    FCIP records (`outbound_sequence`, or `encode` in clear), decoded as DataRuns and each record's data
    verified, decrypted (`inbound_data`) and copied into a command buffer, as the sessions do. The codec
    (records, CRC both ways) is part of it: the two cannot be taken apart on this path."""
    cmnd = fcp_cmnd_frame(s_id=0x010101, d_id=0x010102, ox_id=1,
                          cmnd=FcpCmnd(lun=bytes(8), cdb=bytes([0x28]) + bytes(15), dl=len(data), read=True))
    dest = bytearray(len(data))
    protect = getattr(tx, "outbound_sequence", None)
    verify = getattr(rx, "inbound_data", None)

    def run() -> None:
        seq = DataSequence(cmnd, data, from_target=True, rx_id=0x100, seq_id=1)
        burst = protect(seq) if protect is not None else seq.encode()
        if burst is None:
            raise RuntimeError("the bulk path refused the sequence")
        decoder = FcipStreamDecoder(data_runs=True)
        for run_ in decoder.feed(burst.data):
            if not isinstance(run_, DataRun):
                raise RuntimeError(f"not a data run: {run_!r}")
            mv, starts, size = run_.data, run_.starts, len(run_.data)
            for i, at in enumerate(starts):
                dflen = (starts[i + 1] if i + 1 < len(starts) else size) - at - REC_OVERHEAD
                if verify is not None:
                    clear = verify(mv, at + REC_FC, dflen)
                    if clear is None:
                        raise RuntimeError("a frame was dropped during the benchmark")
                else:
                    clear = mv[at + REC_DATA : at + REC_DATA + dflen]
                off = i * FRAME
                dest[off : off + len(clear)] = clear

    return run


def aesgcm_run(key_size: int, n: int, gmac: bool) -> Callable[[], None]:
    """The ceiling: seal + open of n 2048-byte buffers with a 32-byte AAD, unique nonces, nothing
    else. GMAC: the same bytes as AAD with an empty plaintext (what a GMAC SA asks of AES-GCM)."""
    aead = AESGCM(os.urandom(key_size))
    salt, buf, aad = os.urandom(4), os.urandom(FRAME), os.urandom(32)
    counter = [0]

    def run() -> None:
        c = counter[0]
        for i in range(c, c + n):
            nonce = salt + struct.pack(">Q", i)
            if gmac:
                aead.decrypt(nonce, aead.encrypt(nonce, b"", aad + buf), aad + buf)
            else:
                aead.decrypt(nonce, aead.encrypt(nonce, buf, aad), aad)
        counter[0] = c + n

    return run


# --- HBA <-> target over TCP loopback -------------------------------------------------------------------

I_WWPN, T_WWPN = 0x2000001B32B0E0C1, 0x2100001B32B0E0C2  # lower initiator WWPN: the target originates PLOGI
BENCH_PSK = b"edif bench pre-shared key, not a secret"
# Point-to-point IDs the higher Port_Name assigns (docs/hba.md): target 0x010101, initiator 0x010102.
TS_I = (FcSelector(0x010102, 0x010102, 0x00, 0x0F, 0x08, 0x08),)
TS_T = (FcSelector(0x010101, 0x010101, 0x00, 0x0F, 0x08, 0x08),)


def ike_configs(i_wwpn: int = I_WWPN, t_wwpn: int = T_WWPN) -> tuple[IkeConfig, IkeConfig]:
    """FC profile (ID_FC_NAME, FC_ESP_HEADER, TS type 9), PSK, X25519 first; child AES-GCM-128 first."""
    ci = IkeConfig(local_id=Identity.wwpn(i_wwpn), remote_id=Identity.wwpn(t_wwpn), psk=BENCH_PSK,
                   local_ts=TS_I, remote_ts=TS_T)
    ct = IkeConfig(local_id=Identity.wwpn(t_wwpn), remote_id=Identity.wwpn(i_wwpn), psk=BENCH_PSK,
                   local_ts=TS_T, remote_ts=TS_I)
    return ci, ct


def relay(src: Initiator | Responder, dst: Initiator | Responder, data: bytes,
          src_events: list[object], dst_events: list[object]) -> None:
    """Carry IKE messages between two in-memory peers until neither has anything to send."""
    queue: list[tuple[Initiator | Responder, Initiator | Responder, list[object], list[object], bytes]] = [
        (dst, src, dst_events, src_events, data)]
    while queue:
        to, back, to_ev, back_ev, msg = queue.pop(0)
        for ev in to.receive(msg):
            if isinstance(ev, Send):
                queue.append((back, to, back_ev, to_ev, ev.data))
            else:
                to_ev.append(ev)


def negotiate() -> tuple[Initiator, Responder, ChildSaEstablished, ChildSaEstablished]:
    """IKE_SA_INIT + IKE_AUTH between our initiator and responder; the first child SA of each side."""
    ci, ct = ike_configs()
    ini, res = Initiator(ci), Responder(ct)
    ev_i: list[object] = []
    ev_r: list[object] = []
    relay(ini, res, ini.start(), ev_i, ev_r)
    ci_child = next((e for e in ev_i if isinstance(e, ChildSaEstablished)), None)
    cr_child = next((e for e in ev_r if isinstance(e, ChildSaEstablished)), None)
    if ci_child is None or cr_child is None:
        raise RuntimeError(f"IKE negotiation failed: initiator {ev_i}, responder {ev_r}")
    return ini, res, ci_child, cr_child


def install_pair(sadb: SaDatabase, child: ChildSaEstablished, *, rx: bool = True, tx: bool = True,
                 rekey: bool = False) -> None:
    """Program a child SA pair: RX = *_in, TX = *_out (what SA_UPDATE would carry)."""
    cipher = cipher_from_ike(child.cipher.encr, child.cipher.key_bits)
    flags = SaFlags.REKEY if rekey else SaFlags(0)
    sides = ((rx, SaDirection.RX, child.spi_in, child.key_in, child.salt_in),
             (tx, SaDirection.TX, child.spi_out, child.key_out, child.salt_out))
    for want, direction, spi, key, salt in sides:
        if want:
            r = sadb.install(direction, spi, cipher, key, salt, flags=flags)
            if not r.ok:
                raise RuntimeError(f"SA install refused: {r.detail}")


class TargetEsp:
    """The target's ESP stage with the responder's rekey rule (edifd/target/responder.py): a rekeyed
    pair's TX SA is installed only once a frame verified on its new RX SA, so the target never sends
    on an SA the initiator cannot decrypt yet."""

    def __init__(self) -> None:
        self.sadb = SaDatabase()
        self.esp = EspTransform(self.sadb)
        self.pending_tx: ChildSaEstablished | None = None
        self.tx_switched_at: float | None = None
        self.problem: str | None = None  # a refused TX install (a transform must not raise)

    def outbound(self, frame: Frame) -> Frame | None:
        return self.esp.outbound(frame)

    def outbound_sequence(self, seq: DataSequence) -> WireBurst | None:
        return self.esp.outbound_sequence(seq)

    def inbound(self, frame: Frame) -> Frame | None:
        out = self.esp.inbound(frame)
        self._switch()
        return out

    def inbound_data(self, mv: memoryview, fc: int, dflen: int) -> bytes | memoryview | None:
        out = self.esp.inbound_data(mv, fc, dflen)
        self._switch()
        return out

    def _switch(self) -> None:
        p = self.pending_tx
        if p is not None:
            sa = self.sadb.rx_sa(p.spi_in)
            if sa is not None and sa.frames > 0:
                self.pending_tx = None
                try:
                    install_pair(self.sadb, p, rx=False, rekey=True)
                except RuntimeError as e:
                    self.problem = str(e)
                self.tx_switched_at = time.perf_counter()


@dataclass
class Rig:
    """A real Hba port linked to a real TargetPort over 127.0.0.1, both on the running loop."""

    hba: Hba
    target: TargetPort | TargetChild
    secure: bool
    ike_i: Initiator | None = None
    ike_r: Responder | None = None
    child_i: ChildSaEstablished | None = None
    child_r: ChildSaEstablished | None = None
    esp_i: EspTransform | None = None
    esp_t: TargetEsp | None = None
    lun_blocks: int = 0
    errors: list[str] = field(default_factory=list)

    async def io(self, lba: int, block: int, write: bool, payload: bytes = b"") -> bool:
        n = block // 512
        if write:
            cmd = ScsiCommand(cdb.write(lba, n, size=16), data_out=payload or bytes(block))
        else:
            cmd = ScsiCommand(cdb.read(lba, n, size=16), data_in_len=block)
        resp = await self.hba.execute(T_WWPN, 0, cmd)
        if not resp.ok:
            self.errors.append(f"{'WRITE' if write else 'READ'} lba {lba}: status {int(resp.status)} "
                               f"sense {resp.sense[:14].hex()}")
        return resp.ok

    def esp_summary(self) -> dict[str, object]:
        """Frames protected each way and ESP drops on both ends (must be 0)."""
        if self.esp_i is None:
            return {}
        ci = self.esp_i.counters.snapshot()
        if isinstance(self.target, TargetChild):
            ct = self.target.esp_counters  # reported by the child when it stopped
        elif self.esp_t is not None:
            ct = self.esp_t.esp.counters.snapshot()
        else:
            return {}
        if ct is None:
            return {"error": "the target process reported no ESP counters"}
        out = {k: int(ci[k]) + int(ct[k]) for k in ("frames_out_protected", "frames_in_protected", "rekeys")}
        out["drops"] = sum(ci["drops"].values()) + sum(ct["drops"].values())  # type: ignore[attr-defined]
        return out


class TargetChild:
    """The target port in a process of its own (as edif-target is): this file run with --target-child,
    told its LUN and SAs on stdin, stopped by closing stdin; it prints its port, then its ESP counters."""

    def __init__(self, lun: LunConfig, child: ChildSaEstablished | None, loop_name: str) -> None:
        spec: dict[str, object] = {"lun": [lun.path, lun.size], "loop": loop_name, "sa": None}
        if child is not None:
            spec["sa"] = {"encr": child.cipher.encr, "key_bits": child.cipher.key_bits,
                          "in": [child.spi_in, child.key_in.hex(), child.salt_in.hex()],
                          "out": [child.spi_out, child.key_out.hex(), child.salt_out.hex()]}
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--target-child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"the target process did not start: {line!r}")
        self.address = ("127.0.0.1", int(line))
        self.esp_counters: dict[str, object] | None = None
        self.cpu_s: float | None = None  # the target process's CPU time from listening to stopping

    async def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.read)
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 30)
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        self.esp_counters = report.get("esp")
        self.cpu_s = report.get("cpu_s")


def target_child_main() -> int:
    """--target-child: serve one TargetPort (plaintext or with the given SA pair) until stdin closes."""
    spec = json.loads(sys.stdin.readline())

    async def serve() -> None:
        esp_t = None
        if spec["sa"] is not None:
            sa = spec["sa"]
            cipher = cipher_from_ike(sa["encr"], sa["key_bits"])
            esp_t = TargetEsp()
            for direction, (spi, key, salt) in ((SaDirection.RX, sa["in"]), (SaDirection.TX, sa["out"])):
                if not esp_t.sadb.install(direction, spi, cipher, bytes.fromhex(key), bytes.fromhex(salt)).ok:
                    raise SystemExit("SA install refused")
        lun = LunConfig(0, spec["lun"][0], spec["lun"][1])
        target = TargetPort(TargetPortConfig("t0", T_WWPN, T_WWPN - 1, ("127.0.0.1", 0), (lun,)),
                            transform_factory=(lambda: esp_t) if esp_t is not None else None)
        await target.start()
        cpu0 = time.process_time()  # from here: not the interpreter's start-up and imports
        print(target.address[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
        await target.stop()
        print(json.dumps({"esp": esp_t.esp.counters.snapshot() if esp_t is not None else None,
                          "cpu_s": time.process_time() - cpu0}), flush=True)

    run_loop(serve(), spec["loop"])
    return 0


def run_loop(coro: Coroutine[object, object, T], loop_name: str) -> T:
    """asyncio.run on the stock event loop or on uvloop's."""
    if loop_name == "uvloop":
        import uvloop  # an optional dependency of the bench (--loop uvloop)

        return uvloop.run(coro) if hasattr(uvloop, "run") else _run_uvloop_policy(coro, uvloop)
    return asyncio.run(coro)


def _run_uvloop_policy(coro: Coroutine[object, object, T], uvloop: object) -> T:
    loop = uvloop.new_event_loop()  # type: ignore[attr-defined]  # uvloop < 0.18 has no run()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def open_rig(tmp: Path, *, secure: bool, lun_bytes: int = 64 * MIB, io_timeout: float = 30.0,
                   child_process: bool = False, loop_name: str = "asyncio") -> Rig:
    """The two ends; the target on this loop, or in its own process with `child_process`."""
    esp_i: EspTransform | None = None
    esp_t: TargetEsp | None = None
    ike_i = ike_r = child_i = child_r = None
    if secure:
        ike_i, ike_r, child_i, child_r = negotiate()
        esp_i = EspTransform(SaDatabase())
        install_pair(esp_i.sadb, child_i)
        if not child_process:
            esp_t = TargetEsp()
            install_pair(esp_t.sadb, child_r)
    tag = ("esp" if secure else "clear") + ("-child" if child_process else "")
    lun = LunConfig(0, str(tmp / f"lun-{tag}.img"), lun_bytes)
    target: TargetPort | TargetChild
    if child_process:
        target = TargetChild(lun, child_r, loop_name)
    else:
        target = TargetPort(TargetPortConfig("t0", T_WWPN, T_WWPN - 1, ("127.0.0.1", 0), (lun,)),
                            transform_factory=(lambda: esp_t) if esp_t is not None else None)
        await target.start()
    hba = Hba([PortConfig("p0", I_WWPN, I_WWPN - 1, target.address, remote_wwpn=T_WWPN)],
              Timers(io_timeout=io_timeout),
              transform_factory=(lambda _c: esp_i) if esp_i is not None else None)
    await hba.start()
    rig = Rig(hba, target, secure, ike_i, ike_r, child_i, child_r, esp_i, esp_t, lun_bytes // 512)
    if not await hba.wait_ready(T_WWPN, 15.0):
        await close_rig(rig)
        raise RuntimeError("the HBA did not log in to the target")
    return rig


async def close_rig(rig: Rig) -> None:
    await rig.hba.stop()
    await rig.target.stop()


async def sequential(rig: Rig, *, block: int, write: bool, seconds: float, qd: int) -> dict[str, float]:
    """Sequential `block`-byte I/O with `qd` outstanding for `seconds`: MB/s, IOPS, errors."""
    loop = asyncio.get_running_loop()
    payload = os.urandom(block)
    span = rig.lun_blocks - block // 512 + 1
    state = {"next": 0, "ops": 0, "errors": 0}
    end = loop.time() + seconds

    async def worker() -> None:
        while loop.time() < end:
            lba = state["next"]
            state["next"] = (lba + block // 512) % span
            if await rig.io(lba, block, write, payload):
                state["ops"] += 1
            else:
                state["errors"] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(qd)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    mib = state["ops"] * block / MIB
    return {"mb_s": round(state["ops"] * block / dt / 1e6, 1), "iops": round(state["ops"] / dt, 1),
            "ops": state["ops"], "errors": state["errors"],
            # CPU time of this process per MiB moved: both ends in-process, the HBA's alone with a target
            # process. Other people's load on a shared host changes it far less than it changes MB/s.
            "cpu_ms_per_mib": round(cpu / mib * 1e3, 2) if mib else None}


def raw_tcp_mb_s(seconds: float, chunk: int = MIB) -> float:
    """MB/s of `chunk`-byte sends over 127.0.0.1 to a thread that discards them (the link's floor cost)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        with conn:
            while b := conn.recv(chunk):
                got[0] += len(b)

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    buf = os.urandom(chunk)
    with socket.create_connection(srv.getsockname()) as s:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        t.join(30)
        dt = time.perf_counter() - t0
    srv.close()
    return round(got[0] / dt / 1e6, 1)


async def _loopback_async(tmp: Path, seconds: float, qd: int, rounds: int, child_process: bool = False,
                          loop_name: str = "asyncio") -> dict[str, object]:
    """Both rigs stay up; each round runs WRITE then READ on each, the mode order alternating per round,
    so the load of a shared machine falls on both alike. Per workload: the best round (as the frame
    figures take the best of --repeat), every round's MB/s, and the totals of ops and errors."""
    rigs = {}
    closed = False
    try:
        for mode in ("plaintext", "encrypted"):
            rigs[mode] = await open_rig(tmp, secure=mode == "encrypted", child_process=child_process,
                                        loop_name=loop_name)
        runs: dict[str, dict[str, list[dict[str, float]]]] = {m: {"seq_write_1m": [], "seq_read_1m": []}
                                                               for m in rigs}
        for i in range(rounds):
            for mode in (("plaintext", "encrypted") if i % 2 == 0 else ("encrypted", "plaintext")):
                for k, write in (("seq_write_1m", True), ("seq_read_1m", False)):
                    # The first write pass fills the LUN, so the reads hit written blocks.
                    runs[mode][k].append(await sequential(rigs[mode], block=MIB, write=write,
                                                          seconds=seconds / rounds, qd=qd))
        for rig in rigs.values():  # first: a target process reports its ESP counters when it stops
            await close_rig(rig)
        closed = True
        out: dict[str, object] = {}
        for mode, per in runs.items():
            res: dict[str, object] = {}
            for k, lst in per.items():
                best = max(lst, key=lambda r: r["mb_s"])
                cpu = [r["cpu_ms_per_mib"] for r in lst if r["cpu_ms_per_mib"] is not None]
                res[k] = {"mb_s": best["mb_s"], "iops": best["iops"],
                          "mb_s_rounds": [r["mb_s"] for r in lst], "ops": sum(int(r["ops"]) for r in lst),
                          "errors": sum(int(r["errors"]) for r in lst),
                          "cpu_ms_per_mib": min(cpu) if cpu else None}
            if rigs[mode].secure:
                res["esp"] = rigs[mode].esp_summary()
            target = rigs[mode].target
            if isinstance(target, TargetChild) and target.cpu_s is not None:
                mib = sum(int(r["ops"]) for lst in per.values() for r in lst)  # 1 MiB per op
                # Its whole life (login included) over every MiB of both workloads: an upper bound.
                res["target_cpu_ms_per_mib"] = round(target.cpu_s / mib * 1e3, 2) if mib else None
            out[mode] = res
        return out
    finally:
        if not closed:
            for rig in rigs.values():
                await close_rig(rig)


def hba_target_loopback(seconds: float = 2.0, qd: int = 4, repeat: int = 7, rounds: int = 3, *,
                        child_process: bool = False, loop_name: str = "asyncio") -> dict[str, object]:
    """1 MiB sequential WRITE/READ MB/s HBA <-> target over TCP loopback, plaintext and encrypted
    (each workload `seconds` in all, split over `rounds` interleaved rounds; the best round counts),
    beside raw TCP loopback and the AES-GCM-128 ceiling at 2048-byte frames, all in this run. The
    target runs on the HBA's event loop, or with `child_process` in a process of its own (two cores)."""
    tcp = raw_tcp_mb_s(seconds)
    ceiling_run = aesgcm_run(16, MIB // FRAME, False)
    t_ceiling = best_seconds(ceiling_run, repeat)
    with tempfile.TemporaryDirectory(prefix="edif-bench-") as d:
        res = run_loop(_loopback_async(Path(d), seconds, qd, rounds, child_process, loop_name), loop_name)
    t_ceiling = min(t_ceiling, best_seconds(ceiling_run, repeat))  # before and after: a shared CPU's best
    ceiling = mb_s(t_ceiling)
    plain, enc = res["plaintext"], res["encrypted"]
    assert isinstance(plain, dict) and isinstance(enc, dict)

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    ratios = {}
    for k in ("seq_write_1m", "seq_read_1m"):
        e, p = enc[k]["mb_s"], plain[k]["mb_s"]
        ratios[k] = {"encrypted_to_plaintext": ratio(e, p), "encrypted_to_ceiling": ratio(e, ceiling),
                     "plaintext_to_raw_tcp": ratio(p, tcp)}
    where = ("the TargetPort in a process of its own (bench/edif.py --target-child), the Hba in this one"
             if child_process else "Hba <-> TargetPort on one event loop in this process")
    return {
        "setup": f"{where}, over 127.0.0.1, event loop {loop_name}; encrypted = ESP "
                 "with SAs installed directly on both ends from an in-memory IKE negotiation (IKE_SA_INIT + "
                 "IKE_AUTH, PSK, X25519, child AES-GCM-128); engine/channel not in the loop",
        "target_process": "child" if child_process else "same", "loop": loop_name,
        "cipher": "AES_GCM_128", "seconds": seconds, "rounds": rounds, "qd": qd, "io_bytes": MIB,
        "raw_tcp_mb_s": tcp, "aesgcm_ceiling_mb_s": ceiling,
        "plaintext": plain, "encrypted": enc, "ratios": ratios,
        "errors": sum(int(m[k]["errors"]) for m in (plain, enc) for k in ("seq_write_1m", "seq_read_1m")),
    }


def print_loopback(lb: dict[str, object]) -> None:
    """The loopback table and ratios, human-readable."""
    where = "target in its own process" if lb["target_process"] == "child" else "one process"
    print(f"HBA <-> target over TCP loopback, {where}, {lb['loop']} loop (1 MiB sequential, QD {lb['qd']},"
          f" {lb['seconds']} s each in {lb['rounds']} interleaved rounds, best round; MB/s):")
    print(f"  {'raw TCP loopback':28} {lb['raw_tcp_mb_s']:9.1f}")
    print(f"  {'AES-GCM-128 ceiling (2 KiB)':28} {lb['aesgcm_ceiling_mb_s']:9.1f}")
    cpu_of = "the HBA process" if lb["target_process"] == "child" else "both ends"
    for mode in ("plaintext", "encrypted"):
        m = lb[mode]
        assert isinstance(m, dict)
        for k, label in (("seq_write_1m", "WRITE"), ("seq_read_1m", "READ")):
            print(f"  {mode + ' ' + label:28} {m[k]['mb_s']:9.1f}   rounds {m[k]['mb_s_rounds']}"
                  f"   CPU {m[k]['cpu_ms_per_mib']} ms/MiB ({cpu_of})   errors {m[k]['errors']}")
    ratios = lb["ratios"]
    assert isinstance(ratios, dict)
    for k, r in ratios.items():
        print(f"  {k}: encrypted/plaintext {r['encrypted_to_plaintext']}, encrypted/ceiling "
              f"{r['encrypted_to_ceiling']}, plaintext/raw TCP {r['plaintext_to_raw_tcp']}")
    enc = lb["encrypted"]
    assert isinstance(enc, dict)
    print(f"  ESP: {enc['esp']}")
    if "target_cpu_ms_per_mib" in enc:
        plain = lb["plaintext"]
        assert isinstance(plain, dict)
        print(f"  target process CPU per MiB, WRITE and READ together: plaintext"
              f" {plain['target_cpu_ms_per_mib']} ms, encrypted {enc['target_cpu_ms_per_mib']} ms")


def mb_s(seconds: float, nbytes: int = MIB) -> float:
    return round(nbytes / seconds / 1e6, 1)


def measure(cipher: Cipher, frames: list[Frame], repeat: int) -> dict[str, float]:
    """All figures for one cipher; t_* are best-of-repeat seconds per MiB."""
    t_plain = best_seconds(transform_run(_Identity(), _Identity(), frames, False), repeat)
    t_plain_codec = best_seconds(transform_run(_Identity(), _Identity(), frames, True), repeat)
    t_enc = best_seconds(transform_run(*esp_pair(cipher), frames, False), repeat)
    t_enc_codec = best_seconds(transform_run(*esp_pair(cipher), frames, True), repeat)
    gmac = cipher in (Cipher.AES_GMAC_128, Cipher.AES_GMAC_256)
    t_ceiling = best_seconds(aesgcm_run(cipher.key_size, len(frames), gmac), repeat)
    data = b"".join(f.payload for f in frames)
    t_bulk_plain = best_seconds(bulk_run(None, None, data), repeat)
    t_bulk = best_seconds(bulk_run(*esp_pair(cipher), data), repeat)
    us = 1e6 / len(frames)
    return {
        "plaintext_mb_s": mb_s(t_plain),
        "encrypted_mb_s": mb_s(t_enc),
        "ratio_encrypted_to_plaintext": round(t_plain / t_enc, 5),  # encrypted MB/s / plaintext MB/s
        "plaintext_with_codec_mb_s": mb_s(t_plain_codec),
        "encrypted_with_codec_mb_s": mb_s(t_enc_codec),
        "ratio_with_codec": round(t_plain_codec / t_enc_codec, 4),  # the same, codec in both loops
        "aesgcm_ceiling_mb_s": mb_s(t_ceiling),
        "encrypted_share_of_ceiling": round(t_ceiling / t_enc, 4),  # encrypted MB/s / AES-GCM ceiling
        "esp_us_per_frame_round_trip": round(t_enc / len(frames) * 1e6, 2),
        # The bulk path: codec and ESP together, per 2 KiB frame both ways, and the clear codec alone.
        "bulk_encrypted_mb_s": mb_s(t_bulk),
        "bulk_plaintext_mb_s": mb_s(t_bulk_plain),
        "bulk_us_per_frame_round_trip": round(t_bulk * us, 2),
        "bulk_codec_us_per_frame_round_trip": round(t_bulk_plain * us, 2),
        "bulk_esp_us_per_frame": round((t_bulk - t_bulk_plain) * us, 2),  # what ESP adds on the bulk path
        "bulk_share_of_ceiling": round(t_ceiling / t_bulk, 4),
        "bulk_ratio_encrypted_to_plaintext": round(t_bulk_plain / t_bulk, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cipher", action="append", choices=[c.name for c in Cipher])
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each loopback workload")
    ap.add_argument("--qd", type=int, default=4, help="outstanding 1 MiB commands on the loopback link")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved plaintext/encrypted loopback rounds")
    ap.add_argument("--no-loopback", action="store_true", help="frame-level figures only")
    ap.add_argument("--quick", action="store_true", help="a fast run: repeat 2, 0.3 s workloads, AES-GCM-128")
    ap.add_argument("--target", choices=["both", "in-process", "child"], default="both",
                    help="loopback with the target on the HBA's loop, in its own process, or both (default)")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="event loop of both ends in the loopback runs (uvloop must be installed)")
    ap.add_argument("--target-child", action="store_true", help=argparse.SUPPRESS)  # TargetChild's process
    args = ap.parse_args(argv)
    if args.target_child:
        return target_child_main()
    if args.quick:
        args.repeat, args.seconds, args.rounds = min(args.repeat, 2), min(args.seconds, 0.3), 1
        args.cipher = args.cipher or [Cipher.AES_GCM_128.name]
    ciphers = [Cipher[c] for c in args.cipher] if args.cipher else list(Cipher)
    frames = one_mib_of_frames()
    assert len(frames) == MIB // FRAME and all(len(f.payload) == FRAME for f in frames)
    results: dict[str, dict[str, float]] = {}
    for cipher in ciphers:
        r = results[cipher.name] = measure(cipher, frames, args.repeat)
        print(f"{cipher.name:13} encrypted {r['encrypted_mb_s']:6.1f} MB/s"
              f" = {r['ratio_encrypted_to_plaintext']:.4f} x plaintext ({r['plaintext_mb_s']:.0f});"
              f" with codec {r['encrypted_with_codec_mb_s']:.1f} = {r['ratio_with_codec']:.3f}"
              f" x {r['plaintext_with_codec_mb_s']:.1f}; AES-GCM ceiling {r['aesgcm_ceiling_mb_s']:.0f} MB/s;"
              f" {r['esp_us_per_frame_round_trip']:.1f} us/frame", flush=True)
        print(f"{'':13} bulk path: encrypted {r['bulk_encrypted_mb_s']:6.1f} MB/s"
              f" ({r['bulk_us_per_frame_round_trip']:.2f} us/frame with codec, of which ESP"
              f" {r['bulk_esp_us_per_frame']:.2f}) = {r['bulk_share_of_ceiling']:.3f} x ceiling,"
              f" {r['bulk_ratio_encrypted_to_plaintext']:.3f} x bulk plaintext"
              f" ({r['bulk_plaintext_mb_s']:.0f})",
              flush=True)
    loopback = two_processes = None
    if not args.no_loopback and args.target in ("both", "in-process"):
        loopback = hba_target_loopback(args.seconds, args.qd, args.repeat, args.rounds, loop_name=args.loop)
        print_loopback(loopback)
    if not args.no_loopback and args.target in ("both", "child"):
        two_processes = hba_target_loopback(args.seconds, args.qd, args.repeat, args.rounds,
                                            child_process=True, loop_name=args.loop)
        print_loopback(two_processes)
    summary = {
        "bench": "edif",
        "quick": args.quick,
        "io_bytes": MIB,
        "frame_bytes": FRAME,
        "frames": len(frames),
        "repeat": args.repeat,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "hba_target_loopback": loopback,
        "hba_target_loopback_two_processes": two_processes,
    }
    print(json.dumps(summary, sort_keys=True))
    return 1 if any(lb is not None and lb["errors"] for lb in (loopback, two_processes)) else 0


if __name__ == "__main__":
    sys.exit(main())
