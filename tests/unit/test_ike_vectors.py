"""Public test vectors (SP 800-135 IKEv2 KDF, GCM case 4, RFC 7748 §6.1, RFC 4231) through edifd.ike."""

from __future__ import annotations

import pytest

from edifd.ike.codes import DhGroup, PrfId
from edifd.ike.crypto import (
    KeyExchange,
    Prf,
    SkAead,
    child_keymat,
    derive_ike_keys,
    rekey_skeyseed,
    skeyseed,
    split_child_keymat,
)
from edifd.ike.errors import CryptoError

H = bytes.fromhex

# SP 800-135 CAVS IKEv2 KDF vector (PRF HMAC-SHA1), from libreswan's CAVS test program.
G_IR = H("4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52")
G_IR_NEW = H("863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330")
NI, NR = H("32b50d5f4a3763f3"), H("9206a04b26564cb1")
SPI_I, SPI_R = H("34c9e7c188868785"), H("3ff77d760d2b2199")
SKEYSEED = H("a9a7b222b59f8f48645f28a1db5b5f5d7479cba7")
DKM = H(
    "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002a2a63080e514a062768b76606f9fa5e992204fc5"
    "a670bde3f10d6b027113936a5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd11198af1670b143d384b"
    "d275c5f594cf266b05ebadca855e4249520a441a81157435a7a56cc4"
)
DKM_CHILD = H(
    "8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c5811a8e7b5d1cdabd9560b2d5e092d1f24e2d4b"
    "85eccdf0ad0dc9abd94b51ee71814ca6dbc8bb51b6309f5b9545c7eb35cf5580b1e521a8fe20754a2d883ba0c2cf285f524aea"
    "6545b33106bc03e614296d319d41d4b50b3f510b1c0a22f3e664994d234cb4"
)
DKM_CHILD_DH = H(
    "bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d37301628190e38c66232eab4b3ab14c400a519"
    "7dd3730ed4820a8a10394d51e1c0400052f63ebd36b0e7ef53aaed31eba4a5080d7d4b5666023a8bbb5ffb7857240f9a05"
    "884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e27899c7054d56fd74c"
)
SKEYSEED_REKEY = H("63e81194946ebd05df7df5ebf5d8750056bf1f1d")

SHA1 = Prf(PrfId.HMAC_SHA1)


def test_cavs_vector_lengths_are_those_of_the_source() -> None:
    assert len(DKM) == len(DKM_CHILD) == len(DKM_CHILD_DH) == 132


def test_cavs_skeyseed() -> None:
    assert skeyseed(SHA1, NI, NR, G_IR) == SKEYSEED


def test_cavs_dkm_is_prf_plus_over_nonces_and_spis() -> None:
    assert SHA1.plus(SKEYSEED, NI + NR + SPI_I + SPI_R, 132) == DKM


def test_cavs_dkm_split_puts_sk_d_first() -> None:
    # 20-byte SHA-1 keys, 20-byte integrity keys, 16-byte encryption keys: SK_d = DKM[0:20] etc.
    keys = derive_ike_keys(SHA1, SKEYSEED, NI, NR, SPI_I, SPI_R, enc_len=16, integ_len=20)
    parts = [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]
    assert b"".join(parts) == DKM[: sum(len(p) for p in parts)]
    assert keys.sk_d == DKM[:20] and keys.sk_pr == DKM[112:132]


def test_cavs_child_keymat_without_pfs() -> None:
    sk_d = DKM[:20]
    assert SHA1.plus(sk_d, NI + NR, 132) == DKM_CHILD
    # Through the session's helper (2 × (key + salt)): a prefix of the same stream.
    assert child_keymat(SHA1, sk_d, NI, NR, key_len=16) == DKM_CHILD[:40]


def test_cavs_child_keymat_with_pfs() -> None:
    sk_d = DKM[:20]
    assert SHA1.plus(sk_d, G_IR_NEW + NI + NR, 132) == DKM_CHILD_DH
    assert child_keymat(SHA1, sk_d, NI, NR, key_len=32, shared=G_IR_NEW) == DKM_CHILD_DH[:72]


def test_cavs_rekeyed_skeyseed() -> None:
    assert rekey_skeyseed(SHA1, DKM[:20], G_IR_NEW, NI, NR) == SKEYSEED_REKEY


def test_keymat_split_aes128_and_aes256() -> None:
    km = bytes(range(40))
    k = split_child_keymat(km, 16)
    assert (k.i_to_r_key, k.i_to_r_salt, k.r_to_i_key, k.r_to_i_salt) == (
        km[:16],
        km[16:20],
        km[20:36],
        km[36:40],
    )
    km = bytes(range(72))
    k = split_child_keymat(km, 32)
    assert (k.i_to_r_key, k.i_to_r_salt, k.r_to_i_key, k.r_to_i_salt) == (
        km[:32],
        km[32:36],
        km[36:68],
        km[68:72],
    )
    with pytest.raises(CryptoError):
        split_child_keymat(km[:-1], 32)


def test_ike_key_split_aes128gcm16_prfsha256_is_136_bytes() -> None:
    prf = Prf(PrfId.HMAC_SHA2_256)
    keys = derive_ike_keys(prf, bytes(32), bytes(32), bytes(32), bytes(8), bytes(8), enc_len=20)
    assert [
        len(x) for x in (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)
    ] == [32, 0, 0, 20, 20, 32, 32]
    stream = prf.plus(bytes(32), bytes(80), 136)
    assert keys.sk_d + keys.sk_ei + keys.sk_er + keys.sk_pi + keys.sk_pr == stream
    assert keys.sk_d.hex() not in repr(keys) and keys.skeyseed.hex() not in repr(keys)


def test_prf_plus_refuses_more_than_255_blocks() -> None:
    with pytest.raises(CryptoError):
        Prf(PrfId.HMAC_SHA2_256).plus(b"k", b"s", 255 * 32 + 1)
    assert len(Prf(PrfId.HMAC_SHA2_256).plus(b"k", b"s", 255 * 32)) == 255 * 32


# AES-GCM, GCM spec test case 4 with the ESP salt‖IV split (RFC 4106 nonce).
GCM_K, GCM_SALT, GCM_IV = H("feffe9928665731c6d6a8f9467308308"), H("cafebabe"), H("facedbaddecaf888")
GCM_A = H("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_P = H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aed"
    "f5aa0de657ba637b39"
)
GCM_C = H(
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b39"
    "6a0aac973d58e091"
)
GCM_T = H("5bc94fbc3221a5db94fae95ae7121a47")


def test_aes_gcm_test_case_4_with_esp_nonce() -> None:
    aead = SkAead(GCM_K + GCM_SALT, icv_len=16)
    assert aead.encrypt(GCM_IV, GCM_P, GCM_A) == GCM_C + GCM_T
    assert aead.decrypt(GCM_IV, GCM_C + GCM_T, GCM_A) == GCM_P


@pytest.mark.parametrize("icv", [8, 12])
def test_aes_gcm_truncated_icv_is_a_prefix_of_the_full_tag(icv: int) -> None:
    aead = SkAead(GCM_K + GCM_SALT, icv_len=icv)
    assert aead.encrypt(GCM_IV, GCM_P, GCM_A) == GCM_C + GCM_T[:icv]
    assert aead.decrypt(GCM_IV, GCM_C + GCM_T[:icv], GCM_A) == GCM_P


def test_aes_gcm_rejects_a_flipped_bit_in_tag_aad_or_ciphertext() -> None:
    aead = SkAead(GCM_K + GCM_SALT)
    good = GCM_C + GCM_T
    for data, aad in (
        (good[:-1] + bytes([good[-1] ^ 1]), GCM_A),
        (good, GCM_A[:-1] + b"\x00"),
        (bytes([good[0] ^ 0x80]) + good[1:], GCM_A),
    ):
        with pytest.raises(CryptoError):
            aead.decrypt(GCM_IV, data, aad)


# X25519, RFC 7748 §6.1.
ALICE_PRIV = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X_SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748() -> None:
    alice, bob = KeyExchange(DhGroup.CURVE25519, ALICE_PRIV), KeyExchange(DhGroup.CURVE25519, BOB_PRIV)
    assert alice.public == ALICE_PUB and bob.public == BOB_PUB
    assert alice.shared(BOB_PUB) == bob.shared(ALICE_PUB) == X_SHARED


def test_x25519_rejects_low_order_point_and_bad_length() -> None:
    alice = KeyExchange(DhGroup.CURVE25519, ALICE_PRIV)
    for bad in (bytes(32), bytes(31), bytes([1]) + bytes(31)):
        with pytest.raises(CryptoError):
            alice.shared(bad)


def test_ecp256_shared_secret_is_the_x_coordinate_and_symmetric() -> None:
    a, b = KeyExchange(DhGroup.ECP_256, bytes([1]) * 32), KeyExchange(DhGroup.ECP_256, bytes([2]) * 32)
    assert len(a.public) == 64
    assert a.shared(b.public) == b.shared(a.public)
    assert len(a.shared(b.public)) == 32
    with pytest.raises(CryptoError):
        a.shared(bytes(64))  # not on the curve


def test_hmac_sha256_rfc4231_test_case_2() -> None:
    prf = Prf(PrfId.HMAC_SHA2_256)
    assert prf(b"Jefe", b"what do ya want for nothing?") == H(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
