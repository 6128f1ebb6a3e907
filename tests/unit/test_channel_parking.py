"""Parked READs on the control LUN, driven through the SCSI layer with scripted CDBs."""

import struct

import pytest

from edifd.channel.control_lun import ControlLun
from edifd.channel.parking import ParkedReads
from edifd.scsi import Pending, ScsiCommand, ScsiDisk, Status
from edifd.scsi.sense import SenseData


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def read10(lba: int, n: int = 8) -> ScsiCommand:
    return ScsiCommand(struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0), data_in_len=n * 512, tag=lba)


def write10(lba: int, data: bytes) -> ScsiCommand:
    return ScsiCommand(struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0), data_out=data, tag=lba)


@pytest.fixture
def lun():
    clock = Clock()
    medium = ControlLun(1 << 20, park_time=5.0, clock=clock)
    return ScsiDisk(medium), medium, clock


def test_reads_park_and_heartbeat_after_park_time(lun):
    disk, medium, clock = lun
    done = []
    pendings = [disk.execute(read10(8 * k)) for k in range(4)]
    assert all(isinstance(p, Pending) for p in pendings)
    for p in pendings:
        p.on_done(done.append)
    assert len(medium.parked) == 4
    clock.t += 4.9
    assert medium.tick() == 0 and not done
    clock.t += 0.1
    assert medium.tick() == 4
    assert len(done) == 4 and medium.parked.heartbeats == 4
    for r in done:
        # a heartbeat fills the whole READ buffer with zeros: no stale TCMU data page ever leaks
        assert r.status == Status.GOOD and r.data == bytes(8 * 512)


def test_heartbeats_are_per_read_age(lun):
    disk, medium, clock = lun
    first = disk.execute(read10(0))
    clock.t += 3
    second = disk.execute(read10(64))
    clock.t += 2
    assert medium.tick() == 1 and first.done and not second.done
    clock.t += 3
    assert medium.tick() == 1 and second.done


def test_release_all_completes_everything_at_once(lun):
    disk, medium, clock = lun
    pendings = [disk.execute(read10(8 * k)) for k in range(6)]
    assert medium.release_all() == 6
    assert all(p.done and p.result.status == Status.GOOD for p in pendings)
    assert medium.release_all() == 0


def test_aborted_read_is_never_completed(lun):
    disk, medium, clock = lun
    cmd = read10(16)
    p = disk.execute(cmd)
    disk.abort(cmd)
    assert len(medium.parked) == 0
    clock.t += 60
    assert medium.tick() == 0 and not p.done


def test_write_is_refused_and_changes_nothing(lun):
    disk, medium, clock = lun
    r = disk.execute(write10(0, b"\x42" * 512))
    assert r.status == Status.CHECK_CONDITION
    s = SenseData.parse(r.sense)
    assert (s.key, s.asc, s.ascq) == (0x05, 0x26, 0x00)
    assert medium.writes_refused == 1 and len(medium.parked) == 0


def test_take_returns_oldest_first():
    lot = ParkedReads(5.0)
    from edifd.scsi import IoKind, IoRequest
    reqs = [IoRequest(IoKind.READ, lba, 1, command=ScsiCommand(bytes([0x28]), tag=lba)) for lba in (3, 1, 2)]
    for i, r in enumerate(reqs):
        lot.park(r, 512, float(i))
    assert [lot.take().request.lba for _ in range(3)] == [3, 1, 2]
    assert lot.take() is None and lot.next_deadline() is None


def test_park_time_must_be_positive():
    with pytest.raises(ValueError):
        ParkedReads(0)


def test_close_completes_parked_and_stops_parking(lun):
    disk, medium, clock = lun
    parked = disk.execute(read10(0))
    assert medium.close() == 1 and parked.done
    r = disk.execute(read10(8))
    assert not isinstance(r, Pending) and r.status == Status.GOOD and r.data == bytes(8 * 512)
