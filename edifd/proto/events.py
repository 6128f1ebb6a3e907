"""Upstream events: host -> agent, READ data, unsolicited (request id 0), and the heartbeat."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._wire import (
    Reader,
    check_enum,
    check_flags,
    check_payload,
    check_spi,
    check_uint,
    check_zero,
    pack_byte_word,
)
from .body import Body, EmptyBody, register
from .catalogue import MessageType
from .codes import ELS_MAX_PAYLOAD, RoleFlags, SaDirection, SaFlags, SaStatus, ShutdownReason
from .ports import PortOnlyBody, PortReasonBody, PortRef, check_port_ref


@register(MessageType.AUTH_NEEDED)
@dataclass(frozen=True, repr=False)
class AuthNeeded(Body):
    """A remote port completed a secure login and waits for authentication (qla AUTH_STATE_NEEDED)."""

    port: PortRef
    roles: RoleFlags = RoleFlags.TARGET

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        self._coerce("roles", check_flags(RoleFlags, self.roles, 8, "roles"))

    def pack(self) -> bytes:
        return self.port.pack() + pack_byte_word(self.roles)

    @classmethod
    def read(cls, r: Reader) -> AuthNeeded:
        return cls(PortRef.read(r), r.byte_word())


@register(MessageType.ELS_RCVD)
@dataclass(frozen=True, repr=False)
class ElsRcvd(Body):
    """A complete AUTH_ELS frame arrived from `port` (never a fragment); answer with ELS_REPLY
    on rx_exchange. The payload is inline, so there is no PULL_ELS round trip."""

    port: PortRef
    rx_exchange: int
    payload: bytes

    _FMT = ">IHH"

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        check_uint(self.rx_exchange, 32, "rx_exchange")
        self._coerce("payload", check_payload(self.payload, 1, ELS_MAX_PAYLOAD, "payload"))

    def pack(self) -> bytes:
        return (
            self.port.pack() + struct.pack(self._FMT, self.rx_exchange, len(self.payload), 0) + self.payload
        )

    @classmethod
    def read(cls, r: Reader) -> ElsRcvd:
        port = PortRef.read(r)
        rx_exchange, n, rsvd = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(port, rx_exchange, r.take(n))


@register(MessageType.SA_UPDATE_COMPL)
@dataclass(frozen=True, repr=False)
class SaUpdateCompl(Body):
    """An SA_UPDATE (or a delayed RX delete) finished in the HBA. flags repeats the request's
    flags, so an add and a delete of the same SPI are told apart; fw_status is the HBA's own
    completion status when status is not SUCCESS (qla packs it as comp_sts << 16)."""

    port: PortRef
    spi: int
    direction: SaDirection
    status: SaStatus = SaStatus.SUCCESS
    fw_status: int = 0
    flags: SaFlags = SaFlags(0)

    _FMT = ">IBBHHH"

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        check_spi(self.spi)
        self._coerce("direction", check_enum(SaDirection, self.direction, "direction"))
        self._coerce("status", check_enum(SaStatus, self.status, "status"))
        check_uint(self.fw_status, 16, "fw_status")
        self._coerce("flags", check_flags(SaFlags, self.flags, 16, "flags"))

    def pack(self) -> bytes:
        return self.port.pack() + struct.pack(
            self._FMT, self.spi, self.direction, self.status, self.fw_status, self.flags, 0
        )

    @classmethod
    def read(cls, r: Reader) -> SaUpdateCompl:
        port = PortRef.read(r)
        spi, direction, status, fw_status, flags, rsvd = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(port, spi, direction, status, fw_status, flags)


@register(MessageType.SESSION_SHUTDOWN)
@dataclass(frozen=True, repr=False)
class SessionShutdown(PortReasonBody):
    """A secure session is going down; the host waits (bounded) for EVENT_ACK before teardown."""

    reason: ShutdownReason

    REASONS = ShutdownReason


@register(MessageType.PORT_ONLINE)
@dataclass(frozen=True, repr=False)
class PortOnline(PortOnlyBody):
    """A remote port logged in (FCH_EVT_PORT_ONLINE)."""


@register(MessageType.PORT_OFFLINE)
@dataclass(frozen=True, repr=False)
class PortOffline(PortOnlyBody):
    """A remote port's session ended (FCH_EVT_PORT_OFFLINE)."""


@register(MessageType.TARGET_GONE)
@dataclass(frozen=True, repr=False)
class TargetGone(PortOnlyBody):
    """A remote port left the fabric (RSCN / name server)."""


@register(MessageType.LINK_UP)
@dataclass(frozen=True, repr=False)
class LinkUp(EmptyBody):
    """The HBA port's link came up (the port is the header's port index)."""


@register(MessageType.LINK_DOWN)
@dataclass(frozen=True, repr=False)
class LinkDown(EmptyBody):
    """The HBA port's link went down."""


@register(MessageType.HOST_RESET)
@dataclass(frozen=True, repr=False)
class HostReset(EmptyBody):
    """The HBA was reset: every hardware SA is gone, every secure port must authenticate again."""


@register(MessageType.EVENT_OVERFLOW)
@dataclass(frozen=True, repr=False)
class EventOverflow(Body):
    """The bounded event queue dropped `lost` events since the last report; the agent should RESYNC."""

    lost: int

    def __post_init__(self) -> None:
        check_uint(self.lost, 32, "lost")

    def pack(self) -> bytes:
        return struct.pack(">II", self.lost, 0)

    @classmethod
    def read(cls, r: Reader) -> EventOverflow:
        lost, rsvd = r.unpack(">II")
        check_zero(rsvd, "reserved")
        return cls(lost)


@register(MessageType.HEARTBEAT)
@dataclass(frozen=True, repr=False)
class Heartbeat(EmptyBody):
    """Nothing to deliver: completes an idle parked READ. Never consumes a sequence number; its
    header sequence is the last upstream sequence issued in the epoch (0 if none)."""
