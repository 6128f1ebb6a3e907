"""IKEv2 key derivation (RFC 7296 §2.13-2.18), AES-GCM for the SK payload (RFC 5282) and key exchange.

Only `cryptography` APIs present in version 38 (Debian 12) are used.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .codes import DhGroup, EncrId, PrfId
from .errors import CryptoError

_HASHES = {
    PrfId.HMAC_SHA1: "sha1",
    PrfId.HMAC_SHA2_256: "sha256",
    PrfId.HMAC_SHA2_384: "sha384",
    PrfId.HMAC_SHA2_512: "sha512",
}
SALT_LEN = 4  # RFC 4106/4543/5282: 4-byte salt appended to each AES-GCM/GMAC key
ICV_LEN = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16, EncrId.NULL_AUTH_AES_GMAC: 16}


class Prf:
    """A negotiated PRF (HMAC family). `hashlib` names the hash; the key length equals the output size."""

    def __init__(self, prf_id: int) -> None:
        if prf_id not in _HASHES:
            raise CryptoError(f"unsupported PRF {prf_id}")
        self.id = PrfId(prf_id)
        self._hash = _HASHES[self.id]
        self.size = hashlib.new(self._hash).digest_size

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self._hash).digest()

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (§2.13): T1 = prf(K, S|0x01), Tn = prf(K, Tn-1|S|n); at most 255 blocks."""
        if length > 255 * self.size:
            raise CryptoError("prf+ cannot produce that many bytes")
        out, t = bytearray(), b""
        for n in range(1, 256):
            if len(out) >= length:
                break
            t = self(key, t + seed + bytes([n]))
            out += t
        return bytes(out[:length])

    def __repr__(self) -> str:
        return f"Prf({self.id.name})"


@dataclass(frozen=True)
class IkeKeys:
    """The seven IKE SA keys; SK_ei/SK_er include the 4-byte salt (AEAD: SK_ai/SK_ar are empty)."""

    skeyseed: bytes = field(repr=False)
    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)


def skeyseed(prf: Prf, ni: bytes, nr: bytes, shared: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir), nonce data only."""
    return prf(ni + nr, shared)


def rekey_skeyseed(prf: Prf, old_sk_d: bytes, shared: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED for a rekeyed IKE SA (§2.18): prf(SK_d(old), g^ir(new) | Ni | Nr)."""
    return prf(old_sk_d, shared + ni + nr)


def derive_ike_keys(
    prf: Prf, seed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes, enc_len: int, integ_len: int = 0
) -> IkeKeys:
    """Split prf+(SKEYSEED, Ni|Nr|SPIi|SPIr) into SK_d|SK_ai|SK_ar|SK_ei|SK_er|SK_pi|SK_pr.

    enc_len is the key length including the salt (e.g. 20 for AES-GCM-128).
    """
    sizes = [prf.size, integ_len, integ_len, enc_len, enc_len, prf.size, prf.size]
    stream = prf.plus(seed, ni + nr + spi_i + spi_r, sum(sizes))
    parts, off = [], 0
    for s in sizes:
        parts.append(stream[off : off + s])
        off += s
    return IkeKeys(seed, *parts)


@dataclass(frozen=True)
class ChildKeys:
    """KEYMAT split (§2.17, RFC 4106 §8.1): initiator→responder key‖salt first, then responder→initiator."""

    i_to_r_key: bytes = field(repr=False)
    i_to_r_salt: bytes = field(repr=False)
    r_to_i_key: bytes = field(repr=False)
    r_to_i_salt: bytes = field(repr=False)


def child_keymat(
    prf: Prf, sk_d: bytes, ni: bytes, nr: bytes, key_len: int, shared: bytes | None = None
) -> bytes:
    """KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr) for two keys of key_len bytes plus a salt each."""
    seed = (shared or b"") + ni + nr
    return prf.plus(sk_d, seed, 2 * (key_len + SALT_LEN))


def split_child_keymat(keymat: bytes, key_len: int) -> ChildKeys:
    half = key_len + SALT_LEN
    if len(keymat) != 2 * half:
        raise CryptoError("KEYMAT has the wrong length")
    return ChildKeys(
        keymat[:key_len], keymat[key_len:half], keymat[half : half + key_len], keymat[half + key_len :]
    )


# --- SK payload AEAD (RFC 5282) -----------------------------------------------------------------------------


class SkAead:
    """AES-GCM with an 8-byte explicit IV and the ICV size of the negotiated transform (8, 12 or 16)."""

    IV_LEN = 8

    def __init__(self, key_and_salt: bytes, icv_len: int = 16) -> None:
        if len(key_and_salt) not in (16 + SALT_LEN, 24 + SALT_LEN, 32 + SALT_LEN):
            raise CryptoError("AES-GCM key must be 16, 24 or 32 bytes plus a 4-byte salt")
        if icv_len not in (8, 12, 16):
            raise CryptoError("AES-GCM ICV must be 8, 12 or 16 bytes")
        self._key = key_and_salt[:-SALT_LEN]
        self._salt = key_and_salt[-SALT_LEN:]
        self.icv_len = icv_len

    def __repr__(self) -> str:
        return f"SkAead(aes{len(self._key) * 8}, icv={self.icv_len})"

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Returns ciphertext ‖ ICV."""
        nonce = self._salt + iv
        if self.icv_len == 16:
            return AESGCM(self._key).encrypt(nonce, plaintext, aad)
        enc = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        ct = enc.update(plaintext) + enc.finalize()
        return ct + enc.tag[: self.icv_len]

    def decrypt(self, iv: bytes, data: bytes, aad: bytes) -> bytes:
        """Takes ciphertext ‖ ICV; raises CryptoError when the ICV does not verify."""
        if len(data) < self.icv_len or len(iv) != self.IV_LEN:
            raise CryptoError("SK payload too short for IV and ICV")
        nonce = self._salt + iv
        try:
            if self.icv_len == 16:
                return AESGCM(self._key).decrypt(nonce, data, aad)
            ct, tag = data[: -self.icv_len], data[-self.icv_len :]
            dec = Cipher(
                algorithms.AES(self._key), modes.GCM(nonce, tag, min_tag_length=self.icv_len)
            ).decryptor()
            dec.authenticate_additional_data(aad)
            return dec.update(ct) + dec.finalize()
        except InvalidTag:
            raise CryptoError("ICV check failed") from None


# --- key exchange (RFC 8031 for Curve25519, RFC 5903 for ECP-256) -------------------------------------------


class KeyExchange:
    """One ephemeral Diffie-Hellman key pair; `shared()` validates the peer's public value."""

    def __init__(self, group: int, private_bytes: bytes) -> None:
        self.group = DhGroup(group)
        if self.group == DhGroup.CURVE25519:
            self._x = x25519.X25519PrivateKey.from_private_bytes(private_bytes)
            self.public = self._x.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        elif self.group == DhGroup.ECP_256:
            scalar = int.from_bytes(private_bytes, "big") % (_P256_ORDER - 1) + 1
            self._ec = ec.derive_private_key(scalar, ec.SECP256R1())
            point = self._ec.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            self.public = point[1:]  # RFC 5903 §7: x ‖ y without the 0x04 prefix
        else:
            raise CryptoError(f"unsupported DH group {group}")

    @staticmethod
    def private_size(group: int) -> int:
        return 32 if group in (DhGroup.CURVE25519, DhGroup.ECP_256) else 0

    def __repr__(self) -> str:
        return f"KeyExchange({self.group.name})"

    def shared(self, peer: bytes) -> bytes:
        try:
            if self.group == DhGroup.CURVE25519:
                if len(peer) != 32:
                    raise CryptoError("Curve25519 public value must be 32 bytes")
                secret = self._x.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
                if secret == bytes(32):  # RFC 8031 §2: reject low-order points
                    raise CryptoError("Curve25519 shared secret is all zero")
                return secret
            if len(peer) != 64:
                raise CryptoError("ECP-256 public value must be 64 bytes")
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + peer)
            return self._ec.exchange(ec.ECDH(), pub)  # the x coordinate (RFC 5903 §9)
        except CryptoError:
            raise
        except (ValueError, TypeError):
            raise CryptoError("invalid peer key exchange value") from None


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
