"""Data-path benchmark: HBA → target over loopback TCP, beside raw TCP loopback in the same run.

    .venv/bin/python bench/datapath.py [--seconds 2] [--qd 8] [--lun-size 256MiB] [--in-process]

Workloads (each for --seconds, --qd commands outstanding): 1 MiB sequential WRITE and READ, 4 KiB
random WRITE and READ. The target runs as `edif-target` in a child process (its own core, as on a
real link) unless --in-process; its LUN is a sparse file in a temporary directory that the
sequential write fills first, so reads hit data. Raw TCP: a child process that discards what it
receives, fed 1 MiB writes for --seconds. The last line of output is one JSON object.
Plaintext only for now: the ESP transform (EDIF issue) adds an "encrypted" row later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edifd.config import parse_size  # noqa: E402
from edifd.hba import Hba, PortConfig, Timers  # noqa: E402
from edifd.scsi import ScsiCommand, cdb  # noqa: E402
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer  # noqa: E402

T_WWPN, I_WWPN = 0x2100001B32000002, 0x2100001B320000A1
MIB = 1 << 20

SINK = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
print(n, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_tcp(seconds: float) -> float:
    """MB/s of 1 MiB sends to a discarding child process over loopback."""
    proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        buf = os.urandom(MIB)
        with socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                s.sendall(buf)
            s.shutdown(socket.SHUT_WR)
            received = int(proc.stdout.readline())
            dt = time.perf_counter() - t0
        return received / dt / 1e6
    finally:
        proc.wait(10)


async def workload(hba: Hba, name: str, *, block: int, write: bool, random_io: bool, seconds: float,
                   qd: int, lun_blocks: int) -> dict[str, float | str]:
    nblocks = block // 512
    payload = os.urandom(block)
    rng = random.Random(1)
    next_lba = 0
    done_ops = 0
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    def lba() -> int:
        nonlocal next_lba
        if random_io:
            return rng.randrange(0, lun_blocks - nblocks, nblocks)
        v = next_lba
        next_lba = (next_lba + nblocks) % (lun_blocks - nblocks + 1)
        return v

    async def worker() -> None:
        nonlocal done_ops, errors
        while loop.time() < end:
            at = lba()
            if write:
                cmd = ScsiCommand(cdb.write(at, nblocks, size=16), data_out=payload)
            else:
                cmd = ScsiCommand(cdb.read(at, nblocks, size=16), data_in_len=block)
            resp = await hba.execute(T_WWPN, 0, cmd)
            if resp.ok:
                done_ops += 1
            else:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(qd)))
    dt = time.perf_counter() - t0
    return {"name": name, "mb_s": round(done_ops * block / dt / 1e6, 1), "iops": round(done_ops / dt),
            "ops": done_ops, "errors": errors, "seconds": round(dt, 2)}


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    lun_size = parse_size(args.lun_size)
    tcp = free_port()
    child = server = None
    if args.in_process:
        luns = (LunConfig(0, str(tmp / "lun0.img"), lun_size),)
        server = TargetServer(TargetConfig((TargetPortConfig("t0", T_WWPN, T_WWPN - 1, ("127.0.0.1", tcp),
                                                             luns),)))
        await server.start()
    else:
        conf = tmp / "target.toml"
        conf.write_text(f'[[port]]\nname = "t0"\nwwpn = "{T_WWPN:016x}"\nwwnn = "{T_WWPN - 1:016x}"\n'
                        f'listen = "127.0.0.1:{tcp}"\n[[port.lun]]\nlun = 0\npath = "{tmp / "lun0.img"}"\n'
                        f'size = {lun_size}\n')
        child = subprocess.Popen([sys.executable, "-m", "edifd.target.cli", "run", "--config", str(conf),
                                  "--log-level", "warning"], cwd=Path(__file__).resolve().parents[1])
    hba = Hba([PortConfig("p0", I_WWPN, I_WWPN - 1, ("127.0.0.1", tcp), remote_wwpn=T_WWPN)],
              Timers(io_timeout=60.0))
    await hba.start()
    try:
        if not await hba.wait_ready(T_WWPN, 15.0):
            raise SystemExit("the HBA did not log in to the target")
        lun_blocks = lun_size // 512
        results = []
        for name, block, write, rnd, qd in (
            ("seq_write_1m", MIB, True, False, max(1, args.qd // 2)),
            ("seq_read_1m", MIB, False, False, max(1, args.qd // 2)),
            ("rand_write_4k", 4096, True, True, args.qd),
            ("rand_read_4k", 4096, False, True, args.qd),
        ):
            r = await workload(hba, name, block=block, write=write, random_io=rnd, seconds=args.seconds,
                               qd=qd, lun_blocks=lun_blocks)
            print(f"{name:14s} qd={qd:<3d} {r['mb_s']:8.1f} MB/s {r['iops']:8d} IOPS  errors={r['errors']}",
                  flush=True)
            results.append(r)
        (st,) = hba.remote_ports()
        counters = {"link_resets": st.counters["link_resets"], "timeouts": st.remote_counters["timeouts"],
                    "aborts": st.remote_counters["aborts"]}
    finally:
        await hba.stop()
        if server is not None:
            await server.stop()
        if child is not None:
            child.terminate()
            child.wait(15)
    return {"hba": results, "counters": counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each workload")
    ap.add_argument("--qd", type=int, default=8, help="outstanding commands (4 KiB); half for 1 MiB")
    ap.add_argument("--lun-size", default="256MiB")
    ap.add_argument("--in-process", action="store_true", help="run the target on the same event loop")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edif-bench-") as d:
        tcp_mb_s = raw_tcp(args.seconds)
        print(f"{'raw_tcp':14s}        {tcp_mb_s:8.1f} MB/s", flush=True)
        out = asyncio.run(run(args, Path(d)))
    out.update(raw_tcp_mb_s=round(tcp_mb_s, 1), seconds=args.seconds, qd=args.qd,
               target="in-process" if args.in_process else "child process", cpus=os.cpu_count())
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
