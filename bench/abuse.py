"""The control channel under abuse, in process through the SCSI layer: floods of bad-MAC WRITEs, garbage and
oversized WRITEs and nonsense READs on a control LUN while the legitimate agent keeps pinging.

    .venv/bin/python bench/abuse.py [--writes 100000] [--ping-every 1000]

What it shows, with figures: edifd's RSS before and after the flood (this process: ChannelCore is all that
runs), the channel's log lines (at most one per burst per reason, plus the "suppressed" summaries), every
refusal counted exactly (rejected_<reason> equals what was sent), nothing acted on, and the agent's
request/response round trip during the flood beside the same measured before it. Final line JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from typing import Any

from channel_rig import ActedHandler, Clock

from edifd.channel import ChannelCore
from edifd.channel.loopback import Loopback, read_cdb, write_cdb
from edifd.proto import HEADER_SIZE, ChannelKey, EpochKeys, Keepalive, Message, encode
from edifd.scsi import ScsiDisk, ScsiResponse
from guest_agent.client import ChannelClient

KEY = ChannelKey(bytes(range(40, 72)))
BLOCKS = (16 << 20) // 512


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class CountingLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def ping(lb: Loopback, client: ChannelClient) -> float:
    """One KEEPALIVE request -> its response, through the SCSI layer; seconds."""
    t = time.perf_counter()
    rid = client.request(Keepalive())
    for _ in range(20):
        lb.pump(rounds=2)
        if client.response(rid) is not None:
            return time.perf_counter() - t
    raise RuntimeError("the legitimate agent got no answer")


def run(writes: int = 100_000, ping_every: int = 1000, seed: int = 1) -> dict[str, Any]:
    rnd = random.Random(seed)
    clock = Clock()
    log = CountingLog()
    chan_log = logging.getLogger("edifd.channel")
    chan_log.addHandler(log)
    chan_log.setLevel(logging.INFO)
    chan_log.propagate = False
    handler = ActedHandler()
    core = ChannelCore(KEY, num_blocks=BLOCKS, handler=handler, clock=clock)
    client = ChannelClient(KEY, capacity_blocks=BLOCKS, clock=clock)
    lb = Loopback(ScsiDisk(core), client)
    client.start()
    lb.pump()
    assert client.established
    disk = ScsiDisk(core)
    g = core.geometry
    wrong = EpochKeys.derive(bytes(32), 0, bytes(32), bytes(32), 1)  # not the agent's keys
    base_rtt = [ping(lb, client) for _ in range(50)]
    rss0 = rss_kib()
    lines0 = len(log.lines)
    sent = {"bad_mac": 0, "malformed": 0, "bad_length": 0, "stale_epoch": 0, "bad_reads": 0}
    flood_rtt = []
    acted0 = handler.n
    t0 = time.perf_counter()
    epoch = client.epoch_keys.epoch  # the live epoch, to forge under
    forger = EpochKeys.derive(bytes(32), 0, bytes(32), bytes(32), epoch)  # right epoch, wrong channel key
    template = encode(Message(Keepalive(), 0, epoch, 1, 1), KEY, keys=forger)
    for i in range(writes):
        seq = rnd.randrange(1, 1 << 20)
        kind = i % 10
        if kind < 6:  # right epoch, wrong key: the tag fails
            data = _retag(template, seq)
            sent["bad_mac"] += 1
        elif kind < 8:  # garbage
            data = rnd.randbytes(512)
            sent["malformed"] += 1
        elif kind == 8:  # longer than a slot
            data = rnd.randbytes(4608)
            sent["bad_length"] += 1
        else:  # sealed under an epoch the host never made
            data = encode(Message(Keepalive(), 0, 1, 1 + i, seq), KEY, keys=wrong)
            sent["stale_epoch"] += 1
        lba = g.write_lba(seq)
        r = disk.execute(write_cdb(lba, data, 512))
        assert isinstance(r, ScsiResponse) and r.status != 0
        if i % 7 == 0:  # a READ of half a slot inside the window: refused
            disk.execute(read_cdb(g.read_lba(0, 0), 4, 512))
            sent["bad_reads"] += 1
        if i % ping_every == 0:
            clock.now += 0.5
            flood_rtt.append(ping(lb, client))
        if i % 20_000 == 0:
            clock.now += 11  # a new burst: one more line per reason
    flood_s = time.perf_counter() - t0
    rss1 = rss_kib()
    counted = {k: core.counters[f"rejected_{k}"]
               for k in ("bad_mac", "malformed", "bad_length", "stale_epoch")}
    counted["bad_reads"] = core.counters["bad_reads"]
    chan_log.removeHandler(log)
    lines = log.lines[lines0:]
    bursts = 1 + writes // 20_000
    return {
        "writes": writes, "flood_s": round(flood_s, 2), "writes_per_s": round(writes / flood_s),
        "rss_kib_before": rss0, "rss_kib_after": rss1, "rss_growth_kib": rss1 - rss0,
        # per burst and reason at most a line and its "suppressed" summary:
        "log_lines": len(lines), "log_lines_bound": bursts * 2 * 4,
        "sent": sent, "counted": counted, "counters_exact": sent == counted,
        "acted_on_during_flood": handler.n - acted0 - len(flood_rtt),
        "rtt_us_p50_before": round(statistics.median(base_rtt) * 1e6, 1),
        "rtt_us_p50_during": round(statistics.median(flood_rtt) * 1e6, 1),
        "rtt_us_max_during": round(max(flood_rtt) * 1e6, 1), "pings_during": len(flood_rtt),
    }


def _retag(template: bytes, seq: int) -> bytes:
    """A forged WRITE for another slot without paying for a seal: the template under a new sequence
    (whose tag verifies under no key the host holds)."""
    b = bytearray(template)
    b[32:40] = seq.to_bytes(8, "big")
    assert len(b) >= HEADER_SIZE
    return bytes(b)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=100_000)
    p.add_argument("--ping-every", type=int, default=1000)
    a = p.parse_args(argv)
    r = run(a.writes, a.ping_every)
    print(f"control LUN flood: {r['writes']} refused WRITEs in {r['flood_s']} s ({r['writes_per_s']}/s)")
    print(f"  RSS {r['rss_kib_before']} -> {r['rss_kib_after']} KiB ({r['rss_growth_kib']:+d} KiB)")
    print(f"  log lines {r['log_lines']} (bound {r['log_lines_bound']}: one line and one summary per reason "
          "per burst)")
    print(f"  sent    {r['sent']}\n  counted {r['counted']}  exact: {r['counters_exact']}")
    print(f"  acted on: {r['acted_on_during_flood']}")
    print(f"  agent RTT p50 {r['rtt_us_p50_before']} us before, {r['rtt_us_p50_during']} us during "
          f"({r['pings_during']} pings, max {r['rtt_us_max_during']} us)")
    print(json.dumps({"bench": "abuse", **r}, sort_keys=True))
    ok = r["counters_exact"] and r["acted_on_during_flood"] == 0 and r["log_lines"] <= r["log_lines_bound"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
