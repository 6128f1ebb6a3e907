"""WRITE through SG_IO, so the agent sees the host's sense data when edifd refuses a message.

Through the block layer a refused WRITE is only EIO (or EREMOTEIO): the sense key, ASC and ASCQ that
say *why* (stale epoch: authenticate again; gap: resend in order; queue full: later) are lost. The
SCSI generic ioctl ``SG_IO`` on the same /dev/sdX returns SCSI status and sense to the caller
(Linux ``include/scsi/sg.h``, ``struct sg_io_hdr``; the sd driver accepts WRITE(10)/(16) from a
writer of the device). The CDBs follow SBC-3 5.32/5.34 (WRITE(10), WRITE(16)).

``write_cdb`` and ``SgResult`` are pure; ``sg_write`` is the one ioctl.
"""

from __future__ import annotations

import ctypes
import fcntl
import struct
from dataclasses import dataclass

SG_IO = 0x2285
SG_DXFER_TO_DEV = -2
SG_INTERFACE_ID = ord("S")
SENSE_MAX = 96  # as large as TCMU's sense buffer
GOOD = 0x00
CHECK_CONDITION = 0x02
DEFAULT_TIMEOUT_MS = 600_000  # matches the udev rule's command timer; the host answers WRITEs at once


class SgIoError(ValueError):
    """A WRITE that cannot be expressed as a CDB (negative LBA, no blocks, too many blocks)."""


def write_cdb(lba: int, nblocks: int) -> bytes:
    """WRITE(10) when LBA and length fit, else WRITE(16); no FUA (the control LUN has no write cache)."""
    if not isinstance(lba, int) or not isinstance(nblocks, int) or lba < 0 or not 0 < nblocks <= 0xFFFFFFFF:
        raise SgIoError(f"cannot WRITE {nblocks!r} blocks at LBA {lba!r}")
    if lba + nblocks > 1 << 64:
        raise SgIoError(f"LBA {lba} + {nblocks} blocks exceeds 64 bits")
    if lba <= 0xFFFFFFFF and nblocks <= 0xFFFF:
        return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, nblocks, 0)
    return struct.pack(">BBQIBB", 0x8A, 0, lba, nblocks, 0, 0)


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr (include/scsi/sg.h), native layout: 88 bytes on LP64."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


@dataclass(frozen=True)
class SgResult:
    status: int  # SCSI status byte
    host_status: int  # DID_* (transport): non-zero means the command did not complete at the target
    driver_status: int
    sense: bytes  # only with CHECK CONDITION
    resid: int

    @property
    def ok(self) -> bool:
        return self.status == GOOD and self.host_status == 0 and (self.driver_status & 0x0F) == 0 \
            and self.resid == 0


def sg_write(fd: int, lba: int, data: memoryview, block_size: int,
             timeout_ms: int = DEFAULT_TIMEOUT_MS) -> SgResult:
    """WRITE `data` (whole blocks, from a page-aligned buffer) at `lba`. OSError if the ioctl itself
    fails (ENOTTY on a regular file or a device without SG_IO: the caller falls back to pwritev)."""
    n = len(data)
    if n == 0 or n % block_size:
        raise SgIoError(f"{n} bytes is not a whole number of {block_size}-byte blocks")
    cdb = write_cdb(lba, n // block_size)
    cdb_buf = ctypes.create_string_buffer(cdb, len(cdb))
    sense = ctypes.create_string_buffer(SENSE_MAX)
    # The data stays where it is (the aligned mmap); ctypes only needs its address.
    c_data = (ctypes.c_char * n).from_buffer(data)
    try:
        hdr = SgIoHdr(interface_id=SG_INTERFACE_ID, dxfer_direction=SG_DXFER_TO_DEV, cmd_len=len(cdb),
                      mx_sb_len=SENSE_MAX, dxfer_len=n, dxferp=ctypes.addressof(c_data),
                      cmdp=ctypes.addressof(cdb_buf), sbp=ctypes.addressof(sense), timeout=timeout_ms)
        fcntl.ioctl(fd, SG_IO, hdr)
    finally:
        del c_data  # release the export of `data` before the caller reuses or closes it
    got = sense.raw[: hdr.sb_len_wr] if hdr.status == CHECK_CONDITION else b""
    return SgResult(hdr.status, hdr.host_status, hdr.driver_status, got, hdr.resid)
