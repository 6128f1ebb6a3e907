"""FileMedium: an `edifd.scsi.Medium` whose blocks live in a (sparse) file.

The sans-IO SCSI emulation never touches a file; this edge does, for edifd's file LUNs and
edif-target's LUNs.

The file is created on demand and extended with ftruncate, so unwritten blocks take no space and
read back as zeros. Writes go to the page cache (WCE=1); FUA writes and SYNCHRONIZE CACHE call
fdatasync. OS errors become MEDIUM ERROR sense rather than escaping as bugs.
"""

from __future__ import annotations

import os
import stat

from edifd.scsi.medium import BLOCK_SIZES, IoRequest
from edifd.scsi.sense import Asc, MediumError, SenseKey


class FileMedium:
    write_cache = True

    def __init__(self, path: str | os.PathLike[str], size_bytes: int, block_size: int = 512, *,
                 resize: bool = True) -> None:
        """`resize=False`: an existing file of another size is refused (ValueError), never grown.
        Whatever `resize`, only a regular file is served (not a directory, FIFO or device node)."""
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"unsupported block size {block_size}")
        if size_bytes < block_size or size_bytes % block_size:
            raise ValueError(f"size {size_bytes} must be a positive multiple of the block size {block_size}")
        self.path = os.fspath(path)
        self._bs = block_size
        self._n = size_bytes // block_size
        # O_NONBLOCK: a FIFO must be refused below, not hang the open.
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            try:
                self._fd, created = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
            except FileExistsError:
                self._fd, created = os.open(self.path, flags), False
        except IsADirectoryError:
            raise ValueError(f"backing file {self.path} is a directory") from None
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"backing file {self.path} is not a regular file")
            os.set_blocking(self._fd, True)
            if not resize and not created and st.st_size != size_bytes:
                raise ValueError(f"backing file {self.path} has {st.st_size} bytes, not {size_bytes}; "
                                 "refusing to resize it")
            if st.st_size < size_bytes:
                os.ftruncate(self._fd, size_bytes)  # sparse: no blocks allocated
        except (OSError, ValueError):
            os.close(self._fd)
            raise

    @property
    def block_size(self) -> int:
        return self._bs

    @property
    def num_blocks(self) -> int:
        return self._n

    def read(self, req: IoRequest) -> bytes:
        length, off = req.nblocks * self._bs, req.lba * self._bs
        out = bytearray()
        try:
            while len(out) < length:
                chunk = os.pread(self._fd, length - len(out), off + len(out))
                if not chunk:  # file shrank under us: the rest reads as zeros
                    break
                out += chunk
        except OSError as e:
            raise MediumError.of(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR) from e
        return bytes(out.ljust(length, b"\x00"))

    def write(self, req: IoRequest, data: bytes) -> None:
        off = req.lba * self._bs
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, off)
                view, off = view[n:], off + n
            if req.fua:
                os.fdatasync(self._fd)
        except OSError as e:
            raise MediumError.of(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from e

    def flush(self, req: IoRequest) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            raise MediumError.of(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR) from e

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileMedium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
