"""Every message of the catalogue: its body bytes against the documented layout, round trip (sealed
under the epoch keys and unsealed, as the type allows), validation of field values (on construction
and on the wire), and secrets kept out of reprs and out of the encoded bytes."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd import proto
from edifd.proto import (
    Ack,
    AppStart,
    AppStartAnswer,
    AppStartChallenge,
    AppStartPhase,
    AppStop,
    AuthFail,
    AuthFailReason,
    AuthNeeded,
    AuthOk,
    AuthState,
    BodyLengthMismatchError,
    Cipher,
    CipherMask,
    Direction,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsResponse,
    ElsResult,
    ElsSend,
    EventAck,
    EventOverflow,
    GetPortInfo,
    GetStats,
    GetTargets,
    Heartbeat,
    HostReset,
    Keepalive,
    Kind,
    LinkDown,
    LinkState,
    LinkUp,
    MalformedBodyError,
    Message,
    MessageType,
    PortFlags,
    PortInfo,
    PortOffline,
    PortOnline,
    PortRef,
    PortState,
    Response,
    Resync,
    RoleFlags,
    SaDirection,
    SaFlags,
    SaStatus,
    SaUpdate,
    SaUpdateCompl,
    SecureConnect,
    SessionShutdown,
    ShutdownReason,
    Stats,
    StatsEntry,
    Status,
    StopReason,
    TargetEntry,
    TargetFlags,
    TargetGone,
    TargetList,
)
from edifd.proto.ports import PortOnlyBody
from tests.support.proto import aead_nonce, back, hkdf_keys, reauth, wire
from tests.support.strategies import messages_of

KEY = bytes(range(100, 132))
EPOCH = 0x55
WWPN = 0x2100_0024_FF12_3456
PORT = PortRef(WWPN, 0x0A0B0C, 0x01020304)
NA = bytes(range(32))
NH = bytes(range(32, 64))
PROOF = bytes(range(64, 96))
SA_KEY_128 = bytes.fromhex("00112233445566778899aabbccddeeff")
SA_KEY_256 = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f" * 2)
SALT = bytes.fromhex("cafef00d")


def port_bytes(wwpn: int = WWPN, pid: int = 0x0A0B0C, gen: int = 0x01020304) -> bytes:
    """PortRef per docs: WWPN (8) | reserved (1) | port id (3, FC order) | generation (4)."""
    return struct.pack(">Q", wwpn) + b"\x00" + pid.to_bytes(3, "big") + struct.pack(">I", gen)


P = port_bytes()

# (body, its bytes built from the documented layout). One row per message type at least.
LAYOUTS: list[tuple[proto.Body, bytes]] = [
    (
        AppStart(AppStartPhase.HELLO, NA, keepalive_ms=2500),
        b"\x01\x00\x00\x00" + struct.pack(">I", 2500) + NA + bytes(64),
    ),
    (AppStart(AppStartPhase.PROOF, NA, NH, PROOF, 0), b"\x02" + bytes(3) + bytes(4) + NA + NH + PROOF),
    (AppStop(StopReason.RESTART), b"\x02\x00\x00\x00"),
    (GetPortInfo(), b""),
    (GetTargets(start=10, max_entries=50, wwpn=WWPN), struct.pack(">QIHH", WWPN, 10, 50, 0)),
    (GetStats(start=0, max_entries=1, wwpn=0), struct.pack(">QIHH", 0, 0, 1, 0)),
    (SecureConnect(PORT), P),
    (ElsSend(PORT, b"\x90\x00\x00\x10abc"), P + struct.pack(">HH", 7, 0) + b"\x90\x00\x00\x10abc"),
    (
        ElsReply(PORT, 0xDEADBEEF, ElsReplyAction.LS_ACC, b"\x02\x00\x00\x00"),
        P + struct.pack(">IBBH", 0xDEADBEEF, 1, 0, 4) + b"\x02\x00\x00\x00",
    ),
    (ElsReply(PORT, 7, ElsReplyAction.TERMINATE), P + struct.pack(">IBBH", 7, 3, 0, 0)),
    (
        SaUpdate(PORT, 0x1001, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT),
        P + struct.pack(">IBBH", 0x1001, 2, 1, 0) + SALT + SA_KEY_128 + bytes(16),
    ),
    (
        SaUpdate(PORT, 0x1002, SaDirection.RX, Cipher.AES_GMAC_256, SA_KEY_256, SALT, SaFlags.REKEY),
        P + struct.pack(">IBBH", 0x1002, 1, 4, 4) + SALT + SA_KEY_256,
    ),
    (
        SaUpdate(
            PORT, 0x1003, SaDirection.RX, Cipher.AES_GCM_256, flags=SaFlags.DELETE | SaFlags.FORCE_DELETE
        ),
        P + struct.pack(">IBBH", 0x1003, 1, 2, 3) + bytes(4) + bytes(32),
    ),
    (AuthOk(PORT), P),
    (AuthFail(PORT, AuthFailReason.TIMEOUT), P + b"\x03\x00\x00\x00"),
    (
        EventAck(MessageType.SESSION_SHUTDOWN, 0x0102030405060708, PORT),
        struct.pack(">QB", 0x0102030405060708, 0x83) + bytes(3) + P,
    ),
    (Keepalive(), b""),
    (Resync(), b""),
    (Ack(), b""),
    (Response(MessageType.AUTH_OK, Status.RETRY_LATER, 0), struct.pack(">BBHI", 0x09, 1, 0, 0)),
    (
        Response(MessageType.SA_UPDATE, Status.FAILED, 0x0066_0001),
        struct.pack(">BBHI", 0x08, 8, 0, 0x00660001),
    ),
    (AppStartChallenge(NA, NH), NA + NH),
    (
        AppStartAnswer(
            0xFEEDFACECAFEBEEF, PROOF, 5000, 4096, 2112, 2, CipherMask.AES_GCM_128 | CipherMask.AES_GMAC_128
        ),
        struct.pack(">Q", 0xFEEDFACECAFEBEEF) + PROOF + struct.pack(">IHHBBH", 5000, 4096, 2112, 2, 0x05, 0),
    ),
    (
        PortInfo(WWPN, WWPN - 1, 0x010203, LinkState.UP, PortFlags.EDIF_ENABLED, 1000),
        struct.pack(">QQ", WWPN, WWPN - 1) + b"\x00\x01\x02\x03" + struct.pack(">BBHI", 1, 1, 0, 1000),
    ),
    (
        TargetList(
            5,
            1,
            (
                TargetEntry(
                    PORT, RoleFlags.TARGET, PortState.ONLINE, AuthState.NEEDED, TargetFlags.SECURE_LOGIN
                ),
                TargetEntry(PortRef(1, 2, 3), RoleFlags.TARGET | RoleFlags.INITIATOR),
            ),
        ),
        struct.pack(">IIHH", 5, 1, 2, 0)
        + P
        + b"\x01\x01\x01\x01"
        + port_bytes(1, 2, 3)
        + b"\x03\x00\x00\x00",
    ),
    (TargetList(0, 0, ()), struct.pack(">IIHH", 0, 0, 0, 0)),
    (
        Stats(1, 0, (StatsEntry(PORT, 3, 1 << 40, 7),)),
        struct.pack(">IIHH", 1, 0, 1, 0) + P + struct.pack(">QQQ", 3, 1 << 40, 7),
    ),
    (
        ElsResponse(PORT, ElsResult.LS_RJT, b"\x01\x00\x09\x00"),
        P + struct.pack(">BBH", 1, 0, 4) + b"\x01\x00\x09\x00",
    ),
    (AuthNeeded(PORT, RoleFlags.TARGET), P + b"\x01\x00\x00\x00"),
    (ElsRcvd(PORT, 0x00ABCDEF, b"\x90xyz"), P + struct.pack(">IHH", 0x00ABCDEF, 4, 0) + b"\x90xyz"),
    (
        SaUpdateCompl(PORT, 0x1001, SaDirection.RX, SaStatus.FAILED, 0x0031, SaFlags.DELETE),
        P + struct.pack(">IBBHHH", 0x1001, 1, 1, 0x31, 1, 0),
    ),
    (SessionShutdown(PORT, ShutdownReason.LINK_DOWN), P + b"\x03\x00\x00\x00"),
    (LinkUp(), b""),
    (LinkDown(), b""),
    (PortOnline(PORT), P),
    (PortOffline(PORT), P),
    (TargetGone(PORT), P),
    (HostReset(), b""),
    (EventOverflow(12), struct.pack(">II", 12, 0)),
    (Heartbeat(), b""),
]


def wrap(body: proto.Body, epoch: int = EPOCH) -> Message:
    rid = 77 if body.TYPE.kind in (Kind.REQUEST, Kind.RESPONSE) else 0
    return Message(
        body, port_index=2, epoch=epoch, request_id=rid, sequence=0 if body.TYPE is MessageType.ACK else 4
    )


def test_every_type_has_a_layout_row() -> None:
    assert {b.TYPE for b, _ in LAYOUTS} == set(MessageType)


def plaintext_of(data: bytes) -> bytes:
    """The body region of an encoding, decrypted with the documented keys (tests/support/proto.py's
    model) when the message is sealed."""
    n = struct.unpack_from(">I", data, 12)[0]
    t, epoch, seq, ack = data[5], *struct.unpack_from(">Q", data, 16), *struct.unpack_from(">QQ", data, 32)
    region = data[80 : 80 + n]
    if epoch == 0 or t == MessageType.HEARTBEAT:
        return region
    down, up = hkdf_keys(epoch, KEY, struct.unpack_from(">H", data, 8)[0])
    aead = AESGCM(down if t < 0x40 else up)
    return aead.decrypt(aead_nonce(t, seq, ack), region + data[48:64], data[:48])


@pytest.mark.parametrize("epoch", [0, EPOCH], ids=["unsealed", "sealed"])
@pytest.mark.parametrize(
    ("body", "expected"), LAYOUTS, ids=lambda x: type(x).__name__ if hasattr(x, "TYPE") else ""
)
def test_body_layout_and_round_trip(body: proto.Body, expected: bytes, epoch: int) -> None:
    assert body.pack() == expected
    if epoch == 0 and body.TYPE is MessageType.ACK:
        with pytest.raises(proto.MalformedHeaderError):  # an ACK exists only within an epoch
            wrap(body, epoch)
        return
    msg = wrap(body, epoch)
    data = wire(msg, KEY)
    assert data[5] == body.TYPE.value
    assert struct.unpack_from(">I", data, 12)[0] == len(expected)
    assert plaintext_of(data) == expected
    if msg.sealed and len(expected) >= 8:
        assert data[80 : 80 + len(expected)] != expected  # the body does not travel in clear
    elif not msg.sealed:
        assert data[80 : 80 + len(expected)] == expected
    back_msg = back(data, KEY)
    assert back_msg == msg
    assert type(back_msg.body) is type(body)


def forge_body(msg: Message, body: bytes) -> bytes:
    """An authentic encoding (right keys) of msg's header with an arbitrary plaintext body."""
    data = bytearray(wire(msg, KEY)[:80])
    struct.pack_into(">I", data, 12, len(body))
    return reauth(bytes(data) + body, KEY)


@pytest.mark.parametrize(
    ("body", "offset", "value"),
    [
        (AppStop(), 0, 9),  # reason outside StopReason
        (AppStop(), 1, 1),  # reserved
        (AppStart(AppStartPhase.HELLO, NA), 0, 3),  # phase
        (AppStart(AppStartPhase.HELLO, NA), 80, 1),  # HELLO with a non-zero proof
        (SecureConnect(PORT), 8, 1),  # reserved byte before the port id
        (SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT), 20, 3),  # direction
        (SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT), 21, 9),  # cipher
        (SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT), 23, 0x10),  # flag bit
        (SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT), 59, 1),  # unused key byte
        (SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT), 19, 0),  # spi 0
        (ElsReply(PORT, 1, ElsReplyAction.LS_ACC, b"x"), 20, 4),  # action
        (EventAck(MessageType.LINK_UP, 1), 8, 0x01),  # event_type is a request
        (Response(MessageType.KEEPALIVE), 0, 0x80),  # request_type is an event
        (Response(MessageType.KEEPALIVE), 1, 11),  # status
        (AppStartAnswer(1, PROOF), 7, 0),  # epoch 0
        (AppStartAnswer(1, PROOF), 49, 0x10),  # cipher mask bit
        (PortInfo(1, 2), 20, 2),  # link state
        (TargetList(1, 0, (TargetEntry(PORT),)), 3, 0),  # total 0 < start + count
        (TargetList(1, 0, (TargetEntry(PORT),)), 29, 5),  # auth state
        (SaUpdateCompl(PORT, 1, SaDirection.RX), 21, 4),  # status
        (SessionShutdown(PORT, ShutdownReason.LOGO), 16, 0),  # reason 0
        (EventOverflow(1), 4, 1),  # reserved
        (GetTargets(max_entries=1), 13, 0),  # max_entries 0
    ],
)
def test_malformed_body_on_the_wire(body: proto.Body, offset: int, value: int) -> None:
    raw = bytearray(body.pack())
    raw[offset] = value
    for epoch in (0, EPOCH):
        with pytest.raises(MalformedBodyError):
            back(forge_body(wrap(body, epoch), bytes(raw)), KEY)


def test_list_count_beyond_limit_on_the_wire() -> None:
    head = struct.pack(">IIHH", 1000, 0, proto.MAX_TARGET_ENTRIES + 1, 0)
    with pytest.raises(MalformedBodyError):
        back(forge_body(wrap(TargetList(0, 0, ())), head), KEY)
    head = struct.pack(">IIHH", 10, 0, 3, 0)  # claims 3 entries, carries 1
    with pytest.raises(BodyLengthMismatchError):
        back(forge_body(wrap(TargetList(0, 0, ())), head + TargetEntry(PORT).pack()), KEY)


def test_list_limits_fill_one_message() -> None:
    targets = TargetList(
        10_000, 0, tuple(TargetEntry(PortRef(i + 1)) for i in range(proto.MAX_TARGET_ENTRIES))
    )
    stats = Stats(10_000, 0, tuple(StatsEntry(PortRef(i + 1)) for i in range(proto.MAX_STATS_ENTRIES)))
    for body in (targets, stats):
        for epoch in (0, EPOCH):
            assert len(wire(wrap(body, epoch), KEY)) <= proto.MAX_MESSAGE_SIZE
            assert back(wire(wrap(body, epoch), KEY), KEY) == wrap(body, epoch)
    with pytest.raises(MalformedBodyError):
        TargetList(10_000, 0, targets.entries + (TargetEntry(PORT),))
    with pytest.raises(MalformedBodyError):
        Stats(10_000, 0, stats.entries + (StatsEntry(PORT),))


@pytest.mark.parametrize(
    "build",
    [
        lambda: SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_256, SA_KEY_128, SALT),  # key too short
        lambda: SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_256, SALT),  # key too long
        lambda: SaUpdate(PORT, 0, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, SALT),  # spi 0
        lambda: SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, SA_KEY_128, b"abc"),  # salt size
        lambda: SaUpdate(PORT, 1, SaDirection.RX, Cipher.AES_GCM_128, SA_KEY_128, SALT, SaFlags.DELETE),
        lambda: SaUpdate(
            PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, flags=SaFlags.DELETE | SaFlags.FORCE_DELETE
        ),
        lambda: SaUpdate(PORT, 1, SaDirection.RX, Cipher.AES_GCM_128, flags=SaFlags.DELETE | SaFlags.REKEY),
        lambda: SaUpdate(PORT, 1, SaDirection.RX, Cipher.AES_GCM_128, SA_KEY_128, SALT, SaFlags.FORCE_DELETE),
        lambda: SaUpdate(PORT, 1, SaDirection.RX, Cipher.AES_GCM_128, SA_KEY_128, SALT, 0x100),
        lambda: SaUpdate(PORT, 1, 3, Cipher.AES_GCM_128, SA_KEY_128, SALT),
        lambda: SaUpdate("port", 1, SaDirection.RX, Cipher.AES_GCM_128, SA_KEY_128, SALT),
        lambda: ElsReply(PORT, 1, ElsReplyAction.TERMINATE, b"x"),
        lambda: ElsReply(PORT, 1, ElsReplyAction.LS_ACC, b""),
        lambda: ElsSend(PORT, b""),
        lambda: ElsRcvd(PORT, 1 << 32, b"x"),
        lambda: AppStart(AppStartPhase.HELLO, NA, NH),
        lambda: AppStart(AppStartPhase.PROOF, NA[:31], NH, PROOF),
        lambda: AppStartAnswer(0, PROOF),
        lambda: EventAck(MessageType.KEEPALIVE, 1),
        lambda: Response(MessageType.HEARTBEAT),
        lambda: PortRef(1 << 64),
        lambda: PortRef(1, 1 << 24),
        lambda: PortRef(1, 0, -1),
        lambda: PortRef(True),
        lambda: TargetList(1, 1, (TargetEntry(PORT),)),
        lambda: TargetList(1, 0, (StatsEntry(PORT),)),
        lambda: AuthNeeded(PORT, 0x04),
        lambda: EventOverflow(1 << 32),
    ],
)
def test_invalid_values_refused_on_construction(build) -> None:
    with pytest.raises(MalformedBodyError):
        build()


def test_int_values_coerced_to_enums() -> None:
    sa = SaUpdate(PORT, 5, 2, 1, SA_KEY_128, SALT, 4)
    assert sa.direction is SaDirection.TX and sa.cipher is Cipher.AES_GCM_128 and sa.flags == SaFlags.REKEY


SECRET_KEYS = [SA_KEY_128, SA_KEY_256, bytes(range(200, 216)), b"\xaa" * 32]


@pytest.mark.parametrize("epoch", [0, EPOCH], ids=["unsealed", "sealed"])
@pytest.mark.parametrize("secret", SECRET_KEYS)
def test_sa_update_never_shows_key_or_salt(secret: bytes, epoch: int) -> None:
    cipher = Cipher.AES_GCM_128 if len(secret) == 16 else Cipher.AES_GCM_256
    sa = SaUpdate(PORT, 0x42, SaDirection.TX, cipher, secret, SALT)
    msg = Message(sa, epoch=epoch, request_id=1)
    for text in (repr(sa), str(sa), repr(msg), str(msg), repr(back(wire(msg, KEY), KEY))):
        assert secret.hex() not in text.lower()
        assert secret.hex().upper() not in text
        assert repr(secret) not in text
        assert repr(secret)[2:-1] not in text
        assert SALT.hex() not in text and repr(SALT)[2:-1] not in text
        assert "<redacted>" in text


@pytest.mark.parametrize("secret", SECRET_KEYS)
def test_sealed_sa_update_bytes_never_hold_key_or_salt(secret: bytes) -> None:
    cipher = Cipher.AES_GCM_128 if len(secret) == 16 else Cipher.AES_GCM_256
    for direction in SaDirection:
        msg = Message(SaUpdate(PORT, 0x42, direction, cipher, secret, SALT), 2, EPOCH, 1, 7, ack=3)
        data = wire(msg, KEY)
        assert secret in msg.body.pack()
        assert secret not in data and secret[:8] not in data and secret[-8:] not in data
        assert SALT not in data
        assert SALT + secret not in data


def test_sa_update_errors_never_show_key() -> None:
    secret = bytes(range(1, 17))
    with pytest.raises(MalformedBodyError) as info:
        SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_256, secret, SALT)
    assert secret.hex() not in str(info.value) and repr(secret) not in str(info.value)
    wire = bytearray(SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, secret, SALT).pack())
    wire[59] = 0xEE  # a non-zero unused key byte
    for epoch in (0, EPOCH):
        with pytest.raises(MalformedBodyError) as info:
            back(
                forge_body(
                    wrap(SaUpdate(PORT, 1, SaDirection.TX, Cipher.AES_GCM_128, secret, SALT), epoch),
                    bytes(wire),
                ),
                KEY,
            )
        assert secret.hex() not in str(info.value) and repr(secret)[2:-1] not in str(info.value)


def test_long_payloads_shown_by_length_only() -> None:
    text = repr(ElsRcvd(PORT, 1, b"\x90" * 2000))
    assert "<2000 bytes>" in text and "\\x90\\x90" not in text
    assert "wwpn=0x21000024ff123456" in repr(PORT) and "port_id=0x0a0b0c" in repr(PORT)


def test_catalogue_directions_kinds_and_acks() -> None:
    down = {t for t in MessageType if t.direction is Direction.DOWNSTREAM}
    assert down == {
        MessageType.APP_START,
        MessageType.APP_STOP,
        MessageType.GET_PORT_INFO,
        MessageType.GET_TARGETS,
        MessageType.SECURE_CONNECT,
        MessageType.ELS_SEND,
        MessageType.ELS_REPLY,
        MessageType.SA_UPDATE,
        MessageType.AUTH_OK,
        MessageType.AUTH_FAIL,
        MessageType.EVENT_ACK,
        MessageType.GET_STATS,
        MessageType.KEEPALIVE,
        MessageType.RESYNC,
        MessageType.ACK,
    }
    assert all(t.kind is Kind.REQUEST for t in down - {MessageType.ACK})
    assert MessageType.ACK.kind is Kind.ACKNOWLEDGEMENT and MessageType.ACK.value == 0x3F
    assert not MessageType.ACK.needs_ack
    events = {t for t in MessageType if t.kind is Kind.EVENT}
    assert MessageType.SESSION_SHUTDOWN in events and MessageType.ELS_RCVD in events and len(events) == 11
    assert MessageType.HEARTBEAT.kind is Kind.HEARTBEAT
    assert MessageType.HEARTBEAT.direction is Direction.UPSTREAM
    assert {t for t in MessageType if t.needs_ack} == {MessageType.SESSION_SHUTDOWN}
    for t in MessageType:
        if t.kind is Kind.REQUEST:
            assert MessageType.RESPONSE in t.responses
            assert all(r.kind is Kind.RESPONSE for r in t.responses)
        else:
            assert t.responses == frozenset()
    assert MessageType.APP_START.responses == {
        MessageType.RESPONSE,
        MessageType.APP_START_CHALLENGE,
        MessageType.APP_START_ANSWER,
    }
    answered = set().union(*(t.responses for t in MessageType))
    assert answered == {t for t in MessageType if t.kind is Kind.RESPONSE}  # no orphan response type
    assert 0 not in {t.value for t in MessageType}
    assert set(proto.BODY_CLASSES) == set(MessageType)


@pytest.mark.parametrize("msg_type", list(MessageType), ids=lambda t: t.name)
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_round_trip_generated_values(msg_type: MessageType, data: st.DataObject) -> None:
    msg = data.draw(messages_of(msg_type))
    variants = [msg]
    if msg_type is not MessageType.ACK:  # every other type also travels unsealed (epoch 0)
        variants.append(dataclasses.replace(msg, epoch=0, ack=0))
    if msg_type is not MessageType.HEARTBEAT:  # and every type but the heartbeat sealed
        variants.append(dataclasses.replace(msg, epoch=msg.epoch or 1))
    assert any(v.sealed for v in variants) == (msg_type is not MessageType.HEARTBEAT)
    assert any(not v.sealed for v in variants) == (msg_type is not MessageType.ACK)
    for m in variants:
        for block in (512, 4096):
            encoded = wire(m, KEY, block_size=block)
            assert len(encoded) % block == 0
            got = back(encoded, KEY)
            assert got == m and got.type is msg_type
            assert wire(got, KEY, block_size=block) == encoded  # one encoding per message


def test_port_only_bodies_share_one_base_and_are_the_port_ref_alone() -> None:
    port = PortRef(WWPN, 0x0A0B0C, 0x01020304)
    for cls in (SecureConnect, AuthOk, PortOnline, PortOffline, TargetGone):
        assert issubclass(cls, PortOnlyBody)
        assert cls(port).pack() == port_bytes() and cls.unpack(port_bytes()) == cls(port)
