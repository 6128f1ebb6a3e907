"""What an IKE SA tells its caller: the frozen events `receive()` returns, one class per outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from .codes import DhGroup, PrfId, ProtocolId
from .config import CipherSuite, Identity
from .payloads import TrafficSelector


@dataclass(frozen=True)
class Send:
    """Transmit this IKE message (without transport framing)."""

    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Send({len(self.data)} bytes)"


@dataclass(frozen=True)
class Established:
    spi_i: bytes
    spi_r: bytes
    local_id: Identity
    remote_id: Identity
    cipher: CipherSuite
    prf: PrfId
    dh_group: DhGroup


@dataclass(frozen=True)
class ChildSaEstablished:
    """A pair of unidirectional SAs, ready for sa_update(). Keys and salts are hidden from repr."""

    spi_in: int
    spi_out: int
    cipher: CipherSuite
    key_in: bytes = field(repr=False)
    salt_in: bytes = field(repr=False)
    key_out: bytes = field(repr=False)
    salt_out: bytes = field(repr=False)
    protocol: ProtocolId = ProtocolId.FC_ESP_HEADER
    local_ts: tuple[TrafficSelector, ...] = ()
    remote_ts: tuple[TrafficSelector, ...] = ()
    rekeyed_spi_in: int | None = None  # the child this one replaces (the caller deletes it after the switch)
    transport_mode: bool = False


@dataclass(frozen=True)
class ChildSaFailed:
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True)
class NegotiationFailed:
    """IKE_SA_INIT failed (no acceptable proposal, or the peer refused ours)."""

    reason: str


@dataclass(frozen=True)
class Deleted:
    """The IKE SA (protocol IKE, no SPIs) or a child SA pair was deleted."""

    protocol: ProtocolId
    spi_in: int | None = None
    spi_out: int | None = None


@dataclass(frozen=True)
class PeerAlive:
    """Our liveness check (empty INFORMATIONAL) was answered."""


Event = (
    Send
    | Established
    | ChildSaEstablished
    | ChildSaFailed
    | AuthFailed
    | NegotiationFailed
    | Deleted
    | PeerAlive
)

__all__ = [
    "AuthFailed",
    "ChildSaEstablished",
    "ChildSaFailed",
    "Deleted",
    "Established",
    "Event",
    "NegotiationFailed",
    "PeerAlive",
    "Send",
]
