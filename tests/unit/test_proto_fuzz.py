"""Property tests of edifd.proto.decode/encode (version 2) against generated and hostile input.

Proves: every message type round-trips, sealed (epoch != 0, not a heartbeat) and unsealed, and
its encoding is exactly what the documented derivation, AES-256-GCM and HMAC give
(tests/support/proto.py's independent model); random buffers and mutated valid encodings (bit
flips, truncation, extension, overwrites) raise nothing but ProtocolError; no buffer decodes
unless its authenticated bytes (header, auth field, body or ciphertext) are exactly an encoding
made with the keys; mutations that are re-sealed or re-MAC'd with the right keys (a buggy but
keyed peer) still raise only ProtocolError, and whatever they decode to re-encodes to the same
bytes (one encoding per message); nothing opens under another channel key, another epoch's keys,
keys of another handshake or port, or the other direction's key; a ciphertext never holds its
plaintext; two sequence numbers never give the same ciphertext; an ack rides only on a sealed
downstream message.

Profiles: with CI=true each test runs 10,000 examples; otherwise a quick 300. They are applied
per test (not loaded globally) so other test modules keep their own settings.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import pytest
from hypothesis import HealthCheck, Phase, assume, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from edifd.proto import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    BadMacError,
    Direction,
    MalformedHeaderError,
    Message,
    MessageType,
    ProtocolError,
    SaFlags,
    UnknownEpochError,
    decode,
)
from tests.support.proto import (
    AGENT_NONCE,
    HOST_NONCE,
    KEY,
    back,
    keys_for,
    reauth,
    seal_frame,
    unsealed,
    wire,
)
from tests.support.strategies import messages, messages_of

_COMMON = {
    "deadline": None,  # a shared 2-core box: no timing in tests
    "database": None,  # keep the shared checkout free of example databases
    "print_blob": True,  # without a database, a failure prints the blob that reproduces it
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("edifd-proto-fuzz-ci", max_examples=10_000, **_COMMON)
settings.register_profile("edifd-proto-fuzz-dev", max_examples=300, **_COMMON)
FUZZ = settings.get_profile(
    "edifd-proto-fuzz-ci" if os.environ.get("CI", "").lower() == "true" else "edifd-proto-fuzz-dev"
)

channel_keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=32, max_size=32)
sealed_messages = messages().filter(lambda m: m.sealed)


def authenticated_region(data: bytes) -> bytes:
    """Header (with the auth field) and body or ciphertext: everything but the zero padding."""
    n = struct.unpack_from(">I", data, 12)[0] if len(data) >= 16 else 0
    return data[: HEADER_SIZE + n]


def own_keys(msg: Message):
    return keys_for(msg.epoch, KEY, msg.port_index) if msg.epoch else None


def differ(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Apply 1-4 random mutations of the kinds an unreliable or hostile path produces."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "extend_zero", "extend_junk", "overwrite", "set_len", "field"]
            )
        )
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif op == "extend_zero":
            buf += bytes(draw(st.integers(1, 600)))
        elif op == "extend_junk":
            buf += draw(st.binary(min_size=1, max_size=64))
        elif op == "overwrite" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            chunk = draw(st.binary(min_size=1, max_size=8))
            buf[i : i + len(chunk)] = chunk
        elif op == "set_len" and len(buf) >= 16:
            struct.pack_into(">I", buf, 12, draw(st.integers(0, 5000)))
        elif op == "field" and len(buf) >= 48:  # a whole header field: type, port, epoch .. ack
            off, fmt = draw(
                st.sampled_from([(5, ">B"), (8, ">H"), (16, ">Q"), (24, ">Q"), (32, ">Q"), (40, ">Q")])
            )
            struct.pack_into(fmt, buf, off, draw(st.integers(0, (1 << (8 * struct.calcsize(fmt))) - 1)))
    return bytes(buf)


@FUZZ
@given(msg=messages())
def test_every_message_round_trips_and_matches_the_model(msg: Message) -> None:
    """Sealed and unsealed: a round trip, and the bytes the documented construction gives."""
    original = wire(msg)
    assert len(original) % 512 == 0 and len(original) <= MAX_MESSAGE_SIZE
    assert decode(original, KEY, keys=own_keys(msg)) == msg
    assert reauth(unsealed(original)) == original  # independent HKDF + AESGCM / HMAC agree
    if msg.sealed:
        assert msg.type is not MessageType.HEARTBEAT and msg.epoch != 0
    else:
        assert decode(original, KEY) == msg  # an unsealed message needs no epoch keys


@FUZZ
@given(msg=messages(), other_key=channel_keys, na=nonces, nh=nonces, port=st.integers(0, 0xFFFF))
def test_nothing_opens_under_other_keys(
    msg: Message, other_key: bytes, na: bytes, nh: bytes, port: int
) -> None:
    original = wire(msg)
    if other_key == KEY:
        other_key = differ(KEY)
    try:
        decode(
            original, other_key, keys=keys_for(msg.epoch, other_key, msg.port_index) if msg.epoch else None
        )
        raise AssertionError("decoded under the wrong channel key")
    except BadMacError:
        pass
    if not msg.sealed:
        return
    # Another epoch's keys (of the same handshake): not even tried.
    for epoch in {msg.epoch ^ 1, msg.epoch ^ (1 << 63)} - {0}:
        try:
            decode(original, KEY, keys=keys_for(epoch, KEY, msg.port_index))
            raise AssertionError("decoded under another epoch's keys")
        except UnknownEpochError:
            pass
    # This epoch number under keys of another handshake, another port, or the other direction.
    if (na, nh) == (AGENT_NONCE, HOST_NONCE):
        na = differ(na)
    if port == msg.port_index:
        port ^= 1
    for keys in (
        keys_for(msg.epoch, KEY, msg.port_index, agent_nonce=na, host_nonce=nh),
        keys_for(msg.epoch, KEY, port),
    ):
        try:
            decode(original, KEY, keys=keys)
            raise AssertionError("decoded under keys of another handshake or port")
        except BadMacError:
            pass
    n = struct.unpack_from(">I", original, 12)[0]
    crossed = seal_frame(original[:48], msg.body.pack(), swap=True)
    assert crossed[: HEADER_SIZE + n] != authenticated_region(original)
    try:
        back(crossed)
        raise AssertionError("decoded under the other direction's key")
    except BadMacError:
        pass


@FUZZ
@given(data=st.data(), msg=messages(), keyed=st.booleans())
def test_mutations_raise_only_protocol_error(data: st.DataObject, msg: Message, keyed: bool) -> None:
    """Mutated (bit flips, truncation, extension, overwrites, length and field rewrites) a message
    raises only ProtocolError. Unkeyed mutations are accepted only if the authenticated bytes are
    untouched (zero padding may differ). Keyed ones (re-sealed or re-MAC'd as a buggy peer holding
    the keys would, over the plaintext) reach the body parsers; an accepted buffer is exactly the
    encoding of what it decoded to (one encoding per message)."""
    original = wire(msg)
    if keyed:
        mutated = reauth(data.draw(mutations(unsealed(original))))
    else:
        mutated = data.draw(mutations(original))
    try:
        # The keyed peer's receiver holds the keys of whatever epoch the header names; the other
        # holds its own epoch's keys and a few more.
        if keyed:
            got = back(mutated)
        else:
            held = [keys_for(e, KEY, msg.port_index) for e in {msg.epoch, msg.epoch ^ 1, 1} - {0}]
            got = decode(mutated, KEY, keys=held)
    except ProtocolError:
        return
    if keyed:
        assert authenticated_region(wire(got)) == authenticated_region(mutated)
    else:
        assert authenticated_region(mutated) == authenticated_region(original)
        assert got == msg


@FUZZ
@given(msg=sealed_messages, offset=st.integers(0, MAX_MESSAGE_SIZE), xor=st.integers(1, 255))
def test_any_byte_of_a_sealed_message_changed_is_refused(msg: Message, offset: int, xor: int) -> None:
    """Header, tag, tag padding or ciphertext: one byte changed and nothing decodes, even for a
    receiver that holds the keys of the neighbouring epochs and ports too."""
    original = wire(msg)
    region = authenticated_region(original)
    raw = bytearray(original)
    raw[offset % len(region)] ^= xor
    held = [keys_for(e, KEY, p) for e in {msg.epoch, msg.epoch ^ 1} - {0} for p in {msg.port_index, 0}]
    try:
        decode(bytes(raw), KEY, keys=held)
    except ProtocolError:
        return
    raise AssertionError(f"byte {offset % len(region)} changed and the message still decoded")


@FUZZ
@given(msg=sealed_messages)
def test_a_ciphertext_never_holds_its_plaintext(msg: Message) -> None:
    original = wire(msg)
    body = msg.body.pack()
    ciphertext = original[HEADER_SIZE : HEADER_SIZE + len(body)]
    assert len(ciphertext) == len(body)
    for i in range(0, len(body) - 7, 8):  # an 8-byte block survives encryption with p = 2**-64
        assert ciphertext[i : i + 8] != body[i : i + 8], f"plaintext at body offset {i}"
    if msg.type is MessageType.SA_UPDATE and not msg.body.flags & SaFlags.DELETE:
        secret = msg.body.salt + msg.body.key
        assert secret in body and secret not in ciphertext and msg.body.key not in ciphertext


@FUZZ
@given(msg=sealed_messages, other=st.integers(0, (1 << 64) - 1))
def test_two_sequence_numbers_never_share_a_ciphertext(msg: Message, other: int) -> None:
    """The nonce rule: the same body under another sequence number (an ACK: another ack) is sealed
    under another nonce, so its tag and keystream differ."""
    if msg.type is MessageType.ACK:
        assume(other != msg.ack)
        second = dataclasses.replace(msg, ack=other)
    else:
        assume(other != msg.sequence)
        second = dataclasses.replace(msg, sequence=other)
    a, b = wire(msg), wire(second)
    n = len(msg.body.pack())
    assert a[48:64] != b[48:64]  # tags
    if n >= 8:
        assert a[HEADER_SIZE : HEADER_SIZE + n] != b[HEADER_SIZE : HEADER_SIZE + n]
    assert back(b) == second


@FUZZ
@given(msg=messages(), ack=st.integers(1, (1 << 64) - 1))
def test_an_ack_rides_only_on_a_sealed_downstream_message(msg: Message, ack: int) -> None:
    carries = msg.sealed and msg.direction is Direction.DOWNSTREAM
    try:
        with_ack = dataclasses.replace(msg, ack=ack)
    except MalformedHeaderError:
        assert not carries
    else:
        assert carries
        assert back(wire(with_ack)).ack == ack
        return
    # On the wire, authenticated by a keyed but buggy sender: refused after authentication.
    raw = bytearray(unsealed(wire(msg)))
    struct.pack_into(">Q", raw, 40, ack)
    try:
        back(reauth(raw))
        raise AssertionError("an ack outside a sealed downstream message decoded")
    except MalformedHeaderError:
        pass


_PREFIXES = [b"", b"E", b"ED", b"EDI", b"EDIF", b"EDIF\x02", b"EDIF\x01", b"EDIF\x00", b"EDIF\x03"]


@FUZZ
@given(prefix=st.sampled_from(_PREFIXES), tail=st.binary(max_size=160), pad=st.integers(0, MAX_MESSAGE_SIZE))
def test_random_bytes_raise_only_protocol_error(prefix: bytes, tail: bytes, pad: int) -> None:
    data = (prefix + tail + bytes(pad))[: MAX_MESSAGE_SIZE + 1]
    try:
        back(data)
    except ProtocolError:
        return
    raise AssertionError("random bytes decoded as a valid message")


_u64 = st.integers(0, 2**64 - 1)


@FUZZ
@given(
    head=st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 2, 0x8000]), st.integers(0, 0xFFFF)),
    ids=st.tuples(st.one_of(st.just(0), _u64), _u64, _u64, st.one_of(st.just(0), _u64)),
    body=st.binary(max_size=240),
    declared=st.one_of(st.none(), st.integers(0, 5000)),
    pad=st.integers(0, 600),
    keyed=st.booleans(),
)
def test_random_frames_raise_only_protocol_error(
    head: tuple[int, int, int],
    ids: tuple[int, int, int, int],
    body: bytes,
    declared: int | None,
    pad: int,
    keyed: bool,
) -> None:
    """Frames with a valid magic and version and random everything else (epoch, request id,
    sequence, ack); half of them correctly sealed or MAC'd over a random plaintext, so random
    types and bodies reach the body parsers. The receiver holds the keys the header asks for."""
    t, flags, port = head
    n = len(body) if declared is None else declared
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQQ", 2, t, flags, port, 0, n, *ids)
    data = prefix + bytes(32) + body + bytes(pad)
    if keyed:
        data = reauth(data)
    try:
        got = back(data)
    except ProtocolError:
        return
    assert keyed, "an unauthenticated frame decoded"
    assert authenticated_region(wire(got)) == authenticated_region(data)


@pytest.mark.parametrize("msg_type", list(MessageType), ids=lambda t: t.name)
def test_every_type_is_generated_sealed_and_unsealed(msg_type: MessageType) -> None:
    """The strategies reach both paths for every type that has them (a guard on the properties)."""
    quick = settings(database=None, max_examples=2000, phases=[Phase.generate])
    for sealed in (True, False):
        possible = msg_type is not (MessageType.HEARTBEAT if sealed else MessageType.ACK)
        if possible:
            assert (
                find(messages_of(msg_type), lambda m, s=sealed: m.sealed is s, settings=quick).sealed
                is sealed
            )
        else:
            with pytest.raises(NoSuchExample):
                find(messages_of(msg_type), lambda m, s=sealed: m.sealed is s, settings=quick)
