"""Fixtures for the lab tests.

``lab_image`` builds (or finds cached) the guest image and checks the host can boot it. When that is
impossible (not root, no QEMU), the lab tests **fail** under CI=true, since a silently skipped lab would prove
nothing, and skip with the reason elsewhere (a developer laptop).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# `lab` is a top-level package of the checkout but not part of the installed distribution: make it importable
# however pytest was started (the console script does not put the cwd on sys.path).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from lab.errors import LabError  # noqa: E402
from lab.image import GuestImage, ensure_image  # noqa: E402
from tests.support.ci import unavailable  # noqa: E402

QEMU_ISCSI = Path("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so")


def _unavailable(reason: str) -> None:
    unavailable(f"the lab cannot run: {reason}")


@pytest.fixture(scope="session")
def lab_image() -> GuestImage:
    if os.geteuid() != 0:
        _unavailable("needs root (debootstrap, apt-get, 9p with security_model=none)")
    if shutil.which("apt-get") is None and shutil.which("qemu-system-x86_64") is None:
        _unavailable("no qemu-system-x86_64 and no apt-get to install it")
    try:
        image = ensure_image(log=print)  # apt-installs QEMU & co. first when they are missing
    except LabError as e:
        pytest.fail(f"guest image build failed: {e}", pytrace=False)
    if shutil.which("qemu-system-x86_64") is None:
        _unavailable("qemu-system-x86_64 not installed")
    if not QEMU_ISCSI.exists():
        _unavailable(f"{QEMU_ISCSI} missing (apt-get install qemu-block-extra)")
    return image
