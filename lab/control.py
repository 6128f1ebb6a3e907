"""``lab up | down | status``: keep VM-H running in the background with its iSCSI export on 127.0.0.1:<port>.

State lives in ``lab/out/`` (override with ``EDIF_LAB_OUT``): ``vm-h.pid``, ``endpoints.json`` and the VM's
share ``vm-h/`` (run.sh, edifd.toml, out.log, console.log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import edifd_lab_config
from .errors import LabError
from .guest.host_iscsi import DEFAULT_IQN
from .guestrun import guest_shell, guest_vm
from .image import ensure_image
from .vm import PROJECT_ROOT, HostFwd, exited, pids_with_tag

VM_NAME = "vm-h"
BACKENDS = ("fileio", "edifd")

Log = Callable[[str], None]


def out_dir() -> Path:
    return Path(os.environ.get("EDIF_LAB_OUT") or PROJECT_ROOT / "lab" / "out")


def _pid_file() -> Path:
    return out_dir() / f"{VM_NAME}.pid"


def _endpoints_file() -> Path:
    return out_dir() / "endpoints.json"


def _tag() -> str:
    return f"edifd-lab-{VM_NAME}"


def _our_pid() -> int | None:
    """The pid from the pid file if that process is still our QEMU (not a recycled pid)."""
    try:
        pid = int(_pid_file().read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if not exited(pid) and any(_tag().encode() in a for a in cmdline) else None


def _strays() -> list[int]:
    """Lab VM-H QEMUs of *this* out dir (another checkout's `lab up` on the same machine is not ours)."""
    share = f"path={out_dir() / VM_NAME},".encode()
    found = []
    for pid in pids_with_tag(_tag()):
        try:
            if share in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return [p for p in found if not exited(p)]


def run_dir(kind: str) -> Path:
    """A fresh ``lab/out/<kind>/<pid>/`` for one run's VM shares (kept for inspection and CI artifacts).
    Directories of runs whose process is gone are removed, so concurrent runs never share one."""
    base = out_dir() / kind
    base.mkdir(parents=True, exist_ok=True)
    for d in base.iterdir():
        if d.is_dir() and d.name.isdigit() and not Path(f"/proc/{d.name}").exists():
            shutil.rmtree(d, ignore_errors=True)
    mine = base / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def up(
    backend: str = "edifd", port: int = 3260, iqn: str = DEFAULT_IQN, timeout: float = 300, log: Log = print
) -> dict[str, Any]:
    """Boots VM-H detached, waits until its export is ready, writes and returns endpoints.json's content."""
    if backend not in BACKENDS:
        raise LabError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    if _our_pid() is not None:
        raise LabError(f"lab is already up (pid {_our_pid()}); run `python3 -m lab down` first")
    if _port_open(port):
        raise LabError(f"127.0.0.1:{port} is already in use on this host")
    image = ensure_image(log=log)
    share = out_dir() / VM_NAME
    # A fresh share: files a previous run left (ready, endpoint.json of another backend) would lie.
    shutil.rmtree(share, ignore_errors=True)
    share.mkdir(parents=True)
    (share / "edifd.toml").write_text(edifd_lab_config(iqn=iqn, lun=0, portal_port=3260))
    vm = guest_vm(
        image, VM_NAME, share, guest_shell("serve.sh", backend), {"LAB_IQN": iqn},
        hostfwd=[HostFwd(port, 3260)], detached=True,
    )  # fmt: skip
    t0 = time.monotonic()
    vm.start()
    _pid_file().write_text(f"{vm.detach()}\n")  # first, so `down` can always find it
    log(f"VM-H starting (pid {vm.proc.pid if vm.proc else '?'}, backend {backend}); console: {vm.console}")
    try:
        vm.wait_file("ready", timeout)
    except LabError:
        vm.kill()
        _pid_file().unlink(missing_ok=True)
        raise
    ep = {
        "backend": backend,
        "portal": f"127.0.0.1:{port}",
        "iqn": iqn,
        "lun": 0,
        "url": f"iscsi://127.0.0.1:{port}/{iqn}/0",
        "pid": vm.proc.pid if vm.proc else None,
        "share": str(share),
        "console": str(vm.console),
        "ready_s": round(time.monotonic() - t0, 1),
    }
    guest_ep = share / "endpoint.json"
    if guest_ep.exists():  # the fileio exporter reports what it created (serial, vendor)
        ep["guest"] = json.loads(guest_ep.read_text())
    tmp = _endpoints_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(ep, indent=2) + "\n")
    os.replace(tmp, _endpoints_file())
    return ep


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid):
            return True
        time.sleep(0.2)
    return exited(pid)


def down(timeout: float = 60, log: Log = print) -> dict[str, Any]:
    """Asks VM-H to stop (its guest tears the export down), kills it after ``timeout``; checks with pgrep."""
    res: dict[str, Any] = {"was_up": False, "clean_stop": None, "killed": []}
    pid = _our_pid()
    if pid is not None:
        res["was_up"] = True
        (out_dir() / VM_NAME / "stop").touch()
        log(f"asked VM-H (pid {pid}) to stop")
        res["clean_stop"] = _wait_gone(pid, timeout)
        if not res["clean_stop"]:
            log(f"VM-H did not power off within {timeout:.0f}s; killing pid {pid}")
            os.kill(pid, signal.SIGKILL)
            res["killed"].append(pid)
            _wait_gone(pid, 10)
    # Leftovers from an interrupted `up` whose pid file was lost: same tag and this checkout's share.
    for stray in _strays():
        log(f"killing leftover lab QEMU pid {stray}")
        os.kill(stray, signal.SIGKILL)
        res["killed"].append(stray)
        _wait_gone(stray, 10)
    res["remaining"] = _strays()
    _pid_file().unlink(missing_ok=True)
    _endpoints_file().unlink(missing_ok=True)
    if res["remaining"]:
        raise LabError(f"QEMU processes still running after down: {res['remaining']}")
    return res


def status() -> dict[str, Any]:
    pid = _our_pid()
    st: dict[str, Any] = {"up": pid is not None, "pid": pid, "out_dir": str(out_dir())}
    if _endpoints_file().exists():
        ep = json.loads(_endpoints_file().read_text())
        st["endpoints"] = ep
        port = int(ep["portal"].rsplit(":", 1)[1])
        st["portal_open"] = _port_open(port) if pid is not None else False
    console = out_dir() / VM_NAME / "console.log"
    if console.exists():
        st["last_markers"] = [
            line[5:] for line in console.read_text(errors="replace").splitlines() if line.startswith("LAB: ")
        ][-3:]
    st["stray_qemu"] = [p for p in _strays() if p != pid]
    return st
