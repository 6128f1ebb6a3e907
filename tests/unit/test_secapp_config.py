"""edifd.secapp.config: TOML validation with key paths, credential files, no default PSK, no leaks."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edifd.fc import wwn_str
from edifd.ike import AES_GCM_16_256, GMAC_128
from edifd.ike.codes import DhGroup
from edifd.secapp.config import (
    CertCredentials,
    CredentialFileError,
    PskCredentials,
    SecConfigError,
    load_config,
    load_psk,
    parse_bytes,
    parse_config,
    parse_wwpn,
)

SECRET = "an excellent secret of 32 bytes!"
W1 = "21:00:00:1b:32:a0:b0:c2"
W2 = "2100001b32a0b0c3"


def write(path, data: bytes | str, mode: int = 0o600) -> str:
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return str(path)


def self_signed(key, common_name: str) -> x509.Certificate:
    """A certificate for `key`, signed by itself, valid from now for a day."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def pem_key(key) -> bytes:
    """`key` as an unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def problems(data: dict, base) -> list[str]:
    with pytest.raises(SecConfigError) as ei:
        parse_config(data, "t.toml", base)
    for p in ei.value.problems:
        assert SECRET not in p
    assert SECRET not in str(ei.value)
    return ei.value.problems


def test_wwpn_and_size_parsing():
    assert parse_wwpn(W1) == 0x2100001B32A0B0C2 == parse_wwpn("0x2100001b32a0b0c2")
    assert wwn_str(parse_wwpn(W2)) == "21:00:00:1b:32:a0:b0:c3"
    for bad in ("21:00", "zz00001b32a0b0c3", "21:00:00:1b:32:a0:b0:c2:00", 5):
        with pytest.raises(ValueError):
            parse_wwpn(bad)  # type: ignore[arg-type]
    assert parse_bytes("512GiB") == 512 << 30 and parse_bytes("1T") == 1 << 40 and parse_bytes(0) == 0
    for bad in ("lots", -1, True, 1.5):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_full_config_loads_psk_cert_and_skip(tmp_path):
    write(tmp_path / "a.psk", SECRET + "\n")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = self_signed(key, "2000001b32a0b0c1").public_bytes(serialization.Encoding.PEM)
    write(tmp_path / "host.pem", pem, 0o644)
    write(tmp_path / "ca.pem", pem + pem, 0o644)  # two blocks in one file
    write(tmp_path / "host.key", pem_key(key))
    toml = f"""
channel_key = "channel.key"
keepalive_interval = 2.5
[rekey]
lifetime = 600
bytes = "64GiB"
[ike]
esp = ["aes256gcm16", "aes128gmac"]
pfs = "ecp256"
[targets."{W1}"]
psk_file = "a.psk"
[targets."{W2}"]
cert = "host.pem"
key = "host.key"
ca = "ca.pem"
[targets."21:00:00:1b:32:a0:b0:c4"]
skip = true
"""
    path = write(tmp_path / "agent.toml", toml, 0o644)
    cfg = load_config(path)
    assert cfg.channel_key == tmp_path / "channel.key"
    assert cfg.keepalive_interval == 2.5 and cfg.rekey.lifetime == 600 and cfg.rekey.bytes == 64 << 30
    assert cfg.ike.esp_ciphers == (AES_GCM_16_256, GMAC_128) and cfg.ike.pfs_group == DhGroup.ECP_256
    p1 = cfg.peers[parse_wwpn(W1)]
    assert isinstance(p1.credentials, PskCredentials) and p1.credentials.psk == SECRET.encode()
    p2 = cfg.peers[parse_wwpn(W2)].credentials
    assert isinstance(p2, CertCredentials) and len(p2.ca_certificates) == 2
    assert cfg.peers[0x2100001B32A0B0C4].skip
    for text in (repr(cfg), repr(p1), repr(p1.credentials), repr(p2), str(cfg.peers)):
        assert SECRET not in text and "PRIVATE" not in text


def test_defaults_when_only_targets_given(tmp_path):
    write(tmp_path / "a.psk", "hex:" + SECRET.encode().hex())
    cfg = parse_config({"targets": {W1: {"psk_file": "a.psk"}}}, base_dir=tmp_path)
    assert cfg.peers[parse_wwpn(W1)].credentials.psk == SECRET.encode()
    assert cfg.keepalive_interval == 5.0 and cfg.rekey.lifetime == 3600 and cfg.channel_key is None


def test_no_default_psk_and_contradictions_are_named_by_key_path(tmp_path):
    write(tmp_path / "a.psk", SECRET)
    data = {
        "bogus": 1,
        "keepalive_interval": -1,
        "rekey": {"lifetime": 1, "bytes": "12 parsecs", "extra": True},
        "ike": {"esp": ["des"], "ike": ["aes128gmac"], "pfs": "modp1024", "retransmit_tries": 99},
        "targets": {
            W1: {},  # no credentials: there is no default PSK
            W2: {"psk_file": "a.psk", "cert": "x.pem"},
            "21:00:00:1b:32:a0:b0:c4": {"skip": True, "psk_file": "a.psk"},
            "21:00:00:1b:32:a0:b0:c5": {"cert": "x.pem"},
            "not-a-wwpn": {"psk_file": "a.psk"},
            "21:00:00:1b:32:a0:b0:c6": {"psk_file": "a.psk", "colour": "red"},
        },
    }
    got = problems(data, tmp_path)
    want = [
        "bogus: unknown key",
        "keepalive_interval: seconds between",
        "rekey.extra: unknown key",
        "rekey.lifetime: seconds between",
        "rekey.bytes: expected a size",
        "ike.ike[0]: one of",
        "ike.esp[0]: one of",
        "ike.pfs: none or one of",
        "ike.retransmit_tries: between 0 and 20",
        f'targets."{W1}": no credentials',
        f'targets."{W2}": give either psk_file or cert/key/ca',
        'targets."21:00:00:1b:32:a0:b0:c4": skip = true cannot be combined',
        'targets."21:00:00:1b:32:a0:b0:c5": certificate authentication also needs key, ca',
        'targets."not-a-wwpn": not a WWPN',
        'targets."21:00:00:1b:32:a0:b0:c6".colour: unknown key',
    ]
    for w in want:
        assert any(p.startswith(w) for p in got), (w, got)
    assert len(got) == len(want)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o666])
def test_psk_file_with_loose_permissions_is_refused(tmp_path, mode):
    path = write(tmp_path / "a.psk", SECRET, mode)
    with pytest.raises(CredentialFileError) as ei:
        load_psk(path)
    assert f"{mode:04o}" in str(ei.value) and SECRET not in str(ei.value)
    got = problems({"targets": {W1: {"psk_file": path}}}, tmp_path)
    assert len(got) == 1 and got[0].startswith(f'targets."{W1}": PSK file') and "mode" in got[0]


def test_psk_file_group_readable_is_refused(tmp_path):
    # One policy for every secret file (edifd.edges.secret_file): no group access either.
    with pytest.raises(CredentialFileError, match="its group"):
        load_psk(write(tmp_path / "a.psk", SECRET, 0o640))
    assert load_psk(write(tmp_path / "b.psk", SECRET, 0o600)).psk == SECRET.encode()


def test_bad_psk_contents_and_files(tmp_path):
    cases = {
        "short": (write(tmp_path / "s.psk", "short\n"), "at least 16 bytes"),
        "badhex": (write(tmp_path / "h.psk", "hex:" + "zz" * 20), "hex digits"),
        "big": (write(tmp_path / "b.psk", "x" * 5000), "larger than"),
        "missing": (str(tmp_path / "nope.psk"), "cannot open"),
        "dir": (str(tmp_path), "not a regular file"),
    }
    os.chmod(tmp_path, 0o700)
    for path, why in cases.values():
        with pytest.raises(CredentialFileError, match=why):
            load_psk(path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(CredentialFileError, match="not a regular file"):
        load_psk(str(fifo))  # must not hang


def test_mismatched_or_bad_certificate_files(tmp_path):
    k1, k2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(k1, "x")
    write(tmp_path / "c.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write(tmp_path / "wrong.key", pem_key(k2))
    write(tmp_path / "loose.key", pem_key(k1), 0o644)
    junk = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    write(tmp_path / "junk.pem", junk, 0o644)
    write(tmp_path / "junk.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    t = {
        "a": {"cert": "c.pem", "key": "wrong.key", "ca": "c.pem"},
        "b": {"cert": "c.pem", "key": "loose.key", "ca": "c.pem"},
        "c": {"cert": "junk.pem", "key": "wrong.key", "ca": "c.pem"},
        "d": {"cert": "c.pem", "key": "junk.key", "ca": "c.pem"},
    }
    wwpns = {k: f"21:00:00:1b:32:a0:b0:{i:02x}" for i, k in enumerate(t)}
    got = problems({"targets": {wwpns[k]: v for k, v in t.items()}}, tmp_path)
    assert len(got) == 4
    assert "does not belong to certificate" in got[0]
    assert "mode 0644" in got[1]
    assert "no valid X.509 certificate" in got[2]
    assert "no unencrypted PEM/DER private key" in got[3]


def test_load_config_unreadable_or_not_toml(tmp_path):
    with pytest.raises(SecConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = write(tmp_path / "bad.toml", "targets = [", 0o644)
    with pytest.raises(SecConfigError, match="not valid TOML"):
        load_config(bad)


def test_responder_side_uses_the_same_format_under_another_table(tmp_path):
    write(tmp_path / "a.psk", SECRET)
    path = write(tmp_path / "target.toml", f'[initiators."{W1}"]\npsk_file = "a.psk"\n', 0o644)
    cfg = load_config(path, peers_key="initiators")
    assert cfg.peers[parse_wwpn(W1)].credentials.psk == SECRET.encode()
    with pytest.raises(SecConfigError, match="initiators: unknown key"):
        load_config(path)  # the agent's file has [targets], not [initiators]


def test_type_errors_name_toml_types_and_key_paths(tmp_path):
    import re
    write(tmp_path / "a.psk", SECRET)
    data = {
        "channel_key": 5,
        "keepalive_interval": "5",
        "keepalive_misses": datetime.time(1, 2),
        "rekey": 1,
        "ike": {"ike": "aes128gcm16", "pfs": False},
        "targets": {W1: {"psk_file": 7}, W2: {"skip": "yes"}},
    }
    got = problems(data, tmp_path)
    assert got == [
        "channel_key: expected a string, got an integer",
        "keepalive_interval: expected an integer or a float, got a string",
        "keepalive_misses: expected an integer, got a time",
        "rekey: expected a table, got an integer",
        "ike.ike: expected an array, got a string",
        "ike.pfs: expected a string, got a boolean",
        f'targets."{W1}".psk_file: expected a string, got an integer',
        f'targets."{W1}": no credentials: give psk_file, or cert + key + ca, or skip = true '
        "(there is no default PSK)",
        f'targets."{W2}".skip: expected a boolean, got a string',
    ]
    assert not [p for p in got if re.search(r"\b(int|str|NoneType|bool|dict|float,)\b", p)]
    assert problems({"targets": []}, tmp_path) == ["targets: expected a table, got an array"]


def test_a_non_utf8_config_is_a_clear_error(tmp_path):
    bad = write(tmp_path / "agent.toml", b'keepalive_interval = 5\n# caf\xe9\n', 0o644)
    with pytest.raises(SecConfigError) as ei:
        load_config(bad)
    assert ei.value.problems == ["not valid TOML: not UTF-8 text (byte 0xe9 on line 2); TOML files are UTF-8"]


def test_credential_paths_with_a_nul_or_empty_are_refused(tmp_path):
    targets = {W1: {"psk_file": "a\0.psk"}, W2: {"cert": "", "key": "k", "ca": ["c\0"]}}
    got = problems({"channel_key": "k\0", "targets": targets}, tmp_path)
    assert got == [
        "channel_key: a file path cannot contain a NUL character",
        f'targets."{W1}".psk_file: a file path cannot contain a NUL character',
        f'targets."{W2}".cert: empty file path',
        f'targets."{W2}".ca: a file path cannot contain a NUL character',
    ]
