"""EpochKeys: the per-epoch AES-256-GCM keys of the channel (docs/security.md, RFC 5869, RFC 5116).

The known answers are computed here twice, independently of edifd.proto.epoch_keys: with
cryptography's HKDF, and with HMAC-SHA-256 by hand (RFC 5869 §2.2 extract, §2.3 expand).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edifd.proto import (
    BadMacError,
    ChannelKey,
    Direction,
    EpochKeys,
    Keepalive,
    MalformedBodyError,
    Message,
    ProtocolError,
    decode,
    encode,
)

K = bytes.fromhex("3c" * 8 + "d1" * 8 + "07" * 8 + "e9" * 8)
NA = bytes(range(0x10, 0x30))
NH = bytes(range(0xB0, 0xD0))
PORT = 5
EPOCH = 0x0123456789ABCDEF
LABEL = b"edifd channel v2 epoch keys\x00"  # docs/security.md
AAD = b"EDIF" + bytes(44)
BODY = b"a body of some thirty-two bytes!"
DOWN, UP = Direction.DOWNSTREAM, Direction.UPSTREAM


def nonce(d: int, n: int) -> bytes:
    return struct.pack(">IQ", d, n)


def hkdf(key: bytes = K, port: int = PORT, na: bytes = NA, nh: bytes = NH, epoch: int = EPOCH) -> bytes:
    info = LABEL + struct.pack(">HQ", port, epoch)
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=na + nh, info=info).derive(key)


def hkdf_by_hand(key: bytes, port: int, na: bytes, nh: bytes, epoch: int) -> bytes:
    prk = hmac.new(na + nh, key, hashlib.sha256).digest()  # extract: HMAC(salt, IKM)
    info = LABEL + struct.pack(">HQ", port, epoch)
    t1 = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + info + b"\x02", hashlib.sha256).digest()
    return t1 + t2


def derive(
    key: object = K, port: int = PORT, na: bytes = NA, nh: bytes = NH, epoch: int = EPOCH
) -> EpochKeys:
    return EpochKeys.derive(key, port, na, nh, epoch)


def sealed(keys: EpochKeys, direction: Direction = DOWN, n: bytes = nonce(1, 7)) -> bytes:
    ct, tag = keys.seal(direction, n, AAD, BODY)
    return ct + tag


def test_known_answer_against_an_independent_hkdf() -> None:
    okm = hkdf()
    assert okm == hkdf_by_hand(K, PORT, NA, NH, EPOCH)  # the two references agree
    keys = derive()
    for direction, k in ((DOWN, okm[:32]), (UP, okm[32:])):
        for n in (nonce(1, 7), nonce(2, 0), nonce(3, (1 << 64) - 1)):
            ct, tag = keys.seal(direction, n, AAD, BODY)
            assert ct + tag == AESGCM(k).encrypt(n, BODY, AAD)
            assert len(ct) == len(BODY) and len(tag) == 16
            assert keys.open(direction, n, AAD, ct, tag) == BODY
            assert AESGCM(k).decrypt(n, ct + tag, AAD) == BODY


def test_derivation_is_deterministic() -> None:
    assert sealed(derive()) == sealed(derive()) == sealed(derive(ChannelKey(K)))
    assert sealed(derive(na=bytearray(NA), nh=bytearray(NH))) == sealed(derive())
    assert derive().epoch == EPOCH


@pytest.mark.parametrize(
    "changed",
    [
        {"key": bytes([K[0] ^ 1]) + K[1:]},
        {"key": bytes(32)},
        {"port": PORT + 1},
        {"port": PORT ^ 0x100},  # the high byte of the port index counts too
        {"na": bytes([NA[0] ^ 1]) + NA[1:]},
        {"na": NA[:-1] + bytes([NA[-1] ^ 0x80])},
        {"nh": bytes([NH[0] ^ 1]) + NH[1:]},
        {"nh": NH[:-1] + bytes([NH[-1] ^ 0x80])},
        {"na": NH, "nh": NA},  # the nonces swapped
        {"epoch": EPOCH + 1},
        {"epoch": EPOCH ^ (1 << 63)},
    ],
    ids=lambda d: ",".join(d),
)
def test_every_input_changes_both_keys(changed: dict) -> None:
    base, other = derive(), derive(**changed)
    expect = hkdf(**changed)
    assert expect[:32] != hkdf()[:32] and expect[32:] != hkdf()[32:]
    for direction in (DOWN, UP):
        a, b = sealed(base, direction), sealed(other, direction)
        assert a != b
        with pytest.raises(BadMacError):
            other.open(direction, nonce(1, 7), AAD, a[:-16], a[-16:])
        assert b == AESGCM(expect[:32] if direction is DOWN else expect[32:]).encrypt(nonce(1, 7), BODY, AAD)


def test_down_and_up_keys_differ() -> None:
    keys = derive()
    okm = hkdf()
    assert okm[:32] != okm[32:]
    n = nonce(1, 7)
    down, up = sealed(keys, DOWN, n), sealed(keys, UP, n)
    assert down != up  # same nonce, same body, other key
    with pytest.raises(BadMacError):
        keys.open(UP, n, AAD, down[:-16], down[-16:])  # a downstream message does not open as upstream
    with pytest.raises(BadMacError):
        keys.open(DOWN, n, AAD, up[:-16], up[-16:])


def test_a_sealed_downstream_message_does_not_open_as_upstream_through_the_codec() -> None:
    keys = derive()
    data = encode(Message(Keepalive(), PORT, EPOCH, 1, 7), K, keys=keys)
    swapped = EpochKeys(EPOCH, keys._up, keys._down)  # a receiver that mixed up the directions
    with pytest.raises(BadMacError):
        decode(data, K, keys=swapped)
    assert decode(data, K, keys=keys).sequence == 7


def test_open_refuses_any_change() -> None:
    keys = derive()
    ct, tag = keys.seal(DOWN, nonce(1, 7), AAD, BODY)
    bad = [
        (nonce(1, 8), AAD, ct, tag),  # another sequence
        (nonce(2, 7), AAD, ct, tag),  # another direction's nonce
        (nonce(1, 7), AAD[:-1] + b"\x01", ct, tag),  # header changed
        (nonce(1, 7), AAD, bytes([ct[0] ^ 1]) + ct[1:], tag),  # ciphertext changed
        (nonce(1, 7), AAD, ct[:-1], tag),  # ciphertext cut
        (nonce(1, 7), AAD, ct, bytes([tag[0] ^ 1]) + tag[1:]),  # tag changed
        (nonce(1, 7), AAD, ct, tag[:12]),  # tag cut
        (nonce(1, 7), AAD, ct, b""),
    ]
    for n, aad, c, t in bad:
        with pytest.raises(BadMacError) as info:
            keys.open(DOWN, n, aad, c, t)
        assert info.value.reason == "bad_mac"
    assert keys.open(DOWN, nonce(1, 7), AAD, ct, tag) == BODY


def test_repr_and_str_never_show_key_bytes() -> None:
    keys = derive()
    okm = hkdf()
    texts = [repr(keys), str(keys), f"{keys}", f"{keys!r}", repr([keys]), repr({EPOCH: keys}), f"{keys}"]
    for text in texts:
        for secret in (okm[:32], okm[32:], K):
            assert secret.hex() not in text.lower()
            assert secret.hex()[:16] not in text.lower()
            assert repr(secret)[2:-1] not in text
        assert "AESGCM" not in text and "_down" not in text and "_up" not in text
        assert "0x123456789abcdef" in text  # the epoch, and only that
    assert repr(keys) == str(keys) == "EpochKeys(epoch=0x123456789abcdef)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"na": NA[:31]},
        {"na": NA + b"\x00"},
        {"na": b""},
        {"nh": NH[:16]},
        {"nh": NH + NH},
        {"na": "x" * 32},
        {"nh": None},
        {"na": 0},
        {"epoch": 0},
        {"epoch": -1},
        {"epoch": 1 << 64},
        {"epoch": "1"},
        {"epoch": 1.0},
        {"port": -1},
        {"port": 1 << 16},
        {"port": None},
        {"port": "0"},
    ],
    ids=repr,
)
def test_bad_inputs_are_malformed_body_errors(kwargs: dict) -> None:
    with pytest.raises(MalformedBodyError) as info:
        derive(**kwargs)
    assert isinstance(info.value, ProtocolError)
    assert K.hex() not in str(info.value) and NA.hex() not in str(info.value)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    for port in (0, 0xFFFF):
        for epoch in (1, (1 << 64) - 1):
            keys = derive(port=port, epoch=epoch)
            assert keys.epoch == epoch
            out = hkdf(port=port, epoch=epoch)
            assert sealed(keys, UP) == AESGCM(out[32:]).encrypt(nonce(1, 7), BODY, AAD)


def test_the_label_is_its_own() -> None:
    # Distinct from the APP_START proof labels and from anything a message MAC covers (b"EDIF...").
    assert LABEL != b"edifd app-start agent proof v1\x00" and LABEL != b"edifd app-start host proof v1\x00"
    assert not LABEL.startswith(b"EDIF")
    from edifd.proto.epoch_keys import EPOCH_KEYS_LABEL

    assert EPOCH_KEYS_LABEL == LABEL
