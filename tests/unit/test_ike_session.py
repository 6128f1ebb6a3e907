"""Initiator ↔ Responder in memory: FC profile (ID 12, protocol 4, TS 9), PSK and certificates, rekey, delete,
liveness, retransmission, failures, and bad input that must change nothing."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.ike import (
    AES_GCM_16_128,
    AES_GCM_16_256,
    AUTH_ELS_IKE_MAX,
    GMAC_128,
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    CipherSuite,
    ConfigError,
    Deleted,
    Established,
    FcSelector,
    Identity,
    IkeConfig,
    IkeError,
    Initiator,
    Ipv4Selector,
    NegotiationFailed,
    PeerAlive,
    Responder,
    Send,
    State,
    StateError,
)
from edifd.ike.auth import AuthenticationError, identity_matches, validate_chain, wwpn_uri
from edifd.ike.codes import AuthMethod, DhGroup, EncrId, IdType, ProtocolId
from edifd.ike.message import open_message
from edifd.ike.payloads import AuthPayload, IdiPayload, SaPayload, TsiPayload

WWPN_I, WWPN_R = 0x2000001B32A0B0C1, 0x2100001B32A0B0C2
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017 (crypto-38 spelling)
PSK = b"fc-sp-2 shared secret"
TS_I = (FcSelector(0x010101, 0x010101, 0x00, 0x0F, 0x08, 0x08),)
TS_R = (FcSelector(0x010102, 0x010102, 0x00, 0x0F, 0x08, 0x08),)


def seeded(seed: int):
    rnd = random.Random(seed)
    return lambda n: bytes(rnd.getrandbits(8) for _ in range(n))


def fc_config(role: str, **kw) -> IkeConfig:
    me, peer = (WWPN_I, WWPN_R) if role == "i" else (WWPN_R, WWPN_I)
    base = dict(
        local_id=Identity.wwpn(me),
        remote_id=Identity.wwpn(peer),
        psk=PSK,
        local_ts=TS_I if role == "i" else TS_R,
        remote_ts=TS_R if role == "i" else TS_I,
        clock=lambda: NOW,
        rng=seeded(1 if role == "i" else 2),
    )
    base.update(kw)
    return IkeConfig(**base)


def handshake(ci: IkeConfig, cr: IkeConfig):
    """Run IKE_SA_INIT + IKE_AUTH; return (initiator, responder, its events, responder events, sizes)."""
    i, r = Initiator(ci), Responder(cr)
    sizes = []
    to_r = [i.start()]
    ev_i, ev_r = [], []
    while to_r:
        m = to_r.pop(0)
        sizes.append(len(m))
        out = r.receive(m)
        ev_r += out
        for e in out:
            if isinstance(e, Send):
                sizes.append(len(e.data))
                back = i.receive(e.data)
                ev_i += back
                to_r += [b.data for b in back if isinstance(b, Send)]
    return i, r, ev_i, ev_r, sizes


def only(events, kind):
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, events
    return found[0]


# --- certificates -------------------------------------------------------------------------------------------


def make_ca(key, name="edifd test CA", not_after=NOW + datetime.timedelta(days=30)):
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(n)
        .issuer_name(n)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert


def make_leaf(key, ca, ca_key, wwpn: int, not_after=NOW + datetime.timedelta(days=10)):
    raw = wwpn.to_bytes(8, "big")
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, raw.hex(":"))]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(wwpn_uri(raw))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def pki():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_ca(ca_key)
    ki, kr = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return dict(
        ca=ca,
        ca_key=ca_key,
        ki=ki,
        kr=kr,
        ci=make_leaf(ki, ca, ca_key, WWPN_I),
        cr=make_leaf(kr, ca, ca_key, WWPN_R),
        rsa_key=rsa_key,
        rsa_cert=make_leaf(rsa_key, ca, ca_key, WWPN_R),
    )


def cert_config(role: str, pki, **kw) -> IkeConfig:
    key, cert = (pki["ki"], pki["ci"]) if role == "i" else (pki["kr"], pki["cr"])
    kw = dict(dict(psk=None, certificate=cert, private_key=key, ca_certificates=(pki["ca"],)), **kw)
    return fc_config(role, **kw)


# --- the FC profile with PSK --------------------------------------------------------------------------------


def test_psk_fc_handshake_establishes_ike_and_child_with_matching_keys() -> None:
    i, r, ev_i, ev_r, sizes = handshake(fc_config("i"), fc_config("r"))
    assert i.state == r.state == State.ESTABLISHED
    est_i, est_r = only(ev_i, Established), only(ev_r, Established)
    assert est_i.remote_id == Identity.wwpn(WWPN_R) and est_r.remote_id == Identity.wwpn(WWPN_I)
    assert est_i.cipher == AES_GCM_16_128 and est_i.dh_group == DhGroup.CURVE25519
    ci, cr = only(ev_i, ChildSaEstablished), only(ev_r, ChildSaEstablished)
    assert ci.protocol == cr.protocol == ProtocolId.FC_ESP_HEADER
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in) and min(ci.spi_in, ci.spi_out) > 255
    assert (ci.key_out, ci.salt_out, ci.key_in, ci.salt_in) == (
        cr.key_in,
        cr.salt_in,
        cr.key_out,
        cr.salt_out,
    )
    assert len(ci.key_out) == 16 and len(ci.salt_out) == 4 and ci.key_in != ci.key_out
    assert ci.local_ts == TS_I and ci.remote_ts == TS_R and cr.local_ts == TS_R
    assert i.export_key_material() == r.export_key_material()
    # The initiator's child keys are the KEYMAT split: I->R first.
    km = i.export_key_material()
    assert km["child_i"] == ci.key_out + ci.salt_out and km["child_r"] == ci.key_in + ci.salt_in
    assert max(sizes) <= AUTH_ELS_IKE_MAX


def test_fc_wire_payloads_in_ike_auth() -> None:
    ci = fc_config("i")
    i, r = Initiator(ci), Responder(fc_config("r"))
    m3 = i.receive(r.receive(i.start())[0].data)[0].data
    msg = open_message(m3, r._aead_in)  # white-box: look inside the SK payload
    idi = msg.first(IdiPayload)
    assert idi.id_type == IdType.FC_NAME and idi.data == WWPN_I.to_bytes(8, "big")
    sa = msg.first(SaPayload)
    assert sa.proposals[0].protocol == ProtocolId.FC_ESP_HEADER and len(sa.proposals[0].spi) == 4
    assert {t.id for t in sa.proposals[0].transforms if t.type == 1} == {
        EncrId.AES_GCM_16,
        EncrId.NULL_AUTH_AES_GMAC,
    }
    assert msg.first(TsiPayload).selectors == TS_I
    assert msg.first(AuthPayload).method == AuthMethod.PSK


def test_events_and_config_reprs_hide_keys() -> None:
    ci = fc_config("i")
    i, r, ev_i, _, _ = handshake(ci, fc_config("r"))
    child = only(ev_i, ChildSaEstablished)
    text = repr(ev_i) + repr(ci) + repr(i) + repr(r) + str(child)
    for secret in (
        child.key_in,
        child.key_out,
        child.salt_in,
        child.salt_out,
        *i.export_key_material().values(),
    ):
        assert secret.hex() not in text and repr(secret) not in text
    assert "fc-sp-2" not in text and repr(PSK) not in text


@pytest.mark.parametrize(
    ("ike", "child", "group"),
    [
        (AES_GCM_16_256, AES_GCM_16_256, DhGroup.CURVE25519),
        (AES_GCM_16_128, GMAC_128, DhGroup.ECP_256),
    ],
)
def test_aes256_gmac_and_ecp256(ike, child, group) -> None:
    kw = dict(ike_ciphers=(ike,), child_ciphers=(child,), dh_groups=(group,))
    i, r, ev_i, ev_r, _ = handshake(fc_config("i", **kw), fc_config("r", **kw))
    est = only(ev_i, Established)
    assert (est.cipher, est.dh_group) == (ike, group)
    c = only(ev_i, ChildSaEstablished)
    assert c.cipher == child and len(c.key_in) == child.key_len
    assert len(i.export_key_material()["sk_ei"]) == ike.key_len + 4


def test_invalid_ke_makes_the_initiator_retry_with_the_requested_group() -> None:
    ci = fc_config("i", dh_groups=(DhGroup.ECP_256, DhGroup.CURVE25519))
    cr = fc_config("r", dh_groups=(DhGroup.CURVE25519,))
    i, r, ev_i, ev_r, _ = handshake(ci, cr)
    assert only(ev_i, Established).dh_group == DhGroup.CURVE25519
    assert r.state == State.ESTABLISHED


def test_no_common_proposal_fails_cleanly() -> None:
    i, r, ev_i, ev_r, _ = handshake(
        fc_config("i", ike_ciphers=(AES_GCM_16_256,)), fc_config("r", ike_ciphers=(AES_GCM_16_128,))
    )
    assert only(ev_i, NegotiationFailed).reason == "responder sent NO_PROPOSAL_CHOSEN"
    assert only(ev_r, NegotiationFailed) and i.state == State.FAILED and r.state == State.IDLE


def test_no_common_child_cipher_keeps_the_ike_sa() -> None:
    i, r, ev_i, ev_r, _ = handshake(
        fc_config("i", child_ciphers=(GMAC_128,)), fc_config("r", child_ciphers=(AES_GCM_16_128,))
    )
    assert only(ev_i, Established) and only(ev_i, ChildSaFailed).reason == "NO_PROPOSAL_CHOSEN"
    assert i.state == r.state == State.ESTABLISHED and not i.children


def test_disjoint_traffic_selectors_are_refused() -> None:
    far = (FcSelector(0x020000, 0x020000),)
    i, r, ev_i, _, _ = handshake(fc_config("i", remote_ts=far), fc_config("r"))
    assert only(ev_i, ChildSaFailed).reason == "TS_UNACCEPTABLE"


# --- authentication failures --------------------------------------------------------------------------------


def test_wrong_psk_fails_on_both_sides() -> None:
    i, r, ev_i, ev_r, _ = handshake(fc_config("i"), fc_config("r", psk=b"another secret"))
    assert "does not verify" in only(ev_r, AuthFailed).reason
    assert only(ev_i, AuthFailed).reason == "responder sent AUTHENTICATION_FAILED"
    assert i.state == r.state == State.FAILED
    assert "another secret" not in repr(ev_r)


def test_unexpected_peer_identity_fails() -> None:
    _, r, _, ev_r, _ = handshake(fc_config("i"), fc_config("r", remote_id=Identity.wwpn(0x2000000000000099)))
    assert "is not the configured" in only(ev_r, AuthFailed).reason


def test_responder_with_any_remote_identity_reports_the_authenticated_one() -> None:
    _, _, _, ev_r, _ = handshake(fc_config("i"), fc_config("r", remote_id=None))
    assert only(ev_r, Established).remote_id == Identity.wwpn(WWPN_I)


# --- certificates -------------------------------------------------------------------------------------------


def test_ecdsa_certificates_fc_profile_fit_one_auth_els_frame(pki) -> None:
    i, r, ev_i, ev_r, sizes = handshake(cert_config("i", pki), cert_config("r", pki))
    assert only(ev_i, Established) and only(ev_r, Established)
    assert only(ev_i, ChildSaEstablished).key_out == only(ev_r, ChildSaEstablished).key_in
    assert max(sizes) <= AUTH_ELS_IKE_MAX


def test_rsa_responder_certificate(pki) -> None:
    cr = cert_config("r", pki, certificate=pki["rsa_cert"], private_key=pki["rsa_key"])
    i, r, ev_i, ev_r, sizes = handshake(cert_config("i", pki), cr)
    assert only(ev_i, Established) and only(ev_r, Established)
    assert max(sizes) <= AUTH_ELS_IKE_MAX


def test_certificate_from_an_unknown_ca_is_refused(pki) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = make_ca(other_key, "someone else")
    ci = cert_config("i", pki, certificate=make_leaf(pki["ki"], other_ca, other_key, WWPN_I))
    _, r, ev_i, ev_r, _ = handshake(ci, cert_config("r", pki))
    assert "does not chain" in only(ev_r, AuthFailed).reason and only(ev_i, AuthFailed)


def test_expired_certificate_is_refused(pki) -> None:
    old = make_leaf(
        pki["ki"], pki["ca"], pki["ca_key"], WWPN_I, not_after=NOW - datetime.timedelta(seconds=1)
    )
    _, _, _, ev_r, _ = handshake(cert_config("i", pki, certificate=old), cert_config("r", pki))
    assert "validity" in only(ev_r, AuthFailed).reason


def test_certificate_for_another_wwpn_is_refused(pki) -> None:
    # A valid certificate, but its WWPN is not the identity the initiator claims.
    ci = cert_config("i", pki, certificate=pki["cr"], private_key=pki["kr"])
    _, _, _, ev_r, _ = handshake(ci, cert_config("r", pki, remote_id=None))
    assert "does not vouch" in only(ev_r, AuthFailed).reason


def test_signature_by_the_wrong_key_is_refused(pki) -> None:
    ci = cert_config("i", pki, private_key=pki["kr"])
    _, _, _, ev_r, _ = handshake(ci, cert_config("r", pki))
    assert "does not verify" in only(ev_r, AuthFailed).reason


def test_chain_through_an_intermediate(pki) -> None:
    ikey = ec.generate_private_key(ec.SECP256R1())
    iname = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    inter = (
        x509.CertificateBuilder()
        .subject_name(iname)
        .issuer_name(pki["ca"].subject)
        .public_key(ikey.public_key())
        .serial_number(7)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(pki["ca_key"], hashes.SHA256())
    )
    leaf = make_leaf(pki["ki"], inter, ikey, WWPN_I)
    validate_chain(leaf, [inter], (pki["ca"],), NOW)
    with pytest.raises(AuthenticationError):
        validate_chain(leaf, [], (pki["ca"],), NOW)
    ci = cert_config("i", pki, certificate=leaf, intermediates=(inter,))
    _, _, ev_i, ev_r, _ = handshake(ci, cert_config("r", pki))
    assert only(ev_r, Established) and only(ev_i, Established)


def test_identity_matching_rules(pki) -> None:
    leaf = pki["ci"]
    assert identity_matches(leaf, IdType.FC_NAME, WWPN_I.to_bytes(8, "big"))
    assert not identity_matches(leaf, IdType.FC_NAME, WWPN_R.to_bytes(8, "big"))
    assert not identity_matches(leaf, IdType.FQDN, b"initiator.test")
    assert identity_matches(leaf, IdType.DER_ASN1_DN, leaf.subject.public_bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert identity_matches(leaf, IdType.KEY_ID, hashlib.sha1(spki).digest())


# --- after IKE_AUTH -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pfs", [None, DhGroup.CURVE25519, DhGroup.ECP_256])
def test_child_rekey_with_and_without_pfs(pfs) -> None:
    i, r, ev_i, _, _ = handshake(fc_config("i", child_pfs_group=pfs), fc_config("r"))
    old = only(ev_i, ChildSaEstablished)
    out_r = r.receive(i.rekey_child(old.spi_in))
    new_r = only(out_r, ChildSaEstablished)
    new_i = only(i.receive(only(out_r, Send).data), ChildSaEstablished)
    assert new_i.rekeyed_spi_in == old.spi_in and new_r.rekeyed_spi_in == old.spi_out
    assert (new_i.key_out, new_i.salt_out) == (new_r.key_in, new_r.salt_in)
    assert new_i.key_in == new_r.key_out and new_i.key_out != old.key_out and new_i.spi_in != old.spi_in
    assert len(i.children) == len(r.children) == 2
    # Then delete the old pair: both sides forget it.
    out = r.receive(i.delete_child(old.spi_in))
    assert only(out, Deleted).spi_in == old.spi_out
    assert only(i.receive(only(out, Send).data), Deleted).spi_in == old.spi_in
    assert [c.spi_in for c in i.children] == [new_i.spi_in] and [c.spi_in for c in r.children] == [
        new_r.spi_in
    ]


def test_pfs_required_by_responder_refuses_a_rekey_without_ke() -> None:
    i, r, ev_i, _, _ = handshake(fc_config("i"), fc_config("r", child_pfs_group=DhGroup.CURVE25519))
    out = r.receive(i.rekey_child(only(ev_i, ChildSaEstablished).spi_in))
    assert only(out, ChildSaFailed).reason == "NO_PROPOSAL_CHOSEN"
    assert only(i.receive(only(out, Send).data), ChildSaFailed).reason == "NO_PROPOSAL_CHOSEN"


def test_responder_can_rekey_too_and_message_ids_are_per_direction() -> None:
    i, r, _, ev_r, _ = handshake(fc_config("i"), fc_config("r"))
    child = only(ev_r, ChildSaEstablished)
    req = r.rekey_child(child.spi_in)
    assert int.from_bytes(req[20:24], "big") == 0  # the responder's first request
    ans = i.receive(req)
    assert only(r.receive(only(ans, Send).data), ChildSaEstablished).rekeyed_spi_in == child.spi_in
    assert int.from_bytes(i.ping()[20:24], "big") == 2  # the initiator's own counter is untouched


def test_liveness_and_ike_delete() -> None:
    i, r, _, _, _ = handshake(fc_config("i"), fc_config("r"))
    assert i.receive(only(r.receive(i.ping()), Send).data) == [PeerAlive()]
    out = r.receive(i.delete())
    assert only(out, Deleted).protocol == ProtocolId.IKE and r.state == State.DELETED
    assert i.receive(only(out, Send).data) == [Deleted(ProtocolId.IKE)] and i.state == State.DELETED
    with pytest.raises(StateError):
        i.ping()


def test_retransmitted_request_gets_the_cached_response_and_changes_nothing() -> None:
    i, r = Initiator(fc_config("i")), Responder(fc_config("r"))
    m1 = i.start()
    m2 = r.receive(m1)[0].data
    assert r.receive(m1) == [Send(m2)] and i.retransmit() == m1
    m3 = i.receive(m2)[0].data
    first = r.receive(m3)
    again = r.receive(m3)  # the IKE_AUTH response got lost
    assert again == [first[0]] and len(r.children) == 1
    i.receive(first[0].data)
    ping = i.ping()
    assert i.retransmit() == ping
    resp = r.receive(ping)
    assert r.receive(ping) == resp
    assert i.receive(resp[0].data) == [PeerAlive()] and i.retransmit() is None


def test_one_outstanding_request_at_a_time() -> None:
    i, _, _, _, _ = handshake(fc_config("i"), fc_config("r"))
    i.ping()
    with pytest.raises(StateError):
        i.ping()


# --- bad input changes nothing ------------------------------------------------------------------------------


def test_garbage_and_tampering_raise_ike_error_and_the_handshake_still_completes() -> None:
    i, r = Initiator(fc_config("i")), Responder(fc_config("r"))
    m1 = i.start()
    for junk in (b"", b"\x00" * 27, b"garbage" * 10, m1[:-1]):
        with pytest.raises(IkeError):
            r.receive(junk)
    assert r.state == State.IDLE
    m2 = r.receive(m1)[0].data
    with pytest.raises(IkeError):
        i.receive(m2[:30])
    m3 = i.receive(m2)[0].data
    tampered = m3[:-1] + bytes([m3[-1] ^ 1])
    with pytest.raises(IkeError):
        r.receive(tampered)  # ICV fails
    assert r.state == State.INIT_DONE
    out = r.receive(m3)
    with pytest.raises(IkeError):
        i.receive(out[0].data[:-2] + b"\x00\x00")
    assert i.state == State.AUTH_SENT
    assert only(i.receive(out[0].data), Established)
    # After establishment: wrong message ID, replayed old response, foreign SPI.
    ping = i.ping()
    resp = r.receive(ping)[0].data
    with pytest.raises(StateError):
        r.receive(ping[:20] + (7).to_bytes(4, "big") + ping[24:])
    with pytest.raises(StateError):
        i.receive(out[0].data)
    with pytest.raises(StateError):
        i.receive(bytes(8) + resp[8:])
    assert i.receive(resp) == [PeerAlive()]


@pytest.mark.parametrize("seed", range(30))
def test_random_mutations_of_every_handshake_message_raise_only_ike_error(seed: int) -> None:
    rnd = random.Random(seed)
    i, r = Initiator(fc_config("i")), Responder(fc_config("r"))
    msgs = [i.start()]
    msgs.append(r.receive(msgs[0])[0].data)
    msgs.append(i.receive(msgs[1])[0].data)
    for target, m in ((Responder(fc_config("r")), msgs[0]), (i, msgs[1]), (r, msgs[2])):
        data = bytearray(m)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            target.receive(bytes(data))
        except IkeError:
            pass


def test_deterministic_rng_reproduces_the_exchange() -> None:
    a = handshake(fc_config("i"), fc_config("r"))
    b = handshake(fc_config("i"), fc_config("r"))
    assert a[0].export_key_material() == b[0].export_key_material()


def test_oversized_message_for_auth_els_is_refused(pki) -> None:
    big = tuple(pki["ca"] for _ in range(8))  # eight extra certificates push IKE_AUTH over 2100 bytes
    ci = cert_config("i", pki, intermediates=big)
    i, r = Initiator(ci), Responder(cert_config("r", pki))
    m2 = r.receive(i.start())[0].data
    with pytest.raises(IkeError, match="AUTH_ELS"):
        i.receive(m2)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        IkeConfig(local_id=Identity.wwpn(1))  # no credentials
    with pytest.raises(ConfigError):
        fc_config("i", ike_ciphers=(GMAC_128,))
    with pytest.raises(ConfigError):
        fc_config("i", child_protocol=ProtocolId.AH)
    with pytest.raises(ConfigError):
        Identity.wwpn(b"\x01\x02")
    assert str(Identity.wwpn("20:00:00:1b:32:a0:b0:c1")) == "20:00:00:1b:32:a0:b0:c1"
    assert dataclasses.replace(fc_config("i"), nonce_len=16).nonce_len == 16


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["idle", "init_done", "established"]))
def test_fuzz_sessions_in_each_state_raise_only_ike_error(data: bytes, stage: str) -> None:
    i, r = Initiator(fc_config("i")), Responder(fc_config("r"))
    if stage != "idle":
        m2 = r.receive(i.start())[0].data
        if stage == "established":
            r.receive(i.receive(m2)[0].data)
    before = (r.state, r.spi_r, len(r.children))
    try:
        r.receive(data)
    except IkeError:
        assert (r.state, r.spi_r, len(r.children)) == before


def test_initiator_rejecting_the_responder_tells_it(pki) -> None:
    # The responder signs with a key that does not match its certificate: only the initiator can notice.
    i, r, ev_i, ev_r, _ = handshake(cert_config("i", pki), cert_config("r", pki, private_key=pki["ki"]))
    assert "does not verify" in only(ev_i, AuthFailed).reason and i.state == State.FAILED
    assert only(ev_r, Established)  # the responder believed it for one exchange...
    assert only(ev_r, AuthFailed).reason == "peer rejected our authentication"  # ...until told otherwise
    assert r.state == State.FAILED and not r.children


@pytest.mark.parametrize(
    "bad",
    [
        dict(dh_groups=(DhGroup(0),)),
        dict(child_pfs_group=DhGroup.NONE),
        dict(local_ts=(Ipv4Selector("not an address"),)),
        dict(local_ts=(FcSelector(0, 1 << 24),)),
        dict(child_ciphers=(dataclasses.replace(AES_GCM_16_128, encr=EncrId.AES_GCM_8),)),
        dict(nonce_len=8),
    ],
)
def test_config_rejects_unsupported_values(bad) -> None:
    with pytest.raises(ConfigError):
        fc_config("i", **bad)


@pytest.mark.parametrize(
    "maker",
    [
        lambda: Identity.wwpn("xyz"),
        lambda: Identity.wwpn(1 << 64),
        lambda: Identity.fqdn("bücher.test"),
        lambda: Identity.fqdn(""),
        lambda: Identity.ipv4("300.1.1.1"),
    ],
)
def test_identity_constructors_raise_config_error(maker) -> None:
    with pytest.raises(ConfigError):
        maker()


@pytest.mark.parametrize("encr", [EncrId.AES_GCM_8, EncrId.AES_GCM_12])
def test_ike_sa_with_shorter_gcm_icv(encr) -> None:
    suite = CipherSuite(encr, 128)
    i, r, ev_i, ev_r, sizes = handshake(
        fc_config("i", ike_ciphers=(suite,)), fc_config("r", ike_ciphers=(suite,))
    )
    assert only(ev_i, Established).cipher == suite and only(ev_r, Established).cipher == suite
    assert i.receive(only(r.receive(i.ping()), Send).data) == [PeerAlive()]
