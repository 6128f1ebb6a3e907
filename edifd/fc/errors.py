"""The one exception family of `edifd.fc`, and the reasons a link input is rejected.

Every parser in this package raises `FcError` (or a subclass) on bad input and nothing else,
so callers at the link edge need exactly one `except` clause.
"""

from __future__ import annotations

import enum


class ErrorReason(enum.Enum):
    """Why received bytes were rejected; also the keys of the stream decoder's counters."""

    BAD_ENCAP_HEADER = "bad_encap_header"  # protocol/version, their complements, word 1, reserved bytes
    UNSUPPORTED_FLAGS = "unsupported_flags"  # pFlags (SF/Ch: no FSF support) or CRCV/other encap flags set
    BAD_LENGTH = "bad_length"  # frame length and its ones' complement disagree
    FRAME_TOO_SHORT = "frame_too_short"  # below the 16-word minimum (no room for header + CRC)
    FRAME_TOO_LONG = "frame_too_long"  # above 544 words, i.e. a data field larger than 2112 bytes
    BAD_SOF = "bad_sof"
    BAD_EOF = "bad_eof"
    BAD_CRC = "bad_crc"
    BAD_FRAME_HEADER = "bad_frame_header"  # DF_CTL/fill bits inconsistent with the data field
    TRUNCATED = "truncated"  # the stream ended inside a frame


class FcError(ValueError):
    """Base class: any malformed FC, FCIP, ELS, BLS, FCP or FC-SP input, or an invalid value to encode."""

    reason: ErrorReason | None = None

    def __init__(self, message: str, reason: ErrorReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class FcipError(FcError):
    """The FC encapsulation (RFC 3643/3821) around a frame is invalid."""


class FrameError(FcError):
    """The FC frame itself (header, delimiters, CRC, data field) is invalid."""

    reason = ErrorReason.BAD_FRAME_HEADER


class PayloadError(FcError):
    """An ELS, BLS, FCP or AUTH_ELS payload is malformed (a frame-level decode succeeded)."""
