"""A stand-in for qemu-system-x86_64 in the fast lab tests: speaks the same file protocol as the real guest.

Parses ``-serial file:`` and the ``mount_tag=lab`` share from its argv and acts according to ``FAKE_QEMU``:
``boot`` (markers, result.json, power off), ``serve`` (markers, ``ready``, wait for ``stop``, then as boot),
``hang`` (one marker, then sleep), ``crash`` (a message on stderr, exit 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    console = share = None
    for i, a in enumerate(argv):
        if a == "-serial":
            console = Path(argv[i + 1].removeprefix("file:"))
        if a == "-virtfs" and "mount_tag=lab" in argv[i + 1]:
            share = Path(argv[i + 1].split("path=")[1].split(",")[0])
    assert console is not None and share is not None
    mode = os.environ.get("FAKE_QEMU", "boot")
    (share / "argv.json").write_text(json.dumps(argv))

    def mark(text: str) -> None:
        with open(console, "a") as fh:
            fh.write(f"some kernel noise\nLAB: {text} uptime=1.25\n")

    if mode == "crash":
        print("qemu-system-x86_64: -drive file=iscsi://x: could not connect", file=sys.stderr)
        return 1
    mark("booted")
    if mode == "hang":
        while True:
            time.sleep(1)
    if mode == "serve":
        (share / "ready").write_text("ready\n")
        while not (share / "stop").exists():
            time.sleep(0.05)
    (share / "result.json").write_text(json.dumps({"answer": 42, "run_sh": (share / "run.sh").read_text()}))
    (share / "out.log").write_text("guest output\n")
    mark(f"run.sh rc={os.environ.get('FAKE_RC', '0')}")
    mark("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
