"""IKE_AUTH authentication: PSK (RFC 7296 §2.15) and digital signatures (RFC 7427, plus method 9 of RFC 4754),
and certificate chain validation against configured CAs with matching of the peer identity.

`cryptography.x509.verification` does not exist in cryptography 38, so chains are checked by hand: issuer
name, issuer signature, validity window, basicConstraints CA for issuers and digitalSignature usage for the
end entity.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtensionOID, NameOID

from .codes import AuthMethod, HashAlgorithm, IdType
from .crypto import Prf
from .errors import IkeError

KEY_PAD = b"Key Pad for IKEv2"  # 17 ASCII bytes, no NUL (RFC 7296 §2.15)


class AuthenticationError(IkeError):
    """The peer's AUTH, certificate or identity did not verify. The text names no secret."""


def signed_octets(real_message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_body: bytes) -> bytes:
    """<SignedOctets> = RealMessage | NonceData(peer) | prf(SK_p, RestOfIDPayload)."""
    return real_message + peer_nonce + prf(sk_p, id_body)


def psk_auth(prf: Prf, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(prf(psk, KEY_PAD), octets)


def verify_psk(prf: Prf, psk: bytes, octets: bytes, received: bytes) -> None:
    if not hmac.compare_digest(psk_auth(prf, psk, octets), received):
        raise AuthenticationError("pre-shared key AUTH does not verify")


# --- signatures ---------------------------------------------------------------------------------------------

# RFC 7427 Appendix A: DER AlgorithmIdentifier values.
_ALG_ID = {
    ("ecdsa", HashAlgorithm.SHA2_256): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ecdsa", HashAlgorithm.SHA2_384): bytes.fromhex("300a06082a8648ce3d040303"),
    ("ecdsa", HashAlgorithm.SHA2_512): bytes.fromhex("300a06082a8648ce3d040304"),
    ("rsa", HashAlgorithm.SHA2_256): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", HashAlgorithm.SHA2_384): bytes.fromhex("300d06092a864886f70d01010c0500"),
    ("rsa", HashAlgorithm.SHA2_512): bytes.fromhex("300d06092a864886f70d01010d0500"),
}
_HASH_OBJ = {
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}
SUPPORTED_HASHES = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)


def _kind(key: object) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa"
    raise AuthenticationError("only ECDSA and RSA keys are supported")


def sign(private_key: object, octets: bytes, peer_hashes: tuple[int, ...]) -> tuple[int, bytes]:
    """Sign with RFC 7427 (method 14, SHA-256) when the peer announced SHA2-256 in SIGNATURE_HASH_ALGORITHMS;
    otherwise fall back to method 9 (ECDSA P-256 with SHA-256, raw r‖s) for P-256 keys."""
    kind = _kind(private_key)
    if HashAlgorithm.SHA2_256 in peer_hashes:
        alg = HashAlgorithm.SHA2_256
        if kind == "ecdsa":
            sig = private_key.sign(octets, ec.ECDSA(hashes.SHA256()))
        else:
            sig = private_key.sign(octets, padding.PKCS1v15(), hashes.SHA256())
        alg_id = _ALG_ID[(kind, alg)]
        return AuthMethod.DIGITAL_SIGNATURE, bytes([len(alg_id)]) + alg_id + sig
    if kind == "ecdsa" and isinstance(private_key.curve, ec.SECP256R1):
        r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(hashes.SHA256())))
        return AuthMethod.ECDSA_SHA256_P256, r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise AuthenticationError("peer did not announce SHA2-256 signatures (RFC 7427) and the key is not P-256")


def verify_signature(public_key: object, method: int, data: bytes, octets: bytes) -> None:
    """Verify an AUTH payload of method 14 or 9 over octets; raises AuthenticationError."""
    kind = _kind(public_key)
    try:
        if method == AuthMethod.DIGITAL_SIGNATURE:
            if not data or len(data) < 1 + data[0]:
                raise AuthenticationError("truncated RFC 7427 AUTH data")
            alg_id, sig = data[1 : 1 + data[0]], data[1 + data[0] :]
            match = [h for (k, h), v in _ALG_ID.items() if k == kind and v == alg_id]
            if not match:
                raise AuthenticationError("unsupported signature algorithm in AUTH")
            halg = _HASH_OBJ[match[0]]()
            if kind == "ecdsa":
                public_key.verify(sig, octets, ec.ECDSA(halg))
            else:
                public_key.verify(sig, octets, padding.PKCS1v15(), halg)
        elif method == AuthMethod.ECDSA_SHA256_P256:
            if kind != "ecdsa" or not isinstance(public_key.curve, ec.SECP256R1) or len(data) != 64:
                raise AuthenticationError("method 9 needs a P-256 key and a 64-byte signature")
            der = encode_dss_signature(int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big"))
            public_key.verify(der, octets, ec.ECDSA(hashes.SHA256()))
        else:
            raise AuthenticationError(f"unsupported AUTH method {method}")
    except InvalidSignature:
        raise AuthenticationError("signature AUTH does not verify") from None
    except ValueError:
        raise AuthenticationError("malformed signature in AUTH") from None


# --- certificates -------------------------------------------------------------------------------------------


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    v = getattr(cert, "not_valid_before_utc", None)  # cryptography >= 42; 38 only has the naive-UTC variant
    return v if v is not None else cert.not_valid_before.replace(tzinfo=datetime.UTC)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    v = getattr(cert, "not_valid_after_utc", None)
    return v if v is not None else cert.not_valid_after.replace(tzinfo=datetime.UTC)


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
            )
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        return ku.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def _in_validity(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return _not_before(cert) <= now <= _not_after(cert)


def validate_chain(
    end_entity: x509.Certificate,
    intermediates: list[x509.Certificate],
    trust_anchors: tuple[x509.Certificate, ...],
    now: datetime.datetime,
) -> None:
    """Walk from the end entity through intermediates to one of the trust anchors (at most 8 links)."""
    if not trust_anchors:
        raise AuthenticationError("no CA configured to validate the peer certificate")
    if not _in_validity(end_entity, now):
        raise AuthenticationError("peer certificate is outside its validity period")
    try:
        ku = end_entity.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if not ku.digital_signature:
            raise AuthenticationError("peer certificate does not allow digitalSignature")
    except x509.ExtensionNotFound:
        pass
    cert = end_entity
    for _ in range(8):
        for anchor in trust_anchors:
            if _check_issued_by(cert, anchor):
                if not _in_validity(anchor, now):
                    raise AuthenticationError("CA certificate is outside its validity period")
                return
        step = next(
            (c for c in intermediates if _is_ca(c) and _in_validity(c, now) and _check_issued_by(cert, c)),
            None,
        )
        if step is None:
            break
        cert = step
    raise AuthenticationError("peer certificate does not chain to a configured CA")


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return None


def wwpn_uri(wwpn: bytes) -> str:
    """SAN URI that binds a certificate to a WWPN (our convention, see docs/ike.md)."""
    return "urn:wwpn:" + wwpn.hex()


def identity_matches(cert: x509.Certificate, id_type: int, id_data: bytes) -> bool:
    """Does the certificate vouch for this IKE identity? (RFC 4945 §3.1-style matching.)"""
    san = _san(cert)
    try:
        if id_type == IdType.FQDN:
            name = id_data.decode("ascii").lower()
            return bool(san) and name in [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        if id_type == IdType.RFC822_ADDR:
            name = id_data.decode("ascii").lower()
            return bool(san) and name in [n.lower() for n in san.get_values_for_type(x509.RFC822Name)]
        if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            addr = ipaddress.ip_address(id_data)
            return bool(san) and addr in san.get_values_for_type(x509.IPAddress)
        if id_type == IdType.DER_ASN1_DN:
            return id_data == cert.subject.public_bytes()
        if id_type == IdType.FC_NAME:
            if len(id_data) != 8:
                return False
            if san and wwpn_uri(id_data) in [
                u.lower() for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            ]:
                return True
            cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            return any(str(cn).replace(":", "").lower() == id_data.hex() for cn in cns)
        if id_type == IdType.KEY_ID:
            spki = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return id_data == hashlib.sha1(spki).digest()
    except (UnicodeDecodeError, ValueError):
        return False
    return False


def ca_keyid(ca: x509.Certificate) -> bytes:
    """CERTREQ CA value: SHA-1 of the CA's SubjectPublicKeyInfo (RFC 7296 §3.7)."""
    spki = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(spki).digest()
