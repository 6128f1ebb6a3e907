"""VM-H for the EDIF lab: edifd with two control LUNs (one per HBA port, exported over iSCSI for VM-S's
edif-agent), two secure HBA ports linked to two edif-target ports on the lab host, and a tenant LUN behind
target A (tcm_loop) that a tenant writes and reads back while the link is encrypted.

Run as ``python3 -m lab.guest.host_edif``. Environment: ``LAB_TARGET_A``/``LAB_TARGET_B`` (host:port as seen
from the guest), ``LAB_WWPN_A``/``LAB_WWPN_B`` (target WWPNs, hex), ``LAB_MIB``, ``LAB_IO_TIMEOUT``.

Share protocol (``/lab``): ``ctl_ready`` once both control LUNs are exported (VM-S may boot); edifd's start
then waits until the agent has authenticated target A (the remote LUN attaches only after AUTH_OK);
``secured`` with the engine status; the tenant I/O (``io.json`` progress); ``io_done``; then the host stops
the agent and touches ``agent_stopped``; the tenant tries I/O once more (it must fail quickly with a clear
error); ``result.json``. ``edifd-status.json`` is copied to the share about once a second.

The statuses recorded here are edifd's status.json plus ``engines``: each control LUN's EDIF engine status
(auth state, SAs, ESP counters, engine counters; edifd reports it as the LUN's ``edif``) by LUN name.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..examples import derive, dumps, example, first
from .common import SHARE, aligned, log, write_json, write_result
from .edifd_process import Edifd
from .host_tenant import find_tenant_disk, tenant_io

STATE = Path("/tmp/edifd")
CONFIG = Path("/tmp/edifd-edif.toml")
READY = Path("/tmp/edifd-edif.ready")
STATUS = STATE / "status.json"
LOG = SHARE / "edifd.log"
KEYS = ("channel-p0.key", "channel-p1.key")
CHAP_SECRET = "ctl.chap"  # the control LUNs' one-way CHAP secret (the host writes it into the share)
CHAP_USER = "edif-vm"
EDIF_VM_IQN = "iqn.2026-12.io.edifd.lab:edif-vm"  # VM-S's initiator name: the control LUNs' node ACL
METRICS = "127.0.0.1:9464"  # edifd's [metrics] endpoint inside VM-H
CTL_IQNS = ("iqn.2026-11.io.edifd.lab:edif-ctl0", "iqn.2026-11.io.edifd.lab:edif-ctl1")
# Initiator WWPNs below the targets' (the lab's other scenarios do the same).
I_WWPNS = ("21:00:00:1b:32:00:00:a1", "21:00:00:1b:32:00:00:a2")
I_WWNNS = ("20:00:00:1b:32:00:00:a1", "20:00:00:1b:32:00:00:a2")


def config_text(targets: tuple[str, str], target_wwpns: tuple[str, str], io_timeout: float) -> str:
    """examples/edifd.toml (lab.examples) with the lab's own names, files and addresses: two secure HBA
    ports, their control LUNs exported over iSCSI with a node ACL for VM-S and one-way CHAP (VM-S reaches
    VM-H's portal through slirp, so it listens on 0.0.0.0), and a tenant LUN behind target A."""
    ex = example("edifd.toml")
    port, ctl = first(ex["hba"]["port"], security=True), first(ex["lun"], type="control")
    remote = first(ex["lun"], type="remote")
    ports = [derive(port, drop=("pcap",), name=f"p{i}", wwpn=I_WWPNS[i], wwnn=I_WWNNS[i], target=targets[i])
             for i in (0, 1)]
    ctls = [derive(ctl, name=f"ctl{i}", size="32MiB", serial=f"EDIFLAB-ECTL{i}",
                   channel_key=str(STATE / KEYS[i]), port_index=i, wwpn=I_WWPNS[i],
                   export=derive(ctl["export"], drop=("mutual_user", "mutual_secret_file"), iqn=CTL_IQNS[i],
                                 portal="0.0.0.0:3260", initiators=[EDIF_VM_IQN], chap_user=CHAP_USER,
                                 chap_secret_file=str(STATE / CHAP_SECRET)))
            for i in (0, 1)]
    # Only target A carries a tenant LUN: edifd attaches remote LUNs at start (login + READ CAPACITY within
    # io_timeout), and target B never authenticates (wrong PSK), so a LUN behind it would stop the start.
    tenant = derive(remote, drop=("size", "export"), name="tenantA", hba_port="p0",
                    target_wwpn=target_wwpns[0], remote_lun=0)
    tenant["export"] = {"fabric": "loopback"}  # a host-local disk for VM-H's tenant I/O, not vhost
    cfg = {"daemon": derive(ex["daemon"], state_dir=str(STATE), log_level="info"),
           "metrics": {"listen": METRICS},
           "hba": derive(ex.get("hba", {}), port=ports, io_timeout=io_timeout),
           "lun": ctls + [tenant]}
    return "# written by lab/guest/host_edif.py from examples/edifd.toml\n" + dumps(cfg)


def scrape_metrics() -> dict[str, Any]:
    """edifd's Prometheus endpoint, as a scraper sees it: the edifd_* sample lines (text format)."""
    try:
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    lines = [ln for ln in text.splitlines() if ln.startswith("edifd_")]
    return {"samples": len(lines), "lines": lines}


def edifctl(*args: str) -> dict[str, Any]:
    """`edifctl ARGS --json` against the running edifd (its control socket), parsed."""
    r = subprocess.run([sys.executable, "-c", "import sys; from edifd.edifctl import main; sys.exit(main())",
                        *args, "--json"], capture_output=True, text=True, timeout=30)
    try:
        return {"rc": r.returncode, "json": json.loads(r.stdout)}
    except ValueError:
        return {"rc": r.returncode, "error": (r.stderr or r.stdout)[-500:]}


def iscsi_enabled(iqn: str) -> bool:
    p = Path("/sys/kernel/config/target/iscsi") / iqn / "tpgt_1/enable"
    try:
        return p.read_text().strip() == "1"
    except OSError:
        return False


def read_status() -> dict[str, Any]:
    """edifd's status.json with ``engines`` added (see the module doc); {} while there is none."""
    try:
        st = json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return {}
    st["engines"] = {lun.get("name"): lun["edif"] for lun in st.get("luns") or () if "edif" in lun}
    return st


class StatusCopier(threading.Thread):
    """Copies edifd's status.json into the share about once a second; keeps the largest rekey count."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="status-copier")
        self.stop = threading.Event()
        self.max_rekeys = 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            st = read_status()
            if st:
                write_json("edifd-status.json", st)
                esp = (st.get("engines", {}).get("ctl0") or {}).get("esp") or {}
                self.max_rekeys = max(self.max_rekeys, int(esp.get("rekeys") or 0))


def wait_share(name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (SHARE / name).exists():
            return True
        time.sleep(0.2)
    return False


def io_after_logout(dev: str, timeout: float) -> dict[str, Any]:
    """One 4 KiB O_DIRECT READ after the agent stopped: it must fail (EIO-like), and quickly."""
    out: dict[str, Any] = {}

    def attempt() -> None:
        buf = aligned(4096)
        t = time.monotonic()
        try:
            fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
            try:
                os.preadv(fd, [buf], 0)
                out["ok"] = True
            finally:
                os.close(fd)
        except OSError as e:
            out.update(ok=False, errno=errno.errorcode.get(e.errno or 0, str(e.errno)), strerror=e.strerror)
        out["s"] = round(time.monotonic() - t, 2)

    th = threading.Thread(target=attempt, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        out.update(ok=None, hung=True, s=timeout)
    return out


def main() -> int:
    targets = (os.environ["LAB_TARGET_A"], os.environ["LAB_TARGET_B"])
    twwpns = (os.environ["LAB_WWPN_A"], os.environ["LAB_WWPN_B"])
    mib = int(os.environ.get("LAB_MIB", "64"))
    io_timeout = float(os.environ.get("LAB_IO_TIMEOUT", "300"))
    res: dict[str, Any] = {"targets": list(targets), "mib": mib, "io_timeout": io_timeout}
    edifd = Edifd(CONFIG, READY, LOG)
    copier = StatusCopier()
    t0 = time.monotonic()
    try:
        STATE.mkdir(parents=True, exist_ok=True)
        for k in (*KEYS, CHAP_SECRET):
            shutil.copyfile(SHARE / k, STATE / k)
            os.chmod(STATE / k, 0o600)
        CONFIG.write_text(config_text(targets, twwpns, io_timeout))
        edifd.spawn(["--teardown"])
        # Control LUNs are served first; the start then blocks on target A's authentication.
        while not all(iscsi_enabled(q) for q in CTL_IQNS):
            if not edifd.running():
                raise RuntimeError(f"edifd exited with {edifd.wait(0)} before exporting the control LUNs")
            if time.monotonic() - t0 > 180:
                raise RuntimeError("control LUNs not exported after 180 s")
            time.sleep(0.2)
        res["ctl_ready_s"] = round(time.monotonic() - t0, 1)
        write_json("ctl_ready", {"s": res["ctl_ready_s"]})
        log(f"control LUNs exported after {res['ctl_ready_s']} s; waiting for the agent to secure target A")
        edifd.wait_ready(io_timeout + 240 - (time.monotonic() - t0), why="target A not secured in time?",
                         poll=0.2)
        res["ready_s"] = round(time.monotonic() - t0, 1)
        copier.start()
        res["status_secured"] = read_status()
        write_json("secured", {"s": res["ready_s"], "status": res["status_secured"]})
        log(f"edifd ready after {res['ready_s']} s (tenant LUN behind target A attached)")
        dev = find_tenant_disk()
        res["dev"] = dev
        if dev is None:
            raise RuntimeError("the tenant LUN did not appear as /dev/sdX")
        def progress(phase: str, done: int) -> None:  # the host follows the I/O through io.json
            if done % 8 == 0:
                write_json("io.json", {"phase": phase, "mib": done})

        res["io"] = tenant_io(dev, mib, progress)
        res["status_after_io"] = read_status()
        res["metrics"] = scrape_metrics()
        res["edifctl_sas"] = edifctl("--config", str(CONFIG), "sas")
        res["max_rekeys_seen"] = copier.max_rekeys
        log(f"tenant I/O: {json.dumps({k: v for k, v in res['io'].items() if k != 'mismatched_mib'})}")
        write_json("io_done", {"io": res["io"]})
        if not wait_share("agent_stopped", 600):
            raise RuntimeError("the host never said the agent stopped")
        # The target is logged out now: a command must fail at once (07/74/71), not wait for io_timeout.
        res["after_stop"] = io_after_logout(dev, min(io_timeout, 60.0))
        log(f"I/O after the agent stopped: {res['after_stop']}")
        time.sleep(1.5)
        res["status_after_stop"] = read_status()
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log(res["error"])
    finally:
        copier.stop.set()
        if edifd.running():
            res["edifd_rc"] = edifd.stop(signal.SIGTERM, 90)
            if res["edifd_rc"] is None:
                edifd.signal(signal.SIGKILL)
    res["wall_s"] = round(time.monotonic() - t0, 1)
    write_result(res)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
