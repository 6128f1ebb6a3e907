"""Downstream requests: agent -> host, the payload of a WRITE. Layouts are in docs/protocol.md."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ._wire import (
    Reader,
    check_bytes,
    check_enum,
    check_flags,
    check_payload,
    check_spi,
    check_uint,
    check_zero,
    pack_byte_word,
)
from .body import Body, EmptyBody, register
from .catalogue import Kind, MessageType
from .codes import (
    ELS_MAX_PAYLOAD,
    AppStartPhase,
    AuthFailReason,
    Cipher,
    ElsReplyAction,
    SaDirection,
    SaFlags,
    StopReason,
)
from .errors import MalformedBodyError
from .ports import PortOnlyBody, PortReasonBody, PortRef, check_port_ref

NONCE_SIZE = 32
PROOF_SIZE = 32
_ZERO32 = bytes(32)
SA_KEY_FIELD = 32  # the key field is always 32 bytes; 128-bit keys use the first 16 (as qla2xxx)
SA_SALT_SIZE = 4


@register(MessageType.APP_START)
@dataclass(frozen=True, repr=False)
class AppStart(Body):
    """Both phases of the challenge-response (see edifd.proto.handshake).

    HELLO: agent_nonce set; host_nonce and proof all zero.
    PROOF: agent_nonce repeated, host_nonce from APP_START_CHALLENGE, proof = agent_proof(...).
    keepalive_ms: how often the agent promises a KEEPALIVE (0 = no supervision); the host
    takes the value of the PROOF phase.
    """

    phase: AppStartPhase
    agent_nonce: bytes
    host_nonce: bytes = _ZERO32
    proof: bytes = _ZERO32
    keepalive_ms: int = 0

    _FMT = ">B3sI32s32s32s"

    def __post_init__(self) -> None:
        self._coerce("phase", check_enum(AppStartPhase, self.phase, "phase"))
        self._coerce("agent_nonce", check_bytes(self.agent_nonce, NONCE_SIZE, "agent_nonce"))
        self._coerce("host_nonce", check_bytes(self.host_nonce, NONCE_SIZE, "host_nonce"))
        self._coerce("proof", check_bytes(self.proof, PROOF_SIZE, "proof"))
        check_uint(self.keepalive_ms, 32, "keepalive_ms")
        if self.phase is AppStartPhase.HELLO and (any(self.host_nonce) or any(self.proof)):
            raise MalformedBodyError("APP_START HELLO must carry a zero host_nonce and proof")

    def pack(self) -> bytes:
        return struct.pack(
            self._FMT, self.phase, bytes(3), self.keepalive_ms, self.agent_nonce, self.host_nonce, self.proof
        )

    @classmethod
    def read(cls, r: Reader) -> AppStart:
        phase, rsvd, keepalive_ms, agent_nonce, host_nonce, proof = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(phase, agent_nonce, host_nonce, proof, keepalive_ms)


@register(MessageType.APP_STOP)
@dataclass(frozen=True, repr=False)
class AppStop(Body):
    reason: StopReason = StopReason.SHUTDOWN

    def __post_init__(self) -> None:
        self._coerce("reason", check_enum(StopReason, self.reason, "reason"))

    def pack(self) -> bytes:
        return pack_byte_word(self.reason)

    @classmethod
    def read(cls, r: Reader) -> AppStop:
        return cls(r.byte_word())


@register(MessageType.GET_PORT_INFO)
@dataclass(frozen=True, repr=False)
class GetPortInfo(EmptyBody):
    """Asks for PORT_INFO about the local HBA port named by the header's port index."""


@dataclass(frozen=True, repr=False)
class _ListQuery(Body):
    """Paged query: entries start..start+max_entries-1 of the list, optionally one WWPN only."""

    start: int = 0
    max_entries: int = 0xFFFF
    wwpn: int = 0  # 0 = all remote ports

    _FMT = ">QIHH"

    def __post_init__(self) -> None:
        check_uint(self.start, 32, "start")
        check_uint(self.max_entries, 16, "max_entries")
        check_uint(self.wwpn, 64, "wwpn")
        if self.max_entries == 0:
            raise MalformedBodyError("max_entries must be at least 1")

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.wwpn, self.start, self.max_entries, 0)

    @classmethod
    def read(cls, r: Reader) -> _ListQuery:
        wwpn, start, max_entries, rsvd = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(start, max_entries, wwpn)


@register(MessageType.GET_TARGETS)
@dataclass(frozen=True, repr=False)
class GetTargets(_ListQuery):
    """Asks for TARGET_LIST: the remote ports this HBA port knows, with their auth state."""


@register(MessageType.GET_STATS)
@dataclass(frozen=True, repr=False)
class GetStats(_ListQuery):
    """Asks for STATS: per remote port rekey count and protected bytes."""


@register(MessageType.SECURE_CONNECT)
@dataclass(frozen=True, repr=False)
class SecureConnect(PortOnlyBody):
    """Establish the encrypted channel to this target (log in securely, then AUTH_NEEDED follows)."""


@register(MessageType.AUTH_OK)
@dataclass(frozen=True, repr=False)
class AuthOk(PortOnlyBody):
    """Authentication passed; PRLI may proceed once both SAs are confirmed (else RETRY_LATER)."""


@register(MessageType.AUTH_FAIL)
@dataclass(frozen=True, repr=False)
class AuthFail(PortReasonBody):
    reason: AuthFailReason = AuthFailReason.AUTH_FAILED

    REASONS = AuthFailReason


@register(MessageType.ELS_SEND)
@dataclass(frozen=True, repr=False)
class ElsSend(Body):
    """Originate an ELS (AUTH_ELS) to a remote port. payload is the whole ELS payload, command
    code first; the answer comes back as ELS_RESPONSE."""

    port: PortRef
    payload: bytes

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        self._coerce("payload", check_payload(self.payload, 1, ELS_MAX_PAYLOAD, "payload"))

    def pack(self) -> bytes:
        return self.port.pack() + struct.pack(">HH", len(self.payload), 0) + self.payload

    @classmethod
    def read(cls, r: Reader) -> ElsSend:
        port = PortRef.read(r)
        n, rsvd = r.unpack(">HH")
        check_zero(rsvd, "reserved")
        return cls(port, r.take(n))


@register(MessageType.ELS_REPLY)
@dataclass(frozen=True, repr=False)
class ElsReply(Body):
    """Answer an ELS received with ELS_RCVD, on its exchange (rx_exchange from the event)."""

    port: PortRef
    rx_exchange: int
    action: ElsReplyAction
    payload: bytes = b""

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        check_uint(self.rx_exchange, 32, "rx_exchange")
        self._coerce("action", check_enum(ElsReplyAction, self.action, "action"))
        lo, hi = (0, 0) if self.action is ElsReplyAction.TERMINATE else (1, ELS_MAX_PAYLOAD)
        self._coerce("payload", check_payload(self.payload, lo, hi, f"payload of {self.action.name}"))

    def pack(self) -> bytes:
        head = struct.pack(">IBBH", self.rx_exchange, self.action, 0, len(self.payload))
        return self.port.pack() + head + self.payload

    @classmethod
    def read(cls, r: Reader) -> ElsReply:
        port = PortRef.read(r)
        rx_exchange, action, rsvd, n = r.unpack(">IBBH")
        check_zero(rsvd, "reserved")
        return cls(port, rx_exchange, action, r.take(n))


@register(MessageType.SA_UPDATE)
@dataclass(frozen=True, repr=False)
class SaUpdate(Body):
    """Install or delete one SA on one remote port (the content of qla2xxx's qla_sa_update_frame).

    Add: key is cipher.key_size bytes, salt 4 bytes. Delete (flags has DELETE): key is b"" and
    salt all zero; FORCE_DELETE only with DELETE on an RX SA; REKEY never with DELETE.
    key and salt never appear in repr() or in error text.
    """

    port: PortRef
    spi: int
    direction: SaDirection
    cipher: Cipher
    key: bytes = field(default=b"", repr=False)
    salt: bytes = field(default=bytes(SA_SALT_SIZE), repr=False)
    flags: SaFlags = SaFlags(0)

    _FMT = ">IBBH4s32s"

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        check_spi(self.spi)
        self._coerce("direction", check_enum(SaDirection, self.direction, "direction"))
        self._coerce("cipher", check_enum(Cipher, self.cipher, "cipher"))
        self._coerce("flags", check_flags(SaFlags, self.flags, 16, "flags"))
        self._coerce("salt", check_bytes(self.salt, SA_SALT_SIZE, "salt", secret=True))
        if not isinstance(self.key, bytes | bytearray):
            raise MalformedBodyError("key must be bytes")
        self._coerce("key", bytes(self.key))
        if SaFlags.DELETE in self.flags:
            if self.key or any(self.salt):
                raise MalformedBodyError("SA delete must carry an empty key and a zero salt")
            if SaFlags.REKEY in self.flags:
                raise MalformedBodyError("REKEY cannot be combined with DELETE")
            if SaFlags.FORCE_DELETE in self.flags and self.direction is not SaDirection.RX:
                raise MalformedBodyError("FORCE_DELETE applies to RX SAs only")
        else:
            if SaFlags.FORCE_DELETE in self.flags:
                raise MalformedBodyError("FORCE_DELETE requires DELETE")
            if len(self.key) != self.cipher.key_size:
                raise MalformedBodyError(
                    f"key length {len(self.key)} does not match {self.cipher.name} ({self.cipher.key_size})"
                )

    def pack(self) -> bytes:
        key_field = self.key + bytes(SA_KEY_FIELD - len(self.key))
        return self.port.pack() + struct.pack(
            self._FMT, self.spi, self.direction, self.cipher, self.flags, self.salt, key_field
        )

    @classmethod
    def read(cls, r: Reader) -> SaUpdate:
        port = PortRef.read(r)
        spi, direction, cipher, flags, salt, key_field = r.unpack(cls._FMT)
        flags = check_flags(SaFlags, flags, 16, "flags")
        cipher = check_enum(Cipher, cipher, "cipher")
        used = 0 if SaFlags.DELETE in flags else cipher.key_size
        if any(key_field[used:]):
            raise MalformedBodyError("unused bytes of the key field must be zero")
        return cls(port, spi, direction, cipher, key_field[:used], salt, flags)


@register(MessageType.EVENT_ACK)
@dataclass(frozen=True, repr=False)
class EventAck(Body):
    """Acknowledge the event with upstream sequence number event_sequence (required for
    SESSION_SHUTDOWN). port repeats the event's port (all zero for events without one)."""

    event_type: MessageType
    event_sequence: int
    port: PortRef = PortRef(0)

    _FMT = ">QB3s"

    def __post_init__(self) -> None:
        t = check_enum(MessageType, self.event_type, "event_type")
        if t.kind is not Kind.EVENT:
            raise MalformedBodyError(f"event_type {t.name} is not an event")
        self._coerce("event_type", t)
        check_uint(self.event_sequence, 64, "event_sequence")
        check_port_ref(self.port)

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.event_sequence, self.event_type, bytes(3)) + self.port.pack()

    @classmethod
    def read(cls, r: Reader) -> EventAck:
        seq, event_type, rsvd = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(event_type, seq, PortRef.read(r))


@register(MessageType.KEEPALIVE)
@dataclass(frozen=True, repr=False)
class Keepalive(EmptyBody):
    """The agent is alive; answered with RESPONSE(OK)."""


@register(MessageType.RESYNC)
@dataclass(frozen=True, repr=False)
class Resync(EmptyBody):
    """Ask the host to re-announce its current state (after EVENT_OVERFLOW or an agent restart)."""


@register(MessageType.ACK)
@dataclass(frozen=True, repr=False)
class Ack(EmptyBody):
    """The agent has consumed every upstream number up to the header's `ack`: the host may drop
    them. Sealed, sequence 0, request id 0, answered by nothing; see codec for its nonce."""
