"""Build (once) and cache the lab guest: a Debian bookworm kernel, an initramfs and an ext4 root filesystem.

Three cache stages under the cache directory, each built in a temporary directory and renamed into place, so
an interrupted build never leaves a half entry behind:

* ``kernel-<package>/``  the extracted ``linux-image-*`` package plus ``modules.dep`` (depmod);
* ``base-<key>/rootfs``  the debootstrap ``minbase`` tree (the slow step, ~40 s), keyed by suite, mirror
  and the package list only, so editing the init scripts does not re-run debootstrap. The mirror is
  ``EDIF_LAB_MIRROR``, else the Debian archive this machine's apt uses (``lab.apt_sources``), else none:
  debootstrap then picks its own default;
* ``image-<key>/``       ``vmlinuz``, ``initrd.gz``, ``root.img``, ``manifest.json``, keyed by everything that
  goes into the image (base key, module lists, the init scripts and this file's source).

An ``flock`` on ``<cache>/.lock`` serialises concurrent builds; a waiting build re-checks the cache after it
gets the lock and usually finds the entry the other process just built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .apt_sources import apt_mirror
from .errors import LabError
from .guest.kernel_modules import GUEST_MODULES, LIO_MODULES

# Bump to force a rebuild of every stage (e.g. after a Debian-side change the key cannot see).
BUILD_VERSION = 1

SUITE = "bookworm"
KERNEL_META = "linux-image-amd64"

# What runs in the guest: Debian's python3 and the packages that set our dependency floors, the SCSI and iSCSI
# tools the scenarios use, and udev/kmod for module loading and device nodes.
GUEST_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-cryptography",
    "python3-cffi-backend",  # provides the virtual cffi-backend-api that cryptography needs; debootstrap
    # resolves only real package names, so without it python3-cryptography stays unconfigured
    "python3-click",
    "python3-pyudev",
    "python3-rtslib-fb",
    "python3-prometheus-client",  # edifd's [metrics] endpoint, scraped in VM-H by the EDIF scenario
    "sg3-utils",
    "libiscsi-bin",
    "kmod",
    "udev",
    "iproute2",
    "procps",
    "util-linux",
)

# Modules the initramfs insmods to reach the root filesystem and the 9p shares.
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "ext4", "9pnet_virtio", "9p")

HOST_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86",
    "qemu-utils",
    "qemu-block-extra",  # block-iscsi.so: QEMU's iscsi:// initiator
    "debootstrap",
    "busybox-static",
    "cpio",
    "gzip",
    "kmod",
    "e2fsprogs",
    "libiscsi-bin",  # iscsi-inq on the host
)

# Wait for apt/dpkg locks held by others (unattended-upgrades, a parallel job) instead of failing at once.
APT_WAIT = ("-o", "DPkg::Lock::Timeout=300")

GUEST_DIR = Path(__file__).resolve().parent / "guest"
LABINIT = GUEST_DIR / "labinit.sh"
INITRAMFS_INIT = GUEST_DIR / "initramfs-init.sh"
DEFAULT_CACHE = Path("/var/cache/edifd-lab")

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("EDIF_LAB_CACHE") or DEFAULT_CACHE)


@dataclass(frozen=True)
class GuestImage:
    """A built guest: what ``lab.vm.VM`` boots."""

    root: Path
    kernel: Path
    initrd: Path
    rootfs: Path
    kernel_version: str
    key: str

    @classmethod
    def load(cls, root: Path) -> GuestImage:
        m = json.loads((root / "manifest.json").read_text())
        return cls(
            root=root,
            kernel=root / "vmlinuz",
            initrd=root / "initrd.gz",
            rootfs=root / "root.img",
            kernel_version=m["kernel_version"],
            key=m["key"],
        )


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def mirror() -> str | None:
    """Where debootstrap fetches from: ``EDIF_LAB_MIRROR``, else this machine's apt Debian archive, else
    None (debootstrap's own default)."""
    return os.environ.get("EDIF_LAB_MIRROR") or apt_mirror()


def base_key() -> str:
    return _digest(
        {"v": BUILD_VERSION, "suite": SUITE, "mirror": mirror(), "packages": sorted(GUEST_PACKAGES)}
    )


def image_key() -> str:
    """Hash of every recipe input of the final image; any change gives a new key and so a rebuild."""

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    return _digest(
        {
            "base": base_key(),
            "modules": list(GUEST_MODULES),
            "initramfs": list(INITRAMFS_MODULES),
            "labinit": sha(LABINIT),
            "initramfs_init": sha(INITRAMFS_INIT),
            "builder": sha(Path(__file__)),
        }
    )


class StepLog:
    """Prints each build step with the seconds elapsed since the build started."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._t0 = time.monotonic()
        self.steps: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        t = time.monotonic()
        self._log(f"[lab-build +{self.elapsed():6.1f}s] {what}")
        yield
        self.steps[what] = round(time.monotonic() - t, 2)

    def note(self, what: str) -> None:
        self._log(f"[lab-build +{self.elapsed():6.1f}s] {what}")


def _run(
    argv: list[str], *, cwd: Path | None = None, log_file: Path | None = None, env: dict | None = None
) -> str:
    """Runs a build command; on failure raises LabError with the command's output tail."""
    full_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", **(env or {})}
    p = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, errors="replace")
    out = p.stdout + p.stderr
    if log_file is not None:
        log_file.write_text(out)
    if p.returncode != 0:
        tail = "\n".join(out.splitlines()[-30:])
        raise LabError(f"build command failed (rc={p.returncode}): {' '.join(argv)}\n{tail}")
    return p.stdout


def missing_host_packages(packages: Iterable[str] = HOST_PACKAGES) -> list[str]:
    pkgs = list(packages)
    p = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *pkgs], capture_output=True, text=True
    )
    installed = {
        line.split()[0]
        for line in p.stdout.splitlines()
        if line.endswith(" installed") and "not-installed" not in line
    }
    return [x for x in pkgs if x not in installed]


def ensure_host_packages(log: StepLog) -> None:
    """apt-installs the host tools when any is missing (a fresh CI machine); a no-op otherwise."""
    missing = missing_host_packages()
    if not missing:
        return
    with log.step(f"apt-get install {' '.join(missing)}"):
        _run(["apt-get", "update", "-q", *APT_WAIT])
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_WAIT, *missing])


@contextmanager
def _locked(cache: Path, log: StepLog) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.note("another build holds the cache lock; waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yields a fresh temporary directory next to ``final`` and renames it to ``final`` on success only."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_stale_tmp(cache: Path) -> None:
    # Only called with the lock held, so no live build owns these.
    for p in cache.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def _prune(cache: Path, prefix: str, keep: int, current: Path) -> None:
    """Drops all but the ``keep`` newest ``<prefix>*`` entries (never ``current``), so recipe changes do not
    fill the disk. Only called with the lock held. A VM booted from a dropped image keeps its open file."""
    entries = sorted((p for p in cache.glob(f"{prefix}*") if p != current), key=lambda p: p.stat().st_mtime)
    for old in entries[: max(0, len(entries) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_kernel_package() -> str:
    out = _run(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends: ")
        if dep != line.strip() and dep.startswith("linux-image-") and dep[len("linux-image-")].isdigit():
            return dep
    raise LabError(f"cannot resolve the kernel package behind {KERNEL_META} (apt-cache depends)")


def _kernel_stage(cache: Path, kpkg: str, log: StepLog) -> Path:
    final = cache / f"kernel-{kpkg}"
    if (final / "ok").exists():
        log.note(f"kernel {kpkg}: cached")
        return final
    shutil.rmtree(final, ignore_errors=True)
    kver = kpkg.removeprefix("linux-image-")
    with log.step(f"kernel {kpkg}: apt-get download, dpkg -x, depmod"), _atomic_dir(final) as tmp:
        dl = tmp / "deb"
        dl.mkdir()
        _run(["apt-get", "download", "-q", kpkg], cwd=dl)
        debs = list(dl.glob("*.deb"))
        if len(debs) != 1:
            raise LabError(f"apt-get download {kpkg} gave {debs}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")])
        shutil.rmtree(dl)
        # The .deb ships no modules.dep: generate it so modprobe --show-depends can compute closures.
        _run(["depmod", "-b", str(tmp / "x"), kver])
        (tmp / "ok").write_text(kver + "\n")
    return final


def module_closure(kroot: Path, kver: str, modules: Iterable[str]) -> list[Path]:
    """The .ko files needed for ``modules``, dependencies first, each once (modprobe --show-depends)."""
    seen: dict[Path, None] = {}
    for m in modules:
        out = _run(["modprobe", "-d", str(kroot), "-S", kver, "--show-depends", m])
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                seen.setdefault(Path(parts[1]), None)
    return list(seen)


def _base_stage(cache: Path, log: StepLog) -> Path:
    final = cache / f"base-{base_key()}"
    if (final / "ok").exists():
        log.note("debootstrap rootfs: cached")
        return final / "rootfs"
    shutil.rmtree(final, ignore_errors=True)
    with (
        log.step(f"debootstrap --variant=minbase {SUITE} ({len(GUEST_PACKAGES)} packages)"),
        _atomic_dir(final) as tmp,
    ):
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(GUEST_PACKAGES)}",
            SUITE,
            str(tmp / "rootfs"),
            *([m] if (m := mirror()) else []),
        ]
        try:
            _run(argv, log_file=tmp / "debootstrap.log")
        except LabError as e:
            # The tmp dir goes away; keep debootstrap's own log (the real cause) next to the cache.
            inner = tmp / "rootfs/debootstrap/debootstrap.log"
            kept = cache / "debootstrap-failed.log"
            if inner.exists():
                shutil.copy2(inner, kept)
                tail = "\n".join(inner.read_text(errors="replace").splitlines()[-25:])
                raise LabError(f"{e}\n--- {kept} (tail) ---\n{tail}") from None
            raise
        for p in (tmp / "rootfs/var/cache/apt/archives").glob("*.deb"):
            p.unlink()
        (tmp / "ok").write_text(base_key() + "\n")
    return final / "rootfs"


def _populate(rootfs: Path, kroot: Path, kver: str) -> int:
    mdir = rootfs / "lib/modules" / kver
    shutil.rmtree(mdir, ignore_errors=True)
    mdir.mkdir(parents=True)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(kroot / "lib/modules" / kver / f, mdir / f)
    mods = module_closure(kroot, kver, GUEST_MODULES)
    for ko in mods:
        dst = rootfs / ko.relative_to(kroot)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ko, dst)
    _run(["depmod", "-b", str(rootfs), kver])
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin/busybox")
    shutil.copy2(LABINIT, rootfs / "sbin/labinit")
    (rootfs / "sbin/labinit").chmod(0o755)
    # labinit.sh modprobes the LIO set from this file: the list has one source (lab.guest.kernel_modules).
    (rootfs / "etc/edif-lab").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/edif-lab/lio-modules").write_text(" ".join(LIO_MODULES) + "\n")
    # rtslib-fb 2.1.75 fails on first use unless both exist (docs/lab.md, Observations); /lab, /src: 9p.
    for d in ("etc/target", "etc/rtslib-fb-target", "lab", "src"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/hostname").write_text("edifd-lab\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost edifd-lab\n")
    return len(mods)


def _initramfs(out: Path, kroot: Path, kver: str) -> None:
    tree = out.parent / "initrd.d"
    for d in ("bin", "proc", "sys", "dev", "mnt/root", "lib/modules"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", tree / "bin/busybox")
    shutil.copy2(INITRAMFS_INIT, tree / "init")
    (tree / "init").chmod(0o755)
    names = []
    for ko in module_closure(kroot, kver, INITRAMFS_MODULES):
        shutil.copy2(ko, tree / "lib/modules" / ko.name)
        names.append(ko.name)
    (tree / "lib/modules/load.list").write_text("".join(n + "\n" for n in names))
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with open(out, "wb") as fh:
        cpio = subprocess.Popen(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        gz = subprocess.Popen(["gzip", "-1", "-n"], stdin=cpio.stdout, stdout=fh)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(("\n".join([".", *files]) + "\n").encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or gz.wait() != 0:
            raise LabError("initramfs: cpio/gzip failed")
    shutil.rmtree(tree)


def _du_mib(path: Path) -> int:
    return int(_run(["du", "-sm", str(path)]).split()[0])


def ensure_image(log: Log = print, cache: Path | None = None) -> GuestImage:
    """Returns the cached guest image for the current recipe, building what is missing."""
    cache = cache or cache_dir()
    key = image_key()
    final = cache / f"image-{key}"
    sl = StepLog(log)
    # Checked on the cached path too: CI may restore the cache onto a fresh machine without QEMU.
    if missing_host_packages():
        with _locked(cache, sl):
            ensure_host_packages(sl)
    if (final / "manifest.json").exists():
        sl.note(f"image {key}: cached in {final}")
        return GuestImage.load(final)
    with _locked(cache, sl):
        if (final / "manifest.json").exists():  # built by whoever held the lock before us
            sl.note(f"image {key}: built meanwhile by another process")
            return GuestImage.load(final)
        _clean_stale_tmp(cache)
        with sl.step("apt-get update"):
            _run(["apt-get", "update", "-q", *APT_WAIT])
        kpkg = resolve_kernel_package()
        kver = kpkg.removeprefix("linux-image-")
        kroot = _kernel_stage(cache, kpkg, sl) / "x"
        base = _base_stage(cache, sl)
        with _atomic_dir(final) as tmp:
            rootfs = tmp / "rootfs"
            with sl.step("copy base rootfs"):
                _run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)])
            with sl.step("populate rootfs: modules, labinit, /etc"):
                nmods = _populate(rootfs, kroot, kver)
            with sl.step("initramfs"):
                _initramfs(tmp / "initrd.gz", kroot, kver)
            shutil.copy2(kroot / "boot" / f"vmlinuz-{kver}", tmp / "vmlinuz")
            size_mib = _du_mib(rootfs) + 256
            with sl.step(f"mkfs.ext4 -d ({size_mib} MiB)"):
                _run(
                    [
                        "mkfs.ext4",
                        "-q",
                        "-F",
                        "-L",
                        "labroot",
                        "-d",
                        str(rootfs),
                        str(tmp / "root.img"),
                        f"{size_mib}M",
                    ]
                )
            shutil.rmtree(rootfs)
            manifest = {
                "key": key,
                "base_key": base_key(),
                "build_version": BUILD_VERSION,
                "kernel_package": kpkg,
                "kernel_version": kver,
                "packages": list(GUEST_PACKAGES),
                "modules": list(GUEST_MODULES),
                "module_files": nmods,
                "steps_s": sl.steps,
                "built_s": round(sl.elapsed(), 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for prefix, keep, cur in (
            ("image-", 3, final),
            ("base-", 2, base.parent),
            ("kernel-", 2, kroot.parent),
        ):
            _prune(cache, prefix, keep, cur)
        sl.note(f"image {key} built in {sl.elapsed():.1f}s: {final}")
    return GuestImage.load(final)
