"""What the tests of edif-agent's control-disk edge share (test_agent_disk.py, test_agent_sgio.py): a control
disk image, the parked-READ patch of the edge's preadv, and a handshake-then-ping helper.

The fixtures are imported by name into the test modules that use them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edifd.proto import Keepalive
from guest_agent import disk as disk_mod
from guest_agent.disk import ControlDiskEndpoint
from tests.support.agent import FakeClient, parking_preadv

BS = 512
BLOCKS = 4096


def wait_until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(1).randbytes(BS * BLOCKS)
    p = tmp_path / "ctl.img"
    p.write_bytes(data)
    return p, data


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Callable[..., int]]:
    """Patch the edge's preadv so an idle READ blocks briefly, as a parked READ on the host would."""
    ref: list[FakeClient] = []

    def install(client: FakeClient, eio_first: int = 0) -> Callable[..., int]:
        ref.append(client)
        fn = parking_preadv(ref, eio_first=eio_first)
        monkeypatch.setattr(disk_mod.os, "preadv", fn)
        return fn

    return install


def handshake_and_ping(ep: ControlDiskEndpoint, client: FakeClient, n: int) -> list:
    ep.call(lambda c: c.start())
    wait_until(lambda: client.established)
    rids = [ep.call(lambda c: c.request(Keepalive())) for _ in range(n)]
    got = []
    while len(got) < n:
        got.append(ep.inbox.get(timeout=10))
    assert [m.request_id for m in got] == rids
    return got
