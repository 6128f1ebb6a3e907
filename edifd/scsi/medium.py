"""The pluggable medium behind READ/WRITE/VERIFY/SYNCHRONIZE CACHE.

A medium sees the parsed request (`IoRequest`: kind, LBA, block count, FUA/DPO and the whole
`ScsiCommand`), so the control LUN can read its cursor from the LBA and a data LUN can forward the
original CDB. Each call either completes at once or returns a `Pending` that the medium resolves
later, exactly once, with a `ScsiResponse`:

- GOOD: for a read, `data` holds the blocks (the disk pads or truncates them to the request size,
  then to the initiator's buffer); for a write or flush, data is ignored;
- any other status: passed through to the initiator with its sense (data zero-filled).

Failing at once: raise `MediumError(key, asc, ascq)`; it becomes CHECK CONDITION. Any other
exception is a medium bug: the initiator gets HARDWARE ERROR / INTERNAL TARGET FAILURE (04/44/00).

Optional attribute `write_cache: bool` (default False when absent): True if completed writes may sit
in a volatile cache until `flush` (reported as WCE in the Caching mode page).
Optional method `abort(cmd: ScsiCommand) -> None`: the transport gave up on a command the medium
left Pending (see ScsiDisk.abort).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .command import Pending, ScsiCommand
from .sense import Asc, MediumError, SenseKey

# Logical block sizes a LUN may have (what LIO's hw_block_size and our READ CAPACITY accept).
BLOCK_SIZES: tuple[int, ...] = (512, 1024, 2048, 4096)


class IoKind(enum.Enum):
    READ = "read"
    WRITE = "write"
    VERIFY = "verify"  # a read whose data the disk compares with the data-out buffer (BYTCHK)
    FLUSH = "flush"  # SYNCHRONIZE CACHE; nblocks 0 = to the end of the medium


@dataclass(frozen=True)
class IoRequest:
    kind: IoKind
    lba: int
    nblocks: int
    fua: bool = False
    dpo: bool = False
    command: ScsiCommand = field(default_factory=lambda: ScsiCommand(b""), repr=False)


@runtime_checkable
class Medium(Protocol):
    """What a ScsiDisk needs from the thing that stores (or carries) the blocks.

    block_size and num_blocks are read on every command, so a medium may grow; block_size must be
    one of 512, 1024, 2048, 4096 and num_blocks >= 1.
    """

    @property
    def block_size(self) -> int: ...

    @property
    def num_blocks(self) -> int: ...

    def read(self, req: IoRequest) -> bytes | Pending:
        """Return req.nblocks * block_size bytes from req.lba (READ and VERIFY)."""
        ...

    def write(self, req: IoRequest, data: bytes) -> None | Pending:
        """Store `data` (exactly req.nblocks * block_size bytes) at req.lba; honour req.fua."""
        ...

    def flush(self, req: IoRequest) -> None | Pending:
        """Make completed writes durable (SYNCHRONIZE CACHE)."""
        ...


class MemoryMedium:
    """Blocks in a bytearray; synchronous, no cache. For tests and scratch LUNs."""

    write_cache = False

    def __init__(self, num_blocks: int, block_size: int = 512, *, fill: int = 0) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"unsupported block size {block_size}")
        self._bs = block_size
        self._n = num_blocks
        self.buf = bytearray([fill]) * (num_blocks * block_size)
        self.flushes = 0

    @property
    def block_size(self) -> int:
        return self._bs

    @property
    def num_blocks(self) -> int:
        return self._n

    def _span(self, req: IoRequest) -> slice:
        if req.lba + req.nblocks > self._n:  # the disk checks this first; be safe anyway
            raise MediumError.of(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)
        return slice(req.lba * self._bs, (req.lba + req.nblocks) * self._bs)

    def read(self, req: IoRequest) -> bytes:
        return bytes(self.buf[self._span(req)])

    def write(self, req: IoRequest, data: bytes) -> None:
        span = self._span(req)
        if len(data) != span.stop - span.start:
            raise ValueError("write data does not match the block count")
        self.buf[span] = data

    def flush(self, req: IoRequest) -> None:
        self.flushes += 1
