"""Why a control-LUN WRITE is refused, the sense each reason family gets, and burst-limited logging.

Every refused WRITE ends in CHECK CONDITION and is never acted on. The sense key is ILLEGAL REQUEST
(05h) for all of them except a WRITE outside the message window (DATA PROTECT, as a write-protected
area). ASCQs >= 80h are vendor specific (SPC-4 4.5.6). Table in docs/protocol.md section 8.6.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from edifd.proto import ProtocolError
from edifd.scsi import MediumError, SenseKey


class Reject(enum.Enum):
    """value = (counter name, sense key, ASC, ASCQ)."""

    UNAUTHENTICATED = ("bad_mac", SenseKey.ILLEGAL_REQUEST, 0x74, 0x71)  # LU ACCESS NOT AUTHORIZED
    BAD_PROOF = ("bad_proof", SenseKey.ILLEGAL_REQUEST, 0x74, 0x71)
    STALE_EPOCH = ("stale_epoch", SenseKey.ILLEGAL_REQUEST, 0x74, 0x80)  # run APP_START again
    REPLAY = ("replay", SenseKey.ILLEGAL_REQUEST, 0x74, 0x81)
    MALFORMED = ("malformed", SenseKey.ILLEGAL_REQUEST, 0x26, 0x00)  # INVALID FIELD IN PARAMETER LIST
    WRONG_PORT = ("wrong_port", SenseKey.ILLEGAL_REQUEST, 0x26, 0x80)
    SLOT_MISMATCH = ("slot_mismatch", SenseKey.ILLEGAL_REQUEST, 0x26, 0x81)  # LBA != header sequence
    BAD_LENGTH = ("bad_length", SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00)  # PARAMETER LIST LENGTH ERROR
    GAP = ("gap", SenseKey.ILLEGAL_REQUEST, 0x2C, 0x80)  # COMMAND SEQUENCE ERROR: resend in order
    QUEUE_FULL = ("queue_full", SenseKey.ILLEGAL_REQUEST, 0x55, 0x80)  # retry later, nothing consumed
    OUTSIDE_WINDOW = ("outside_window", SenseKey.DATA_PROTECT, 0x27, 0x00)  # WRITE PROTECTED

    @property
    def counter(self) -> str:
        return self.value[0]

    def error(self) -> MediumError:
        _, key, asc, ascq = self.value
        return MediumError(key, asc, ascq)

    @classmethod
    def of_protocol_error(cls, e: ProtocolError) -> Reject:
        if e.reason == "bad_mac":
            return cls.UNAUTHENTICATED
        if e.reason in ("truncated", "oversized", "bad_length"):
            return cls.BAD_LENGTH
        return cls.MALFORMED

    @classmethod
    def from_sense(cls, key: int, asc: int, ascq: int) -> Reject | None:
        """The reason family of a sense triple (several reasons share one); None if not ours."""
        for r in cls:
            if r.value[1:] == (key, asc, ascq):
                return r
        return None


class BurstLog:
    """Log the first rejection of a burst per reason; a burst ends after `quiet` seconds without one.

    The next first-of-burst line says how many were suppressed. Messages name the reason and the
    counts only: never message content, never key material.
    """

    def __init__(self, log: logging.Logger, clock: Callable[[], float], quiet: float = 10.0) -> None:
        self._log = log
        self._clock = clock
        self._quiet = quiet
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def rejected(self, where: str, reason: Reject, detail: str) -> bool:
        """Returns True if this one was logged."""
        now = self._clock()
        name = reason.counter
        last = self._last.get(name)
        self._last[name] = now
        if last is not None and now - last < self._quiet:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            return False
        n = self._suppressed.pop(name, 0)
        more = f" ({n} more suppressed in the previous burst)" if n else ""
        self._log.warning("%s: WRITE rejected (%s): %s%s", where, name, detail, more)
        return True
