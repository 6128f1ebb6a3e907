"""What the guest offers the project: kernel, LIO/configfs, Debian's Python packages, and ``import edifd``.

Run as ``python3 -m lab.guest.probe``; writes the facts to ``/lab/result.json`` (``probe()`` is reused by the
export script so one boot serves both).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .common import log, run, write_result
from .kernel_modules import TARGET_MODULES

PACKAGES = {"rtslib_fb": "rtslib-fb", "cryptography": "cryptography", "click": "click", "pyudev": "pyudev"}


def _version(mod: Any, dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(mod, "__version__", None)


def probe() -> dict[str, Any]:
    res: dict[str, Any] = {"kernel": platform.release(), "python": platform.python_version()}
    mounts = Path("/proc/mounts").read_text().split("\n")
    res["configfs_mounted"] = any(" /sys/kernel/config configfs " in m for m in mounts)
    res["mounts_9p"] = sorted(
        m.split()[1] + (":ro" if " ro," in m or ",ro," in m else ":rw") for m in mounts if " 9p " in m
    )
    ver = Path("/sys/kernel/config/target/version")
    res["target_version"] = ver.read_text().strip() if ver.exists() else None
    loaded = {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}
    res["modules_loaded"] = sorted(m for m in TARGET_MODULES if m in loaded)
    res["modules_missing"] = sorted(m for m in TARGET_MODULES if m not in loaded)
    imports: dict[str, Any] = {}
    for name, dist in PACKAGES.items():
        try:
            mod = importlib.import_module(name)
            imports[name] = {
                "ok": True,
                "version": _version(mod, dist),
                "file": getattr(mod, "__file__", None),
            }
        except Exception as e:  # record, don't die: the host asserts on it
            imports[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    res["imports"] = imports
    # Exactly how scenarios will run our code: Debian's python3 with the read-only source share on the path.
    env = {**os.environ, "PYTHONPATH": "/src", "PYTHONDONTWRITEBYTECODE": "1"}
    r = run([sys.executable, "-c", "import edifd, sys; print(edifd.__file__)"], env=env)
    res["import_edifd"] = {"rc": r["rc"], "file": r["stdout"].strip(), "stderr": r["stderr"][-2000:]}
    res["src_readonly"] = not os.access("/src", os.W_OK) or _write_fails("/src/.lab-write-test")
    return res


def _write_fails(path: str) -> bool:
    try:
        with open(path, "w"):
            pass
    except OSError:
        return True
    os.unlink(path)
    return False


def main() -> int:
    res = probe()
    log(f"probe: {res}")
    write_result({"probe": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
