"""Fixtures shared by every test directory; shared helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import shutil

import pytest

from tests.support.ci import unavailable
from tests.support.clock import Clock


@pytest.fixture
def clock() -> Clock:
    """A fresh fake monotonic clock at t = 1000 s."""
    return Clock()


@pytest.fixture(scope="module")
def tshark() -> str:
    """The tshark binary (the Wireshark oracle); skips without it, fails under CI=true."""
    path = shutil.which("tshark")
    if path is None:
        unavailable("tshark not installed (apt-get install tshark)")
    return path
