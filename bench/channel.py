"""Control-channel benchmark: request/response RTT and messages/s through the SCSI layer, in process,
side by side with an AF_UNIX socket echo measured in the same run.

    .venv/bin/python bench/channel.py [--requests 2000] [--parked 4] [--window 16] [--lab]

Native: ScsiDisk(ChannelCore) behind one "ring owner" thread (as the TCMU edge serves a LUN), and a
ChannelClient driven like the guest edge does it: --parked reader threads keeping READs parked and one
writer thread issuing WRITEs; all CDBs are real READ(10)/WRITE(10) and every message is MAC'd. Figures:

* request RTT: request() -> WRITE -> dispatch -> response queued -> parked READ completes -> read_done
  hands the response over; p50/p99 over --requests sequential KEEPALIVEs;
* requests/s: --window requests outstanding at a time;
* event RTT and events/s: post_event() on the host -> the agent's read_done returns it.

Baseline: a child process echoing 4096-byte messages over an AF_UNIX stream socket (the channel a KVM
user would otherwise reach for, e.g. through virtio-vsock or a shared socket), RTT one at a time and
messages/s with --window in flight. The last line of output is one JSON object.

--lab runs bench/channel_lab.py instead: the channel RTT in the QEMU lab as a ratio to a plain 4 KiB
O_DIRECT READ on a data LUN through the same path (root, QEMU; boots two VMs).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edifd.channel import ChannelCore  # noqa: E402
from edifd.channel.loopback import read_cdb, write_cdb  # noqa: E402
from edifd.proto import ChannelKey, Keepalive, LinkUp, Message  # noqa: E402
from edifd.scsi import Pending, ScsiCommand, ScsiDisk, ScsiResponse, Status  # noqa: E402
from guest_agent.client import ChannelClient  # noqa: E402

BLOCK = 512
BLOCKS = (64 << 20) // BLOCK
SLOT = 4096
_Job = tuple[ScsiCommand, Callable[[ScsiResponse], None]]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Ring:
    """The single owner of the LUN: executes CDBs in order, completions come back on any thread."""

    def __init__(self, disk: ScsiDisk) -> None:
        self.disk = disk
        self.q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            cmd, done = item
            r = self.disk.execute(cmd)
            if isinstance(r, Pending):
                r.on_done(done)
            else:
                done(r)

    def call(self, cmd: ScsiCommand) -> ScsiResponse:
        ev = threading.Event()
        box: list[ScsiResponse] = []

        def done(resp: ScsiResponse) -> None:
            box.append(resp)
            ev.set()

        self.q.put((cmd, done))
        ev.wait()
        return box[0]

    def stop(self) -> None:
        self.q.put(None)


class Agent:
    """The guest edge's threading model around a ChannelClient (readers + one writer, one lock)."""

    def __init__(self, client: ChannelClient, ring: Ring, parked: int) -> None:
        self.client, self.ring = client, ring
        self.cond = threading.Condition()
        self.stop = False
        self.inbox: list[Message] = []
        self.threads = [threading.Thread(target=self._reader, daemon=True) for _ in range(parked)]
        self.threads.append(threading.Thread(target=self._writer, daemon=True))
        for t in self.threads:
            t.start()

    def _reader(self) -> None:
        while not self.stop:
            with self.cond:
                req = self.client.next_read()
            resp = self.ring.call(read_cdb(req.lba, req.nblocks, BLOCK))
            with self.cond:
                if resp.status == Status.GOOD:
                    msgs = self.client.read_done(req.token, resp.data)
                    if msgs:
                        self.inbox += msgs
                        self.cond.notify_all()
                else:
                    self.client.read_failed(req.token)
                self.cond.notify_all()  # the writer may have a handshake step to send

    def _writer(self) -> None:
        while not self.stop:
            with self.cond:
                w = self.client.next_write()
                while w is None and not self.stop:
                    self.cond.wait(0.05)
                    w = self.client.next_write()
            if w is None:
                return
            resp = self.ring.call(write_cdb(w.lba, w.payload, BLOCK))
            with self.cond:
                self.client.write_done(w.token, resp.status == Status.GOOD, resp.sense)

    def wait_for(self, pred: Callable[[], bool], timeout: float = 30.0) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise TimeoutError("the channel stalled")


def bench_native(n: int, parked: int, window: int) -> dict[str, float]:
    key = ChannelKey(os.urandom(32))
    core = ChannelCore(key, num_blocks=BLOCKS, block_size=BLOCK, park_time=30.0, queue_limit=128)
    ring = Ring(ScsiDisk(core))
    client = ChannelClient(key, capacity_blocks=BLOCKS, block_size=BLOCK, parked_reads=parked)
    agent = Agent(client, ring, parked)
    with agent.cond:
        client.start()
        agent.cond.notify_all()
    agent.wait_for(lambda: client.established)

    def one() -> float:
        t0 = time.perf_counter()
        with agent.cond:
            rid = client.request(Keepalive())
            agent.cond.notify_all()
        agent.wait_for(lambda: rid in client._responses)
        with agent.cond:
            client.response(rid)
        return time.perf_counter() - t0

    for _ in range(min(200, n)):  # warm-up
        one()
    rtts = [one() for _ in range(n)]

    # Throughput: `window` requests outstanding at any time.
    t0 = time.perf_counter()
    sent = got = 0
    while got < n:
        with agent.cond:
            while sent < n and sent - got < window:
                client.request(Keepalive())
                sent += 1
            agent.cond.notify_all()
            agent.cond.wait_for(lambda: bool(client._responses), 30)
            got += len(client.take_responses())
    req_rate = n / (time.perf_counter() - t0)

    # Events: RTT one at a time, then a burst.
    def inbox_len() -> int:
        return len(agent.inbox)

    ev_rtts = []
    for _ in range(n):
        base = inbox_len()
        t = time.perf_counter()
        core.post_event(LinkUp())
        agent.wait_for(lambda b=base: inbox_len() > b)
        ev_rtts.append(time.perf_counter() - t)
    base = inbox_len()
    t = time.perf_counter()
    burst = min(n, 100)
    for _ in range(burst):
        core.post_event(LinkUp())
        if core.status()["queued"] > 100:
            agent.wait_for(lambda: core.status()["queued"] < 50)
    agent.wait_for(lambda: inbox_len() >= base + burst)
    ev_rate = burst / (time.perf_counter() - t)

    agent.stop = True
    core.close()
    with agent.cond:
        agent.cond.notify_all()
    ring.stop()
    lost = core.counters["events_lost"]
    return {
        "rtt_us_p50": statistics.median(rtts) * 1e6,
        "rtt_us_p99": pct(rtts, 99) * 1e6,
        "requests_per_s": req_rate,
        "event_rtt_us_p50": statistics.median(ev_rtts) * 1e6,
        "event_rtt_us_p99": pct(ev_rtts, 99) * 1e6,
        "events_per_s": ev_rate,
        "events_lost": lost,
    }


ECHO = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
while True:
    buf = bytearray()
    while len(buf) < 4096:
        d = c.recv(4096 - len(buf))
        if not d:
            sys.exit(0)
        buf += d
    c.sendall(buf)
"""


def bench_unix(n: int, window: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "echo.sock")
        proc = subprocess.Popen([sys.executable, "-c", ECHO, path], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            msg = os.urandom(SLOT)

            def recv_one() -> None:
                left = SLOT
                while left:
                    left -= len(s.recv(left))

            def one() -> float:
                t0 = time.perf_counter()
                s.sendall(msg)
                recv_one()
                return time.perf_counter() - t0

            for _ in range(min(200, n)):
                one()
            rtts = [one() for _ in range(n)]
            t0 = time.perf_counter()
            sent = got = 0
            while got < n:
                while sent < n and sent - got < window:
                    s.sendall(msg)
                    sent += 1
                recv_one()
                got += 1
            rate = n / (time.perf_counter() - t0)
            s.close()
        finally:
            proc.kill()
            proc.wait()
    return {"rtt_us_p50": statistics.median(rtts) * 1e6, "rtt_us_p99": pct(rtts, 99) * 1e6,
            "messages_per_s": rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--parked", type=int, default=4, help="READs the agent keeps parked (1..8)")
    ap.add_argument("--window", type=int, default=16, help="requests in flight for the rate figures")
    ap.add_argument("--lab", action="store_true",
                    help="the lab ratio vs a 4 KiB O_DIRECT READ (runs bench/channel_lab.py; root + QEMU)")
    a = ap.parse_args()
    if a.lab:
        import os

        lab = os.path.join(os.path.dirname(os.path.abspath(__file__)), "channel_lab.py")
        os.execv(sys.executable, [sys.executable, lab])
    native = bench_native(a.requests, a.parked, a.window)
    unix = bench_unix(a.requests, a.window)
    print(f"{'':28}{'p50 us':>10}{'p99 us':>10}{'msgs/s':>12}")
    print(f"{'channel request/response':28}{native['rtt_us_p50']:10.1f}{native['rtt_us_p99']:10.1f}"
          f"{native['requests_per_s']:12.0f}")
    print(f"{'channel event delivery':28}{native['event_rtt_us_p50']:10.1f}{native['event_rtt_us_p99']:10.1f}"
          f"{native['events_per_s']:12.0f}")
    print(f"{'AF_UNIX 4 KiB echo':28}{unix['rtt_us_p50']:10.1f}{unix['rtt_us_p99']:10.1f}"
          f"{unix['messages_per_s']:12.0f}")
    out = {
        "bench": "channel",
        "requests": a.requests,
        "parked": a.parked,
        "window": a.window,
        "native": native,
        "unix_echo": unix,
        "rtt_p50_ratio_native_over_unix": native["rtt_us_p50"] / unix["rtt_us_p50"],
        "lab": None,
    }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
