"""What the ring-owner tests share: the CDBs they queue on the fake kernel and a bounded wait."""

from __future__ import annotations

import threading

from edifd.tcmu.fakekernel import FakeKernel, FakeUio

PARK = bytes([0x28, 0, 0, 0, 0, 0x99, 0, 0, 1, 0])  # a READ(10) the test disks park (byte 5 = 0x99)
READ10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0])
WAIT = 10.0  # generous upper bound for a wait, never an assertion on speed


def queue(k: FakeKernel, uio: FakeUio, cdb: bytes, **kw) -> int:
    cid = k.queue_cmd(cdb, **kw)
    uio.signal()
    return cid


def wait_until(pred, timeout: float = WAIT) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pred():
            return True
        ev.wait(0.01)
    return pred()
