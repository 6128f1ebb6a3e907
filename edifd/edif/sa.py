"""One unidirectional Security Association: SPI, cipher, key and salt, and its per-SA state.

Key material lives in `bytearray`s so `zeroize()` can overwrite it in place when the SA is
deleted. What that does and does not achieve in Python (docs/edif.md "Zeroization"):
- it clears *our* copy; with cryptography 38 (Debian 12) `AESGCM` keeps a reference to that same
  bytearray and builds a fresh OpenSSL context per call, so nothing else of ours holds the key;
- cryptography >= 42 copies the key into its own object at construction; we drop that object on
  delete, but its memory is freed, not wiped, by Python;
- copies the caller made before handing us the key (the SA_UPDATE body is immutable `bytes`, the
  channel buffer, IKE's KEYMAT) are out of our reach, and the garbage collector may keep any
  freed buffer around. Zeroization narrows the window; it is not a guarantee.
Neither repr() nor any message built here contains key or salt bytes.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edifd.proto import Cipher, SaDirection

from .errors import EdifError
from .replay import DEFAULT_WINDOW, MAX_SEQ, ReplayWindow

SALT_LEN = 4  # RFC 4106 §4: the nonce is salt(4) ‖ IV(8)
# cryptography >= 45 can write into a caller's buffer; Debian 12's 38 cannot (and wants bytes inputs).
HAS_AEAD_INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")
_GMAC = frozenset({Cipher.AES_GMAC_128, Cipher.AES_GMAC_256})


# IKEv2 transform IDs (RFC 5282 / RFC 4543) of the child SAs we accept, by key length in bits.
_IKE_CIPHERS = {
    (20, 128): Cipher.AES_GCM_128,  # ENCR_AES_GCM_16
    (20, 256): Cipher.AES_GCM_256,
    (21, 128): Cipher.AES_GMAC_128,  # ENCR_NULL_AUTH_AES_GMAC
    (21, 256): Cipher.AES_GMAC_256,
}


def cipher_from_ike(encr_id: int, key_bits: int) -> Cipher:
    """The SA_UPDATE cipher for a negotiated child SA transform (e.g. ChildSaEstablished.cipher's
    `encr`, `key_bits`), for code that installs IKE results directly (the target side)."""
    try:
        return _IKE_CIPHERS[int(encr_id), int(key_bits)]
    except (KeyError, TypeError, ValueError):
        raise EdifError(f"no ESP cipher for IKE transform {encr_id!r} with {key_bits!r}-bit keys") from None


def sa_problem(spi: object, cipher: object, key: object, salt: object) -> str | None:
    """Why these SA parameters are unusable, or None. The text never shows key or salt bytes."""
    if not isinstance(spi, int) or isinstance(spi, bool) or not 0 <= spi <= 0xFFFFFFFF:
        return f"SPI must be a 32-bit unsigned int, got {type(spi).__name__}"
    if spi == 0:
        return "SPI 0 is reserved (RFC 4303)"
    if not isinstance(cipher, Cipher):
        return f"cipher must be a Cipher, got {type(cipher).__name__}"
    if not isinstance(key, bytes | bytearray | memoryview):
        return "key must be bytes-like"
    if len(key) != cipher.key_size:
        return f"key length {len(key)} does not match {cipher.name} ({cipher.key_size} bytes)"
    if not isinstance(salt, bytes | bytearray | memoryview) or len(salt) != SALT_LEN:
        return f"salt must be {SALT_LEN} bytes"
    return None


class SecurityAssociation:
    """An installed SA. TX SAs hand out sequence numbers; RX SAs own a replay window."""

    __slots__ = ("direction", "spi", "cipher", "gmac", "seq", "window", "frames", "bytes",
                 "rekey_warned", "_key", "_salt", "_aead")

    def __init__(
        self,
        direction: SaDirection,
        spi: int,
        cipher: Cipher,
        key: bytes | bytearray,
        salt: bytes | bytearray,
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        problem = sa_problem(spi, cipher, key, salt)
        if problem:
            raise EdifError(problem)
        try:
            self.direction = SaDirection(direction)
        except ValueError:
            raise EdifError(f"unknown SA direction {direction!r}") from None
        self.spi = spi
        self.cipher = cipher
        self.gmac = cipher in _GMAC
        self.seq = 0  # TX: the last sequence number handed out (the first frame carries 1)
        self.window: ReplayWindow | None = ReplayWindow(window) if self.direction is SaDirection.RX else None
        self.frames = 0
        self.bytes = 0
        self.rekey_warned = False
        self._key = bytearray(key)
        self._salt = bytearray(salt)
        self._aead: AESGCM | None = AESGCM(self._key)

    # --- identity ----------------------------------------------------------------------------

    def same_material(self, cipher: Cipher, key: bytes | bytearray, salt: bytes | bytearray) -> bool:
        """True if an SA_UPDATE for this SPI carries the same cipher, key and salt (constant time)."""
        if self._aead is None:
            return False
        same_key = hmac.compare_digest(bytes(self._key), bytes(key))
        same_salt = hmac.compare_digest(bytes(self._salt), bytes(salt))
        return cipher is self.cipher and same_key and same_salt

    @property
    def alive(self) -> bool:
        return self._aead is not None

    # --- sequence numbers (TX) ---------------------------------------------------------------

    def next_seq(self) -> int | None:
        """The next TX sequence number, or None once 2^32-1 was used: the GCM IV must never repeat
        under one key, so the counter never wraps (RFC 4303 §3.3.3)."""
        if self.seq >= MAX_SEQ:
            return None
        self.seq += 1
        return self.seq

    # --- AEAD --------------------------------------------------------------------------------

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """ciphertext ‖ 16-byte tag (GCM), or just the tag over aad (GMAC callers pass b"")."""
        if self._aead is None:
            raise EdifError(f"SA 0x{self.spi:08x} is deleted")
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, iv: bytes, data: bytes, aad: bytes) -> bytes:
        """Verify and decrypt; raises cryptography's InvalidTag on a bad ICV."""
        if self._aead is None:
            raise EdifError(f"SA 0x{self.spi:08x} is deleted")
        return self._aead.decrypt(self._salt + iv, data, aad)

    def seal_into(self, iv: bytes, plaintext: bytes | memoryview, aad: bytes | memoryview,
                  out: memoryview) -> None:
        """`seal` written into `out` (exactly len(plaintext) + 16 bytes): the data path's form."""
        aead = self._aead
        if aead is None:
            raise EdifError(f"SA 0x{self.spi:08x} is deleted")
        if HAS_AEAD_INTO:
            aead.encrypt_into(self._salt + iv, plaintext, aad, out)
        else:
            out[:] = aead.encrypt(self._salt + iv, bytes(plaintext), bytes(aad))

    def open_into(self, iv: bytes, data: memoryview, aad: memoryview, out: memoryview) -> bytes | memoryview:
        """`open` of ciphertext ‖ tag `data`, the clear bytes in `out` (len(data) - 16 bytes) where the
        installed cryptography can, else as new bytes; raises InvalidTag. Nothing is returned, and
        nothing of `out` is to be trusted, unless the ICV verified."""
        aead = self._aead
        if aead is None:
            raise EdifError(f"SA 0x{self.spi:08x} is deleted")
        if HAS_AEAD_INTO:
            aead.decrypt_into(self._salt + iv, data, aad, out)
            return out
        return aead.decrypt(self._salt + iv, bytes(data), bytes(aad))

    def aead_and_salt(self) -> tuple[AESGCM, bytearray]:
        """The cipher object and the salt, for the bulk data path of edifd.edif.esp, which seals and
        opens a whole sequence without a call per frame through `seal_into`/`open_into`. Used for the
        frames of one call and dropped then, so `zeroize` still ends this SA's last AESGCM object."""
        if self._aead is None:
            raise EdifError(f"SA 0x{self.spi:08x} is deleted")
        return self._aead, self._salt

    def zeroize(self) -> None:
        """Overwrite key and salt in place and drop the AEAD object (see the module docstring)."""
        self._key[:] = bytes(len(self._key))
        self._salt[:] = bytes(len(self._salt))
        self._aead = None

    def __repr__(self) -> str:
        state = "" if self.alive else ", deleted"
        return (f"SecurityAssociation({self.direction.name}, spi=0x{self.spi:08x}, {self.cipher.name}, "
                f"seq={self.seq}, frames={self.frames}{state})")

    def snapshot(self) -> dict[str, object]:
        """Status view: no key material."""
        d: dict[str, object] = {"direction": self.direction.name, "spi": self.spi,
                                "cipher": self.cipher.name, "frames": self.frames, "bytes": self.bytes}
        if self.window is not None:
            d["highest_seq"] = self.window.highest
        else:
            d["seq"] = self.seq
        return d
