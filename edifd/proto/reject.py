"""Why a control-LUN WRITE is refused and the sense each reason family gets: the contract both ends share.

Every refused WRITE ends in CHECK CONDITION and is never acted on. The sense key is ILLEGAL REQUEST
(05h) for all of them except a WRITE outside the message window (DATA PROTECT, as a write-protected
area). ASCQs >= 80h are vendor specific (SPC-4 4.5.6). Table in docs/protocol.md section 8.6.
The host raises the sense; the agent maps it back with `from_sense`.
"""

from __future__ import annotations

import enum

from .errors import ProtocolError

# SPC-4 sense keys (4.5.6); plain ints so the wire contract does not import the SCSI emulation.
ILLEGAL_REQUEST = 0x5
DATA_PROTECT = 0x7


class Reject(enum.Enum):
    """value = (counter name, sense key, ASC, ASCQ)."""

    UNAUTHENTICATED = ("bad_mac", ILLEGAL_REQUEST, 0x74, 0x71)  # LU ACCESS NOT AUTHORIZED
    BAD_PROOF = ("bad_proof", ILLEGAL_REQUEST, 0x74, 0x71)
    STALE_EPOCH = ("stale_epoch", ILLEGAL_REQUEST, 0x74, 0x80)  # run APP_START again
    REPLAY = ("replay", ILLEGAL_REQUEST, 0x74, 0x81)
    MALFORMED = ("malformed", ILLEGAL_REQUEST, 0x26, 0x00)  # INVALID FIELD IN PARAMETER LIST
    WRONG_PORT = ("wrong_port", ILLEGAL_REQUEST, 0x26, 0x80)
    SLOT_MISMATCH = ("slot_mismatch", ILLEGAL_REQUEST, 0x26, 0x81)  # LBA != header sequence
    BAD_LENGTH = ("bad_length", ILLEGAL_REQUEST, 0x1A, 0x00)  # PARAMETER LIST LENGTH ERROR
    GAP = ("gap", ILLEGAL_REQUEST, 0x2C, 0x80)  # COMMAND SEQUENCE ERROR: resend in order
    QUEUE_FULL = ("queue_full", ILLEGAL_REQUEST, 0x55, 0x80)  # retry later, nothing consumed
    OUTSIDE_WINDOW = ("outside_window", DATA_PROTECT, 0x27, 0x00)  # WRITE PROTECTED

    @property
    def counter(self) -> str:
        return self.value[0]

    @property
    def sense(self) -> tuple[int, int, int]:
        """(sense key, ASC, ASCQ) of the CHECK CONDITION that refuses the WRITE."""
        return self.value[1:]

    @classmethod
    def of_protocol_error(cls, e: ProtocolError) -> Reject:
        if e.reason == "bad_mac":
            return cls.UNAUTHENTICATED
        if e.reason == "unknown_epoch":  # sealed under keys this host does not hold: run APP_START
            return cls.STALE_EPOCH
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
