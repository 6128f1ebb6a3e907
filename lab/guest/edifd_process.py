"""edifd (``python3 -m edifd run``) as a child process of a VM-H guest script: start it, wait until it
is ready, signal it, wait for its exit. The one copy of that logic for every host_* script.

edifd writes ``--ready-file`` once it serves its LUNs; its output is appended to the share's
``edifd.log`` so the host keeps it after the VM powers off.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from signal import SIGTERM, Signals
from typing import Any

from .common import SHARE


class Edifd:
    """One edifd configuration, started as often as a scenario needs (restarts after SIGKILL)."""

    def __init__(self, config: Path, ready: Path, log: Path | None = None) -> None:
        self.config, self.ready = config, ready
        self.log = log if log is not None else SHARE / "edifd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[dict[str, Any]] = []  # per start: pid, start_s, and exit/signal once stopped

    def spawn(self, extra: Sequence[str] = ()) -> None:
        """Starts edifd without waiting for it (a caller that watches something else first)."""
        self.ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "edifd", "run", "--config", str(self.config),
                "--ready-file", str(self.ready), *extra]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
        self.runs.append({"pid": self.proc.pid})

    def wait_ready(self, timeout: float, *, why: str = "", poll: float = 0.1) -> float:
        """Seconds until the ready file appeared; RuntimeError if edifd exits or ``timeout`` passes first.
        ``why`` is added to the message when edifd exits early (what it was probably waiting for)."""
        assert self.proc is not None, "spawn() first"
        t0 = time.monotonic()
        while not self.ready.exists():
            if self.proc.poll() is not None:
                hint = f" ({why})" if why else " before it was ready"
                raise RuntimeError(f"edifd exited with {self.proc.returncode}{hint}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"edifd not ready after {timeout:.0f} s")
            time.sleep(poll)
        took = time.monotonic() - t0
        self.runs[-1]["start_s"] = round(took, 2)
        return took

    def start(self, timeout: float = 90, extra: Sequence[str] = ()) -> float:
        """Starts edifd and waits until it is ready; returns the seconds that took."""
        t0 = time.monotonic()
        self.spawn(extra)
        self.wait_ready(timeout)
        return time.monotonic() - t0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """edifd's exit code, or None if it is still running after ``timeout`` seconds."""
        assert self.proc is not None
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        if self.runs:
            self.runs[-1]["exit"] = rc
        return rc

    def stop(self, sig: int = SIGTERM, timeout: float = 30) -> int | None:
        """Sends ``sig`` and waits up to ``timeout`` seconds; the exit code or None (still running)."""
        self.signal(sig)
        rc = self.wait(timeout)
        self.runs[-1]["signal"] = Signals(sig).name
        return rc
