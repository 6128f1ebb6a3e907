"""SecurityApp against the scripted fake host (tests.support.secapp.FakeHost, edifd at the message level):
the whole flow, cipher and credential policy, what never leaks, and certificate authentication.

Rekeying is in test_secapp_rekey.py, session/link events and robustness in test_secapp_events.py.
"""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edifd.proto import (
    AppStartAnswer,
    AuthFail,
    AuthFailReason,
    AuthNeeded,
    AuthOk,
    Cipher,
    CipherMask,
    ElsRcvd,
    ElsReply,
    ElsReplyAction,
    ElsSend,
    EventAck,
    GetTargets,
    SaUpdate,
    SecureConnect,
)
from edifd.secapp.app import AppNotice, SessionFailed, SessionSecure, SessionState
from edifd.secapp.config import load_cert_credentials
from edifd.secapp.relay import unwrap_ike
from tests.support.secapp import HOST_WWPN, PSK1, PSK2, T1, T2, FakeTarget, assert_keys_crosswise, setup

# --- the whole flow ---------------------------------------------------------------------------------------


def test_full_flow_message_order_and_keys():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    assert host.names() == [
        "v GET_PORT_INFO", "^ PORT_INFO",
        "v GET_TARGETS", "^ TARGET_LIST",
        "v SECURE_CONNECT", "^ RESPONSE", "^ AUTH_NEEDED",
        "v ELS_SEND[0x22]", "^ ELS_RESPONSE", "^ ELS_RCVD[0x22]",
        "v ELS_REPLY", "v ELS_SEND[0x23]", "^ RESPONSE", "^ ELS_RESPONSE", "^ ELS_RCVD[0x23]",
        "v ELS_REPLY", "v SA_UPDATE[RX ADD]", "^ RESPONSE", "^ RESPONSE", "^ SA_UPDATE_COMPL",
        "v SA_UPDATE[TX ADD]", "^ RESPONSE", "^ SA_UPDATE_COMPL",
        "v AUTH_OK", "^ RESPONSE",
    ]
    assert app.session(T1).state is SessionState.SECURE
    secure = host.of(SessionSecure)
    assert len(secure) == 1 and secure[0].wwpn == T1
    assert_keys_crosswise(host, t, app)
    # The ELS relay: LS_ACC for every received AUTH_ELS, one T_ID for the whole IKE SA.
    replies = host.down(ElsReply)
    assert all(r.action is ElsReplyAction.LS_ACC and r.payload == b"\x02\x00\x00\x00" for r in replies)
    tids = {unwrap_ike(b.payload)[0] for b in host.down(ElsSend)}
    tids |= {unwrap_ike(b.payload)[0] for d, b in host.log if isinstance(b, ElsRcvd)}
    assert len(tids) == 1 and 0 not in tids


def test_esp_proposals_follow_the_host_cipher_mask():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    answer = AppStartAnswer(epoch=7, proof=bytes(32), cipher_mask=CipherMask.AES_GCM_256)
    host.feed(app.start(answer))
    adds = host.down(SaUpdate)
    assert [b.cipher for b in adds] == [Cipher.AES_GCM_256] * 2 and all(len(b.key) == 32 for b in adds)
    assert_keys_crosswise(host, t, app, key_len=32)
    # A host that supports none of them: we say so and keep the configured proposals.
    app2, host2 = setup({T1: PSK1}, [FakeTarget(T1, 0x020200, PSK1)])
    host2.feed(app2.start(AppStartAnswer(epoch=7, proof=bytes(32), cipher_mask=CipherMask(0))))
    assert any("none of the configured ESP ciphers" in n.detail for n in host2.of(AppNotice))
    assert [b.cipher for b in host2.down(SaUpdate)] == [Cipher.AES_GCM_128] * 2


def test_secrets_never_in_reprs_or_events():
    t = FakeTarget(T1, 0x020200, PSK1)
    app, host = setup({T1: PSK1}, [t])
    host.start()
    st_ = app.status()
    row = st_["targets"]["21:00:00:1b:32:a0:b0:c2"]
    assert row["state"] == "secure" and row["spi_in"] == f"{app.session(T1).current.spi_in:08x}"
    assert row["cipher"] == "AES_GCM_128" and row["sa_age_s"] == 0.0 and st_["running"] is True
    adds = [b for b in host.down(SaUpdate) if b.key]
    keys = [b.key for b in adds] + [b.salt for b in adds]
    texts = [repr(app), repr(app.config), repr(app.sessions), repr(st_), *map(repr, host.events)]
    texts += [repr(b) for _, b in host.log] + [str(e) for e in host.events]
    for text in texts:
        assert PSK1.decode() not in text and repr(PSK1) not in text
        for k in keys:
            assert k.hex() not in text and repr(k) not in text


def test_wrong_psk_auth_fail_and_no_sa_update_ever():
    t = FakeTarget(T1, 0x020200, PSK2)  # the target expects another key
    app, host = setup({T1: PSK1}, [t], auth_retry_backoff=30.0, reconnect_delay=1.0)
    host.logo_on_auth_fail = True  # the logout that follows must not cut the backoff short
    host.start()
    assert len(host.down(EventAck)) == 1
    fails = host.down(AuthFail)
    assert len(fails) == 1 and fails[0].port.wwpn == T1
    assert fails[0].reason is AuthFailReason.PEER_REJECTED  # the responder refused our AUTH
    assert t.failures and app.session(T1).state is SessionState.FAILED
    assert host.of(SessionFailed)[0].reason is AuthFailReason.PEER_REJECTED
    # Backoff: nothing for 29 s, then one more attempt, then twice as long.
    n = len(host.log)
    host.run_for(29)  # failed at t0; now t0 + 29
    assert not any(isinstance(b, SecureConnect | ElsSend) for _, b in host.log[n:])
    host.run_for(2)  # the retry at t0 + 30 fails again; the next one waits 60 s
    assert len(host.down(AuthFail)) == 2
    host.run_for(58)
    assert len(host.down(AuthFail)) == 2
    host.run_for(2)
    assert len(host.down(AuthFail)) == 3
    assert host.down(SaUpdate) == [] and host.down(AuthOk) == []


def test_two_targets_one_wrong_psk_other_fine_paged_target_list():
    good = FakeTarget(T1, 0x020200, PSK1, seed=5)
    bad = FakeTarget(T2, 0x020300, b"the target has a different key!!", seed=6)
    app, host = setup({T1: PSK1, T2: PSK2}, [good, bad], page_size=1)
    host.start()
    assert len(host.down(GetTargets)) == 2  # two pages of one entry
    assert app.session(T1).state is SessionState.SECURE
    assert app.session(T2).state is SessionState.FAILED
    assert [f.port.wwpn for f in host.down(AuthFail)] == [T2]
    assert {b.port.wwpn for b in host.down(SaUpdate)} == {T1}
    assert_keys_crosswise(host, good, app)
    assert not bad.installed


def test_unconfigured_and_skipped_targets():
    t1 = FakeTarget(T1, 0x020200, PSK1)
    t2 = FakeTarget(T2, 0x020300, PSK2)
    app, host = setup({T1: None}, [t1, t2])  # T1 is `skip = true`, T2 unknown
    host.start()
    assert host.down(SecureConnect) == []
    assert len(host.of(AppNotice)) == 2
    host.inject(AuthNeeded(t2.ref))  # the host logged in securely anyway: refuse by policy
    fails = host.down(AuthFail)
    assert [(f.port.wwpn, f.reason) for f in fails] == [(T2, AuthFailReason.POLICY)]
    assert host.down(ElsSend) == []


# --- certificates -----------------------------------------------------------------------------------------


def _cert(subject_cn: str, key, issuer_name, issuer_key, *, ca: bool, wwpn: int | None = None):
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if wwpn is not None:
        uri = "urn:wwpn:" + wwpn.to_bytes(8, "big").hex()
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        b = b.add_extension(san, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, data: bytes, mode: int = 0o600) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return str(path)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(tmp_path, name: str, wwpns: list[int]):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = _cert(f"{name} CA", ca_key, ca_name, ca_key, ca=True)
    ca_path = _write(tmp_path / f"{name}-ca.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    creds = {}
    for w in wwpns:
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(f"port {w:016x}", k, ca_name, ca_key, ca=False, wwpn=w)
        cp = _write(tmp_path / f"{name}-{w:x}.pem", c.public_bytes(serialization.Encoding.PEM), 0o644)
        kp = _write(tmp_path / f"{name}-{w:x}.key", _pem_key(k))
        creds[w] = (cp, kp, ca_path)
    return creds


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return make_pki(d, "good", [HOST_WWPN, T1]), make_pki(d, "rogue", [T1])


def test_ecdsa_certificates_full_flow(pki):
    good, _ = pki
    host_creds = load_cert_credentials(good[HOST_WWPN][0], good[HOST_WWPN][1], [good[HOST_WWPN][2]])
    target_creds = load_cert_credentials(good[T1][0], good[T1][1], [good[T1][2]])
    t = FakeTarget(T1, 0x020200, creds=target_creds)
    app, host = setup({T1: host_creds}, [t])
    host.start()
    assert app.session(T1).state is SessionState.SECURE
    assert_keys_crosswise(host, t, app)
    assert "PRIVATE" not in repr(host_creds) and "PRIVATE" not in repr(app.config)


def test_certificate_from_another_ca_is_refused(pki):
    good, rogue = pki
    host_creds = load_cert_credentials(good[HOST_WWPN][0], good[HOST_WWPN][1], [good[HOST_WWPN][2]])
    # The target presents a certificate for the right WWPN, issued by a CA we do not trust.
    target_creds = load_cert_credentials(rogue[T1][0], rogue[T1][1], [good[T1][2]])
    t = FakeTarget(T1, 0x020200, creds=target_creds)
    app, host = setup({T1: host_creds}, [t])
    host.start()
    fails = host.down(AuthFail)
    assert [f.reason for f in fails] == [AuthFailReason.AUTH_FAILED]  # we refused the peer
    assert host.down(SaUpdate) == []
    assert app.session(T1).state is SessionState.FAILED
