"""What the security application tells its caller besides requests: state changes for logs and status.

A closed union (`AppEvent`); no event ever carries key material (SPIs and WWPNs are not secret).
"""

from __future__ import annotations

from dataclasses import dataclass

from edifd.proto import AuthFailReason, Cipher


@dataclass(frozen=True)
class SessionSecure:
    """Both SAs are installed and AUTH_OK was accepted: PRLI and encrypted I/O proceed."""

    wwpn: int
    spi_in: int
    spi_out: int
    cipher: Cipher


@dataclass(frozen=True)
class SessionRekeyed:
    wwpn: int
    old_spi_in: int
    new_spi_in: int
    trigger: str  # "lifetime", "bytes" or "peer"


@dataclass(frozen=True)
class SessionFailed:
    wwpn: int
    reason: AuthFailReason
    detail: str


@dataclass(frozen=True)
class SessionDown:
    wwpn: int
    detail: str


@dataclass(frozen=True)
class ChannelLost:
    """The host stopped answering (keepalive) or forgot us: re-handshake, then call start() again."""

    detail: str


@dataclass(frozen=True)
class AppNotice:
    """Something was ignored or refused (unexpected response, malformed AUTH_ELS, unknown target)."""

    detail: str


AppEvent = SessionSecure | SessionRekeyed | SessionFailed | SessionDown | ChannelLost | AppNotice
