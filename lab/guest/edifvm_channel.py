"""VM-S for the channel lab: the EDIF VM. edif-agent drives the control LUN that QEMU's iSCSI initiator
passes through as scsi-block; the phases below run in one boot and are recorded in ``result.json``.

Run as ``python3 -m lab.guest.edifvm_channel``. Phases (``LAB_PHASES``, comma separated, in this order):

``udev``          install systemd/60-edif-control.rules, re-trigger the disk, read back what it set;
``status``        ``edif-agent status --json``: the disk is found with its port WWPN;
``ping``          ``edif-agent ping --count N``: N replies, in order, none duplicated;
``agent_restart`` the same with ``--state``, SIGKILLed when 40% is sent and started again;
``edifd_kill``    the same while the host SIGKILLs and restarts edifd at 40%;
``wrong_key``     a writer with another key: refused (exit 5), and the host's counters show its WRITEs
                  rejected and nothing acted on; the rightful agent then still works;
``bench``         RTT of the channel against a plain 4 KiB O_DIRECT READ on the data LUN.

Host requests (edifd status, kill) go through the host: this VM has no network. It writes
``/lab/req-<n>.json``; the lab host forwards it to VM-H and answers in ``/lab/resp-<n>.json``.

Environment: ``LAB_COUNT`` (default 1000), ``LAB_PHASES``, ``LAB_WWPN`` (the port WWPN VM-H configured).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import SHARE, log, run, write_result

AGENT = [sys.executable, "-m", "guest_agent"]
KEY = Path("/tmp/agent/channel.key")
WRONG_KEY = Path("/tmp/agent/wrong.key")
RULE_SRC = Path("/src/systemd/60-edif-control.rules")
RULE_DST = Path("/etc/udev/rules.d/60-edif-control.rules")
_PROPS = ("UDISKS_IGNORE", "SYSTEMD_READY", "UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG", "ID_VENDOR",
          "ID_FS_TYPE")
PHASES = "udev,status,ping,agent_restart,edifd_kill,wrong_key,bench"
_req = 0


def host_request(op: str, timeout: float = 300) -> dict[str, Any]:
    """Ask VM-H (through the lab host) for something; returns its answer."""
    global _req
    _req += 1
    name = f"req-{_req}.json"
    tmp = SHARE / f".{name}.tmp"
    tmp.write_text(json.dumps({"op": op}))
    os.replace(tmp, SHARE / name)
    resp = SHARE / f"resp-{_req}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if resp.exists():
            try:
                return json.loads(resp.read_text())
            except ValueError:
                pass
        time.sleep(0.1)
    return {"error": f"no answer to {op} within {timeout} s"}


def channel_counters(status: dict[str, Any]) -> dict[str, Any]:
    for lun in status.get("luns", []):
        if lun.get("name") == "ctl0":
            return lun.get("medium") or {}
    return {}


def host_counters() -> dict[str, Any]:
    return channel_counters(host_request("status").get("status", {}))


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()
            if isinstance(v, int) and v != before.get(k, 0)}


def find_disk(vendor: str, model: str, timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sorted(Path("/sys/block").glob("sd*")):
            try:
                v = (d / "device/vendor").read_text().strip()
                m = (d / "device/model").read_text().strip()
            except OSError:
                continue
            if (v, m) == (vendor, model):
                return d.name
        time.sleep(0.25)
    return None


def agent(*args: str, timeout: float = 900) -> dict[str, Any]:
    """Run edif-agent to completion; its JSON report parsed."""
    t = time.monotonic()
    r = run([*AGENT, *args], timeout=timeout)
    out: dict[str, Any] = {"rc": r["rc"], "wall_s": round(time.monotonic() - t, 1),
                           "stderr": r["stderr"][-1500:]}
    try:
        out["report"] = json.loads(r["stdout"])
    except ValueError:
        out["stdout"] = r["stdout"][-1500:]
    return out


def ping_args(count: int, *extra: str) -> list[str]:
    return ["ping", "--key", str(KEY), "--count", str(count), "--json", "--timeout", "180", *extra]


def phase_udev(ctl: str) -> dict[str, Any]:
    shutil.copyfile(RULE_SRC, RULE_DST)
    steps = [
        run(["udevadm", "control", "--reload"]),
        run(["udevadm", "trigger", "--action=change", f"--name-match=/dev/{ctl}"]),
        run(["udevadm", "trigger", "--action=change", "--subsystem-match=scsi"]),
        run(["udevadm", "settle", "-t", "30"]),
    ]
    q = Path("/sys/block") / ctl

    def rd(p: Path) -> str | None:
        try:
            return p.read_text().strip()
        except OSError:
            return None

    props = run(["udevadm", "info", "--query=property", f"--name=/dev/{ctl}"])["stdout"]
    return {
        "rcs": [s["rc"] for s in steps],
        "nomerges": rd(q / "queue/nomerges"),
        "scheduler": rd(q / "queue/scheduler"),
        "read_ahead_kb": rd(q / "queue/read_ahead_kb"),
        "timeout": rd(q / "device/timeout"),
        "properties": {k: v for k, _, v in (ln.partition("=") for ln in props.splitlines())
                       if k in _PROPS},
    }


def phase_ping(count: int) -> dict[str, Any]:
    before = host_counters()
    res = agent(*ping_args(count))
    res["host_delta"] = delta(host_counters(), before)
    return res


def _report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _start_ping(count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*AGENT, *ping_args(count, *extra)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_sent(p: subprocess.Popen[str], report: Path, n: int, timeout: float = 900) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        sent = _report(report).get("sent", 0)
        if sent >= n:
            return sent
        time.sleep(0.05)
    return _report(report).get("sent", 0)


def _finish(p: subprocess.Popen[str], timeout: float = 900) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    res: dict[str, Any] = {"rc": p.returncode, "stderr": err[-1500:]}
    try:
        res["report"] = json.loads(out)
    except ValueError:
        res["stdout"] = out[-1500:]
    return res


def phase_agent_restart(count: int) -> dict[str, Any]:
    state, report = Path("/tmp/agent/restart.state"), Path("/tmp/agent/restart.json")
    extra = ("--state", str(state), "--report", str(report))
    before = host_counters()
    p = _start_ping(count, *extra)
    killed_at = _wait_sent(p, report, int(count * 0.4))
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    log(f"agent SIGKILLed at {killed_at} pings sent; restarting it")
    t = time.monotonic()
    res = _finish(_start_ping(count, *extra))
    res.update(killed_at_sent=killed_at, resumed_wall_s=round(time.monotonic() - t, 1),
               host_delta=delta(host_counters(), before))
    return res


def phase_edifd_kill(count: int) -> dict[str, Any]:
    report = Path("/tmp/agent/kill.json")
    p = _start_ping(count, "--report", str(report))
    at = _wait_sent(p, report, int(count * 0.4))
    log(f"asking the host to SIGKILL edifd at {at} pings sent")
    kill = host_request("kill")
    res = _finish(p)
    after = host_counters()  # the restarted edifd's counters: what it did after the restart
    res.update(killed_at_sent=at, kill=kill, host_after_restart=after)
    return res


def phase_wrong_key(count: int) -> dict[str, Any]:
    before = host_counters()
    bad = agent("ping", "--key", str(WRONG_KEY), "--count", "5", "--json", "--timeout", "30")
    mid = host_counters()
    good = agent(*ping_args(min(count, 20)))
    return {"wrong": bad, "host_delta_wrong": delta(mid, before), "good_after": good}


def phase_bench(data: str, ping_rep: dict[str, Any], n: int = 500) -> dict[str, Any]:
    """Plain 4 KiB O_DIRECT READs on the data LUN through the same path (iSCSI, LIO, TCMU, edifd)."""
    fd = os.open(f"/dev/{data}", os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    size = os.lseek(fd, 0, os.SEEK_END)
    rng = random.Random(4)
    lat = []
    try:
        for _ in range(n):
            off = rng.randrange(size // 4096) * 4096
            t = time.perf_counter()
            os.preadv(fd, [buf], off)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
    lat.sort()
    read = {"n": n, "p50": round(lat[n // 2 - 1], 3), "p99": round(lat[-(-99 * n // 100) - 1], 3),
            "max": round(lat[-1], 3)}
    rtt = (ping_rep.get("report") or {}).get("rtt_ms") or {}
    ratio = {k: round(rtt[k] / read[k], 2) for k in ("p50", "p99") if rtt.get(k) and read[k]}
    return {"read_4k_ms": read, "channel_rtt_ms": rtt, "ratio": ratio}


def main() -> int:
    count = int(os.environ.get("LAB_COUNT", "1000"))
    phases = [p for p in os.environ.get("LAB_PHASES", PHASES).split(",") if p]
    res: dict[str, Any] = {"count": count, "phases_run": []}
    try:
        Path("/tmp/agent").mkdir(parents=True, exist_ok=True)
        for src, dst in ((SHARE / "channel.key", KEY), (SHARE / "wrong.key", WRONG_KEY)):
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o600)
        ctl = find_disk("EDIF", "CTRL")
        data = find_disk("EDIF", "LAB DATA", timeout=10)
        res["ctl_disk"], res["data_disk"] = ctl, data
        if ctl is None:
            raise RuntimeError("the control LUN did not appear as /dev/sd* (vendor EDIF, model CTRL)")
        for ph in phases:
            log(f"phase {ph}")
            t = time.monotonic()
            if ph == "udev":
                res["udev"] = phase_udev(ctl)
            elif ph == "status":
                res["status"] = agent("status", "--json")
            elif ph == "ping":
                res["ping"] = phase_ping(count)
            elif ph == "agent_restart":
                res["agent_restart"] = phase_agent_restart(count)
            elif ph == "edifd_kill":
                res["edifd_kill"] = phase_edifd_kill(count)
            elif ph == "wrong_key":
                res["wrong_key"] = phase_wrong_key(count)
            elif ph == "bench" and data is not None:
                res["bench"] = phase_bench(data, res.get("ping", {}))
            res["phases_run"].append({"phase": ph, "wall_s": round(time.monotonic() - t, 1)})
            log(f"phase {ph} done in {time.monotonic() - t:.1f} s")
            write_result(res)  # partial results survive a later failure
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
    write_result(res)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
