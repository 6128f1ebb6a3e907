"""Header layout, MAC, padding, size bound and the framing errors of edifd.proto.

Expected bytes are built here from the documented layout (docs/protocol.md) with struct and
hmac, independently of the implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from edifd import proto
from edifd.proto import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    BadMacError,
    BadMagicError,
    BadPaddingError,
    BodyLengthMismatchError,
    ChannelKey,
    ChannelKeyError,
    ElsRcvd,
    ElsSend,
    Heartbeat,
    Keepalive,
    MalformedHeaderError,
    Message,
    MessageType,
    OversizedError,
    PortRef,
    ProtocolError,
    Response,
    SessionShutdown,
    ShutdownReason,
    Status,
    TruncatedError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode,
    encode,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PORT = PortRef(0x2100_0024_FF12_3456, 0x010203, 7)


def mac_of(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 over the header with the MAC zeroed, then the body (docs/protocol.md)."""
    body_len = struct.unpack_from(">I", data, 12)[0]
    return hmac.new(key, data[:40] + bytes(32) + data[72 : 72 + body_len], hashlib.sha256).digest()


def forge(data: bytes, key: bytes = KEY, *, body: bytes | None = None, **fields: int) -> bytes:
    """Rewrite header fields (and optionally the body) of an encoding, then re-MAC it properly:
    lets tests reach the checks that run after authentication."""
    offsets = {
        "version": (4, ">B"),
        "type": (5, ">B"),
        "flags": (6, ">H"),
        "port_index": (8, ">H"),
        "reserved": (10, ">H"),
        "body_length": (12, ">I"),
        "epoch": (16, ">Q"),
        "request_id": (24, ">Q"),
        "sequence": (32, ">Q"),
    }
    buf = bytearray(data)
    if body is not None:
        old_len = struct.unpack_from(">I", buf, 12)[0]
        buf[72 : 72 + old_len] = body
        struct.pack_into(">I", buf, 12, len(body))
    for name, value in fields.items():
        off, fmt = offsets[name]
        struct.pack_into(fmt, buf, off, value)
    end = 72 + struct.unpack_from(">I", buf, 12)[0]
    buf[40:72] = mac_of(key, bytes(buf[:end]))
    return bytes(buf)


def sample() -> Message:
    return Message(Response(MessageType.SA_UPDATE, Status.FAILED, 0x66), 3, 0xA1B2C3D4E5F60718, 42, 9)


def test_constants() -> None:
    assert proto.HEADER_SIZE == 72
    assert proto.MAC_SIZE == 32
    assert proto.MAGIC == b"EDIF"
    assert proto.VERSION == 1
    assert proto.MAX_MESSAGE_SIZE == 4096 == 8 * 512
    assert proto.MAX_BODY_SIZE == MAX_MESSAGE_SIZE - HEADER_SIZE


def test_header_layout_byte_by_byte() -> None:
    data = encode(sample(), KEY)
    body = struct.pack(">BBHI", MessageType.SA_UPDATE, Status.FAILED, 0, 0x66)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQ", 1, 0x40, 0, 3, 0, len(body), 0xA1B2C3D4E5F60718, 42, 9)
    expect_mac = hmac.new(KEY, prefix + bytes(32) + body, hashlib.sha256).digest()
    assert data[:40] == prefix
    assert data[40:72] == expect_mac
    assert data[72:80] == body
    assert data[80:] == bytes(512 - 80)
    assert len(data) == 512


def test_ack_flag_only_on_session_shutdown() -> None:
    shut = encode(Message(SessionShutdown(PORT, ShutdownReason.LOGO), sequence=5), KEY)
    assert struct.unpack_from(">H", shut, 6)[0] == 0x0001
    other = encode(Message(ElsRcvd(PORT, 1, b"\x90abc")), KEY)
    assert struct.unpack_from(">H", other, 6)[0] == 0
    assert decode(shut, KEY).flags == proto.HeaderFlags.ACK_REQUIRED


@pytest.mark.parametrize("block", [512, 1024, 2048, 4096])
def test_padding_to_whole_blocks(block: int) -> None:
    msg = Message(ElsSend(PORT, bytes(range(256)) * 8), request_id=1)  # 72 + 20 + 2048 bytes
    data = encode(msg, KEY, block_size=block)
    assert len(data) % block == 0
    assert len(data) - block < HEADER_SIZE + 20 + 2048 <= len(data)
    assert not any(data[HEADER_SIZE + 20 + 2048 :])
    assert proto.encoded_size(msg, block_size=block) == len(data)
    assert decode(data, KEY) == msg


def test_pad_to_fills_a_read_buffer_exactly() -> None:
    data = encode(sample(), KEY, pad_to=4096)
    assert len(data) == 4096
    assert decode(data, KEY) == sample()
    for bad in (100, 513, 8192, 0):
        with pytest.raises(ProtocolError):
            encode(sample(), KEY, pad_to=bad)


def test_bad_block_size_refused() -> None:
    for bad in (0, 100, 511, 8192):
        with pytest.raises(ProtocolError):
            encode(sample(), KEY, block_size=bad)


def test_trailing_zeros_accepted_up_to_the_bound() -> None:
    data = encode(sample(), KEY)
    assert decode(data[: HEADER_SIZE + 8], KEY) == sample()  # unpadded is fine too
    assert decode(data + bytes(MAX_MESSAGE_SIZE - len(data)), KEY) == sample()
    with pytest.raises(OversizedError):
        decode(data + bytes(MAX_MESSAGE_SIZE - len(data) + 1), KEY)


def test_largest_message_fits_with_room() -> None:
    msg = Message(ElsRcvd(PORT, 0xFFFFFFFF, b"\x90" * proto.ELS_MAX_PAYLOAD))
    data = encode(msg, KEY, block_size=512)
    assert HEADER_SIZE + 24 + 2112 == 2208
    assert len(data) == 2560  # 5 blocks of 512
    assert MAX_MESSAGE_SIZE - 2208 >= 1024  # room to spare
    assert decode(data, KEY) == msg
    with pytest.raises(proto.MalformedBodyError):
        ElsSend(PORT, b"\x90" * (proto.ELS_MAX_PAYLOAD + 1))


def test_encode_refuses_oversized_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ElsSend, "pack", lambda self: bytes(MAX_MESSAGE_SIZE - HEADER_SIZE + 1))
    with pytest.raises(OversizedError, match="exceeds"):
        encode(Message(ElsSend(PORT, b"\x90"), request_id=1), KEY)
    monkeypatch.setattr(ElsSend, "pack", lambda self: bytes(MAX_MESSAGE_SIZE - HEADER_SIZE))
    assert len(encode(Message(ElsSend(PORT, b"\x90"), request_id=1), KEY)) == MAX_MESSAGE_SIZE


def test_bad_magic() -> None:
    data = encode(sample(), KEY)
    for bad in (b"EDIX" + data[4:], bytes(512), b"X", b"\x00" * 3):
        with pytest.raises(BadMagicError):
            decode(bad, KEY)


def test_unsupported_version() -> None:
    data = encode(sample(), KEY)
    for v in (0, 2, 255):
        with pytest.raises(UnsupportedVersionError):
            decode(forge(data, version=v), KEY)
    with pytest.raises(UnsupportedVersionError):
        decode(b"EDIF\x02" + bytes(10), KEY)


def test_truncated() -> None:
    data = encode(sample(), KEY)
    for n in (0, 4, 5, 40, 71):
        with pytest.raises(TruncatedError):
            decode(data[:n], KEY)
    with pytest.raises(TruncatedError):
        decode(data[: HEADER_SIZE + 7], KEY)  # body cut short
    with pytest.raises(TruncatedError):
        decode(forge(data, body_length=600)[:512], KEY)


def test_declared_body_length_over_bound() -> None:
    data = encode(sample(), KEY)
    for n in (MAX_MESSAGE_SIZE - HEADER_SIZE + 1, 0xFFFFFFFF):
        with pytest.raises(OversizedError):
            decode(forge(data, body_length=n), KEY)


def test_non_zero_padding_is_an_error() -> None:
    data = bytearray(encode(sample(), KEY))
    data[-1] = 1
    with pytest.raises(BadPaddingError):
        decode(bytes(data), KEY)


@pytest.mark.parametrize("offset", [0 + 5, 6, 9, 12 + 3, 16, 24, 32, 40, 71, 72, 79])
def test_any_authenticated_byte_changed_is_rejected(offset: int) -> None:
    data = bytearray(encode(sample(), KEY))
    data[offset] ^= 0x01
    with pytest.raises(ProtocolError):
        decode(bytes(data), KEY)


@pytest.mark.parametrize("offset", [16, 24, 32, 40, 71, 72, 79])
def test_bad_mac(offset: int) -> None:
    data = bytearray(encode(sample(), KEY))
    data[offset] ^= 0x80
    with pytest.raises(BadMacError):
        decode(bytes(data), KEY)


def test_wrong_key_is_bad_mac() -> None:
    with pytest.raises(BadMacError):
        decode(encode(sample(), KEY), OTHER_KEY)


def test_unknown_type_after_authentication() -> None:
    data = encode(sample(), KEY)
    for t in (0x00, 0x0F, 0x3F, 0x47, 0x8B, 0xC0, 0xFF):
        with pytest.raises(UnknownTypeError):
            decode(forge(data, type=t), KEY)
    # Forged without the key, an unknown type is just a bad MAC: nothing is parsed.
    raw = bytearray(data)
    raw[5] = 0x0F
    with pytest.raises(BadMacError):
        decode(bytes(raw), KEY)


def test_malformed_header_fields() -> None:
    data = encode(sample(), KEY)
    with pytest.raises(MalformedHeaderError):
        decode(forge(data, reserved=1), KEY)
    with pytest.raises(MalformedHeaderError):
        decode(forge(data, flags=0x0002), KEY)
    with pytest.raises(MalformedHeaderError):
        decode(forge(data, flags=0x0001), KEY)  # ACK_REQUIRED on a response
    with pytest.raises(MalformedHeaderError):
        decode(forge(data, request_id=0), KEY)  # a response must carry a request id
    shut = encode(Message(SessionShutdown(PORT, ShutdownReason.LOGO)), KEY)
    with pytest.raises(MalformedHeaderError):
        decode(forge(shut, flags=0), KEY)  # missing ACK_REQUIRED
    with pytest.raises(MalformedHeaderError):
        decode(forge(shut, request_id=5), KEY)  # events carry request id 0


def test_body_length_mismatch() -> None:
    data = encode(sample(), KEY)
    body = data[72:80]
    with pytest.raises(BodyLengthMismatchError):
        decode(forge(data, body=body + b"\x00"), KEY)
    with pytest.raises(BodyLengthMismatchError):
        decode(forge(data, body=body[:-1]), KEY)
    ka = encode(Message(Keepalive(), request_id=1), KEY)
    with pytest.raises(BodyLengthMismatchError):
        decode(forge(ka, body=b"\x00"), KEY)
    els = encode(Message(ElsSend(PORT, b"\x90\x01"), request_id=1), KEY)
    els_body = els[72 : 72 + 22]
    with pytest.raises(BodyLengthMismatchError):  # inner payload length says 3, body has 2
        decode(forge(els, body=els_body[:16] + b"\x00\x03" + els_body[18:]), KEY)


def test_errors_are_distinct_classes_under_one_base() -> None:
    classes = [
        BadMagicError,
        UnsupportedVersionError,
        UnknownTypeError,
        TruncatedError,
        OversizedError,
        BodyLengthMismatchError,
        BadPaddingError,
        BadMacError,
        MalformedHeaderError,
        proto.MalformedBodyError,
        ChannelKeyError,
    ]
    assert len(set(classes)) == len(classes)
    assert len({c.reason for c in classes}) == len(classes)
    for c in classes:
        assert issubclass(c, ProtocolError)
    for c in (TruncatedError, OversizedError, BodyLengthMismatchError):
        assert issubclass(c, proto.BadLengthError)


@pytest.mark.parametrize("junk", [None, "EDIF", 42, [1, 2], object(), 3.5])
def test_non_bytes_input_is_a_protocol_error(junk: object) -> None:
    with pytest.raises(ProtocolError):
        decode(junk, KEY)


def test_bytes_like_inputs() -> None:
    data = encode(sample(), KEY)
    assert decode(bytearray(data), KEY) == sample()
    assert decode(memoryview(data), KEY) == sample()
    view = memoryview(bytearray(data))
    view.release()
    with pytest.raises(ProtocolError):
        decode(view, KEY)


@pytest.mark.parametrize("bad_key", [b"", bytes(31), bytes(33), "k" * 32, None, 7])
def test_bad_key_is_a_channel_key_error(bad_key: object) -> None:
    data = encode(sample(), KEY)
    with pytest.raises(ChannelKeyError):
        decode(data, bad_key)
    with pytest.raises(ChannelKeyError):
        encode(sample(), bad_key)


def test_channel_key_object_accepted() -> None:
    key = ChannelKey(KEY)
    assert decode(encode(sample(), key), KEY) == sample()
    assert decode(encode(sample(), KEY), key) == sample()


def test_message_header_field_validation() -> None:
    with pytest.raises(MalformedHeaderError):
        Message(Keepalive())  # requests need a request id
    with pytest.raises(MalformedHeaderError):
        Message(Heartbeat(), request_id=1)  # heartbeats carry 0
    for field, value in (
        ("port_index", 1 << 16),
        ("epoch", 1 << 64),
        ("sequence", -1),
        ("request_id", 1 << 64),
    ):
        with pytest.raises(MalformedHeaderError):
            Message(Keepalive(), **{"request_id": 1, field: value})
    with pytest.raises(MalformedHeaderError):
        Message(object())  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        encode("not a message", KEY)  # type: ignore[arg-type]


def test_heartbeat_exact_bytes() -> None:
    data = encode(Message(Heartbeat(), port_index=1, epoch=0x1122334455667788, sequence=17), KEY, pad_to=4096)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQ", 1, 0xF0, 0, 1, 0, 0, 0x1122334455667788, 0, 17)
    assert data[:40] == prefix
    assert data[40:72] == hmac.new(KEY, prefix + bytes(32), hashlib.sha256).digest()
    assert data[72:] == bytes(4096 - 72)
    msg = decode(data, KEY)
    assert msg.type is MessageType.HEARTBEAT and msg.sequence == 17


def test_huge_and_multibyte_buffers() -> None:
    with pytest.raises(OversizedError):
        decode(bytes(10 * 1024 * 1024), KEY)
    data = encode(sample(), KEY)  # 512 bytes: viewed as 128 32-bit items, still 512 bytes
    assert decode(memoryview(data).cast("I"), KEY) == sample()
