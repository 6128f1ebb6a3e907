"""VM-H for the channel lab: edifd serves a control LUN (and a data LUN for the RTT baseline) over iSCSI,
and obeys the host's requests while VM-S drives the channel.

Run as ``python3 -m lab.guest.host_channel`` (Debian's python3, project source on PYTHONPATH).

* The channel key comes from the share (``/lab/channel.key``, written by the lab host); it is copied to
  tmpfs with mode 0600, since edifd refuses a key file other users could read.
* ``ctl0``: type control, 32 MiB, port WWPN in VPD 0x83, iSCSI target ``LAB_CTL_IQN`` (demo mode);
  ``data0``: a plain 16 MiB file LUN on target ``LAB_DATA_IQN``, same portal.
* ``ready`` once edifd serves both; then, until ``stop``, requests from the host arrive as
  ``/lab/cmd-<id>.json`` and are answered in ``/lab/done-<id>.json``:
  ``{"op": "status"}`` -> a status.json that edifd wrote after the request arrived (fresh counters);
  ``{"op": "kill"}`` -> SIGKILL edifd, start it again (it re-attaches to its LIO objects and restores
  the channel state file), answer with the timings and the status before the kill.
* At ``stop``: SIGTERM, and ``result.json`` holds every edifd run's exit, the final status, the tail of
  edifd's log.

Environment: ``LAB_CTL_IQN``, ``LAB_DATA_IQN``, ``LAB_WWPN``, ``LAB_PARK_TIME``, ``LAB_HOLD_S``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .common import SHARE, log, mark_ready, write_json, write_result
from .edifd_process import Edifd

STATE = Path("/tmp/edifd")
CONFIG = Path("/tmp/edifd-channel.toml")
READY = Path("/tmp/edifd-channel.ready")
KEY = STATE / "channel.key"
STATUS = STATE / "status.json"
LOG = SHARE / "edifd.log"


def config_text(ctl_iqn: str, data_iqn: str, wwpn: str, park_time: float) -> str:
    return f"""
[daemon]
state_dir = "{STATE}"
park_time = {park_time}
log_level = "info"

[[lun]]
name = "ctl0"
type = "control"
size = "32MiB"
vendor = "EDIF"
product = "CTRL"
serial = "EDIFLAB-CTL0"
channel_key = "{KEY}"
port_index = 0
wwpn = "{wwpn}"
[lun.export]
fabric = "iscsi"
iqn = "{ctl_iqn}"
portal = "0.0.0.0:3260"
demo_mode = true
insecure_demo = true  # VM-H's slirp: reachable only through the lab host's 127.0.0.1 forward

[[lun]]
name = "data0"
size = "16MiB"
vendor = "EDIF"
product = "LAB DATA"
serial = "EDIFLAB-DATA0"
[lun.export]
fabric = "iscsi"
iqn = "{data_iqn}"
portal = "0.0.0.0:3260"
demo_mode = true
insecure_demo = true  # VM-H's slirp: reachable only through the lab host's 127.0.0.1 forward
"""


def read_status() -> dict[str, Any]:
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return {}


def fresh_status(after: float, timeout: float = 10) -> dict[str, Any]:
    """A status.json edifd wrote after `after` (wall clock of this VM): counters include everything
    that happened before the request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = read_status()
        if st.get("time", 0) > after:
            return st
        time.sleep(0.1)
    return read_status()


def handle(cmd: dict[str, Any], edifd: Edifd) -> dict[str, Any]:
    op = cmd.get("op")
    if op == "status":
        return {"status": fresh_status(time.time() + 0.05)}
    if op == "kill":
        before = read_status()  # up to a second old: a SIGKILLed edifd writes nothing more
        t = time.monotonic()
        edifd.stop(signal.SIGKILL, 10)
        killed_s = time.monotonic() - t
        restart_s = edifd.start(120)
        log(f"edifd SIGKILLed and restarted in {restart_s:.1f} s")
        return {"status_before": before, "kill_s": round(killed_s, 2), "restart_s": round(restart_s, 2)}
    return {"error": f"unknown op {op!r}"}


def serve_requests(edifd: Edifd, hold: float) -> bool:
    deadline = time.monotonic() + hold
    while not (SHARE / "stop").exists():
        if time.monotonic() > deadline:
            return False
        for p in sorted(SHARE.glob("cmd-*.json")):
            ident = p.stem[len("cmd-"):]
            try:
                cmd = json.loads(p.read_text())
            except ValueError:
                continue  # being written; next round
            p.unlink()
            try:
                out = handle(cmd, edifd)
            except Exception as e:  # report it; the host decides
                out = {"error": f"{type(e).__name__}: {e}"}
            write_json(f"done-{ident}.json", out)
        time.sleep(0.1)
    return True


def main() -> int:
    ctl_iqn = os.environ.get("LAB_CTL_IQN", "iqn.2026-11.io.edifd.lab:ctl0")
    data_iqn = os.environ.get("LAB_DATA_IQN", "iqn.2026-11.io.edifd.lab:data0")
    wwpn = os.environ.get("LAB_WWPN", "50:01:43:80:12:34:56:78")
    park = float(os.environ.get("LAB_PARK_TIME", "5"))
    hold = float(os.environ.get("LAB_HOLD_S", "1500"))
    res: dict[str, Any] = {"ctl_iqn": ctl_iqn, "data_iqn": data_iqn, "wwpn": wwpn, "park_time": park}
    edifd = Edifd(CONFIG, READY, LOG)
    try:
        STATE.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARE / "channel.key", KEY)
        os.chmod(KEY, 0o600)
        CONFIG.write_text(config_text(ctl_iqn, data_iqn, wwpn, park))
        res["start_s"] = round(edifd.start(120), 2)
        log(f"edifd ready in {res['start_s']} s")
        res["status_ready"] = fresh_status(time.time())
        mark_ready()
        res["stop_requested"] = serve_requests(edifd, hold)
        t = time.monotonic()
        res["edifd_rc"] = edifd.stop(signal.SIGTERM, 30)
        res["edifd_stop_s"] = round(time.monotonic() - t, 2)
        res["status_final"] = read_status()
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
        mark_ready("failed")
    res["edifd_runs"] = edifd.runs
    try:
        res["edifd_log_tail"] = LOG.read_text(errors="replace")[-4000:]
    except OSError:
        pass
    write_result(res)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
