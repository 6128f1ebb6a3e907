"""guest_agent.sgio: WRITE CDBs, the sg_io_hdr layout, and the edge's SG_IO path (ioctl faked: no SCSI
device in unit tests; the lab exercises the real one)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guest_agent import sgio
from guest_agent.disk import ControlDiskEndpoint
from guest_agent.sgio import SgIoError, SgIoHdr, SgResult, sg_write, write_cdb
from tests.support import agent_disk
from tests.support.agent import FakeClient
from tests.support.agent_disk import BS, handshake_and_ping, wait_until

image, parked = agent_disk.image, agent_disk.parked  # the shared fixtures, found by name


def test_write10_and_write16():
    assert write_cdb(0x12345678, 8) == bytes.fromhex("2a00 12345678 00 0008 00".replace(" ", ""))
    cdb = write_cdb(1 << 33, 8)
    assert len(cdb) == 16 and cdb[0] == 0x8A and struct.unpack(">Q", cdb[2:10])[0] == 1 << 33
    assert struct.unpack(">I", write_cdb(5, 0x10000)[10:14])[0] == 0x10000  # too long for WRITE(10)


@pytest.mark.parametrize("lba, n", [(-1, 1), (0, 0), (0, 1 << 32), ((1 << 64) - 1, 2), (0, "8")])
def test_bad_writes_are_refused(lba, n):
    with pytest.raises(SgIoError):
        write_cdb(lba, n)


@given(st.integers(0, (1 << 64) - 1 - 0xFFFF), st.integers(1, 0xFFFF))
def test_cdb_carries_lba_and_length(lba, n):
    cdb = write_cdb(lba, n)
    if len(cdb) == 10:
        assert struct.unpack(">I", cdb[2:6])[0] == lba and struct.unpack(">H", cdb[7:9])[0] == n
    else:
        assert struct.unpack(">Q", cdb[2:10])[0] == lba and struct.unpack(">I", cdb[10:14])[0] == n


def test_header_layout_matches_linux_lp64():
    assert ctypes.sizeof(ctypes.c_void_p) == 8  # the project's platforms (x86-64, arm64) are LP64
    assert ctypes.sizeof(SgIoHdr) == 88
    assert SgIoHdr.dxferp.offset == 16 and SgIoHdr.usr_ptr.offset == 56 and SgIoHdr.status.offset == 64
    assert SgIoHdr.host_status.offset == 68 and SgIoHdr.info.offset == 80


def test_result_ok_only_when_status_transport_and_residue_are_clean():
    assert SgResult(0, 0, 0, b"", 0).ok
    for bad in (SgResult(2, 0, 0, b"\x70", 0), SgResult(0, 7, 0, b"", 0), SgResult(0, 0, 8, b"", 0),
                SgResult(0, 0, 0, b"", 512), SgResult(8, 0, 0, b"", 0)):
        assert not bad.ok


def test_regular_file_has_no_sg_io(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(bytes(4096))
    fd = os.open(p, os.O_RDWR)
    buf = mmap.mmap(-1, 4096)
    view = memoryview(buf)
    try:
        code = None
        try:
            sg_write(fd, 0, view[:512], 512)
        except OSError as e:
            code = e.errno
        assert code == errno.ENOTTY
        with pytest.raises(SgIoError):
            sg_write(fd, 0, view[:100], 512)
    finally:
        os.close(fd)
    view.release()
    buf.close()  # sg_write released its hold on the buffer


def test_edge_falls_back_to_pwritev_on_a_regular_file(image, parked):
    path, _ = image
    c = FakeClient()
    parked(c)
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False)
    with ep:
        handshake_and_ping(ep, c, 2)
    assert ep.counters["sg_io_unavailable"] == 1 and ep.counters["writes_ok"] == 3


def test_edge_hands_sense_of_a_refused_write_to_the_client(image, parked, monkeypatch):
    """A CHECK CONDITION through SG_IO: the client gets the sense bytes (e.g. STALE_EPOCH)."""
    path, _ = image
    c = FakeClient()
    parked(c)
    stale = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x74, 0x80]) + bytes(4)
    calls = {"n": 0, "cdbs": []}

    def fake_ioctl(fd, req, hdr):
        assert req == sgio.SG_IO and hdr.interface_id == ord("S") and hdr.dxfer_direction == -2
        calls["cdbs"].append(ctypes.string_at(hdr.cmdp, hdr.cmd_len))
        calls["n"] += 1
        if calls["n"] == 1:  # the first WRITE is refused with sense, then accepted
            hdr.status = sgio.CHECK_CONDITION
            ctypes.memmove(hdr.sbp, stale, len(stale))
            hdr.sb_len_wr = len(stale)
        return 0

    monkeypatch.setattr(sgio.fcntl, "ioctl", fake_ioctl)
    ep = ControlDiskEndpoint(c, str(path), block_size=BS, parked=2, direct=False,
                             sleep=lambda ev, s: ev.is_set())
    with ep:
        ep.call(lambda cl: cl.start())
        wait_until(lambda: c.established)
    assert c.senses == [stale] and c.write_failures == 1 and c.established
    assert ep.counters["write_sense"] == 1 and "sense 7000050000" in (ep.last_error or "")
    assert calls["cdbs"][0][0] == 0x2A  # WRITE(10)
