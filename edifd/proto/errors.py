"""The errors of the channel codec.

`decode()` raises `ProtocolError` (one of the subclasses below) and nothing else, whatever the
input. Each subclass has a stable `reason` string so the channel can count rejects per cause
without parsing messages. No error text ever contains key material or secret body fields.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(ValueError):
    """Base of every error raised by edifd.proto."""

    reason: ClassVar[str] = "protocol_error"


class BadMagicError(ProtocolError):
    """The buffer does not start with the channel magic."""

    reason = "bad_magic"


class UnsupportedVersionError(ProtocolError):
    """The header names a protocol version this code does not speak."""

    reason = "unsupported_version"


class UnknownTypeError(ProtocolError):
    """An authenticated header carries a message type that is not in the catalogue."""

    reason = "unknown_type"


class BadLengthError(ProtocolError):
    """A length is wrong: see the subclasses."""

    reason = "bad_length"


class TruncatedError(BadLengthError):
    """The buffer is shorter than the header, or than the header plus the declared body."""

    reason = "truncated"


class OversizedError(BadLengthError):
    """The buffer, the declared body or a body to encode exceeds MAX_MESSAGE_SIZE."""

    reason = "oversized"


class BodyLengthMismatchError(BadLengthError):
    """The declared body length does not match what the message type's layout requires."""

    reason = "body_length_mismatch"


class BadPaddingError(ProtocolError):
    """Bytes after the body are not all zero (padding is not covered by the MAC, so it must be empty)."""

    reason = "bad_padding"


class BadMacError(ProtocolError):
    """The HMAC-SHA-256 (under the channel key) or the AES-GCM tag (under the epoch key) does not verify."""

    reason = "bad_mac"


class UnknownEpochError(ProtocolError):
    """A sealed message of an epoch whose keys the receiver does not hold (an old or a foreign
    epoch): it cannot be authenticated, so nothing in it is believed."""

    reason = "unknown_epoch"


class MalformedHeaderError(ProtocolError):
    """An authenticated header has reserved bits set, wrong flags or an impossible request id."""

    reason = "malformed_header"


class MalformedBodyError(ProtocolError):
    """A body field is out of range, has a value outside its enum, or breaks a cross-field rule."""

    reason = "malformed_body"


class ChannelKeyError(ProtocolError):
    """A channel key is unusable: wrong type or length, or its key file is unsafe or unreadable."""

    reason = "bad_key"
