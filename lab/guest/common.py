"""Guest-side helpers shared by the scenario scripts (run with Debian's python3 inside the VM, stdlib only).

Protocol with the host (all files in the per-run 9p share, ``/lab``): the script writes ``result.json`` at
the end (atomically: the host may be polling), ``ready`` when a long-running service is up, and polls for
``stop``.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import time
from pathlib import Path
from typing import Any

SHARE = Path(os.environ.get("LAB_SHARE", "/lab"))


def log(msg: str) -> None:
    # stdout goes to /lab/out.log; a few lines also to the console so the host sees progress live.
    up = Path("/proc/uptime").read_text().split()[0]
    print(f"[{up}] {msg}", flush=True)


def aligned(n: int) -> mmap.mmap:
    """An ``n``-byte buffer for O_DIRECT I/O: anonymous mmap is page aligned."""
    return mmap.mmap(-1, n)


def write_json(name: str, data: dict[str, Any]) -> Path:
    p = SHARE / name
    tmp = SHARE / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    return p


def write_result(data: dict[str, Any]) -> Path:
    return write_json("result.json", data)


def mark_ready(text: str = "ready") -> None:
    tmp = SHARE / ".ready.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, SHARE / "ready")


def wait_stop(timeout: float = 0.0, poll: float = 0.25) -> bool:
    """Blocks until the host touches /lab/stop (True) or ``timeout`` seconds pass (False; 0 = forever)."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while not (SHARE / "stop").exists():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def run(argv: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs a command and returns rc/stdout/stderr (never raises for a non-zero rc)."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"rc": -1, "stdout": "", "stderr": f"{type(e).__name__}: {e}"}
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
