"""One lab VM: a TCG QEMU process booting the cached guest image, with 9p shares and a serial console.

The guest side is ``lab/guest/labinit.sh``: it mounts the project read-only at ``/src`` (mount_tag
``src``) and the VM's own per-run directory at ``/lab`` (mount_tag ``lab``), runs ``/lab/run.sh`` and powers
off. The host talks to it through files in that share (``ready``, ``stop``, ``result.json``) and follows
``LAB:`` markers on the console.

Every QEMU this module starts is stopped again: by ``VM.__exit__``, by an ``atexit`` hook, by SIGINT/SIGTERM
handlers, and (unless detached for ``lab up``) by ``PR_SET_PDEATHSIG`` should the Python process die hard.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from .errors import LabError, LabTimeout
from .image import GuestImage

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MARKER_RE = re.compile(r"^LAB: (.*?)(?: uptime=([0-9.]+))?\s*$", re.M)
# KVM hangs with Debian's kernel on this kind of host (docs/lab.md, Observations); TCG works anywhere.
ACCEL = "tcg"


@dataclass(frozen=True)
class HostFwd:
    """slirp port forward ``host_addr:host_port`` -> guest ``guest_port`` (TCP)."""

    host_port: int
    guest_port: int
    host_addr: str = "127.0.0.1"

    def qemu(self) -> str:
        return f"hostfwd=tcp:{self.host_addr}:{self.host_port}-:{self.guest_port}"


@dataclass(frozen=True)
class IscsiLogin:
    """How the guest's QEMU logs in to iSCSI targets: its initiator name (the target's node ACL) and
    one-way CHAP, the secret read by QEMU from a file (never on the command line)."""

    initiator_name: str
    user: str
    secret_file: Path

    def qemu(self) -> list[str]:
        return ["-object", f"secret,id=iscsi-chap,file={self.secret_file},format=raw",
                "-iscsi", f"initiator-name={self.initiator_name},user={self.user},password-secret=iscsi-chap"]


@dataclass(frozen=True)
class Drive:
    """An extra block device. ``scsi-block`` passes the target's own INQUIRY/VPD/sense to the guest;
    ``scsi-hd`` would show QEMU's (docs/lab.md, Observations)."""

    file: str
    device: str = "scsi-block"
    cache: str = "none"

    @classmethod
    def iscsi(
        cls, port: int, iqn: str, lun: int = 0, host: str = "127.0.0.1", device: str = "scsi-block"
    ) -> Drive:
        # A direct URL: SendTargets discovery would return the guest's internal 10.0.2.15 portal.
        return cls(file=f"iscsi://{host}:{port}/{iqn}/{lun}", device=device)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the kernel's pick). Racy by nature: QEMU fails clearly if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tie_to_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_live: set[VM] = set()
_live_lock = threading.Lock()
_hooks_installed = False
_atexit_installed = False


def _kill_all() -> None:
    with _live_lock:
        vms = list(_live)
    for vm in vms:
        vm.kill()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _kill_all()
    prev = _prev_handlers.get(signum, signal.SIG_DFL)
    if callable(prev):
        prev(signum, frame)
    elif prev == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_prev_handlers: dict[int, object] = {}


def _install_hooks() -> None:
    global _atexit_installed, _hooks_installed
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(_kill_all)
    # Signal handlers can only be set from the main thread; a VM started elsewhere gets them at the next
    # start from the main thread (pdeathsig and atexit still cover it meanwhile).
    if not _hooks_installed and threading.current_thread() is threading.main_thread():
        _hooks_installed = True
        for s in (signal.SIGINT, signal.SIGTERM):
            _prev_handlers[s] = signal.getsignal(s)
            signal.signal(s, _on_signal)


@dataclass(eq=False)
class VM:
    """A lab guest. Use as a context manager; ``start()`` boots it, the ``wait_*`` methods follow it.

    ``share`` becomes the guest's ``/lab``; the caller puts ``run.sh`` there (see ``lab.guestrun``).
    """

    name: str
    image: GuestImage
    share: Path
    memory_mb: int = 1024
    smp: int = 1
    hostfwd: Sequence[HostFwd] = ()
    drives: Sequence[Drive] = ()
    iscsi_login: IscsiLogin | None = None  # the iSCSI drives' initiator name and CHAP (None: QEMU's defaults)
    src: Path = PROJECT_ROOT
    net: bool = True
    lio: bool = True  # False: labinit skips the LIO modprobes (an initiator-only guest boots faster)
    detached: bool = False  # True for `lab up`: survives this process, no pdeathsig, not killed at exit
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    started_at: float | None = field(default=None, init=False)
    exited_at: float | None = field(default=None, init=False)

    @property
    def console(self) -> Path:
        return self.share / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.share / "qemu.log"

    @property
    def tag(self) -> str:
        """Unique string in the QEMU command line, for pgrep."""
        return f"edifd-lab-{self.name}"

    def argv(self) -> list[str]:
        a = [
            "qemu-system-x86_64",
            "-name", f"{self.tag},process={self.tag[:15]}",
            "-accel", ACCEL,
            "-m", str(self.memory_mb),
            "-smp", str(self.smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.console}",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", f"console=ttyS0 panic=-1 net.ifnames=0 lab.name={self.name} lab.lio={int(self.lio)}",
            # snapshot=on: each VM writes to a private overlay; the cached image stays pristine and shared.
            "-drive", f"file={self.image.rootfs},if=virtio,format=raw,snapshot=on",
            "-virtfs", f"local,path={self.src},mount_tag=src,security_model=none,readonly=on",
            "-virtfs", f"local,path={self.share},mount_tag=lab,security_model=none",
        ]  # fmt: skip
        if self.net:
            fwd = "".join("," + f.qemu() for f in self.hostfwd)
            a += ["-netdev", f"user,id=n0{fwd}", "-device", "virtio-net-pci,netdev=n0"]
        if self.iscsi_login is not None:
            a += self.iscsi_login.qemu()
        if self.drives:
            a += ["-device", "virtio-scsi-pci,id=scsi0"]
            for i, d in enumerate(self.drives):
                a += [
                    "-drive", f"file={d.file},format=raw,if=none,id=x{i},cache={d.cache}",
                    "-device", f"{d.device},drive=x{i},bus=scsi0.0",
                ]  # fmt: skip
        return a

    # -- lifecycle ---------------------------------------

    def start(self) -> VM:
        if self.proc is not None:
            raise LabError(f"{self.name}: already started")
        if shutil.which("qemu-system-x86_64") is None:
            raise LabError("qemu-system-x86_64 not found (apt-get install qemu-system-x86 qemu-block-extra)")
        self.share.mkdir(parents=True, exist_ok=True)
        for stale in ("stop", "ready", "result.json", "out.log", "console.log", "qemu.log", "dmesg.log"):
            (self.share / stale).unlink(missing_ok=True)
        self.console.touch()
        if not self.detached:
            _install_hooks()
        with open(self.qemu_log, "wb") as qlog:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=qlog,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop QEMU deliberately
                preexec_fn=None if self.detached else _tie_to_parent,
            )
        self.started_at = time.monotonic()
        if not self.detached:
            with _live_lock:
                _live.add(self)
        return self

    def __enter__(self) -> VM:
        return self.start() if self.proc is None else self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def request_stop(self) -> None:
        """Asks the guest script to finish (it polls for ``/lab/stop``)."""
        (self.share / "stop").touch()

    def kill(self) -> None:
        """Hard stop: SIGKILL to QEMU and reap it. Idempotent."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # its own session: takes any helper with it
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if p is not None and self.exited_at is None:
            self.exited_at = time.monotonic()
        with _live_lock:
            _live.discard(self)

    def detach(self) -> int:
        """Leaves QEMU running after this process exits (``lab up``); returns its pid."""
        if self.proc is None:
            raise LabError(f"{self.name}: not started")
        with _live_lock:
            _live.discard(self)
        return self.proc.pid

    # -- observing the guest ---------------------------------------

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console_text().splitlines()[-lines:])

    def markers(self) -> list[tuple[str, float | None]]:
        """``LAB:`` console markers in order, as (text, guest uptime)."""
        return [(m[1], float(m[2]) if m[2] else None) for m in MARKER_RE.finditer(self.console_text())]

    def _diag(self, what: str) -> str:
        qemu = ""
        try:
            qemu = self.qemu_log.read_text(errors="replace").strip()
        except FileNotFoundError:
            pass
        rc = self.returncode
        state = "running" if rc is None else f"exited rc={rc}"
        return (
            f"{self.name}: {what} (qemu {state})"
            + (f"\n--- qemu output ---\n{qemu[-2000:]}" if qemu else "")
            + f"\n--- console tail ({self.console}) ---\n{self.console_tail()}"
        )

    def _poll(self, what: str, timeout: float, check: object) -> object:
        deadline = time.monotonic() + timeout
        while True:
            got = check()  # type: ignore[operator]
            if got:
                return got
            if not self.alive():
                got = check()  # type: ignore[operator]
                if got:
                    return got
                raise LabError(self._diag(f"exited while waiting for {what}"))
            if time.monotonic() > deadline:
                msg = self._diag(f"timed out after {timeout:.0f}s waiting for {what}")
                self.kill()
                raise LabTimeout(msg)
            time.sleep(0.2)

    def wait_marker(self, regex: str, timeout: float = 120) -> re.Match[str]:
        """Waits for a ``LAB: ...`` console marker whose text matches ``regex``; returns the match."""
        rx = re.compile(regex)

        def check() -> re.Match[str] | None:
            for m in MARKER_RE.finditer(self.console_text()):
                hit = rx.search(m[1])
                if hit:
                    return hit
            return None

        return self._poll(f"marker /{regex}/", timeout, check)  # type: ignore[return-value]

    def wait_file(self, name: str, timeout: float = 120) -> Path:
        """Waits until the guest has created ``/lab/<name>``."""
        p = self.share / name
        self._poll(f"file {name}", timeout, p.exists)
        return p

    def wait_exit(self, timeout: float = 120) -> int:
        """Waits for the guest to power off; returns QEMU's exit status. On timeout kills it and raises."""
        if self.proc is None:
            raise LabError(f"{self.name}: not started")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            msg = self._diag(f"did not power off within {timeout:.0f}s")
            self.kill()
            raise LabTimeout(msg) from None
        self.kill()  # reaps and deregisters
        return rc

    @property
    def wall_s(self) -> float | None:
        if self.started_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.started_at


def exited(pid: int) -> bool:
    """True once ``pid`` has exited, zombie included (an orphaned QEMU waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def pids_with_tag(tag: str) -> list[int]:
    """Pids of running QEMU processes whose command line carries ``tag`` (as pgrep -f would find them)."""
    p = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 -name {tag},"], capture_output=True, text=True)
    return [pid for pid in (int(x) for x in p.stdout.split()) if not exited(pid)]
