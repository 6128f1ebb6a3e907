"""Configuration of one IKE SA: identities, credentials, proposals, child SA shape and transport profile."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cryptography import x509

from .codes import DhGroup, EncrId, IdType, PrfId, ProtocolId
from .errors import ConfigError, IkeError
from .payloads import FcSelector, Ipv4Selector, RawSelector

AUTH_ELS_PAYLOAD_MAX = 2112  # FC_MAX_PAYLOAD: one ELS frame
AUTH_ELS_HEADER_LEN = 12  # the AUTH_ELS header in front of the IKE message (docs/fc-wire.md)
AUTH_ELS_IKE_MAX = AUTH_ELS_PAYLOAD_MAX - AUTH_ELS_HEADER_LEN  # 2100 bytes of IKE message per frame


class TransportProfile(Enum):
    """How IKE messages travel. The core only uses it for the size limit; framing is the edge's job."""

    AUTH_ELS = "auth_els"  # FC: one IKE message per AUTH_ELS frame, no non-ESP marker
    UDP = "udp"  # interop: UDP; on ports other than 500 the edge prepends the 4-byte non-ESP marker


def _ascii(name: str) -> bytes:
    try:
        data = name.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(f"identity {name!r} is not ASCII") from None
    if not data:
        raise ConfigError("empty identity")
    return data


@dataclass(frozen=True)
class Identity:
    """An IKE identification (type + data); public information, safe to log."""

    id_type: IdType
    data: bytes

    @classmethod
    def wwpn(cls, wwpn: int | str | bytes) -> Identity:
        """ID_FC_NAME (12) with the 8-byte WWPN; accepts 0x2000..., '20:00:...' or 8 raw bytes."""
        if isinstance(wwpn, str):
            try:
                wwpn = int(wwpn.replace(":", ""), 16)
            except ValueError:
                raise ConfigError(f"not a WWPN: {wwpn!r}") from None
        if isinstance(wwpn, int) and not 0 <= wwpn < 1 << 64:
            raise ConfigError("a WWPN is 8 bytes")
        raw = wwpn.to_bytes(8, "big") if isinstance(wwpn, int) else bytes(wwpn)
        if len(raw) != 8:
            raise ConfigError("a WWPN is 8 bytes")
        return cls(IdType.FC_NAME, raw)

    @classmethod
    def fqdn(cls, name: str) -> Identity:
        return cls(IdType.FQDN, _ascii(name))

    @classmethod
    def email(cls, name: str) -> Identity:
        return cls(IdType.RFC822_ADDR, _ascii(name))

    @classmethod
    def ipv4(cls, addr: str) -> Identity:
        try:
            return cls(IdType.IPV4_ADDR, ipaddress.IPv4Address(addr).packed)
        except ValueError:
            raise ConfigError(f"not an IPv4 address: {addr!r}") from None

    @classmethod
    def key_id(cls, data: bytes) -> Identity:
        return cls(IdType.KEY_ID, bytes(data))

    def __str__(self) -> str:
        if self.id_type == IdType.FC_NAME:
            return self.data.hex(":")
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        if self.id_type == IdType.IPV4_ADDR and len(self.data) == 4:
            return str(ipaddress.IPv4Address(self.data))
        return f"{IdType(self.id_type).name}:{self.data.hex()}"


@dataclass(frozen=True)
class CipherSuite:
    """An AEAD transform with its key length: AES-GCM-16 (IKE and child) or GMAC (child only)."""

    encr: EncrId
    key_bits: int

    @property
    def key_len(self) -> int:
        return self.key_bits // 8


AES_GCM_16_128 = CipherSuite(EncrId.AES_GCM_16, 128)
AES_GCM_16_256 = CipherSuite(EncrId.AES_GCM_16, 256)
GMAC_128 = CipherSuite(EncrId.NULL_AUTH_AES_GMAC, 128)
GMAC_256 = CipherSuite(EncrId.NULL_AUTH_AES_GMAC, 256)


def _utcnow() -> datetime.datetime:
    # Default clock of the I/O edge; the core only calls what it is given (tests pass a fixed one).
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class IkeConfig:
    local_id: Identity
    remote_id: Identity | None = None  # None: any identity that authenticates (cert: vouched for by the CA)
    psk: bytes | None = field(default=None, repr=False)
    certificate: x509.Certificate | None = field(default=None, repr=False)
    private_key: object | None = field(default=None, repr=False)
    intermediates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    ca_certificates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    ike_ciphers: tuple[CipherSuite, ...] = (AES_GCM_16_128, AES_GCM_16_256)
    prfs: tuple[PrfId, ...] = (PrfId.HMAC_SHA2_256,)
    dh_groups: tuple[DhGroup, ...] = (DhGroup.CURVE25519, DhGroup.ECP_256)  # the first is sent in KE
    child_ciphers: tuple[CipherSuite, ...] = (AES_GCM_16_128, AES_GCM_16_256, GMAC_128, GMAC_256)
    child_protocol: ProtocolId = ProtocolId.FC_ESP_HEADER
    child_pfs_group: DhGroup | None = None  # KE in CREATE_CHILD_SA (PFS)
    local_ts: tuple[FcSelector | Ipv4Selector | RawSelector, ...] = (FcSelector(),)
    remote_ts: tuple[FcSelector | Ipv4Selector | RawSelector, ...] = (FcSelector(),)
    use_transport_mode: bool = False  # ESP interop only: send/accept N(USE_TRANSPORT_MODE)
    transport: TransportProfile = TransportProfile.AUTH_ELS
    nonce_len: int = 32
    rng: Callable[[int], bytes] = field(default=secrets.token_bytes, repr=False)
    clock: Callable[[], datetime.datetime] = field(default=_utcnow, repr=False)

    def __post_init__(self) -> None:
        has_cert = self.certificate is not None or self.private_key is not None
        if (self.psk is None) == (not has_cert):
            raise ConfigError("configure either a PSK or a certificate with its private key, not both")
        if has_cert and (self.certificate is None or self.private_key is None):
            raise ConfigError("certificate authentication needs both the certificate and its private key")
        if self.psk is not None and len(self.psk) < 1:
            raise ConfigError("empty PSK")
        if has_cert and not self.ca_certificates:
            raise ConfigError("certificate authentication needs at least one CA certificate")
        if not self.ike_ciphers or not self.prfs or not self.dh_groups or not self.child_ciphers:
            raise ConfigError("every proposal list needs at least one entry")
        if any(c.encr == EncrId.NULL_AUTH_AES_GMAC for c in self.ike_ciphers):
            raise ConfigError("GMAC provides no confidentiality and cannot protect IKE messages")
        for c in (*self.ike_ciphers, *self.child_ciphers):
            if c.key_bits not in (128, 192, 256):
                raise ConfigError("AES key length must be 128, 192 or 256 bits")
        if self.child_protocol not in (ProtocolId.FC_ESP_HEADER, ProtocolId.ESP):
            raise ConfigError("child protocol must be FC_ESP_HEADER (4) or ESP (3)")
        if not 16 <= self.nonce_len <= 256:
            raise ConfigError("nonce length must be 16..256 bytes")
        if not self.local_ts or not self.remote_ts:
            raise ConfigError("traffic selectors must not be empty")
        for ts in (*self.local_ts, *self.remote_ts):
            try:
                ts.encode()
            except (IkeError, ValueError) as e:
                raise ConfigError(f"invalid traffic selector {ts}: {e}") from None
        supported_groups = (DhGroup.CURVE25519, DhGroup.ECP_256)
        if any(g not in supported_groups for g in self.dh_groups) or (
            self.child_pfs_group is not None and self.child_pfs_group not in supported_groups
        ):
            raise ConfigError("DH groups must be CURVE25519 (31) or ECP_256 (19)")
        if any(p not in (PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512) for p in self.prfs):
            raise ConfigError("PRFs must be HMAC-SHA2-256/384/512")
        if any(
            c.encr not in (EncrId.AES_GCM_16, EncrId.NULL_AUTH_AES_GMAC) for c in self.child_ciphers
        ) or any(
            c.encr not in (EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16) for c in self.ike_ciphers
        ):
            raise ConfigError("ciphers must be AES-GCM (IKE: ICV 8/12/16; child: ICV 16) or GMAC (child)")

    @property
    def max_message(self) -> int | None:
        return AUTH_ELS_IKE_MAX if self.transport == TransportProfile.AUTH_ELS else None
