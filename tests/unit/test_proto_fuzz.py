"""Property tests of edifd.proto.decode against generated and hostile input.

Proves: every message type round-trips; random buffers and mutated valid encodings (bit flips,
truncation, extension, overwrites) raise nothing but ProtocolError; no buffer decodes unless its
authenticated bytes are exactly an encoding made with the key; mutations that are re-MAC'd with
the right key (a buggy but keyed peer) still raise only ProtocolError, and whatever they decode
to re-encodes to the same bytes (one encoding per message); a message made with key A is a
bad-MAC error under key B.

Profiles: with CI=true each test runs 10,000 examples; otherwise a quick 300. They are applied
per test (not loaded globally) so other test modules keep their own settings.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edifd.proto import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    BadMacError,
    Message,
    ProtocolError,
    decode,
    encode,
)
from tests.support.strategies import messages

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

keys = st.binary(min_size=32, max_size=32)
KEY = bytes(range(7, 39))


def authenticated_region(data: bytes) -> bytes:
    n = struct.unpack_from(">I", data, 12)[0] if len(data) >= 16 else 0
    return data[: HEADER_SIZE + n]


def remac(buf: bytearray, key: bytes) -> bytes:
    """Recompute the MAC of a mutated buffer as the keyed sender would (per docs/protocol.md)."""
    if len(buf) < HEADER_SIZE:
        return bytes(buf)
    n = struct.unpack_from(">I", buf, 12)[0]
    body = bytes(buf[HEADER_SIZE : HEADER_SIZE + n])
    buf[40:72] = hmac.new(key, bytes(buf[:40]) + bytes(32) + body, hashlib.sha256).digest()
    return bytes(buf)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Apply 1-4 random mutations of the kinds an unreliable or hostile path produces."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "extend_zero", "extend_junk", "overwrite", "set_len"]))
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
    return bytes(buf)


@FUZZ
@given(data=st.data(), msg=messages(), other_key=keys, keyed=st.booleans())
def test_messages_round_trip_bind_to_the_key_and_resist_mutation(
    data: st.DataObject, msg: Message, other_key: bytes, keyed: bool
) -> None:
    """For a generated message of any type:

    1. it round-trips, padded to whole 512-byte blocks within MAX_MESSAGE_SIZE;
    2. under any other key it is a BadMacError;
    3. mutated (bit flips, truncation, extension, overwrites, length rewrites) it raises only
       ProtocolError. Unkeyed mutations are accepted only if the authenticated bytes are
       untouched (zero padding may differ). Keyed ones (re-MAC'd as a buggy peer holding the key
       would) reach the body parsers; an accepted buffer is exactly the encoding of what it
       decoded to (one encoding per message).
    """
    original = encode(msg, KEY)
    assert len(original) % 512 == 0 and len(original) <= MAX_MESSAGE_SIZE
    assert decode(original, KEY) == msg

    if other_key == KEY:
        other_key = bytes([KEY[0] ^ 1]) + KEY[1:]
    try:
        decode(original, other_key)
        raise AssertionError("decoded under the wrong key")
    except BadMacError:
        pass

    mutated = data.draw(mutations(original))
    if keyed:
        mutated = remac(bytearray(mutated), KEY)
    try:
        got = decode(mutated, KEY)
    except ProtocolError:
        return
    if keyed:
        assert authenticated_region(encode(got, KEY)) == authenticated_region(mutated)
    else:
        assert authenticated_region(mutated) == authenticated_region(original)
        assert got == msg


_PREFIXES = [b"", b"E", b"ED", b"EDI", b"EDIF", b"EDIF\x01", b"EDIF\x00", b"EDIF\x02"]


@FUZZ
@given(prefix=st.sampled_from(_PREFIXES), tail=st.binary(max_size=160), pad=st.integers(0, MAX_MESSAGE_SIZE))
def test_random_bytes_raise_only_protocol_error(prefix: bytes, tail: bytes, pad: int) -> None:
    data = (prefix + tail + bytes(pad))[: MAX_MESSAGE_SIZE + 1]
    try:
        decode(data, KEY)
    except ProtocolError:
        return
    raise AssertionError("random bytes decoded as a valid message")


@FUZZ
@given(
    head=st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 2, 0x8000]), st.integers(0, 0xFFFF)),
    ids=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    body=st.binary(max_size=240),
    declared=st.one_of(st.none(), st.integers(0, 5000)),
    pad=st.integers(0, 600),
    keyed=st.booleans(),
)
def test_random_frames_raise_only_protocol_error(
    head: tuple[int, int, int],
    ids: tuple[int, int, int],
    body: bytes,
    declared: int | None,
    pad: int,
    keyed: bool,
) -> None:
    """Frames with a valid magic and version and random everything else; half of them carry a
    correct MAC, so random types and bodies reach the body parsers."""
    t, flags, port = head
    n = len(body) if declared is None else declared
    prefix = b"EDIF" + struct.pack(">BBHHHIQQQ", 1, t, flags, port, 0, n, *ids)
    data = prefix + bytes(32) + body + bytes(pad)
    if keyed:
        data = remac(bytearray(data), KEY)
    try:
        got = decode(data, KEY)
    except ProtocolError:
        return
    assert keyed, "an unauthenticated frame decoded"
    assert authenticated_region(encode(got, KEY)) == authenticated_region(data)
