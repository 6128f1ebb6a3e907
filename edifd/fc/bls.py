"""Basic Link Services (TYPE 0x00): ABTS, BA_ACC, BA_RJT (FC-FS, Linux fc_fs.h).

ABTS has no payload: it names the exchange by the frame header's OX_ID/RX_ID, and Parameter
bit 0 says "abort sequence" (1) or "abort exchange" (0, what libfc and this model send).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ._codec import RejectCodes, check_uint, unpack_from
from .errors import PayloadError
from .frame import RCtl

_BA_ACC = ">BBxxHHHH"  # SEQ_ID validity, SEQ_ID, reserved, OX_ID, RX_ID, low/high SEQ_CNT
_SEQ_ID_VALID = 0x80


@dataclass(frozen=True)
class Abts:
    R_CTL: ClassVar[int] = RCtl.BLS_ABTS

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, data: bytes) -> Abts:
        if data:
            raise PayloadError(f"ABTS carries no payload, got {len(data)} bytes")
        return cls()


@dataclass(frozen=True)
class BaAcc:
    """BA_ACC (12 bytes). `seq_id` None means "SEQ_ID not valid" (validity byte 0x00)."""

    R_CTL: ClassVar[int] = RCtl.BLS_BA_ACC

    ox_id: int
    rx_id: int
    seq_id: int | None = None
    low_seq_cnt: int = 0
    high_seq_cnt: int = 0xFFFF

    def __post_init__(self) -> None:
        for name in ("ox_id", "rx_id", "low_seq_cnt", "high_seq_cnt"):
            check_uint(name, getattr(self, name), 16, PayloadError)
        if self.seq_id is not None:
            check_uint("seq_id", self.seq_id, 8, PayloadError)

    def pack(self) -> bytes:
        valid = _SEQ_ID_VALID if self.seq_id is not None else 0
        return struct.pack(
            _BA_ACC, valid, self.seq_id or 0, self.ox_id, self.rx_id, self.low_seq_cnt, self.high_seq_cnt
        )

    @classmethod
    def unpack(cls, data: bytes) -> BaAcc:
        if len(data) != 12:
            raise PayloadError(f"BA_ACC must be 12 bytes, got {len(data)}")
        valid, seq_id, ox, rx, lo, hi = unpack_from(_BA_ACC, data, what="BA_ACC", exc=PayloadError)
        if valid not in (0, _SEQ_ID_VALID):
            raise PayloadError(f"BA_ACC: SEQ_ID validity 0x{valid:02x} is neither 0x00 nor 0x80")
        if not valid and seq_id:
            raise PayloadError("BA_ACC: SEQ_ID set while marked invalid")
        return cls(ox, rx, seq_id if valid else None, lo, hi)


class BaRjtReason(enum.IntEnum):
    INVALID_COMMAND = 0x01
    LOGICAL_ERROR = 0x03
    LOGICAL_BUSY = 0x05
    PROTOCOL_ERROR = 0x07
    UNABLE = 0x09
    VENDOR = 0xFF


class BaRjtExplanation(enum.IntEnum):
    NONE = 0x00
    INVALID_OX_RX_ID = 0x03
    SEQUENCE_ABORTED = 0x05


@dataclass(frozen=True)
class BaRjt(RejectCodes):
    """BA_RJT (4 bytes): reserved, reason, explanation, vendor unique."""

    R_CTL: ClassVar[int] = RCtl.BLS_BA_RJT
    REASONS = BaRjtReason
    EXPLANATIONS = BaRjtExplanation

    reason: BaRjtReason | int
    explanation: BaRjtExplanation | int = BaRjtExplanation.NONE

    def pack(self) -> bytes:
        return struct.pack(">xBBB", *self.codes())

    @classmethod
    def unpack(cls, data: bytes) -> BaRjt:
        if len(data) != 4:
            raise PayloadError(f"BA_RJT must be 4 bytes, got {len(data)}")
        return cls.from_codes(*unpack_from(">xBBB", data, what="BA_RJT", exc=PayloadError))


BlsPayload: TypeAlias = Abts | BaAcc | BaRjt
_BY_RCTL: dict[int, type] = {RCtl.BLS_ABTS: Abts, RCtl.BLS_BA_ACC: BaAcc, RCtl.BLS_BA_RJT: BaRjt}


def parse_bls(r_ctl: int, payload: bytes) -> BlsPayload:
    """Decode a BLS payload by its R_CTL. Raises only `PayloadError`."""
    cls = _BY_RCTL.get(r_ctl)
    if cls is None:
        raise PayloadError(f"unsupported BLS R_CTL 0x{r_ctl:02x}")
    return cls.unpack(bytes(payload))  # type: ignore[attr-defined,no-any-return]
