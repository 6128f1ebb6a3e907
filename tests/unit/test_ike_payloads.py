"""Payload and message codec: exact FC layouts (RFC 4595), round trips, and garbage raising only IkeError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.ike.codes import EncrId, ExchangeType, PayloadType, ProtocolId, TransformType
from edifd.ike.crypto import SkAead
from edifd.ike.errors import IkeError, ParseError
from edifd.ike.message import Message, decode, decode_header, encode_plain, encode_protected, open_message
from edifd.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    FcSelector,
    IdiPayload,
    IdrPayload,
    Ipv4Selector,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    RawSelector,
    SaPayload,
    SkPayload,
    Transform,
    TsiPayload,
    TsPayload,
    TsrPayload,
    UnknownPayload,
    VendorIdPayload,
    decode_chain,
    encode_chain,
)
from edifd.ike.udp import NON_ESP_MARKER, frame, needs_marker, unframe

H = bytes.fromhex


def test_fc_traffic_selector_is_the_rfc4595_layout() -> None:
    ts = FcSelector(0x010101, 0x010102, 0x00, 0x0F, 0x08, 0x08)
    assert ts.encode() == H("09 00 0010 00 010101 00 010102 00 0f 08 08".replace(" ", ""))
    assert FcSelector.decode(ts.encode()) == ts


def test_fc_selector_ignores_reserved_bytes_and_checks_length() -> None:
    raw = bytearray(FcSelector(1, 2).encode())
    raw[4] = raw[8] = 0xFF  # reserved octets in front of the N_Port_IDs
    assert FcSelector.decode(bytes(raw)) == FcSelector(1, 2)
    with pytest.raises(ParseError):
        FcSelector.decode(bytes(raw[:15]))


def test_fc_selector_intersection() -> None:
    a, b = FcSelector(0x10, 0x20, 0, 0x0F, 8, 8), FcSelector(0x18, 0x30)
    assert a.intersect(b) == FcSelector(0x18, 0x20, 0, 0x0F, 8, 8)
    assert a.intersect(FcSelector(0x21, 0x30)) is None


def test_id_fc_name_is_type_12_with_the_8_byte_wwpn() -> None:
    idi = IdiPayload(12, H("2000001b32a0b0c1"))
    first, data = encode_chain([idi])
    assert first == PayloadType.IDI
    assert data == H("0000 0010 0c000000 2000001b32a0b0c1".replace(" ", ""))


def test_child_proposal_for_fc_esp_header_protocol_4() -> None:
    p = Proposal(
        1,
        ProtocolId.FC_ESP_HEADER,
        H("11223344"),
        (
            Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
            Transform(TransformType.ENCR, EncrId.NULL_AUTH_AES_GMAC, 128),
            Transform(TransformType.ESN, 0),
        ),
    )
    raw = SaPayload((p,)).encode_body()
    # last=0, len, #1, protocol 4, SPI size 4, 3 transforms, SPI
    assert raw[:12] == H("0000002c 01 04 04 03 11223344".replace(" ", ""))
    assert raw[12:24] == H("0300000c 01 00 0014 800e0100".replace(" ", ""))
    assert raw[24:36] == H("0300000c 01 00 0015 800e0080".replace(" ", ""))
    assert raw[36:] == H("00000008 05 00 0000".replace(" ", ""))
    assert SaPayload.decode_body(raw) == SaPayload((p,))


ALL_PAYLOADS = [
    SaPayload(
        (
            Proposal(1, ProtocolId.IKE, b"", (Transform(1, 20, 128), Transform(2, 5), Transform(4, 31))),
            Proposal(2, ProtocolId.IKE, b"", (Transform(1, 20, 256), Transform(2, 5), Transform(4, 19))),
        )
    ),
    KePayload(31, bytes(range(32))),
    NoncePayload(bytes(32)),
    IdiPayload(12, bytes(8)),
    IdrPayload(2, b"responder.test"),
    CertPayload(4, b"\x30\x00"),
    CertReqPayload(4, bytes(20)),
    AuthPayload(2, bytes(32)),
    NotifyPayload(16393, ProtocolId.FC_ESP_HEADER, H("01020304")),
    NotifyPayload(17, data=H("001f")),
    DeletePayload(ProtocolId.FC_ESP_HEADER, (H("01020304"), H("05060708"))),
    DeletePayload(ProtocolId.IKE),
    VendorIdPayload(b"edifd"),
    TsiPayload((FcSelector(1, 2, 0, 0x0F, 8, 8),)),
    TsrPayload((Ipv4Selector("127.0.0.1", "127.0.0.1", 17, 500, 500), RawSelector(8, bytes(36)))),
    UnknownPayload(99, True, b"xyz"),
]


def test_chain_round_trip_of_every_payload_kind() -> None:
    first, data = encode_chain(ALL_PAYLOADS)
    assert decode_chain(first, data) == ALL_PAYLOADS


def test_unknown_payload_keeps_its_critical_bit() -> None:
    first, data = encode_chain([UnknownPayload(99, True, b"")])
    assert data[1] == 0x80 and decode_chain(first, data)[0].critical


def test_plain_message_round_trip_and_header() -> None:
    msg = Message(
        H("0102030405060708"),
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        False,
        True,
        (KePayload(31, bytes(32)), NoncePayload(bytes(16))),
    )
    raw = encode_plain(msg)
    hdr = decode_header(raw)
    assert raw[16:20] == bytes([PayloadType.KE, 0x20, 34, 0x08]) and hdr.length == len(raw)
    assert open_message(raw, None) == msg


def test_protected_message_round_trip_and_aad() -> None:
    aead = SkAead(bytes(range(20)))
    msg = Message(
        bytes(8),
        bytes(8),
        ExchangeType.INFORMATIONAL,
        5,
        True,
        False,
        (DeletePayload(ProtocolId.FC_ESP_HEADER, (H("01020304"),)),),
    )
    raw = encode_protected(msg, aead, H("0000000000000001"))
    assert raw[16] == PayloadType.SK and raw[28] == PayloadType.DELETE
    assert open_message(raw, aead) == msg
    _, outer = decode(raw)
    assert isinstance(outer[0], SkPayload)
    tampered = bytearray(raw)
    tampered[21] ^= 1  # message ID is in the AAD
    with pytest.raises(IkeError):
        open_message(bytes(tampered), aead)
    with pytest.raises(IkeError):
        open_message(raw, None)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        bytes(27),
        bytes(28),  # too short / length field 0
        bytes(16) + bytes([0, 0x10, 34, 0]) + struct.pack(">II", 0, 28),  # major version 1
        bytes(16) + bytes([0, 0x20, 34, 0]) + struct.pack(">II", 0, 40),  # length beyond data
        bytes(16) + bytes([40, 0x20, 34, 0]) + struct.pack(">II", 0, 32) + H("00000008"),  # nonce too short
        bytes(16) + bytes([33, 0x20, 34, 0]) + struct.pack(">II", 0, 32) + H("00000004"),  # empty SA
    ],
)
def test_malformed_messages_raise_parse_error(bad: bytes) -> None:
    with pytest.raises(ParseError):
        decode(bad)


def test_sk_must_be_last() -> None:
    with pytest.raises(ParseError):
        encode_chain([SkPayload(0, b""), NoncePayload(bytes(16))])


def test_non_esp_marker_framing() -> None:
    assert needs_marker(5600, 5500) and not needs_marker(500, 5500) and not needs_marker(5600, 500)
    assert frame(b"ike", True) == NON_ESP_MARKER + b"ike" and frame(b"ike", False) == b"ike"
    assert unframe(NON_ESP_MARKER + b"ike", True) == b"ike" and unframe(b"ike", False) == b"ike"
    with pytest.raises(ParseError):
        unframe(b"\x01\x02\x03\x04ike", True)


# --- fuzzing: only IkeError may escape ----------------------------------------------------------------------

_AEAD = SkAead(bytes(range(20)))
_VALID = [
    encode_plain(Message(bytes(range(8)), bytes(8), 34, 0, False, True, tuple(ALL_PAYLOADS[:-1]))),
    encode_protected(
        Message(bytes(8), bytes(8), 37, 1, False, True, tuple(ALL_PAYLOADS[3:9])), _AEAD, bytes(8)
    ),
]


def _only_ike_errors(fn, data: bytes) -> None:
    try:
        fn(data)
    except IkeError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_ike_errors(decode, data)
    _only_ike_errors(lambda d: open_message(d, _AEAD), data)
    for first in (33, 34, 35, 37, 39, 41, 42, 44, 46, 99):
        _only_ike_errors(lambda d, f=first: decode_chain(f, d), data)
    _only_ike_errors(SaPayload.decode_body, data)
    _only_ike_errors(TsPayload.decode_body, data)
    _only_ike_errors(Transform.decode, data)
    _only_ike_errors(Proposal.decode, data)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_VALID),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_mutated_valid_messages(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, val in flips:
        data[pos % len(data)] = val
    mutated = bytes(data[: len(data) - cut % len(data)])
    _only_ike_errors(decode, mutated)
    _only_ike_errors(lambda d: open_message(d, _AEAD), mutated)
    # With a consistent header length, the payload chain parser itself gets exercised.
    fixed = mutated[:24] + struct.pack(">I", len(mutated)) + mutated[28:] if len(mutated) >= 28 else mutated
    _only_ike_errors(decode, fixed)


@given(
    st.integers(0, 0xFFFFFF),
    st.integers(0, 0xFFFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_fc_selector_round_trip(a: int, b: int, r1: int, r2: int, t1: int, t2: int) -> None:
    ts = FcSelector(a, b, r1, r2, t1, t2)
    assert len(ts.encode()) == 16
    assert FcSelector.decode(ts.encode()) == ts
