"""Fixtures shared by every test directory; shared helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import shutil

import pytest

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
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is required in CI (apt-get install tshark)")
        pytest.skip("tshark not installed (apt-get install tshark); CI=true makes this a failure")
    return path
