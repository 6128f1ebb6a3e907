"""Configuration of the security application (edif-agent) and of the responder side (edif-target).

One TOML file, validated completely before anything runs: every problem is named by its key path
(``targets."21:00:00:1b:32:a0:b0:c2".psk_file: ...``), as ``edifd/config.py`` does, so an operator fixes
the file in one go. Loading reads the credential files too (this module is an I/O edge); the
``SecConfig`` it returns holds loaded credentials, so the sans-IO core never touches a file.

Security rules (docs/secapp.md §4):

* there is no default PSK and none is ever derived from WWPNs (Marvell's plugin does that; it is
  guessable). A target without credentials is an error unless it says ``skip = true``;
* PSK and private-key files that the group or other users can access at all are refused (one
  policy for every secret: edifd.edges.secret_file);
* secrets never appear in a repr, a log line or an error text (errors name paths and sizes only).

Example::

    channel_key = "/etc/edif-agent/channel.key"
    keepalive_interval = 5.0

    [rekey]
    lifetime = 3600          # seconds; 0 = never by time
    bytes = "512GiB"         # protected bytes in either direction; 0 = never by volume

    [ike]
    ike = ["aes128gcm16", "aes256gcm16"]
    esp = ["aes128gcm16", "aes256gcm16"]   # also aes128gmac / aes256gmac (integrity only)

    [targets."21:00:00:1b:32:a0:b0:c2"]
    psk_file = "/etc/edif-agent/psk/array1"

    [targets."21:00:00:1b:32:a0:b0:c3"]
    cert = "/etc/edif-agent/host.pem"
    key = "/etc/edif-agent/host.key"
    ca = ["/etc/edif-agent/ca.pem"]

    [targets."21:00:00:1b:32:a0:b0:c4"]
    skip = true

    [metrics]                # optional: the Prometheus endpoint of edif-agent run (docs/metrics.md)
    listen = "127.0.0.1:9464"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edifd.confcheck import ProblemCollector, expected_kind, key_path, load_toml, toml_type
from edifd.confcheck import parse_size as _parse_size
from edifd.edges.secret_file import SecretFileError, read_regular_file, read_secret_file
from edifd.fc import wwn_str
from edifd.ike import AES_GCM_16_128, AES_GCM_16_256, GMAC_128, GMAC_256, CipherSuite
from edifd.ike.codes import DhGroup
from edifd.metrics import MetricsConfig, parse_metrics_table

MIN_PSK_LEN = 16  # bytes; a shorter PSK is refused (offline guessing of the PSK AUTH is cheap)
MAX_PSK_FILE = 4096
MAX_PEM_FILE = 256 * 1024

IKE_CIPHERS: dict[str, CipherSuite] = {"aes128gcm16": AES_GCM_16_128, "aes256gcm16": AES_GCM_16_256}
ESP_CIPHERS: dict[str, CipherSuite] = {
    **IKE_CIPHERS,
    "aes128gmac": GMAC_128,
    "aes256gmac": GMAC_256,
}
DH_GROUPS: dict[str, DhGroup] = {"curve25519": DhGroup.CURVE25519, "ecp256": DhGroup.ECP_256}

_WWPN_RE = re.compile(r"^(?:0x)?[0-9a-fA-F]{16}$|^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){7}$")


class SecConfigError(ValueError):
    """The configuration is invalid; `problems` lists each one with its key path. Never holds secrets."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class CredentialFileError(ValueError):
    """A credential file was refused (permissions, size, content). The text names the path only."""


def parse_wwpn(text: str) -> int:
    """'21:00:00:1b:32:a0:b0:c2', '2100001b32a0b0c2' or '0x2100001b32a0b0c2' -> int."""
    if not isinstance(text, str) or not _WWPN_RE.match(text):
        raise ValueError(f"not a WWPN (16 hex digits, optionally colon-separated): {text!r}")
    return int(text.replace(":", "").removeprefix("0x"), 16)


def parse_bytes(value: Any) -> int:
    """'512GiB', '1T', 4096 -> bytes (binary units); 0 allowed (= off)."""
    return _parse_size(value, example="512GiB", allow_zero=True)


# --- TOML type errors -------------------------------------------------------------------------------------


def type_problem(where: str, kind: type | tuple[type, ...], value: Any) -> str:
    """`where: expected a string, got an integer`."""
    return f"{where}: expected {expected_kind(kind)}, got {toml_type(value)}"


class _Reader(ProblemCollector):
    """edifd.confcheck's collector; a key taking a number says 'expected an integer or a float'."""

    number_words = "an integer or a float"


# --- credentials ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PskCredentials:
    """A pre-shared key loaded from `source`. The key never shows in repr()."""

    psk: bytes = field(repr=False)
    source: str = ""


@dataclass(frozen=True)
class CertCredentials:
    """Our certificate + private key, optional intermediates, and the CAs that vouch for the peer."""

    certificate: x509.Certificate = field(repr=False)
    private_key: object = field(repr=False)
    ca_certificates: tuple[x509.Certificate, ...] = field(repr=False)
    intermediates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    source: str = ""


Credentials = PskCredentials | CertCredentials


@dataclass(frozen=True)
class PeerPolicy:
    """One configured remote port. credentials None means `skip = true`: never authenticate it."""

    wwpn: int
    credentials: Credentials | None

    @property
    def skip(self) -> bool:
        return self.credentials is None

    def __repr__(self) -> str:
        kind = "skip" if self.credentials is None else type(self.credentials).__name__
        return f"PeerPolicy(wwpn={wwn_str(self.wwpn)}, credentials={kind})"


@dataclass(frozen=True)
class RekeyPolicy:
    lifetime: float = 3600.0  # seconds a child SA pair is used before rekeying; 0 = off
    bytes: int = 1 << 40  # protected bytes (max of tx, rx) before rekeying; 0 = off
    stats_interval: float = 30.0  # how often GET_STATS polls the byte counters (only if bytes > 0)


@dataclass(frozen=True)
class IkePolicy:
    ike_ciphers: tuple[CipherSuite, ...] = (AES_GCM_16_128, AES_GCM_16_256)
    esp_ciphers: tuple[CipherSuite, ...] = (AES_GCM_16_128, AES_GCM_16_256)
    dh_groups: tuple[DhGroup, ...] = (DhGroup.CURVE25519, DhGroup.ECP_256)
    pfs_group: DhGroup | None = None  # KE in rekey CREATE_CHILD_SA
    retransmit_timeout: float = 2.0  # first IKE retransmission; doubles each time
    retransmit_tries: int = 5  # retransmissions before the peer is declared unreachable


@dataclass(frozen=True)
class SecConfig:
    """The whole validated configuration, credentials loaded."""

    peers: Mapping[int, PeerPolicy]
    channel_key: Path | None = None
    keepalive_interval: float = 5.0  # KEEPALIVE period; 0 = none (and no host-loss detection)
    keepalive_misses: int = 3  # intervals without any upstream message before the host is declared lost
    reconnect_delay: float = 1.0  # before SECURE_CONNECT again after a session went down
    auth_retry_backoff: float = 30.0  # after an authentication failure; doubles up to auth_retry_max
    auth_retry_max: float = 600.0
    rekey: RekeyPolicy = RekeyPolicy()
    ike: IkePolicy = IkePolicy()
    metrics: MetricsConfig | None = None  # [metrics] (the agent's only): the Prometheus endpoint; None = off

    def __repr__(self) -> str:
        return (
            f"SecConfig(peers={len(self.peers)}, channel_key={self.channel_key}, "
            f"keepalive_interval={self.keepalive_interval}, rekey={self.rekey}, ike={self.ike}, "
            f"metrics={self.metrics.listen if self.metrics else None})"
        )


def _read_file(path: str, limit: int, what: str, secret: bool) -> bytes:
    try:
        if secret:
            return read_secret_file(path, what=what, limit=limit)
        return read_regular_file(path, what=what, limit=limit)
    except SecretFileError as e:
        raise CredentialFileError(str(e)) from None


def load_psk(path: str) -> PskCredentials:
    """The PSK is the file's bytes with trailing CR/LF removed (an editor's newline is not part of it).

    At least MIN_PSK_LEN bytes. A file starting with ``hex:`` holds the key as hex digits.
    """
    raw = _read_file(path, MAX_PSK_FILE, "PSK", secret=True).rstrip(b"\r\n")
    if raw.startswith(b"hex:"):
        try:
            raw = bytes.fromhex(raw[4:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CredentialFileError(f"PSK file {path}: 'hex:' is not followed by hex digits") from None
    if len(raw) < MIN_PSK_LEN:
        raise CredentialFileError(f"PSK file {path}: the key must be at least {MIN_PSK_LEN} bytes")
    return PskCredentials(raw, path)


def _load_certs(path: str, what: str) -> list[x509.Certificate]:
    data = _read_file(path, MAX_PEM_FILE, what, secret=False)
    try:
        if b"-----BEGIN" in data:
            certs = _split_pem(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CredentialFileError(f"{what} file {path} holds no valid X.509 certificate") from None
    if not certs:
        raise CredentialFileError(f"{what} file {path} holds no certificate")
    return certs


def _split_pem(data: bytes) -> list[x509.Certificate]:
    # cryptography 38 (Debian 12) has no load_pem_x509_certificates (new in 39): split the blocks.
    out = []
    marker_end = b"-----END CERTIFICATE-----"
    for block in data.split(marker_end)[:-1]:
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            out.append(x509.load_pem_x509_certificate(block[start:] + marker_end + b"\n"))
    return out


def load_private_key(path: str) -> object:
    data = _read_file(path, MAX_PEM_FILE, "private key", secret=True)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError):
        # The library's message could quote the input; say only what was wrong.
        raise CredentialFileError(
            f"private key file {path} holds no unencrypted PEM/DER private key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CredentialFileError(f"private key file {path}: only ECDSA and RSA keys are supported")
    return key


def load_cert_credentials(cert: str, key: str, ca: list[str]) -> CertCredentials:
    chain = _load_certs(cert, "certificate")
    private_key = load_private_key(key)
    ours = chain[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mine = private_key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != mine:
        raise CredentialFileError(f"private key file {key} does not belong to certificate {cert}")
    cas: list[x509.Certificate] = []
    for p in ca:
        cas += _load_certs(p, "CA certificate")
    return CertCredentials(chain[0], private_key, tuple(cas), tuple(chain[1:]), cert)


# --- parsing ----------------------------------------------------------------------------------------------


def _names(r: _Reader, t: dict, key: str, where: str, table: dict, default: tuple) -> tuple:
    names = r.take(t, key, where, list, None)
    if names is None:
        return default
    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str) or n.lower() not in table:
            r.problems.append(f"{where}.{key}[{i}]: one of {', '.join(table)}")
        elif table[n.lower()] not in out:
            out.append(table[n.lower()])
    if not names:
        r.problems.append(f"{where}.{key}: needs at least one entry")
    return tuple(out) or default


def _bad_paths(r: _Reader, where: str, values: dict[str, Any]) -> bool:
    """Record a path that no file can have (a NUL character, the empty string); True if there was one."""
    bad = False
    for key, v in values.items():
        for p in (v if isinstance(v, list) else [v]):
            if isinstance(p, str) and ("\0" in p or not p):
                why = "a file path cannot contain a NUL character" if p else "empty file path"
                r.problems.append(f"{key_path(where, key)}: {why}")
                bad = True
    return bad


def _path(value: str, base: Path) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def _read_peers(r: _Reader, table: dict, where: str, base: Path) -> dict[int, PeerPolicy]:
    """`[targets."<wwpn>"]` tables (or `[peers.*]` on the responder side) -> loaded policies."""
    peers: dict[int, PeerPolicy] = {}
    for name, t in table.items():
        w = f'{where}."{name}"'
        try:
            wwpn = parse_wwpn(name)
        except ValueError as e:
            r.problems.append(f"{w}: {e}")
            continue
        if wwpn in peers:
            r.problems.append(f"{w}: the same WWPN is configured twice")
            continue
        if not isinstance(t, dict):
            r.problems.append(f"{w}: expected a table")
            continue
        r.unknown(t, {"psk_file", "cert", "key", "ca", "skip"}, w)
        skip = r.take(t, "skip", w, bool, False)
        if "skip" in t and not isinstance(t["skip"], bool):
            continue  # reported; "no credentials" would only repeat it
        psk_file = r.take(t, "psk_file", w, str)
        cert, key = r.take(t, "cert", w, str), r.take(t, "key", w, str)
        ca = r.take(t, "ca", w, (str, list))
        cas = [ca] if isinstance(ca, str) else (ca or [])
        if any(not isinstance(c, str) for c in cas):
            r.problems.append(f"{w}.ca: expected a path or a list of paths")
            cas = []
        has_cert = cert is not None or key is not None or bool(cas)
        if _bad_paths(r, w, {"psk_file": psk_file, "cert": cert, "key": key, "ca": cas}):
            continue
        if skip:
            if psk_file is not None or has_cert:
                r.problems.append(f"{w}: skip = true cannot be combined with credentials")
            peers[wwpn] = PeerPolicy(wwpn, None)
            continue
        if psk_file is None and not has_cert:
            r.problems.append(
                f"{w}: no credentials: give psk_file, or cert + key + ca, or skip = true "
                "(there is no default PSK)"
            )
            continue
        if psk_file is not None and has_cert:
            r.problems.append(f"{w}: give either psk_file or cert/key/ca, not both")
            continue
        try:
            if psk_file is not None:
                creds: Credentials = load_psk(_path(psk_file, base))
            else:
                missing = [k for k, v in (("cert", cert), ("key", key), ("ca", cas or None)) if v is None]
                if missing:
                    r.problems.append(f"{w}: certificate authentication also needs {', '.join(missing)}")
                    continue
                creds = load_cert_credentials(
                    _path(cert, base), _path(key, base), [_path(c, base) for c in cas]
                )
        except CredentialFileError as e:
            r.problems.append(f"{w}: {e}")
            continue
        peers[wwpn] = PeerPolicy(wwpn, creds)
    return peers


def parse_config(data: dict, source: str = "config", base_dir: str | Path = ".",
                 peers_key: str = "targets") -> SecConfig:
    """Validate a decoded TOML document and load the credential files it names (relative to base_dir).

    ``[metrics]`` belongs to the agent's file (peers_key "targets"); a responder's credentials file
    (edif-target's ``auth``) has no endpoint of its own, so there it is an unknown key."""
    base = Path(base_dir)
    r = _Reader()
    top = {"channel_key", "keepalive_interval", "keepalive_misses", "reconnect_delay", "auth_retry_backoff",
           "auth_retry_max", "rekey", "ike", peers_key}
    if peers_key == "targets":
        top.add("metrics")
    r.unknown(data, top, "")
    metrics, problems = parse_metrics_table(data.get("metrics") if "metrics" in top else None)
    r.problems += problems
    ck = r.take(data, "channel_key", "", str)
    bad_ck = ck is not None and _bad_paths(r, "", {"channel_key": ck})
    channel_key = Path(_path(ck, base)) if ck is not None and not bad_ck else None
    keepalive = r.seconds(data, "keepalive_interval", "", 5.0, 0.1, 3600, zero_ok=True)
    misses = r.take(data, "keepalive_misses", "", int, 3)
    if not 1 <= misses <= 100:
        r.problems.append("keepalive_misses: between 1 and 100")
        misses = 3
    reconnect = r.seconds(data, "reconnect_delay", "", 1.0, 0.0, 3600)
    backoff = r.seconds(data, "auth_retry_backoff", "", 30.0, 0.1, 86400)
    backoff_max = r.seconds(data, "auth_retry_max", "", 600.0, 0.1, 86400)
    if backoff_max < backoff:
        r.problems.append("auth_retry_max: must not be below auth_retry_backoff")

    rk = r.take(data, "rekey", "", dict, {})
    r.unknown(rk, {"lifetime", "bytes", "stats_interval"}, "rekey")
    lifetime = r.seconds(rk, "lifetime", "rekey", 3600.0, 10.0, 30 * 86400, zero_ok=True)
    try:
        volume = parse_bytes(rk.get("bytes", 1 << 40))
        if 0 < volume < (1 << 20):
            r.problems.append("rekey.bytes: at least 1MiB (or 0 = off)")
            volume = 1 << 40
    except ValueError as e:
        r.problems.append(f"rekey.bytes: {e}")
        volume = 1 << 40
    stats_interval = r.seconds(rk, "stats_interval", "rekey", 30.0, 0.5, 3600)

    ik = r.take(data, "ike", "", dict, {})
    r.unknown(ik, {"ike", "esp", "dh_groups", "pfs", "retransmit_timeout", "retransmit_tries"}, "ike")
    ike_ciphers = _names(r, ik, "ike", "ike", IKE_CIPHERS, IkePolicy.ike_ciphers)
    esp_ciphers = _names(r, ik, "esp", "ike", ESP_CIPHERS, IkePolicy.esp_ciphers)
    groups = _names(r, ik, "dh_groups", "ike", DH_GROUPS, IkePolicy.dh_groups)
    pfs_name = r.take(ik, "pfs", "ike", str, "none")
    pfs = None
    if pfs_name != "none":
        if pfs_name not in DH_GROUPS:
            r.problems.append(f"ike.pfs: none or one of {', '.join(DH_GROUPS)}")
        else:
            pfs = DH_GROUPS[pfs_name]
    retx = r.seconds(ik, "retransmit_timeout", "ike", 2.0, 0.05, 60)
    tries = r.take(ik, "retransmit_tries", "ike", int, 5)
    if not 0 <= tries <= 20:
        r.problems.append("ike.retransmit_tries: between 0 and 20")
        tries = 5

    peers = _read_peers(r, r.take(data, peers_key, "", dict, {}), peers_key, base)
    if r.problems:
        raise SecConfigError(r.problems, source)
    return SecConfig(
        peers=peers,
        channel_key=channel_key,
        keepalive_interval=keepalive,
        keepalive_misses=misses,
        reconnect_delay=reconnect,
        auth_retry_backoff=backoff,
        auth_retry_max=backoff_max,
        rekey=RekeyPolicy(lifetime, volume, stats_interval),
        ike=IkePolicy(ike_ciphers, esp_ciphers, groups, pfs, retx, tries),
        metrics=metrics,
    )


def load_config(path: str | Path, peers_key: str = "targets") -> SecConfig:
    """Read and validate a TOML file; relative credential paths are relative to its directory."""
    path = Path(path)
    return parse_config(load_toml(path, SecConfigError), str(path), path.parent, peers_key)
