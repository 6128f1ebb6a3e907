"""Channel RTT in the QEMU lab, as a ratio to a plain 4 KiB O_DIRECT READ through the same path.

    sudo python3 bench/channel_lab.py [--count 1000] [--out DIR]

Two TCG boots (lab/scenario_channel.py with only the ``ping`` and ``bench`` phases): VM-H runs edifd with a
control LUN and a data LUN, both exported over iSCSI; VM-S maps both through QEMU's iSCSI initiator as
scsi-block. Measured in VM-S, one after the other on the same path (guest sd -> virtio-scsi -> QEMU
libiscsi -> LIO iSCSI -> TCMU -> edifd):

* channel RTT: ``edif-agent ping --count N`` (KEEPALIVE request -> WRITE -> host -> response -> parked
  READ completes), p50/p99;
* baseline: 500 sequential 4 KiB O_DIRECT READs at random aligned offsets of the data LUN, p50/p99.

Prints a table and, last, one JSON object. Absolute figures under TCG say little (the guest CPU is
emulated); the ratio says how many plain I/Os one channel round trip costs. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.control import run_dir  # noqa: E402
from lab.image import ensure_image  # noqa: E402
from lab.scenario_channel import run_channel_lab  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="channel round trips (default 1000)")
    ap.add_argument("--out", type=Path, help="keep the VM shares here (default: lab/out/bench-channel/<pid>)")
    a = ap.parse_args()
    out = a.out or run_dir("bench-channel")
    s = run_channel_lab(ensure_image(log=print), out, count=a.count, phases=("ping", "bench"),
                        log=lambda m: print(m, flush=True))
    b = (s.get("vm_s") or {}).get("bench") or {}
    ping = ((s.get("vm_s") or {}).get("ping") or {}).get("report") or {}
    rtt, read, ratio = b.get("channel_rtt_ms") or {}, b.get("read_4k_ms") or {}, b.get("ratio") or {}
    print(f"{'':28} {'p50 ms':>10} {'p99 ms':>10}")
    print(f"{'channel RTT (ping)':28} {rtt.get('p50')!s:>10} {rtt.get('p99')!s:>10}   n={rtt.get('n')}")
    name = "4 KiB O_DIRECT READ (data)"
    print(f"{name:28} {read.get('p50')!s:>10} {read.get('p99')!s:>10}   n={read.get('n')}")
    print(f"{'ratio':28} {ratio.get('p50')!s:>10} {ratio.get('p99')!s:>10}")
    result = {"bench": "channel_lab", "count": a.count, "channel_rtt_ms": rtt, "read_4k_ms": read,
              "ratio": ratio, "ping_clean": ping.get("lost") == 0 and ping.get("duplicates") == 0,
              "problems": s.get("problems"), "out": str(out)}
    print(json.dumps(result, sort_keys=True))
    return 0 if b and not s.get("problems") else 1


if __name__ == "__main__":
    sys.exit(main())
