"""Message <-> bytes: framing, sealing or MAC, padding. Pure functions, no I/O.

A sealed message (epoch != 0, not a HEARTBEAT: `framing.is_sealed`) has its body encrypted with
AES-256-GCM under its epoch's key for its direction (`EpochKeys`); the others are HMAC'd under the
channel key. decode() checks cheapest-first and authenticates before it interprets anything beyond
the framing: size bound, magic, version, header size, declared body length, zero padding, then the
tag or MAC (a sealed message of an epoch whose keys the caller does not hold is UnknownEpochError);
only then type, flags, reserved fields and the body. Every rejection is a ProtocolError subclass.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from . import events as _events  # noqa: F401  (registers the event bodies)
from . import requests as _requests  # noqa: F401  (registers the request bodies)
from . import responses as _responses  # noqa: F401  (registers the response bodies)
from .body import BODY_CLASSES, Body
from .catalogue import Direction, Kind, MessageType
from .epoch_keys import EpochKeys, nonce
from .errors import (
    BadMacError,
    BadMagicError,
    BadPaddingError,
    MalformedHeaderError,
    OversizedError,
    ProtocolError,
    TruncatedError,
    UnknownEpochError,
    UnknownTypeError,
    UnsupportedVersionError,
)
from .framing import (
    BLOCK_SIZES,
    HEADER_SIZE,
    MAC_OFFSET,
    MAC_SIZE,
    MAGIC,
    MAX_BODY_SIZE,
    MAX_MESSAGE_SIZE,
    TAG_SIZE,
    VERSION,
    HeaderFlags,
    is_sealed,
    pack_prefix,
    unpack_header,
)
from .keys import key_bytes

_ZERO_MAC = bytes(MAC_SIZE)
_TAG_PAD = bytes(MAC_SIZE - TAG_SIZE)  # the rest of a sealed message's auth field
_KNOWN_TYPES = frozenset(t.value for t in MessageType)


def _uint(value: object, bits: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise MalformedHeaderError(f"{name} must be an unsigned {bits}-bit integer")
    return value


@dataclass(frozen=True)
class Message:
    """One channel message: a typed body plus the header fields the sender chooses.

    Requests and responses carry a non-zero request_id; events and heartbeats carry 0. `ack` is
    the agent's acknowledgement (every upstream number <= ack consumed): only sealed downstream
    messages carry one, every other message 0. Type and flags follow from the body.
    """

    body: Body
    port_index: int = 0
    epoch: int = 0
    request_id: int = 0
    sequence: int = 0
    ack: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.body, Body) or BODY_CLASSES.get(getattr(self.body, "TYPE", None)) is not type(
            self.body
        ):
            raise MalformedHeaderError("body must be an instance of a registered message body class")
        _uint(self.port_index, 16, "port_index")
        _uint(self.epoch, 64, "epoch")
        _uint(self.request_id, 64, "request_id")
        _uint(self.sequence, 64, "sequence")
        _uint(self.ack, 64, "ack")
        if self.ack and not (self.sealed and self.direction is Direction.DOWNSTREAM):
            raise MalformedHeaderError("only a sealed downstream message carries an ack")
        if self.kind is Kind.ACKNOWLEDGEMENT and (self.epoch == 0 or self.sequence != 0):
            raise MalformedHeaderError("an ACK carries an epoch and sequence 0")
        if self.kind in (Kind.REQUEST, Kind.RESPONSE):
            if self.request_id == 0:
                raise MalformedHeaderError(f"{self.type.name} needs a non-zero request id")
        elif self.request_id != 0:
            raise MalformedHeaderError(f"{self.type.name} must carry request id 0")

    @property
    def type(self) -> MessageType:
        return self.body.TYPE

    @property
    def kind(self) -> Kind:
        return self.body.TYPE.kind

    @property
    def direction(self) -> Direction:
        return self.body.TYPE.direction

    @property
    def sealed(self) -> bool:
        """Whether its body travels encrypted (see the module docstring)."""
        return is_sealed(self.body.TYPE, self.epoch)

    @property
    def flags(self) -> HeaderFlags:
        return HeaderFlags.ACK_REQUIRED if self.body.TYPE.needs_ack else HeaderFlags(0)


def _mac(key: bytes, prefix: bytes, body: bytes) -> bytes:
    return hmac.new(key, prefix + _ZERO_MAC + body, hashlib.sha256).digest()


def encoded_size(msg: Message, *, block_size: int = 512) -> int:
    """The size encode() returns for msg (without pad_to)."""
    if block_size not in BLOCK_SIZES:
        raise ProtocolError(f"block_size must be one of {BLOCK_SIZES}")
    n = HEADER_SIZE + len(msg.body.pack())
    return -(-n // block_size) * block_size


KeySet = EpochKeys | Iterable[EpochKeys] | None


def _epoch_keys(keys: KeySet, epoch: int) -> EpochKeys:
    if isinstance(keys, EpochKeys):
        if keys.epoch == epoch:
            return keys
    elif keys is not None:
        try:
            for k in keys:
                if isinstance(k, EpochKeys) and k.epoch == epoch:
                    return k
        except TypeError:
            raise ProtocolError("keys must be EpochKeys or an iterable of them") from None
    raise UnknownEpochError("no keys for the epoch of this sealed message")


def _direction(msg_type: int) -> Direction:
    return Direction.DOWNSTREAM if msg_type < 0x40 else Direction.UPSTREAM  # catalogue code ranges


def encode(
    msg: Message, key: object, *, keys: KeySet = None, block_size: int = 512, pad_to: int | None = None
) -> bytes:
    """Frame, seal (or MAC) and zero-pad msg to whole blocks of block_size (512, 1024, 2048 or 4096).

    keys: the EpochKeys of msg.epoch (or several, one of which is), needed for a sealed message.
    pad_to, if given, is the exact output size (a multiple of block_size, at most
    MAX_MESSAGE_SIZE): the channel uses it to fill a READ buffer completely. A body that does not
    fit MAX_MESSAGE_SIZE raises OversizedError.
    """
    k = key_bytes(key)
    if not isinstance(msg, Message):
        raise ProtocolError("encode() takes a Message")
    if block_size not in BLOCK_SIZES:
        raise ProtocolError(f"block_size must be one of {BLOCK_SIZES}")
    body = msg.body.pack()
    if len(body) > MAX_BODY_SIZE:
        raise OversizedError(
            f"{msg.type.name} body of {len(body)} bytes exceeds the {MAX_BODY_SIZE}-byte limit "
            f"(MAX_MESSAGE_SIZE {MAX_MESSAGE_SIZE})"
        )
    prefix = pack_prefix(
        msg.type, msg.flags, msg.port_index, len(body), msg.epoch, msg.request_id, msg.sequence, msg.ack
    )
    if msg.sealed:
        n = nonce(msg.direction, msg.sequence, ack=msg.ack if msg.kind is Kind.ACKNOWLEDGEMENT else None)
        ciphertext, tag = _epoch_keys(keys, msg.epoch).seal(msg.direction, n, prefix, body)
        out = prefix + tag + _TAG_PAD + ciphertext
    else:
        out = prefix + _mac(k, prefix, body) + body
    size = -(-len(out) // block_size) * block_size
    if pad_to is not None:
        if not isinstance(pad_to, int) or pad_to % block_size or not size <= pad_to <= MAX_MESSAGE_SIZE:
            raise ProtocolError(
                f"pad_to must be a multiple of {block_size} between {size} and {MAX_MESSAGE_SIZE}"
            )
        size = pad_to
    return out + bytes(size - len(out))


def decode(data: object, key: object, *, keys: KeySet = None) -> Message:
    """Parse, authenticate and (if sealed) decrypt one message. Raises only ProtocolError
    subclasses, on any input. keys: the EpochKeys the caller holds (one, several, or None).

    Trailing bytes after the body must be zero (padding to a block, or the rest of a READ buffer)
    and the whole buffer must not exceed MAX_MESSAGE_SIZE.
    """
    k = key_bytes(key)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("decode() takes bytes")
    try:
        view = memoryview(data)
        size = view.nbytes
    except (ValueError, TypeError, BufferError):  # e.g. a released memoryview
        raise ProtocolError("decode() takes readable bytes") from None
    if size > MAX_MESSAGE_SIZE:  # checked before copying anything
        raise OversizedError(f"buffer of {size} bytes exceeds MAX_MESSAGE_SIZE {MAX_MESSAGE_SIZE}")
    buf = view.tobytes()
    if buf[:4] != MAGIC[: len(buf)]:
        raise BadMagicError("buffer does not start with the channel magic")
    if len(buf) < HEADER_SIZE:
        if len(buf) > 4 and buf[4] != VERSION:
            raise UnsupportedVersionError(f"protocol version {buf[4]} is not supported (want {VERSION})")
        raise TruncatedError(f"buffer of {len(buf)} bytes is shorter than the {HEADER_SIZE}-byte header")
    h = unpack_header(buf)
    if h.version != VERSION:
        raise UnsupportedVersionError(f"protocol version {h.version} is not supported (want {VERSION})")
    if h.body_length > MAX_BODY_SIZE:
        raise OversizedError(f"declared body length {h.body_length} exceeds {MAX_BODY_SIZE}")
    end = HEADER_SIZE + h.body_length
    if end > len(buf):
        raise TruncatedError(f"declared body length {h.body_length} runs past the {len(buf)}-byte buffer")
    tail = buf[end:]
    if tail.count(0) != len(tail):
        raise BadPaddingError("bytes after the body are not all zero")
    body_bytes = buf[HEADER_SIZE:end]
    if h.sealed:
        ek = _epoch_keys(keys, h.epoch)
        if h.mac[TAG_SIZE:] != _TAG_PAD:
            raise BadMacError("message authentication failed")
        n = nonce(_direction(h.type), h.sequence, ack=h.ack if h.type == MessageType.ACK else None)
        body_bytes = ek.open(_direction(h.type), n, buf[:MAC_OFFSET], body_bytes, h.mac[:TAG_SIZE])
    elif not hmac.compare_digest(_mac(k, buf[:MAC_OFFSET], body_bytes), h.mac):
        raise BadMacError("message authentication failed")

    # Authenticated from here on: whatever is wrong now is a peer bug, not a forgery.
    if h.type not in _KNOWN_TYPES:
        raise UnknownTypeError(f"message type 0x{h.type:02x} is not in the catalogue")
    msg_type = MessageType(h.type)
    if h.reserved:
        raise MalformedHeaderError("reserved header field is not zero")
    want_flags = HeaderFlags.ACK_REQUIRED if msg_type.needs_ack else 0
    if h.flags != want_flags:
        raise MalformedHeaderError(
            f"{msg_type.name} must carry flags 0x{int(want_flags):04x}, got 0x{h.flags:04x}"
        )
    if h.ack and not (h.sealed and msg_type.direction is Direction.DOWNSTREAM):
        raise MalformedHeaderError("only a sealed downstream message carries an ack")
    body = BODY_CLASSES[msg_type].unpack(body_bytes)
    return Message(body, h.port_index, h.epoch, h.request_id, h.sequence, h.ack)


def peek_header(data: bytes) -> tuple[int, int, bytes] | None:
    """(epoch, sequence, auth field) of what looks like a message, unauthenticated: for recognising
    the byte-exact retry of a WRITE whose epoch's keys are gone (an edifd restart). None if the
    buffer is too short or not of this version."""
    if len(data) < HEADER_SIZE or bytes(data[:4]) != MAGIC or data[4] != VERSION:
        return None
    h = unpack_header(bytes(data[:HEADER_SIZE]))
    return h.epoch, h.sequence, h.mac
