"""VM-S for the EDIF lab: the EDIF VM. One ``edif-agent run --config`` (the security service) per control
disk, i.e. per HBA port of edifd in VM-H, over QEMU's iSCSI initiator (scsi-block).

Run as ``python3 -m lab.guest.edifvm_edif``. The lab host puts into the share: ``channel-p<i>.key`` and
``agent-p<i>.toml`` per port and the PSK files under ``psk/``; they are copied to tmpfs with mode 0600 (the
agent refuses key files other users can read, and 9p shows the host's modes). Each agent writes its
status (``agent-p<i>.json``, no key material) into the share about once a second. When the host touches
``stop_agent`` both agents get SIGTERM (APP_STOP, then exit); their exit codes and log tails go
into ``result.json``.

Environment: ``LAB_WWPN_P0``/``LAB_WWPN_P1`` (the HBA port WWPNs the control LUNs report in VPD 0x83).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import SHARE, log, write_json, write_result
from .edifvm_channel import find_disk, phase_udev

WORK = Path("/tmp/agent")


def copy_private(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)


def stage_files() -> None:
    """Keys, PSKs and configs from the share into tmpfs, 0600 (the configs' paths are relative)."""
    for p in sorted(SHARE.glob("channel-p*.key")) + sorted(SHARE.glob("agent-p*.toml")):
        copy_private(p, WORK / p.name)
    for p in sorted((SHARE / "psk").glob("*")):
        copy_private(p, WORK / "psk" / p.name)


def main() -> int:
    wwpns = [os.environ["LAB_WWPN_P0"], os.environ["LAB_WWPN_P1"]]
    res: dict[str, Any] = {"wwpns": wwpns}
    procs: list[subprocess.Popen[str]] = []
    t0 = time.monotonic()
    try:
        stage_files()
        ctl = find_disk("EDIF", "CTRL")
        if ctl is None:
            raise RuntimeError("no control LUN appeared as /dev/sd* (vendor EDIF, model CTRL)")
        res["udev"] = phase_udev(ctl)  # the rule matches every control disk; one trigger covers both
        for i, wwpn in enumerate(wwpns):
            argv = [sys.executable, "-m", "guest_agent", "run", "--config", str(WORK / f"agent-p{i}.toml"),
                    "--port", wwpn, "--port-index", str(i), "--status-file", str(SHARE / f"agent-p{i}.json"),
                    "--timeout", "120"]
            errf = open(SHARE / f"agent-p{i}.log", "w")  # noqa: SIM115 - lives as long as the agent
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf, text=True))
            log(f"edif-agent for port {wwpn} started (pid {procs[-1].pid})")
        res["agents_started_s"] = round(time.monotonic() - t0, 1)
        write_json("agents_started", {"s": res["agents_started_s"]})
        while not (SHARE / "stop_agent").exists():
            for i, p in enumerate(procs):
                if p.poll() is not None and f"early_exit_p{i}" not in res:
                    res[f"early_exit_p{i}"] = p.returncode
                    log(f"agent p{i} exited early with {p.returncode}")
            if time.monotonic() - t0 > 3600:
                raise RuntimeError("never told to stop the agents")
            time.sleep(0.25)
        t = time.monotonic()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        rcs = []
        for p in procs:
            try:
                rcs.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                rcs.append(None)
        res["agent_rcs"] = rcs
        res["agent_stop_s"] = round(time.monotonic() - t, 2)
        log(f"agents stopped: rc {rcs} in {res['agent_stop_s']} s")
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i in range(len(procs)):
        try:
            res[f"agent_p{i}_log_tail"] = (SHARE / f"agent-p{i}.log").read_text(errors="replace")[-3000:]
        except OSError:
            pass
    write_json("agents_stopped", {"rcs": res.get("agent_rcs")})
    write_result(res)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
