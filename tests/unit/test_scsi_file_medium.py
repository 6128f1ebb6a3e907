"""FileMedium: sparse creation, round trip through ScsiDisk, fdatasync on flush and FUA, OS errors."""

import os
from pathlib import Path

import pytest

from edifd.edges.file_medium import FileMedium
from edifd.scsi import (
    IoKind,
    IoRequest,
    MediumError,
    ScsiCommand,
    ScsiDisk,
    SenseData,
    Status,
    cdb,
)


def test_created_sparse(tmp_path: Path) -> None:
    p = tmp_path / "lun.img"
    with FileMedium(p, 64 << 20) as m:
        st = os.stat(p)
        assert st.st_size == 64 << 20
        assert st.st_blocks * 512 < 1 << 20  # nothing allocated yet
        assert (m.block_size, m.num_blocks) == (512, (64 << 20) // 512)
        assert m.read(IoRequest(IoKind.READ, 1000, 4)) == bytes(2048)


@pytest.mark.parametrize("bs", [512, 4096])
def test_round_trip_through_disk(tmp_path: Path, bs: int) -> None:
    p = tmp_path / "lun.img"
    data = os.urandom(8 * bs)
    with FileMedium(p, 1 << 20, bs) as m:
        d = ScsiDisk(m)
        assert d.execute(ScsiCommand(cdb.write(3, 8), data)).status == Status.GOOD
        r = d.execute(ScsiCommand(cdb.read(3, 8, size=16), b"", 8 * bs))
        assert r.status == Status.GOOD and r.data == data
        ms = d.execute(ScsiCommand(cdb.mode_sense6(0x08), b"", 255)).data
        assert ms[4 + 8 + 2] & 0x04  # WCE: page cache is a volatile write cache
    assert p.read_bytes()[3 * bs : 11 * bs] == data
    with FileMedium(p, 1 << 20, bs) as m:  # reopening keeps the data
        assert m.read(IoRequest(IoKind.READ, 3, 8)) == data


def test_flush_and_fua_call_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    with FileMedium(tmp_path / "f", 1 << 16) as m:
        d = ScsiDisk(m)
        d.execute(ScsiCommand(cdb.write(0, 1), bytes(512)))
        assert calls == []
        d.execute(ScsiCommand(cdb.write(0, 1, fua=True), bytes(512)))
        assert len(calls) == 1
        assert d.execute(ScsiCommand(cdb.synchronize_cache(size=16))).status == Status.GOOD
        assert len(calls) == 2


def test_existing_larger_file_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"\x01" * 8192)
    with FileMedium(p, 4096) as m:
        assert m.num_blocks == 8 and os.path.getsize(p) == 8192
        assert m.read(IoRequest(IoKind.READ, 7, 1)) == b"\x01" * 512


@pytest.mark.parametrize("size,bs", [(0, 512), (1000, 512), (4096, 520), (512, 4096)])
def test_bad_geometry(tmp_path: Path, size: int, bs: int) -> None:
    with pytest.raises(ValueError):
        FileMedium(tmp_path / "f", size, bs)


def test_os_errors_become_medium_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FileMedium(tmp_path / "f", 1 << 16) as m:
        d = ScsiDisk(m)

        def fail(*a: object) -> None:
            raise OSError(5, "EIO")

        monkeypatch.setattr(os, "pread", fail)
        monkeypatch.setattr(os, "pwrite", fail)
        monkeypatch.setattr(os, "fdatasync", fail)
        r = d.execute(ScsiCommand(cdb.read(0, 1), b"", 512))
        assert SenseData.parse(r.sense) == SenseData(3, 0x11, 0) and r.data == bytes(512)
        r = d.execute(ScsiCommand(cdb.write(0, 1), bytes(512)))
        assert SenseData.parse(r.sense) == SenseData(3, 0x0C, 0)
        with pytest.raises(MediumError):
            m.flush(IoRequest(IoKind.FLUSH, 0, 0))
        assert d.internal_errors == 0


def test_close_is_idempotent(tmp_path: Path) -> None:
    m = FileMedium(tmp_path / "f", 4096)
    m.close()
    m.close()
