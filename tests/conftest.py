"""Fixtures shared by every test directory; shared helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import pytest

from tests.support.clock import Clock


@pytest.fixture
def clock() -> Clock:
    """A fresh fake monotonic clock at t = 1000 s."""
    return Clock()
