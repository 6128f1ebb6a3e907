"""Per-session ESP counters: plain ints for GET_STATS, metrics and status output.

Bytes count the clear data field (optional headers + FC-4 payload, no fill): what the session
moved, independent of the 32 bytes of ESP overhead per protected frame.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field


class DropReason(enum.Enum):
    """Why an inbound frame was dropped by the ESP stage."""

    CLEAR_FCP = "clear_fcp"  # an FCP frame without ESP_Header on a secure session
    UNEXPECTED_ESP = "unexpected_esp"  # ESP_Header on a frame we never protect (ELS, BLS, ...)
    MALFORMED = "malformed"  # too short for IV + ICV, or the decrypted frame is inconsistent
    UNKNOWN_SPI = "unknown_spi"
    REPLAY = "replay"  # sequence number 0, duplicate, or older than the window
    ICV = "icv"  # integrity check failed


class BlockReason(enum.Enum):
    """Why an outbound FCP frame could not be protected (it leaves as an empty SPI-0 frame)."""

    NO_TX_SA = "no_tx_sa"
    SEQ_EXHAUSTED = "seq_exhausted"
    TOO_LONG = "too_long"  # more than 2080 bytes of data field: no room for the 32-byte overhead
    ALREADY_PROTECTED = "already_protected"  # DF_CTL 0x40 already set on the clear side


@dataclass
class EspCounters:
    frames_out_protected: int = 0
    bytes_out_protected: int = 0
    frames_out_clear: int = 0  # non-FCP frames that passed untouched
    bytes_out_clear: int = 0
    frames_in_protected: int = 0  # verified and decrypted
    bytes_in_protected: int = 0
    frames_in_clear: int = 0  # non-FCP frames that passed untouched
    bytes_in_clear: int = 0
    replays: int = 0
    icv_failures: int = 0
    rekeys: int = 0  # TX switched to a new SA while an old one existed
    drops: dict[str, int] = field(default_factory=dict)  # DropReason value -> count
    blocked: dict[str, int] = field(default_factory=dict)  # BlockReason value -> count

    def drop(self, reason: DropReason) -> None:
        self.drops[reason.value] = self.drops.get(reason.value, 0) + 1

    def block(self, reason: BlockReason) -> None:
        self.blocked[reason.value] = self.blocked.get(reason.value, 0) + 1

    def snapshot(self) -> dict[str, object]:
        d = asdict(self)
        d["drops"], d["blocked"] = dict(self.drops), dict(self.blocked)
        return d
