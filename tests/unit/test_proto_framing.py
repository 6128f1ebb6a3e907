"""Header layout, sealing and MAC, padding, size bound and the framing errors of edifd.proto (v2).

Expected bytes are built here from the documented layout (docs/protocol.md, docs/security.md) with
struct, hmac and cryptography's HKDF/AESGCM (tests/support/proto.py's model), independently of the
implementation. Most checks run on three samples: an unsealed message (epoch 0), a sealed upstream
one and a sealed downstream one carrying an ack.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edifd import proto
from edifd.proto import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    Ack,
    BadMacError,
    BadMagicError,
    BadPaddingError,
    BodyLengthMismatchError,
    ChannelKey,
    ChannelKeyError,
    Cipher,
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
    SaDirection,
    SaUpdate,
    SessionShutdown,
    ShutdownReason,
    Status,
    TruncatedError,
    UnknownEpochError,
    UnknownTypeError,
    UnsupportedVersionError,
    decode,
    encode,
    peek_header,
)
from tests.support.proto import (
    AGENT_NONCE,
    HOST_NONCE,
    KEY,
    back,
    hkdf_keys,
    keys_for,
    mac_frame,
    reauth,
    seal_frame,
    unsealed,
    wire,
)

OTHER_KEY = bytes(range(1, 33))
PORT = PortRef(0x2100_0024_FF12_3456, 0x010203, 7)
EPOCH = 0xA1B2C3D4E5F60718
SA_KEY = bytes.fromhex("9f1e2d3c4b5a69788796a5b4c3d2e1f0")
SALT = bytes.fromhex("c0ffee42")


def plain() -> Message:
    return Message(Response(MessageType.SA_UPDATE, Status.FAILED, 0x66), 3, 0, 42, 9)


def sealed_up() -> Message:
    return Message(Response(MessageType.SA_UPDATE, Status.FAILED, 0x66), 3, EPOCH, 42, 9)


def sealed_down() -> Message:
    sa = SaUpdate(PORT, 0x1001, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY, SALT)
    return Message(sa, 3, EPOCH, 42, 9, ack=0x0102030405060708)


SAMPLES = [plain, sealed_up, sealed_down]
SEALED = [sealed_up, sealed_down]
ids = pytest.mark.parametrize("sample", SAMPLES, ids=lambda f: f.__name__)
sealed_ids = pytest.mark.parametrize("sample", SEALED, ids=lambda f: f.__name__)


def body_len(data: bytes) -> int:
    return struct.unpack_from(">I", data, 12)[0]


OFFSETS = {
    "version": (4, ">B"),
    "type": (5, ">B"),
    "flags": (6, ">H"),
    "port_index": (8, ">H"),
    "reserved": (10, ">H"),
    "body_length": (12, ">I"),
    "epoch": (16, ">Q"),
    "request_id": (24, ">Q"),
    "sequence": (32, ">Q"),
    "ack": (40, ">Q"),
}


def forge(data: bytes, key: bytes = KEY, *, body: bytes | None = None, **fields: int) -> bytes:
    """Rewrite header fields (and optionally the plaintext body) of a valid encoding, then seal or
    MAC it again as a keyed sender would: lets tests reach the checks after authentication."""
    buf = bytearray(unsealed(data, key))
    if body is not None:
        old_len = body_len(buf)
        buf[HEADER_SIZE : HEADER_SIZE + old_len] = body
        struct.pack_into(">I", buf, 12, len(body))
    for name, value in fields.items():
        off, fmt = OFFSETS[name]
        struct.pack_into(fmt, buf, off, value)
    return reauth(buf, key)


def test_constants() -> None:
    assert proto.HEADER_SIZE == 80
    assert proto.MAC_SIZE == 32
    assert proto.TAG_SIZE == 16
    assert proto.MAGIC == b"EDIF"
    assert proto.VERSION == 2
    assert proto.MAX_MESSAGE_SIZE == 4096 == 8 * 512
    assert proto.MAX_BODY_SIZE == MAX_MESSAGE_SIZE - HEADER_SIZE == 4016


def test_unsealed_header_layout_byte_by_byte() -> None:
    data = encode(plain(), KEY)
    body = struct.pack(">BBHI", MessageType.SA_UPDATE, Status.FAILED, 0, 0x66)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQQ", 2, 0x40, 0, 3, 0, len(body), 0, 42, 9, 0)
    expect_mac = hmac.new(KEY, prefix + bytes(32) + body, hashlib.sha256).digest()
    assert len(prefix) == 48
    assert data[:48] == prefix
    assert data[48:80] == expect_mac
    assert data[80:88] == body
    assert data[88:] == bytes(512 - 88)
    assert len(data) == 512


def test_sealed_upstream_layout_byte_by_byte() -> None:
    data = wire(sealed_up())
    body = struct.pack(">BBHI", MessageType.SA_UPDATE, Status.FAILED, 0, 0x66)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQQ", 2, 0x40, 0, 3, 0, len(body), EPOCH, 42, 9, 0)
    _, k_up = hkdf_keys(EPOCH, KEY, 3)
    out = AESGCM(k_up).encrypt(struct.pack(">IQ", 2, 9), body, prefix)
    assert data[:48] == prefix
    assert data[48:64] == out[-16:]  # the tag
    assert data[64:80] == bytes(16)  # the rest of the auth field
    assert data[80:88] == out[:-16] != body  # the ciphertext, as long as the body
    assert data[88:] == bytes(512 - 88)
    assert back(data) == sealed_up()


def test_sealed_downstream_layout_with_ack_and_no_key_bytes_on_the_wire() -> None:
    msg = sealed_down()
    data = wire(msg)
    body = msg.body.pack()
    assert SA_KEY in body and SALT in body
    prefix = b"EDIF" + struct.pack(
        ">BBHHHIQQQQ", 2, 0x08, 0, 3, 0, len(body), EPOCH, 42, 9, 0x0102030405060708
    )
    k_down, _ = hkdf_keys(EPOCH, KEY, 3)
    out = AESGCM(k_down).encrypt(struct.pack(">IQ", 1, 9), body, prefix)
    assert data[:48] == prefix
    assert struct.unpack_from(">Q", data, 40)[0] == 0x0102030405060708
    assert data[48:64] == out[-16:] and data[64:80] == bytes(16)
    assert data[80 : 80 + len(body)] == out[:-16]
    assert not any(data[80 + len(body) :])
    assert SA_KEY not in data and SALT not in data
    assert SA_KEY.hex() not in data.hex() and SALT.hex() not in data.hex()
    assert back(data) == msg


def test_ack_message_layout_and_its_nonce() -> None:
    msg = Message(Ack(), port_index=3, epoch=EPOCH, ack=77)
    data = wire(msg)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQQ", 2, 0x3F, 0, 3, 0, 0, EPOCH, 0, 0, 77)
    k_down, _ = hkdf_keys(EPOCH, KEY, 3)
    tag = AESGCM(k_down).encrypt(struct.pack(">IQ", 3, 77), b"", prefix)
    assert data[:48] == prefix
    assert data[48:64] == tag and data[64:] == bytes(512 - 64)
    assert wire(msg) == data  # the same ack always makes the same bytes: a repeat is a byte copy
    assert wire(Message(Ack(), port_index=3, epoch=EPOCH, ack=78))[48:64] != tag
    assert back(data) == msg and back(data).ack == 77
    # Not the request nonce 1 || 77 (nor the upstream one): an ACK's number space is its own.
    for d in (1, 2):
        assert AESGCM(k_down).encrypt(struct.pack(">IQ", d, 77), b"", prefix) != tag


def test_heartbeat_exact_bytes() -> None:
    msg = Message(Heartbeat(), port_index=1, epoch=0x1122334455667788, sequence=17)
    assert not msg.sealed
    data = encode(msg, KEY, pad_to=4096)  # no epoch keys needed: heartbeats are never sealed
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQQ", 2, 0xF0, 0, 1, 0, 0, 0x1122334455667788, 0, 17, 0)
    assert data[:48] == prefix
    assert data[48:80] == hmac.new(KEY, prefix + bytes(32), hashlib.sha256).digest()
    assert data[80:] == bytes(4096 - 80)
    got = decode(data, KEY)
    assert got.type is MessageType.HEARTBEAT and got.sequence == 17 and got == msg
    assert decode(data, KEY, keys=keys_for(0x1122334455667788, KEY, 1)) == msg  # keys change nothing
    with pytest.raises(BadMacError):
        decode(data, OTHER_KEY)


def test_which_messages_are_sealed() -> None:
    assert not plain().sealed and sealed_up().sealed and sealed_down().sealed
    assert not Message(Heartbeat(), epoch=5).sealed and not Message(Heartbeat()).sealed
    assert Message(Ack(), epoch=5).sealed
    assert Message(Response(MessageType.APP_START, Status.NOT_STARTED), request_id=1).sealed is False


def test_ack_flag_only_on_session_shutdown() -> None:
    for epoch in (0, EPOCH):
        shut = wire(Message(SessionShutdown(PORT, ShutdownReason.LOGO), epoch=epoch, sequence=5))
        assert struct.unpack_from(">H", shut, 6)[0] == 0x0001
        other = wire(Message(ElsRcvd(PORT, 1, b"\x90abc"), epoch=epoch))
        assert struct.unpack_from(">H", other, 6)[0] == 0
        assert back(shut).flags == proto.HeaderFlags.ACK_REQUIRED


@pytest.mark.parametrize("epoch", [0, EPOCH])
@pytest.mark.parametrize("block", [512, 1024, 2048, 4096])
def test_padding_to_whole_blocks(block: int, epoch: int) -> None:
    msg = Message(ElsSend(PORT, bytes(range(256)) * 8), epoch=epoch, request_id=1)  # 80 + 20 + 2048
    data = wire(msg, block_size=block)
    assert len(data) % block == 0
    assert len(data) - block < HEADER_SIZE + 20 + 2048 <= len(data)
    assert not any(data[HEADER_SIZE + 20 + 2048 :])
    assert proto.encoded_size(msg, block_size=block) == len(data)
    assert back(data) == msg


@ids
def test_pad_to_fills_a_read_buffer_exactly(sample) -> None:
    data = wire(sample(), pad_to=4096)
    assert len(data) == 4096
    assert back(data) == sample()
    for bad in (100, 513, 8192, 0):
        with pytest.raises(ProtocolError):
            wire(sample(), pad_to=bad)


def test_bad_block_size_refused() -> None:
    for bad in (0, 100, 511, 8192):
        with pytest.raises(ProtocolError):
            wire(sealed_up(), block_size=bad)
        with pytest.raises(ProtocolError):
            encode(plain(), KEY, block_size=bad)


@ids
def test_trailing_zeros_accepted_up_to_the_bound(sample) -> None:
    data = wire(sample())
    n = body_len(data)
    assert back(data[: HEADER_SIZE + n]) == sample()  # unpadded is fine too
    assert back(data + bytes(MAX_MESSAGE_SIZE - len(data))) == sample()
    with pytest.raises(OversizedError):
        back(data + bytes(MAX_MESSAGE_SIZE - len(data) + 1))


@pytest.mark.parametrize("epoch", [0, EPOCH])
def test_largest_message_fits_with_room(epoch: int) -> None:
    msg = Message(ElsRcvd(PORT, 0xFFFFFFFF, b"\x90" * proto.ELS_MAX_PAYLOAD), epoch=epoch)
    data = wire(msg, block_size=512)
    assert HEADER_SIZE + 24 + 2112 == 2216
    assert len(data) == 2560  # 5 blocks of 512
    assert MAX_MESSAGE_SIZE - 2216 >= 1024  # room to spare
    assert back(data) == msg
    with pytest.raises(proto.MalformedBodyError):
        ElsSend(PORT, b"\x90" * (proto.ELS_MAX_PAYLOAD + 1))


@pytest.mark.parametrize("epoch", [0, EPOCH])
def test_encode_refuses_oversized_body(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    msg = Message(ElsSend(PORT, b"\x90"), epoch=epoch, request_id=1)
    monkeypatch.setattr(ElsSend, "pack", lambda self: bytes(MAX_MESSAGE_SIZE - HEADER_SIZE + 1))
    with pytest.raises(OversizedError, match="exceeds"):
        wire(msg)
    monkeypatch.setattr(ElsSend, "pack", lambda self: bytes(MAX_MESSAGE_SIZE - HEADER_SIZE))
    assert len(wire(msg)) == MAX_MESSAGE_SIZE


@ids
def test_bad_magic(sample) -> None:
    data = wire(sample())
    for bad in (b"EDIX" + data[4:], bytes(512), b"X", b"\x00" * 3):
        with pytest.raises(BadMagicError):
            back(bad)


@ids
def test_unsupported_version(sample) -> None:
    data = wire(sample())
    for v in (0, 1, 3, 255):
        with pytest.raises(UnsupportedVersionError):
            back(forge(data, version=v))
    for v in (b"\x01", b"\x03"):
        with pytest.raises(UnsupportedVersionError):
            decode(b"EDIF" + v + bytes(10), KEY)


def test_a_version_1_frame_is_refused() -> None:
    # The v1 layout: a 72-byte header (no ack, the MAC at 40), MAC'd with the right key.
    body = struct.pack(">BBHI", MessageType.KEEPALIVE, Status.OK, 0, 0)
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQ", 1, 0x40, 0, 0, 0, len(body), 0, 1, 0)
    v1 = prefix + hmac.new(KEY, prefix + bytes(32) + body, hashlib.sha256).digest() + body
    with pytest.raises(UnsupportedVersionError):
        decode(v1 + bytes(512 - len(v1)), KEY)


@ids
def test_truncated(sample) -> None:
    data = wire(sample())
    for n in (0, 4, 5, 40, 47, 48, 79):
        with pytest.raises(TruncatedError):
            back(data[:n])
    with pytest.raises(TruncatedError):
        back(data[: HEADER_SIZE + body_len(data) - 1])  # body cut short
    with pytest.raises(TruncatedError):
        back(forge(data, body_length=600)[:512])


@ids
def test_declared_body_length_over_bound(sample) -> None:
    data = wire(sample())
    for n in (MAX_MESSAGE_SIZE - HEADER_SIZE + 1, 0xFFFFFFFF):
        with pytest.raises(OversizedError):
            back(forge(data, body_length=n))


@ids
def test_non_zero_padding_is_an_error(sample) -> None:
    data = bytearray(wire(sample()))
    data[-1] = 1
    with pytest.raises(BadPaddingError):
        back(bytes(data))


@ids
def test_any_authenticated_byte_changed_is_rejected(sample) -> None:
    """Every byte of the header, the auth field (tag and its zero padding) and the body."""
    data = wire(sample())
    keys = [keys_for(e, KEY, p) for e in (EPOCH, EPOCH ^ 1) for p in (3, 2)]
    for offset in range(HEADER_SIZE + body_len(data)):
        for bit in (0x01, 0x80):
            raw = bytearray(data)
            raw[offset] ^= bit
            with pytest.raises(ProtocolError):
                decode(bytes(raw), KEY, keys=keys)


@pytest.mark.parametrize("offset", [8, 24, 32, 40, 47, 48, 79, 80, 87])
@ids
def test_bad_mac(sample, offset: int) -> None:
    data = bytearray(wire(sample()))
    data[offset] ^= 0x80
    keys = [keys_for(EPOCH, KEY, p) for p in (3, 3 ^ 0x80 << 8)]  # even for the rewritten port
    with pytest.raises(BadMacError):
        decode(bytes(data), KEY, keys=keys)


@sealed_ids
def test_sealed_epoch_rewritten_is_unknown_or_a_bad_tag(sample) -> None:
    data = bytearray(wire(sample()))
    struct.pack_into(">Q", data, 16, EPOCH ^ 1)
    with pytest.raises(UnknownEpochError):
        decode(bytes(data), KEY, keys=keys_for(EPOCH, KEY, 3))
    with pytest.raises(BadMacError):  # the receiver holds that epoch's keys too: still refused
        decode(bytes(data), KEY, keys=[keys_for(EPOCH, KEY, 3), keys_for(EPOCH ^ 1, KEY, 3)])


def test_unsealed_epoch_rewritten_is_unknown_or_a_bad_tag() -> None:
    # Epoch 0 -> E turns an HMAC'd frame into one that claims to be sealed: its HMAC is no tag.
    data = bytearray(encode(plain(), KEY))
    struct.pack_into(">Q", data, 16, EPOCH)
    with pytest.raises(UnknownEpochError):
        decode(bytes(data), KEY)
    with pytest.raises(BadMacError):
        decode(bytes(data), KEY, keys=keys_for(EPOCH, KEY, 3))


@sealed_ids
def test_sealed_tag_padding_must_be_zero(sample) -> None:
    data = wire(sample())
    for i in range(64, 80):
        raw = bytearray(data)
        raw[i] = 1
        with pytest.raises(BadMacError):
            back(bytes(raw))


def test_unsealed_ack_field_is_under_the_mac() -> None:
    data = bytearray(encode(plain(), KEY))
    data[47] = 1
    with pytest.raises(BadMacError):
        decode(bytes(data), KEY)


@ids
def test_wrong_channel_key_is_bad_mac(sample) -> None:
    data = wire(sample())
    with pytest.raises(BadMacError):
        decode(data, OTHER_KEY, keys=keys_for(EPOCH, OTHER_KEY, 3))


@sealed_ids
def test_sealed_without_the_epoch_keys_is_unknown_epoch(sample) -> None:
    data = wire(sample())
    for keys in (None, [], (), keys_for(EPOCH ^ 1, KEY, 3), [keys_for(1), keys_for(EPOCH - 1, KEY, 3)]):
        with pytest.raises(UnknownEpochError) as info:
            decode(data, KEY, keys=keys)
        assert info.value.reason == "unknown_epoch"
    for keys in (None, keys_for(EPOCH ^ 1, KEY, 3)):
        with pytest.raises(UnknownEpochError):
            encode(sample(), KEY, keys=keys)


@sealed_ids
def test_keys_given_one_several_or_as_any_iterable(sample) -> None:
    data = wire(sample())
    mine = keys_for(EPOCH, KEY, 3)
    others = [keys_for(e, KEY, 3) for e in (1, 2, EPOCH ^ 1)]
    for keys in (mine, [mine], others + [mine], tuple([mine] + others), (k for k in others + [mine])):
        assert decode(data, KEY, keys=keys) == sample()
    assert encode(sample(), KEY, keys=others + [mine]) == data
    assert encode(sample(), KEY, keys=(k for k in [*others, mine])) == data


@sealed_ids
def test_sealed_under_keys_of_the_same_epoch_from_another_handshake(sample) -> None:
    data = wire(sample())
    wrong = [
        keys_for(EPOCH, KEY, 3, agent_nonce=bytes(32)),  # another agent nonce
        keys_for(EPOCH, KEY, 3, host_nonce=bytes(32)),  # another host nonce
        keys_for(EPOCH, KEY, 3, agent_nonce=HOST_NONCE, host_nonce=AGENT_NONCE),  # swapped
        keys_for(EPOCH, KEY, 4),  # another port's LUN
        keys_for(EPOCH, OTHER_KEY, 3),  # another channel key
    ]
    for keys in wrong:
        with pytest.raises(BadMacError):
            decode(data, KEY, keys=keys)
        assert encode(sample(), KEY, keys=keys) != data


@sealed_ids
def test_sealed_with_the_other_directions_key_or_nonce(sample) -> None:
    msg = sample()
    data = wire(msg)
    prefix, body = data[:48], msg.body.pack()
    assert seal_frame(prefix, body) == data[: HEADER_SIZE + len(body)]  # the model agrees
    with pytest.raises(BadMacError):
        back(seal_frame(prefix, body, swap=True))  # the other direction's key
    down, up = hkdf_keys(EPOCH, KEY, 3)
    k = down if msg.type.value < 0x40 else up
    other_nonce = struct.pack(">IQ", 2 if msg.type.value < 0x40 else 1, msg.sequence)
    out = AESGCM(k).encrypt(other_nonce, body, prefix)  # right key, the other direction's nonce
    with pytest.raises(BadMacError):
        back(prefix + out[-16:] + bytes(16) + out[:-16])


def test_the_direction_follows_the_type_code() -> None:
    # A downstream message's keys cannot open it once its type claims the other direction.
    data = wire(sealed_down())
    raw = bytearray(data)
    raw[5] = MessageType.RESPONSE
    with pytest.raises(BadMacError):
        back(bytes(raw))


@ids
def test_unknown_type_after_authentication(sample) -> None:
    data = wire(sample())
    for t in (0x00, 0x0F, 0x3E, 0x47, 0x8B, 0xC0, 0xFF):
        with pytest.raises(UnknownTypeError):
            back(forge(data, type=t))
    # Forged without the key, an unknown type is just a bad MAC: nothing is parsed.
    raw = bytearray(data)
    raw[5] = 0x0F
    with pytest.raises(BadMacError):
        back(bytes(raw))


@ids
def test_malformed_header_fields(sample) -> None:
    data = wire(sample())
    with pytest.raises(MalformedHeaderError):
        back(forge(data, reserved=1))
    with pytest.raises(MalformedHeaderError):
        back(forge(data, flags=0x0002))
    with pytest.raises(MalformedHeaderError):
        back(forge(data, flags=0x0001))  # ACK_REQUIRED on a response or a request
    with pytest.raises(MalformedHeaderError):
        back(forge(data, request_id=0))  # a request or response must carry a request id
    for epoch in (0, EPOCH):
        shut = wire(Message(SessionShutdown(PORT, ShutdownReason.LOGO), epoch=epoch))
        with pytest.raises(MalformedHeaderError):
            back(forge(shut, flags=0))  # missing ACK_REQUIRED
        with pytest.raises(MalformedHeaderError):
            back(forge(shut, request_id=5))  # events carry request id 0


@pytest.mark.parametrize(
    "msg",
    [
        plain(),
        sealed_up(),
        Message(Keepalive(), epoch=0, request_id=1),  # downstream but unsealed (the handshake's epoch)
        Message(Heartbeat(), epoch=EPOCH, sequence=3),  # an epoch's heartbeat is never sealed
        Message(Heartbeat()),
        Message(SessionShutdown(PORT, ShutdownReason.LOGO), epoch=EPOCH),
    ],
    ids=["plain", "sealed_up", "keepalive_epoch0", "heartbeat_epoch", "heartbeat", "event"],
)
def test_an_ack_outside_a_sealed_downstream_message_is_refused(msg: Message) -> None:
    """Refused when building the Message, and on the wire even when properly authenticated."""
    with pytest.raises(MalformedHeaderError):
        Message(msg.body, msg.port_index, msg.epoch, msg.request_id, msg.sequence, ack=1)
    data = wire(msg)
    for ack in (1, 1 << 63, (1 << 64) - 1):
        forged = forge(data, ack=ack)
        assert struct.unpack_from(">Q", forged, 40)[0] == ack
        with pytest.raises(MalformedHeaderError):
            back(forged)


def test_an_ack_on_a_sealed_downstream_message_is_carried() -> None:
    for ack in (1, 0x0102030405060708, (1 << 64) - 1):
        msg = Message(Keepalive(), 2, EPOCH, 5, 6, ack=ack)
        assert back(wire(msg)).ack == ack
        assert back(forge(wire(sealed_down()), ack=ack)).ack == ack


def test_ack_message_header_rules_on_the_wire() -> None:
    data = wire(Message(Ack(), port_index=3, epoch=EPOCH, ack=9))
    for fields in ({"sequence": 1}, {"request_id": 1}, {"epoch": 0}, {"epoch": 0, "ack": 0}, {"flags": 1}):
        with pytest.raises(MalformedHeaderError):
            back(forge(data, **fields))
    with pytest.raises(BodyLengthMismatchError):
        back(forge(data, body=b"\x00"))


@ids
def test_body_length_mismatch(sample) -> None:
    data = wire(sample())
    body = sample().body.pack()
    with pytest.raises(BodyLengthMismatchError):
        back(forge(data, body=body + b"\x00"))
    with pytest.raises(BodyLengthMismatchError):
        back(forge(data, body=body[:-1]))
    for epoch in (0, EPOCH):
        ka = wire(Message(Keepalive(), epoch=epoch, request_id=1))
        with pytest.raises(BodyLengthMismatchError):
            back(forge(ka, body=b"\x00"))
        els_msg = Message(ElsSend(PORT, b"\x90\x01"), epoch=epoch, request_id=1)
        els_body = els_msg.body.pack()
        with pytest.raises(BodyLengthMismatchError):  # inner payload length says 3, body has 2
            back(forge(wire(els_msg), body=els_body[:16] + b"\x00\x03" + els_body[18:]))


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
        UnknownEpochError,
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
    assert UnknownEpochError.reason == "unknown_epoch" and BadMacError.reason == "bad_mac"


@pytest.mark.parametrize("junk", [None, "EDIF", 42, [1, 2], object(), 3.5])
def test_non_bytes_input_is_a_protocol_error(junk: object) -> None:
    with pytest.raises(ProtocolError):
        decode(junk, KEY)
    with pytest.raises(ProtocolError):
        decode(junk, KEY, keys=keys_for(EPOCH, KEY, 3))


@ids
def test_bytes_like_inputs(sample) -> None:
    data = wire(sample())
    assert back(bytearray(data)) == sample()
    assert back(memoryview(data)) == sample()
    view = memoryview(bytearray(data))
    view.release()
    with pytest.raises(ProtocolError):
        decode(view, KEY, keys=keys_for(EPOCH, KEY, 3))


@pytest.mark.parametrize("bad_key", [b"", bytes(31), bytes(33), "k" * 32, None, 7])
@ids
def test_bad_key_is_a_channel_key_error(sample, bad_key: object) -> None:
    data = wire(sample())
    with pytest.raises(ChannelKeyError):
        decode(data, bad_key, keys=keys_for(EPOCH, KEY, 3))
    with pytest.raises(ChannelKeyError):
        encode(sample(), bad_key, keys=keys_for(EPOCH, KEY, 3))
    with pytest.raises(ChannelKeyError):
        proto.EpochKeys.derive(bad_key, 0, AGENT_NONCE, HOST_NONCE, EPOCH)


@ids
def test_channel_key_object_accepted(sample) -> None:
    key = ChannelKey(KEY)
    assert back(wire(sample(), key), KEY) == sample()
    assert back(wire(sample(), KEY), key) == sample()
    assert wire(sample(), key) == wire(sample(), KEY)


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
        ("ack", 1 << 64),
        ("ack", -1),
        ("ack", True),
    ):
        with pytest.raises(MalformedHeaderError):
            Message(Keepalive(), **{"request_id": 1, "epoch": 5, field: value})
    with pytest.raises(MalformedHeaderError):
        Message(Ack())  # an ACK belongs to an epoch
    with pytest.raises(MalformedHeaderError):
        Message(Ack(), epoch=5, sequence=1)  # and carries sequence 0
    with pytest.raises(MalformedHeaderError):
        Message(Ack(), epoch=5, request_id=1)  # answered by nothing: request id 0
    assert Message(Ack(), epoch=5).ack == 0  # "nothing consumed yet" is a valid ACK
    with pytest.raises(MalformedHeaderError):
        Message(object())  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        encode("not a message", KEY)  # type: ignore[arg-type]


@ids
def test_huge_and_multibyte_buffers(sample) -> None:
    with pytest.raises(OversizedError):
        back(bytes(10 * 1024 * 1024))
    data = wire(sample())  # 512 bytes: viewed as 128 32-bit items, still 512 bytes
    assert back(memoryview(data).cast("I")) == sample()


@ids
def test_peek_header_reads_without_authenticating(sample) -> None:
    data = wire(sample())
    assert peek_header(data) == (sample().epoch, 9, data[48:80])
    assert peek_header(memoryview(data)) == (sample().epoch, 9, data[48:80])
    raw = bytearray(data)
    raw[60] ^= 1  # a bad tag is still peeked: peek_header believes nothing
    assert peek_header(bytes(raw))[2] == bytes(raw[48:80])
    for bad in (data[:79], b"", b"EDIX" + data[4:], data[:4] + b"\x01" + data[5:]):
        assert peek_header(bad) is None


def test_mac_model_agrees_with_the_codec() -> None:
    data = encode(plain(), KEY)
    assert mac_frame(data[:48], plain().body.pack()) == data[:88]
