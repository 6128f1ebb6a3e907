"""IKEv2 message: the 28-byte header (RFC 7296 §3.1), the payload chain and SK protection (RFC 5282)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeVar

from .codes import NotifyType, PayloadType
from .crypto import SkAead
from .errors import ParseError
from .payloads import NotifyPayload, Payload, SkPayload, decode_chain, encode_chain

P = TypeVar("P")

HEADER = struct.Struct(">8s8sBBBBII")  # SPIi, SPIr, next, version, exchange, flags, message ID, length
HEADER_LEN = HEADER.size  # 28
VERSION = 0x20  # major 2, minor 0
FLAG_INITIATOR = 0x08
FLAG_VERSION = 0x10
FLAG_RESPONSE = 0x20


@dataclass(frozen=True)
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def from_original_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)

    def encode(self) -> bytes:
        return HEADER.pack(
            self.spi_i,
            self.spi_r,
            self.next_payload,
            VERSION,
            self.exchange,
            self.flags,
            self.message_id,
            self.length,
        )


def decode_header(data: bytes) -> Header:
    """Parse and sanity-check the fixed header; the length must match the datagram exactly."""
    if len(data) < HEADER_LEN:
        raise ParseError(f"message of {len(data)} bytes is shorter than the IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, mid, length = HEADER.unpack_from(data)
    if version >> 4 != 2:
        raise ParseError(f"IKE major version {version >> 4} is not 2")
    if length != len(data):
        raise ParseError(f"header length {length} does not match the {len(data)} bytes received")
    return Header(spi_i, spi_r, nxt, exchange, flags, mid, length)


@dataclass(frozen=True)
class Message:
    """A plaintext view of an IKE message; for protected messages, `payloads` are the inner payloads."""

    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    response: bool
    initiator: bool  # the I flag: sent by the original initiator of the IKE SA
    payloads: tuple[Payload, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def flags(self) -> int:
        return (FLAG_RESPONSE if self.response else 0) | (FLAG_INITIATOR if self.initiator else 0)

    def find(self, ptype: type[P]) -> list[P]:
        return [p for p in self.payloads if isinstance(p, ptype)]

    def first(self, ptype: type[P]) -> P | None:
        for p in self.payloads:
            if isinstance(p, ptype):
                return p
        return None

    def notify(self, ntype: NotifyType) -> NotifyPayload | None:
        """The first notify of type ntype."""
        return next((n for n in self.find(NotifyPayload) if n.notify_type == ntype), None)

    def error_notify(self) -> int | None:
        """The type of the first error notify (types below 16384, RFC 7296 §3.10.1)."""
        for n in self.find(NotifyPayload):
            if NotifyType.is_error(n.notify_type):
                return n.notify_type
        return None


def encode_plain(msg: Message) -> bytes:
    first, body = encode_chain(list(msg.payloads))
    hdr = Header(msg.spi_i, msg.spi_r, first, msg.exchange, msg.flags, msg.message_id, HEADER_LEN + len(body))
    return hdr.encode() + body


def encode_protected(msg: Message, aead: SkAead, iv: bytes) -> bytes:
    """Put all payloads into one SK payload. AAD = IKE header ‖ SK generic header (RFC 5282 §5.1)."""
    first, inner = encode_chain(list(msg.payloads))
    plaintext = inner + b"\x00"  # no padding, pad length 0: GCM needs no block alignment
    sk_len = 4 + len(iv) + len(plaintext) + aead.icv_len
    total = HEADER_LEN + sk_len
    hdr = Header(
        msg.spi_i, msg.spi_r, PayloadType.SK, msg.exchange, msg.flags, msg.message_id, total
    ).encode()
    aad = hdr + struct.pack(">BBH", first, 0, sk_len)
    return aad + iv + aead.encrypt(iv, plaintext, aad)


def decode(data: bytes) -> tuple[Header, list[Payload]]:
    """Parse header and outer payload chain (an SK payload stays encrypted)."""
    data = bytes(data)
    hdr = decode_header(data)
    return hdr, decode_chain(hdr.next_payload, data[HEADER_LEN:])


def open_message(data: bytes, aead: SkAead | None) -> Message:
    """Decode a message; if it carries SK, verify and decrypt it with aead and parse the inner payloads."""
    hdr, payloads = decode(data)
    if payloads and isinstance(payloads[-1], SkPayload):
        sk = payloads[-1]
        if len(payloads) != 1:
            raise ParseError("unprotected payloads before the SK payload")
        if aead is None:
            raise ParseError("protected message before keys exist")
        sk_start = len(data) - 4 - len(sk.body)
        aad = bytes(data[: sk_start + 4])
        iv, rest = sk.body[: SkAead.IV_LEN], sk.body[SkAead.IV_LEN :]
        plaintext = aead.decrypt(iv, rest, aad)
        if not plaintext or plaintext[-1] + 1 > len(plaintext):
            raise ParseError("bad SK padding")
        payloads = decode_chain(sk.first_inner, plaintext[: len(plaintext) - 1 - plaintext[-1]])
    return Message(
        hdr.spi_i,
        hdr.spi_r,
        hdr.exchange,
        hdr.message_id,
        hdr.is_response,
        hdr.from_original_initiator,
        tuple(payloads),
        bytes(data),
    )
