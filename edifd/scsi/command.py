"""The contract between a SCSI transport (TCMU ring, FCP target) and the disk emulation.

A transport copies a command out of its ring or frame into a `ScsiCommand`, hands it to
`ScsiDisk.execute()`, and gets back either a `ScsiResponse` at once or a `Pending` that a
medium resolves later (a parked control-LUN READ, a data-LUN READ forwarded as FCP).
Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class Status(enum.IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    TASK_ABORTED = 0x40


@dataclass(frozen=True)
class ScsiCommand:
    """One command as the transport saw it.

    data_out: the bytes the initiator sent (WRITE payload), already copied out of shared memory.
    data_in_len: size of the initiator's data-in buffer; every response fills exactly this many bytes.
    tag: the transport's handle for the command (TCMU cmd_id, FCP OX_ID); opaque here.
    """

    cdb: bytes
    data_out: bytes = b""
    data_in_len: int = 0
    tag: int = 0


@dataclass(frozen=True)
class ScsiResponse:
    """Completion of a command: status, data-in (exactly data_in_len bytes) and sense."""

    status: Status
    data: bytes = b""
    sense: bytes = b""
    # Added for residual reporting (ScsiDisk fills it): how many leading bytes of `data` the command
    # really returned; the rest is zero padding. None = all of `data`. Not part of equality, so
    # responses built without it compare as before. A transport that can report an underflow may
    # transfer only these bytes (TCMU: UFlag.READ_LEN with rsp.read_len = data_len; FCP: FCP_RESID_UNDER
    # of `residual`): libiscsi's Inquiry suite checks that VPD pages arrive with their own length.
    data_len: int | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == Status.GOOD

    @property
    def valid_len(self) -> int:
        """Bytes of `data` that are command data (data_len, bounded by len(data))."""
        n = len(self.data)
        return n if self.data_len is None else max(0, min(self.data_len, n))

    @property
    def residual(self) -> int:
        """Underflow residual: padding bytes at the end of `data`."""
        return len(self.data) - self.valid_len


@dataclass(eq=False)
class Pending:
    """A completion that a medium delivers later.

    The owner of the command (the transport) registers one callback with `on_done`; the
    medium calls `resolve` exactly once. Resolving twice is a bug and raises.
    """

    command: ScsiCommand
    _callback: Callable[[ScsiResponse], None] | None = field(default=None, repr=False)
    _result: ScsiResponse | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> ScsiResponse | None:
        return self._result

    def on_done(self, callback: Callable[[ScsiResponse], None]) -> None:
        if self._callback is not None:
            raise RuntimeError("Pending already has a callback")
        self._callback = callback
        if self._result is not None:
            callback(self._result)

    def resolve(self, response: ScsiResponse) -> None:
        if self._result is not None:
            raise RuntimeError("Pending resolved twice")
        self._result = response
        if self._callback is not None:
            self._callback(response)
