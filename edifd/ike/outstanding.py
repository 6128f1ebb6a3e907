"""Our one outstanding request (window size 1, RFC 7296 §2.3): its bytes for retransmission and what its
response must be matched against and resolved with, one frozen dataclass per kind of exchange."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .codes import DhGroup, ExchangeType
from .crypto import KeyExchange


@dataclass(frozen=True)
class InitRequest:
    """IKE_SA_INIT (initiator only; the handshake code answers it, not the established-SA dispatch)."""

    exchange: ClassVar[ExchangeType] = ExchangeType.IKE_SA_INIT


@dataclass(frozen=True)
class AuthRequest:
    """IKE_AUTH with the first child SA (initiator only)."""

    exchange: ClassVar[ExchangeType] = ExchangeType.IKE_AUTH


@dataclass(frozen=True)
class PingRequest:
    """An empty INFORMATIONAL: the liveness check."""

    exchange: ClassVar[ExchangeType] = ExchangeType.INFORMATIONAL


@dataclass(frozen=True)
class DeleteIkeRequest:
    """INFORMATIONAL D(IKE)."""

    exchange: ClassVar[ExchangeType] = ExchangeType.INFORMATIONAL


@dataclass(frozen=True)
class DeleteChildRequest:
    """INFORMATIONAL D(child) for the pair with our inbound SPI spi_in."""

    spi_in: int
    exchange: ClassVar[ExchangeType] = ExchangeType.INFORMATIONAL


@dataclass(frozen=True)
class CreateChildRequest:
    """CREATE_CHILD_SA: what we offered, needed to derive the child's keys from the answer."""

    spi: bytes  # our inbound SPI for the new child
    ni: bytes = field(repr=False)
    ke: KeyExchange | None  # our PFS key pair, if we sent KE
    group: DhGroup | None
    rekey: int | None  # inbound SPI of the child being rekeyed
    exchange: ClassVar[ExchangeType] = ExchangeType.CREATE_CHILD_SA


PendingRequest = (
    InitRequest | AuthRequest | PingRequest | DeleteIkeRequest | DeleteChildRequest | CreateChildRequest
)


@dataclass(frozen=True)
class Outstanding:
    """A request we sent and have no answer to yet."""

    message_id: int
    data: bytes = field(repr=False)
    request: PendingRequest

    @property
    def exchange(self) -> ExchangeType:
        return self.request.exchange
