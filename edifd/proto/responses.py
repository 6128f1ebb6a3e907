"""Upstream responses: host -> agent, READ data, matched to a request by the header's request id."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ._wire import Reader, check_bytes, check_enum, check_flags, check_payload, check_uint, check_zero
from .body import Body, register
from .catalogue import Kind, MessageType
from .codes import (
    ELS_MAX_PAYLOAD,
    AuthState,
    CipherMask,
    ElsResult,
    LinkState,
    PortFlags,
    PortState,
    RoleFlags,
    Status,
    TargetFlags,
)
from .errors import MalformedBodyError
from .framing import MAX_BODY_SIZE, MAX_MESSAGE_SIZE
from .ports import PORT_REF_SIZE, PortRef, check_port_ref
from .requests import NONCE_SIZE, PROOF_SIZE


@register(MessageType.RESPONSE)
@dataclass(frozen=True, repr=False)
class Response(Body):
    """The generic answer: the request type it answers, a status and a detail word (the HBA's
    own status for FAILED, e.g. the firmware completion status of an SA update; else 0)."""

    request_type: MessageType
    status: Status = Status.OK
    detail: int = 0

    _FMT = ">BBHI"

    def __post_init__(self) -> None:
        t = check_enum(MessageType, self.request_type, "request_type")
        if t.kind is not Kind.REQUEST:
            raise MalformedBodyError(f"request_type {t.name} is not a request")
        self._coerce("request_type", t)
        self._coerce("status", check_enum(Status, self.status, "status"))
        check_uint(self.detail, 32, "detail")

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.request_type, self.status, 0, self.detail)

    @classmethod
    def read(cls, r: Reader) -> Response:
        request_type, status, rsvd, detail = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(request_type, status, detail)


@register(MessageType.APP_START_CHALLENGE)
@dataclass(frozen=True, repr=False)
class AppStartChallenge(Body):
    """Answer to APP_START HELLO: the agent's nonce echoed and a fresh host nonce."""

    agent_nonce: bytes
    host_nonce: bytes

    def __post_init__(self) -> None:
        self._coerce("agent_nonce", check_bytes(self.agent_nonce, NONCE_SIZE, "agent_nonce"))
        self._coerce("host_nonce", check_bytes(self.host_nonce, NONCE_SIZE, "host_nonce"))

    def pack(self) -> bytes:
        return self.agent_nonce + self.host_nonce

    @classmethod
    def read(cls, r: Reader) -> AppStartChallenge:
        return cls(r.take(NONCE_SIZE), r.take(NONCE_SIZE))


@register(MessageType.APP_START_ANSWER)
@dataclass(frozen=True, repr=False)
class AppStartAnswer(Body):
    """Answer to APP_START PROOF: the new session epoch, the host's proof, and the limits the
    agent must respect (qla2xxx reports none of these; its app had to guess)."""

    epoch: int
    proof: bytes
    heartbeat_ms: int = 5000  # longest time the host parks a READ before a HEARTBEAT
    max_message_size: int = MAX_MESSAGE_SIZE
    max_els_payload: int = ELS_MAX_PAYLOAD
    sa_per_direction: int = 2
    cipher_mask: CipherMask = CipherMask.AES_GCM_128 | CipherMask.AES_GCM_256

    _FMT = ">Q32sIHHBBH"

    def __post_init__(self) -> None:
        check_uint(self.epoch, 64, "epoch")
        if self.epoch == 0:
            raise MalformedBodyError("epoch 0 is reserved for the handshake")
        self._coerce("proof", check_bytes(self.proof, PROOF_SIZE, "proof"))
        check_uint(self.heartbeat_ms, 32, "heartbeat_ms")
        check_uint(self.max_message_size, 16, "max_message_size")
        check_uint(self.max_els_payload, 16, "max_els_payload")
        check_uint(self.sa_per_direction, 8, "sa_per_direction")
        self._coerce("cipher_mask", check_flags(CipherMask, self.cipher_mask, 8, "cipher_mask"))

    def pack(self) -> bytes:
        return struct.pack(
            self._FMT,
            self.epoch,
            self.proof,
            self.heartbeat_ms,
            self.max_message_size,
            self.max_els_payload,
            self.sa_per_direction,
            self.cipher_mask,
            0,
        )

    @classmethod
    def read(cls, r: Reader) -> AppStartAnswer:
        epoch, proof, hb, mms, mep, spd, mask, rsvd = r.unpack(cls._FMT)
        check_zero(rsvd, "reserved")
        return cls(epoch, proof, hb, mms, mep, spd, mask)


@register(MessageType.PORT_INFO)
@dataclass(frozen=True, repr=False)
class PortInfo(Body):
    """The local HBA port behind this control LUN."""

    wwpn: int
    wwnn: int
    port_id: int = 0
    link: LinkState = LinkState.DOWN
    flags: PortFlags = PortFlags.EDIF_ENABLED
    remote_ports: int = 0  # how many remote ports GET_TARGETS would list

    _FMT = ">QQIBBHI"

    def __post_init__(self) -> None:
        check_uint(self.wwpn, 64, "wwpn")
        check_uint(self.wwnn, 64, "wwnn")
        check_uint(self.port_id, 24, "port_id")
        self._coerce("link", check_enum(LinkState, self.link, "link"))
        self._coerce("flags", check_flags(PortFlags, self.flags, 8, "flags"))
        check_uint(self.remote_ports, 32, "remote_ports")

    def __repr__(self) -> str:
        return (
            f"PortInfo(wwpn=0x{self.wwpn:016x}, wwnn=0x{self.wwnn:016x}, port_id=0x{self.port_id:06x}, "
            f"link={self.link.name}, flags={int(self.flags):#x}, remote_ports={self.remote_ports})"
        )

    def pack(self) -> bytes:
        return struct.pack(
            self._FMT, self.wwpn, self.wwnn, self.port_id, self.link, self.flags, 0, self.remote_ports
        )

    @classmethod
    def read(cls, r: Reader) -> PortInfo:
        wwpn, wwnn, pid_word, link, flags, rsvd, remote_ports = r.unpack(cls._FMT)
        if pid_word >> 24:
            raise MalformedBodyError("reserved byte before port id must be zero")
        check_zero(rsvd, "reserved")
        return cls(wwpn, wwnn, pid_word, link, flags, remote_ports)


@dataclass(frozen=True)
class TargetEntry:
    """One remote port in TARGET_LIST (20 bytes)."""

    port: PortRef
    roles: RoleFlags = RoleFlags.TARGET
    state: PortState = PortState.OFFLINE
    auth: AuthState = AuthState.NOT_SECURE
    flags: TargetFlags = TargetFlags(0)

    SIZE = PORT_REF_SIZE + 4

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        object.__setattr__(self, "roles", check_flags(RoleFlags, self.roles, 8, "roles"))
        object.__setattr__(self, "state", check_enum(PortState, self.state, "state"))
        object.__setattr__(self, "auth", check_enum(AuthState, self.auth, "auth"))
        object.__setattr__(self, "flags", check_flags(TargetFlags, self.flags, 8, "flags"))

    def pack(self) -> bytes:
        return self.port.pack() + struct.pack(">BBBB", self.roles, self.state, self.auth, self.flags)

    @classmethod
    def read(cls, r: Reader) -> TargetEntry:
        port = PortRef.read(r)
        return cls(port, *r.unpack(">BBBB"))


@dataclass(frozen=True)
class StatsEntry:
    """Counters of one remote port in STATS (40 bytes). Never any key material."""

    port: PortRef
    rekey_count: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0

    SIZE = PORT_REF_SIZE + 24

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        check_uint(self.rekey_count, 64, "rekey_count")
        check_uint(self.tx_bytes, 64, "tx_bytes")
        check_uint(self.rx_bytes, 64, "rx_bytes")

    def pack(self) -> bytes:
        return self.port.pack() + struct.pack(">QQQ", self.rekey_count, self.tx_bytes, self.rx_bytes)

    @classmethod
    def read(cls, r: Reader) -> StatsEntry:
        port = PortRef.read(r)
        return cls(port, *r.unpack(">QQQ"))


_LIST_HEAD = ">IIHH"  # total, start, count, reserved
_LIST_HEAD_SIZE = struct.calcsize(_LIST_HEAD)
MAX_TARGET_ENTRIES = (MAX_BODY_SIZE - _LIST_HEAD_SIZE) // TargetEntry.SIZE
MAX_STATS_ENTRIES = (MAX_BODY_SIZE - _LIST_HEAD_SIZE) // StatsEntry.SIZE


@dataclass(frozen=True, repr=False)
class _Page(Body):
    """A page of a list: entries [start, start + len(entries)) of `total`."""

    total: int
    start: int
    entries: tuple

    ENTRY: ClassVar[type] = TargetEntry
    LIMIT: ClassVar[int] = 0

    def __post_init__(self) -> None:
        check_uint(self.total, 32, "total")
        check_uint(self.start, 32, "start")
        if not isinstance(self.entries, tuple | list) or not all(
            isinstance(e, self.ENTRY) for e in self.entries
        ):
            raise MalformedBodyError(f"entries must be {self.ENTRY.__name__} items")
        self._coerce("entries", tuple(self.entries))
        if len(self.entries) > self.LIMIT:
            raise MalformedBodyError(f"at most {self.LIMIT} entries fit one message")
        if self.start + len(self.entries) > self.total:
            raise MalformedBodyError("page extends beyond total")

    def pack(self) -> bytes:
        head = struct.pack(_LIST_HEAD, self.total, self.start, len(self.entries), 0)
        return head + b"".join(e.pack() for e in self.entries)

    @classmethod
    def read(cls, r: Reader) -> _Page:
        total, start, count, rsvd = r.unpack(_LIST_HEAD)
        check_zero(rsvd, "reserved")
        if count > cls.LIMIT:
            raise MalformedBodyError(f"at most {cls.LIMIT} entries fit one message")
        return cls(total, start, tuple(cls.ENTRY.read(r) for _ in range(count)))


@register(MessageType.TARGET_LIST)
@dataclass(frozen=True, repr=False)
class TargetList(_Page):
    ENTRY = TargetEntry
    LIMIT = MAX_TARGET_ENTRIES


@register(MessageType.STATS)
@dataclass(frozen=True, repr=False)
class Stats(_Page):
    ENTRY = StatsEntry
    LIMIT = MAX_STATS_ENTRIES


@register(MessageType.ELS_RESPONSE)
@dataclass(frozen=True, repr=False)
class ElsResponse(Body):
    """Answer to ELS_SEND: the reply frame's command code (LS_ACC or LS_RJT) and its payload."""

    port: PortRef
    result: ElsResult
    payload: bytes = b""

    def __post_init__(self) -> None:
        check_port_ref(self.port)
        self._coerce("result", check_enum(ElsResult, self.result, "result"))
        self._coerce("payload", check_payload(self.payload, 0, ELS_MAX_PAYLOAD, "payload"))

    def pack(self) -> bytes:
        return self.port.pack() + struct.pack(">BBH", self.result, 0, len(self.payload)) + self.payload

    @classmethod
    def read(cls, r: Reader) -> ElsResponse:
        port = PortRef.read(r)
        result, rsvd, n = r.unpack(">BBH")
        check_zero(rsvd, "reserved")
        return cls(port, result, r.take(n))
