"""IKEv2 payloads (RFC 7296 §3) and the generic payload chain codec, with RFC 4595's FC traffic selector.

Every decoder raises only ParseError. Unknown payload types are kept as UnknownPayload so that the session can
answer UNSUPPORTED_CRITICAL_PAYLOAD when the critical bit is set (RFC 7296 §2.5).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from .codes import PayloadType, TransformType, TsType
from .errors import ParseError

_GENERIC = struct.Struct(">BBH")  # next payload, C bit/reserved, length
_ATTR_KEY_LENGTH = 14  # RFC 7296 §3.3.5: the only transform attribute defined


# --- SA / proposal / transform (§3.3) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    type: int
    id: int
    key_length: int | None = None  # bits, from the TV attribute 0x800E
    unknown_attributes: bool = False  # an unrecognised attribute makes the transform unusable (§3.3.6)

    def encode(self, last: bool) -> bytes:
        attrs = (
            b"" if self.key_length is None else struct.pack(">HH", 0x8000 | _ATTR_KEY_LENGTH, self.key_length)
        )
        return struct.pack(">BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id) + attrs

    @classmethod
    def decode(cls, data: bytes) -> Transform:
        if len(data) < 8:
            raise ParseError("transform shorter than 8 bytes")
        _, _, ttype, _, tid = struct.unpack_from(">HHBBH", data)
        key_length, unknown, off = None, False, 8
        while off < len(data):
            if len(data) - off < 4:
                raise ParseError("truncated transform attribute")
            atype, value = struct.unpack_from(">HH", data, off)
            if atype & 0x8000:  # TV format: value inline
                off += 4
                if atype & 0x7FFF == _ATTR_KEY_LENGTH:
                    key_length = value
                else:
                    unknown = True
            else:  # TLV: value is the length
                if off + 4 + value > len(data):
                    raise ParseError("truncated TLV transform attribute")
                off += 4 + value
                unknown = True
        return cls(ttype, tid, key_length, unknown)


@dataclass(frozen=True)
class Proposal:
    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def of_type(self, ttype: TransformType) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]

    def encode(self, last: bool) -> bytes:
        body = b"".join(t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        head = struct.pack(
            ">BBHBBBB",
            0 if last else 2,
            0,
            8 + len(self.spi) + len(body),
            self.number,
            self.protocol,
            len(self.spi),
            len(self.transforms),
        )
        return head + self.spi + body

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        if len(data) < 8:
            raise ParseError("proposal shorter than 8 bytes")
        _, _, _, number, protocol, spi_size, count = struct.unpack_from(">BBHBBBB", data)
        if 8 + spi_size > len(data):
            raise ParseError("proposal SPI exceeds the proposal")
        spi = bytes(data[8 : 8 + spi_size])
        transforms, off = [], 8 + spi_size
        for i in range(count):
            if len(data) - off < 8:
                raise ParseError("truncated transform list")
            last, _, length = struct.unpack_from(">BBH", data, off)
            if length < 8 or off + length > len(data):
                raise ParseError("bad transform length")
            if last not in (0, 3) or (last == 0) != (i == count - 1):
                raise ParseError("transform 'last' marker does not match the transform count")
            transforms.append(Transform.decode(bytes(data[off : off + length])))
            off += length
        if off != len(data):
            raise ParseError("trailing bytes after the last transform")
        return cls(number, protocol, spi, tuple(transforms))


@dataclass(frozen=True)
class SaPayload:
    proposals: tuple[Proposal, ...]
    TYPE = PayloadType.SA

    def encode_body(self) -> bytes:
        return b"".join(p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, data: bytes) -> SaPayload:
        proposals, off = [], 0
        while off < len(data):
            if len(data) - off < 8:
                raise ParseError("truncated proposal")
            last, _, length = struct.unpack_from(">BBH", data, off)
            if length < 8 or off + length > len(data) or last not in (0, 2):
                raise ParseError("bad proposal header")
            proposals.append(Proposal.decode(bytes(data[off : off + length])))
            off += length
            if last == 0 and off != len(data):
                raise ParseError("bytes after the last proposal")
        if not proposals:
            raise ParseError("SA payload without proposals")
        return cls(tuple(proposals))


# --- simple payloads ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KePayload:
    group: int
    data: bytes  # a public value: safe to show
    TYPE = PayloadType.KE

    def encode_body(self) -> bytes:
        return struct.pack(">HH", self.group, 0) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> KePayload:
        if len(data) < 4:
            raise ParseError("KE payload shorter than 4 bytes")
        return cls(struct.unpack_from(">H", data)[0], bytes(data[4:]))


@dataclass(frozen=True)
class NoncePayload:
    data: bytes
    TYPE = PayloadType.NONCE

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> NoncePayload:
        if not 16 <= len(data) <= 256:  # RFC 7296 §3.9
            raise ParseError(f"nonce of {len(data)} bytes (must be 16..256)")
        return cls(bytes(data))


def _pack_typed(kind: int, data: bytes) -> bytes:
    """The body of ID and AUTH (RFC 7296 §3.5, §3.8): a type byte, 3 reserved bytes, the data."""
    return struct.pack(">B3x", kind) + data


def _read_typed(data: bytes, missing: str) -> tuple[int, bytes]:
    """The type and data of an ID or AUTH body; ParseError(missing) when there is no data."""
    if len(data) < 5:
        raise ParseError(missing)
    return data[0], bytes(data[4:])


@dataclass(frozen=True)
class IdPayload:
    """Identification; the body (type | reserved | data) is what AUTH signs."""

    id_type: int
    data: bytes
    TYPE = PayloadType.IDI

    def encode_body(self) -> bytes:
        return _pack_typed(self.id_type, self.data)

    @classmethod
    def decode_body(cls, data: bytes) -> IdPayload:
        return cls(*_read_typed(data, "ID payload without identification data"))


@dataclass(frozen=True)
class IdiPayload(IdPayload):
    TYPE = PayloadType.IDI


@dataclass(frozen=True)
class IdrPayload(IdPayload):
    TYPE = PayloadType.IDR


@dataclass(frozen=True)
class CertPayload:
    encoding: int
    data: bytes
    TYPE = PayloadType.CERT

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> CertPayload:
        if len(data) < 1:
            raise ParseError("empty CERT payload")
        return cls(data[0], bytes(data[1:]))


@dataclass(frozen=True)
class CertReqPayload(CertPayload):
    TYPE = PayloadType.CERTREQ


@dataclass(frozen=True)
class AuthPayload:
    method: int
    data: bytes
    TYPE = PayloadType.AUTH

    def encode_body(self) -> bytes:
        return _pack_typed(self.method, self.data)

    @classmethod
    def decode_body(cls, data: bytes) -> AuthPayload:
        return cls(*_read_typed(data, "AUTH payload without authentication data"))


@dataclass(frozen=True)
class NotifyPayload:
    notify_type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""
    TYPE = PayloadType.NOTIFY

    def encode_body(self) -> bytes:
        return struct.pack(">BBH", self.protocol, len(self.spi), self.notify_type) + self.spi + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> NotifyPayload:
        if len(data) < 4:
            raise ParseError("notify payload shorter than 4 bytes")
        protocol, spi_size, ntype = struct.unpack_from(">BBH", data)
        if 4 + spi_size > len(data):
            raise ParseError("notify SPI exceeds the payload")
        return cls(ntype, protocol, bytes(data[4 : 4 + spi_size]), bytes(data[4 + spi_size :]))


@dataclass(frozen=True)
class DeletePayload:
    protocol: int
    spis: tuple[bytes, ...] = ()
    TYPE = PayloadType.DELETE

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        return struct.pack(">BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, data: bytes) -> DeletePayload:
        if len(data) < 4:
            raise ParseError("delete payload shorter than 4 bytes")
        protocol, size, count = struct.unpack_from(">BBH", data)
        if len(data) != 4 + size * count:
            raise ParseError("delete payload length does not match its SPI count")
        return cls(protocol, tuple(bytes(data[4 + i * size : 4 + (i + 1) * size]) for i in range(count)))


@dataclass(frozen=True)
class VendorIdPayload:
    data: bytes
    TYPE = PayloadType.VENDOR_ID

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> VendorIdPayload:
        return cls(bytes(data))


# --- traffic selectors (§3.13, RFC 4595 §4.3) ---------------------------------------------------------------


@dataclass(frozen=True)
class Ipv4Selector:
    """TS_IPV4_ADDR_RANGE (7). Used only for the strongSwan interop profile."""

    start_addr: str = "0.0.0.0"
    end_addr: str = "255.255.255.255"
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 65535
    TS_TYPE = TsType.IPV4_ADDR_RANGE

    def encode(self) -> bytes:
        return (
            struct.pack(">BBHHH", self.TS_TYPE, self.ip_protocol, 16, self.start_port, self.end_port)
            + ipaddress.IPv4Address(self.start_addr).packed
            + ipaddress.IPv4Address(self.end_addr).packed
        )

    @classmethod
    def decode(cls, data: bytes) -> Ipv4Selector:
        if len(data) != 16:
            raise ParseError("IPv4 traffic selector must be 16 bytes")
        _, proto, _, sport, eport = struct.unpack_from(">BBHHH", data)
        return cls(
            str(ipaddress.IPv4Address(data[8:12])),
            str(ipaddress.IPv4Address(data[12:16])),
            proto,
            sport,
            eport,
        )

    def intersect(self, other: Ipv4Selector) -> Ipv4Selector | None:
        if self.ip_protocol and other.ip_protocol and self.ip_protocol != other.ip_protocol:
            return None
        lo = max(ipaddress.IPv4Address(self.start_addr), ipaddress.IPv4Address(other.start_addr))
        hi = min(ipaddress.IPv4Address(self.end_addr), ipaddress.IPv4Address(other.end_addr))
        sport, eport = max(self.start_port, other.start_port), min(self.end_port, other.end_port)
        if lo > hi or sport > eport:
            return None
        return Ipv4Selector(str(lo), str(hi), self.ip_protocol or other.ip_protocol, sport, eport)


@dataclass(frozen=True)
class FcSelector:
    """TS_FC_ADDR_RANGE (9) in the RFC 4595 layout (not Marvell's variant), see docs/ike.md.

    Bytes: type(1) res(1) len(2)=16 | res(1) start N_Port_ID(3) | res(1) end N_Port_ID(3) |
    start R_CTL(1) end R_CTL(1) start TYPE(1) end TYPE(1).
    """

    start_addr: int = 0x000000
    end_addr: int = 0xFFFFFF
    start_r_ctl: int = 0x00
    end_r_ctl: int = 0xFF
    start_type: int = 0x00
    end_type: int = 0xFF
    TS_TYPE = TsType.FC_ADDR_RANGE

    def encode(self) -> bytes:
        for v in (self.start_addr, self.end_addr):
            if not 0 <= v <= 0xFFFFFF:
                raise ParseError("N_Port_ID out of range")
        return (
            struct.pack(">BBH", self.TS_TYPE, 0, 16)
            + struct.pack(">I", self.start_addr)
            + struct.pack(">I", self.end_addr)
            + bytes([self.start_r_ctl, self.end_r_ctl, self.start_type, self.end_type])
        )

    @classmethod
    def decode(cls, data: bytes) -> FcSelector:
        if len(data) != 16:
            raise ParseError("FC traffic selector must be 16 bytes")
        start = struct.unpack_from(">I", data, 4)[0] & 0xFFFFFF  # top byte is reserved
        end = struct.unpack_from(">I", data, 8)[0] & 0xFFFFFF
        return cls(start, end, data[12], data[13], data[14], data[15])

    def intersect(self, other: FcSelector) -> FcSelector | None:
        vals = (
            max(self.start_addr, other.start_addr),
            min(self.end_addr, other.end_addr),
            max(self.start_r_ctl, other.start_r_ctl),
            min(self.end_r_ctl, other.end_r_ctl),
            max(self.start_type, other.start_type),
            min(self.end_type, other.end_type),
        )
        if vals[0] > vals[1] or vals[2] > vals[3] or vals[4] > vals[5]:
            return None
        return FcSelector(*vals)


@dataclass(frozen=True)
class RawSelector:
    """A selector type we do not interpret (e.g. IPv6); kept so parsing never fails on it."""

    ts_type: int
    data: bytes

    def encode(self) -> bytes:
        return struct.pack(">BBH", self.ts_type, 0, 4 + len(self.data)) + self.data

    def intersect(self, other: object) -> None:
        return None


TrafficSelector = Ipv4Selector | FcSelector | RawSelector


@dataclass(frozen=True)
class TsPayload:
    selectors: tuple[TrafficSelector, ...]
    TYPE = PayloadType.TSI

    def encode_body(self) -> bytes:
        return struct.pack(">B3x", len(self.selectors)) + b"".join(s.encode() for s in self.selectors)

    @classmethod
    def decode_body(cls, data: bytes) -> TsPayload:
        if len(data) < 4:
            raise ParseError("TS payload shorter than 4 bytes")
        count, off, out = data[0], 4, []
        for _ in range(count):
            if len(data) - off < 4:
                raise ParseError("truncated traffic selector")
            ts_type, _, length = struct.unpack_from(">BBH", data, off)
            if length < 4 or off + length > len(data):
                raise ParseError("bad traffic selector length")
            chunk = bytes(data[off : off + length])
            if ts_type == TsType.IPV4_ADDR_RANGE:
                out.append(Ipv4Selector.decode(chunk))
            elif ts_type == TsType.FC_ADDR_RANGE:
                out.append(FcSelector.decode(chunk))
            else:
                out.append(RawSelector(ts_type, chunk[4:]))
            off += length
        if off != len(data):
            raise ParseError("bytes after the last traffic selector")
        return cls(tuple(out))


@dataclass(frozen=True)
class TsiPayload(TsPayload):
    TYPE = PayloadType.TSI


@dataclass(frozen=True)
class TsrPayload(TsPayload):
    TYPE = PayloadType.TSR


# --- SK and unknown payloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkPayload:
    """Encrypted and authenticated payload (§3.14): IV ‖ ciphertext ‖ ICV, opened by message.py."""

    first_inner: int
    body: bytes = field(repr=False)
    TYPE = PayloadType.SK

    def encode_body(self) -> bytes:
        return self.body


@dataclass(frozen=True)
class UnknownPayload:
    payload_type: int
    critical: bool
    body: bytes

    @property
    def TYPE(self) -> int:  # noqa: N802 - mirrors the class attribute of the known payloads
        return self.payload_type

    def encode_body(self) -> bytes:
        return self.body


Payload = (
    SaPayload
    | KePayload
    | NoncePayload
    | IdPayload
    | CertPayload
    | AuthPayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsPayload
    | SkPayload
    | UnknownPayload
)

_DECODERS: dict[int, type] = {
    PayloadType.SA: SaPayload,
    PayloadType.KE: KePayload,
    PayloadType.NONCE: NoncePayload,
    PayloadType.IDI: IdiPayload,
    PayloadType.IDR: IdrPayload,
    PayloadType.CERT: CertPayload,
    PayloadType.CERTREQ: CertReqPayload,
    PayloadType.AUTH: AuthPayload,
    PayloadType.NOTIFY: NotifyPayload,
    PayloadType.DELETE: DeletePayload,
    PayloadType.VENDOR_ID: VendorIdPayload,
    PayloadType.TSI: TsiPayload,
    PayloadType.TSR: TsrPayload,
}


def encode_chain(payloads: list[Payload] | tuple[Payload, ...]) -> tuple[int, bytes]:
    """Encode payloads as a chain; returns (type of the first payload, bytes). SK must be last."""
    out = bytearray()
    for i, p in enumerate(payloads):
        body = p.encode_body()
        if isinstance(p, SkPayload):
            if i != len(payloads) - 1:
                raise ParseError("the SK payload must be the last payload")
            nxt = p.first_inner
        else:
            nxt = payloads[i + 1].TYPE if i + 1 < len(payloads) else PayloadType.NONE
        if 4 + len(body) > 0xFFFF:
            raise ParseError("payload longer than 65535 bytes")
        crit = 0x80 if isinstance(p, UnknownPayload) and p.critical else 0
        out += _GENERIC.pack(nxt, crit, 4 + len(body)) + body
    return (payloads[0].TYPE if payloads else PayloadType.NONE), bytes(out)


def decode_chain(first: int, data: bytes) -> list[Payload]:
    """Decode a payload chain that must exactly fill data."""
    out: list[Payload] = []
    nxt, off = first, 0
    while nxt != PayloadType.NONE:
        if len(data) - off < 4:
            raise ParseError("truncated generic payload header")
        following, flags, length = _GENERIC.unpack_from(data, off)
        if length < 4 or off + length > len(data):
            raise ParseError(f"payload length {length} exceeds the message")
        body = bytes(data[off + 4 : off + length])
        if nxt == PayloadType.SK:
            if off + length != len(data):
                raise ParseError("the SK payload must be the last payload")
            out.append(SkPayload(following, body))
            return out
        decoder = _DECODERS.get(nxt)
        out.append(decoder.decode_body(body) if decoder else UnknownPayload(nxt, bool(flags & 0x80), body))
        nxt, off = following, off + length
    if off != len(data):
        raise ParseError("bytes after the last payload")
    return out
