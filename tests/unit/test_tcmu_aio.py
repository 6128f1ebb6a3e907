"""The asyncio ring owner on the fake kernel, and the device-gone paths of both owners."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

from edifd.scsi.command import Pending, ScsiCommand, ScsiResponse, Status
from edifd.tcmu.aio import AsyncTcmuHandler
from edifd.tcmu.device import TcmuHandler
from edifd.tcmu.fakekernel import FakeControl, FakeKernel, FakeUio
from tests.support.tcmu import PARK, READ10, WAIT, queue, wait_until


class Disk:
    def __init__(self) -> None:
        self.parked: list[Pending] = []

    def execute(self, cmd: ScsiCommand) -> ScsiResponse | Pending:
        if cmd.cdb[5] == 0x99:
            self.parked.append(Pending(cmd))
            return self.parked[-1]
        return ScsiResponse(Status.GOOD, b"d" * cmd.data_in_len)


async def until(pred, limit: float = WAIT) -> bool:
    for _ in range(int(limit / 0.01)):
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


def make(kernel: FakeKernel | None = None):
    k = kernel or FakeKernel()
    uio, ctl, disk = FakeUio(k), FakeControl(k), Disk()
    return k, uio, ctl, disk, AsyncTcmuHandler(lambda: uio, ctl, disk, drain_timeout=2.0, name="a")


def test_async_attach_serve_and_stop_with_parked_reads() -> None:
    async def main() -> None:
        k = FakeKernel()
        stale = k.queue_cmd(READ10, data_in_len=512)
        k, uio, ctl, disk, h = make(k)
        await h.start()
        assert ctl.log == ["block", "reset_ring", "unblock"] and k.busy == [stale] and h.running
        cid = queue(k, uio, READ10, data_in_len=512)
        assert await until(lambda: any(c.cmd_id == cid for c in k.completions))
        for _ in range(3):
            queue(k, uio, PARK, data_in_len=512)
        assert await until(lambda: len(disk.parked) == 3)
        # One resolved from another thread, as the channel would.
        t = threading.Thread(target=disk.parked[0].resolve, args=(ScsiResponse(Status.GOOD, b"P" * 512),))
        t.start()
        t.join()
        assert await until(lambda: any(c.data == b"P" * 512 for c in k.completions))
        assert await h.stop() is True
        assert [c.status for c in k.completions[-2:]] == [Status.BUSY, Status.BUSY]
        assert not h.running and uio.closed and ctl.log[-1] == "block" and k.in_flight == 0
        disk.parked[1].resolve(ScsiResponse(Status.GOOD, b"late"))  # after close: harmless
        assert k.free_blocks_untouched() and not k.broken

    asyncio.run(main())


def test_async_tmr_and_recovery() -> None:
    async def main() -> None:
        k, uio, ctl, disk, h = make()
        await h.start()
        cid = queue(k, uio, PARK, data_in_len=512)
        assert await until(lambda: len(disk.parked) == 1)
        k.queue_tmr([cid])
        uio.signal()
        assert await until(lambda: h.stats.aborted == 1)
        k.queue_cmd(READ10, data_in_len=512)
        k.buf[128 + (k.head - 128) % k.cmdr_size] |= 3  # opcode 3 in the newest (128-byte) entry
        uio.signal()
        assert await until(lambda: h.recoveries == 1)
        cid = queue(k, uio, READ10, data_in_len=512)
        assert await until(lambda: any(c.cmd_id == cid for c in k.completions))
        assert await h.stop()

    asyncio.run(main())


class GoneUio(FakeUio):
    """A uio whose device was removed: poll reports HUP, read fails with EIO."""

    def __init__(self, kernel: FakeKernel) -> None:
        super().__init__(kernel)
        self._r, w = os.pipe()
        os.close(w)
        self.gone = False

    def fileno(self) -> int:
        return self._r if self.gone else super().fileno()

    def clear_event(self) -> None:
        if self.gone:
            raise OSError(errno.EIO, "Input/output error")
        super().clear_event()

    def close(self) -> None:
        super().close()
        os.close(self._r)


def test_thread_owner_closes_when_the_device_goes_away() -> None:
    k = FakeKernel()
    uio = GoneUio(k)
    uio.gone = True
    h = TcmuHandler(lambda: uio, FakeControl(k), Disk(), name="g")
    h.start()
    assert wait_until(lambda: not h.running)
    assert uio.closed and not h.drained


def test_async_owner_closes_when_the_device_goes_away() -> None:
    async def main() -> None:
        k = FakeKernel()
        uio = GoneUio(k)
        h = AsyncTcmuHandler(lambda: uio, FakeControl(k), Disk(), name="g")
        await h.start()
        uio.gone = True
        uio.signal()
        assert await until(lambda: not h.running)
        assert uio.closed and await h.stop() is False

    asyncio.run(main())
