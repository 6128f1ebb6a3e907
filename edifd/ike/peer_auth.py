"""The IKE_AUTH proof of identity at message level (RFC 7296 §2.15): the AUTH (and CERT) payloads we send,
the check of the peer's ID, certificates and AUTH, and the CERTREQ / SIGNATURE_HASH_ALGORITHMS notices
that go with certificate authentication. The cryptography itself is in `auth`."""

from __future__ import annotations

import struct

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import auth as ikeauth
from .codes import AuthMethod, CertEncoding, IdType, NotifyType
from .config import Identity, IkeConfig
from .crypto import Prf
from .message import Message
from .payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload, NotifyPayload, Payload


def auth_payloads(
    config: IkeConfig,
    prf: Prf,
    peer_hashes: tuple[int, ...],
    real_message: bytes,
    peer_nonce: bytes,
    sk_p: bytes,
    id_payload: IdPayload,
) -> list[Payload]:
    """Our CERT payloads (certificate authentication only) followed by our AUTH payload."""
    octets = ikeauth.signed_octets(real_message, peer_nonce, prf, sk_p, id_payload.encode_body())
    if config.psk is not None:
        return [AuthPayload(AuthMethod.PSK, ikeauth.psk_auth(prf, config.psk, octets))]
    method, data = ikeauth.sign(config.private_key, octets, peer_hashes)
    der = serialization.Encoding.DER
    certs: list[Payload] = [CertPayload(CertEncoding.X509_SIGNATURE, config.certificate.public_bytes(der))]
    certs += [CertPayload(CertEncoding.X509_SIGNATURE, i.public_bytes(der)) for i in config.intermediates]
    return [*certs, AuthPayload(method, data)]


def verify_peer(
    config: IkeConfig,
    prf: Prf,
    msg: Message,
    id_payload: IdPayload | None,
    real_message: bytes,
    our_nonce: bytes,
    sk_p: bytes,
) -> Identity:
    """Check the peer's identity and AUTH; return that identity or raise AuthenticationError."""
    auth = msg.first(AuthPayload)
    if id_payload is None or auth is None:
        raise ikeauth.AuthenticationError("ID or AUTH payload missing")
    try:
        peer = Identity(IdType(id_payload.id_type), id_payload.data)
    except ValueError:
        raise ikeauth.AuthenticationError(f"unsupported ID type {id_payload.id_type}") from None
    if config.remote_id is not None and peer != config.remote_id:
        raise ikeauth.AuthenticationError(f"peer identity {peer} is not the configured {config.remote_id}")
    octets = ikeauth.signed_octets(real_message, our_nonce, prf, sk_p, id_payload.encode_body())
    if config.psk is not None:
        if auth.method != AuthMethod.PSK:
            raise ikeauth.AuthenticationError(f"expected PSK AUTH, got method {auth.method}")
        ikeauth.verify_psk(prf, config.psk, octets, auth.data)
        return peer
    if auth.method not in (AuthMethod.DIGITAL_SIGNATURE, AuthMethod.ECDSA_SHA256_P256):
        raise ikeauth.AuthenticationError(f"expected a signature AUTH, got method {auth.method}")
    certs = [p for p in msg.find(CertPayload) if not isinstance(p, CertReqPayload)]
    if not certs or certs[0].encoding != CertEncoding.X509_SIGNATURE:
        raise ikeauth.AuthenticationError("peer sent no X.509 certificate")
    try:
        parsed = [
            x509.load_der_x509_certificate(p.data) for p in certs if p.encoding == CertEncoding.X509_SIGNATURE
        ]
    except ValueError:
        raise ikeauth.AuthenticationError("peer certificate is not valid DER") from None
    ikeauth.validate_chain(parsed[0], parsed[1:], config.ca_certificates, config.clock())
    if not ikeauth.identity_matches(parsed[0], peer.id_type, peer.data):
        raise ikeauth.AuthenticationError(f"peer certificate does not vouch for identity {peer}")
    ikeauth.verify_signature(parsed[0].public_key(), auth.method, auth.data, octets)
    return peer


def hash_notify(config: IkeConfig) -> list[Payload]:
    """N(SIGNATURE_HASH_ALGORITHMS) in IKE_SA_INIT (RFC 7427 §4), with certificates only."""
    if config.psk is not None:
        return []
    data = b"".join(struct.pack(">H", h) for h in ikeauth.SUPPORTED_HASHES)
    return [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=data)]


def peer_hashes(msg: Message) -> tuple[int, ...] | None:
    """The hash algorithms the peer announced, or None if it sent no SIGNATURE_HASH_ALGORITHMS."""
    n = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if n is None:
        return None
    return tuple(struct.unpack(f">{len(n.data) // 2}H", n.data[: len(n.data) // 2 * 2]))


def certreq(config: IkeConfig) -> list[Payload]:
    """CERTREQ naming our CAs by the SHA-1 of their SPKI, with certificates only."""
    if config.psk is not None:
        return []
    return [
        CertReqPayload(
            CertEncoding.X509_SIGNATURE,
            b"".join(ikeauth.ca_keyid(ca) for ca in config.ca_certificates),
        )
    ]
