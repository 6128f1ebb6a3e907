"""The commented configurations in examples/ pass their tool's own check-config, document every key
the loaders take, and show true defaults.

Each example is installed under a temporary root as an operator would install it: its absolute paths
("/etc/edifd/...", "/var/lib/...") re-rooted there, the directories it names created, and every secret
file it names generated with mode 0600 (channel keys, PSKs; for certificate authentication a CA, a
certificate naming the HBA port's WWPN and its private key; iSCSI CHAP secrets). Then `edifd check-config`,
`edif-agent check-config` and `edif-target check-config` run through click's CliRunner.

In the examples, ``#key = value`` (no space after '#') shows a key at its default, so uncommenting
those lines must give the loader's very same configuration; ``# key = value`` is an optional key without
a default. Both forms count as documenting the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edifd import config as edifd_config
from edifd.cli import edifd_main
from edifd.metrics import MetricsConfig
from edifd.secapp import config as sec_config
from edifd.target import cli as target_cli
from edifd.target import config as target_config
from edifd.target import server as target_server
from guest_agent.cli import main as agent_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET_KEYS = ("channel_key", "psk_file")  # 32 random bytes each (a PSK needs at least 16)
PKI_KEYS = ("cert", "key", "ca")
# Dataclass field -> the TOML key it is read from, where the two names differ.
TOML_NAME = {"luns": "lun", "ports": "port", "peers": "targets", "ike_ciphers": "ike",
             "esp_ciphers": "esp", "pfs_group": "pfs", "pcap_path": "pcap"}
# ... and where one class differs from that: [metrics] listen = "HOST:PORT" fills two fields.
CLASS_TOML_NAME: dict[type, dict[str, str]] = {MetricsConfig: {"host": "listen", "port": "listen"}}


# --- installing an example under a temporary root -----------------------------------------------------


def _reroot(text: str, root: Path) -> str:
    """Every absolute path string ("/...") moved under `root`."""
    return text.replace('"/', f'"{root}/')


def _install(name: str, config_dir: Path, root: Path) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    dest = config_dir / name
    dest.write_text(_reroot((EXAMPLES / name).read_text(), root))
    return dest


def _secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, san: str | None = None
                 ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - day).not_valid_after(now + 30 * day)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        uri = x509.UniformResourceIdentifier(san)
        b = b.add_extension(x509.SubjectAlternativeName([uri]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pki(paths: dict[str, list[Path]], wwpn: str) -> None:
    """A CA, and a certificate for `wwpn` (SAN urn:wwpn:...) signed by it, with its private key."""
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("example CA", ca_key, "example CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(wwpn, key, "example CA", ca_key, ca=False, san=f"urn:wwpn:{wwpn.replace(':', '')}")
    for p in paths["ca"]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(ca_cert.public_bytes(pem))
    for p in paths["cert"]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(cert.public_bytes(pem))
    for p in paths["key"]:
        _secret(p, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _provide_credentials(config: Path, psk: bytes, peers_key: str, wwpn: str) -> None:
    """Generate the secret files and certificates a security configuration (agent.toml's format) names,
    relative to its directory as the loader resolves them."""
    data = tomllib.loads(config.read_text())
    base = config.parent
    pki: dict[str, list[Path]] = {k: [] for k in PKI_KEYS}
    tables = [data, *data.get(peers_key, {}).values()]
    for t in tables:
        for k in SECRET_KEYS:
            if k in t:
                _secret(base / t[k], psk)
        for k in PKI_KEYS:
            for v in ([t[k]] if isinstance(t.get(k), str) else t.get(k, [])):
                pki[k].append(base / v)
    if any(pki.values()):
        _pki(pki, wwpn)


def _edifd(root: Path) -> Path:
    path = _install("edifd.toml", root / "etc/edifd", root)
    cfg = edifd_config.load_config(path)  # parsing only; check-config below does the host checks
    cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    for lun in cfg.luns:
        if lun.channel_key is not None:
            _secret(lun.channel_key, secrets.token_bytes(32))
        for chap in (lun.export.chap_secret_file, lun.export.mutual_secret_file):
            if chap is not None:  # 16 printable characters, no newline (edifd.edges.secret_file)
                _secret(chap, secrets.token_urlsafe(12).encode())
        if lun.type == "file":
            lun.path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _agent(root: Path, psk: bytes) -> Path:
    path = _install("agent.toml", root / "etc/edif-agent", root)
    _provide_credentials(path, psk, "targets", _hba_port()["wwpn"])
    return path


def _target(root: Path, psk: bytes) -> Path:
    config_dir = root / "etc/edif-target"
    path = _install("target.toml", config_dir, root)
    data = tomllib.loads(path.read_text())
    for port in data["port"]:
        if "auth" in port:
            auth = _install(port["auth"], config_dir, root)
            _provide_credentials(auth, psk, "initiators", _hba_port()["wwpn"])
        for lun in port.get("lun", []):
            (config_dir / lun["path"]).parent.mkdir(parents=True, exist_ok=True)
    return path


def _hba_port() -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / "edifd.toml").read_text())["hba"]["port"][0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture(autouse=True)
def _restore_logging():
    """Each tool's check-config sets up the process's logging (a root handler on CliRunner's stream, the
    root level); later tests must find it as it was."""
    log = logging.getLogger()
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:] = handlers
    log.setLevel(level)


def _check(main: Any, config: Path) -> str:
    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output.lower(), result.output
    return result.output


# --- check-config -----------------------------------------------------------------------------------------


def test_edifd_example_passes_edifd_check_config(root: Path) -> None:
    path = _edifd(root)
    out = _check(edifd_main, path)
    luns = tomllib.loads(path.read_text())["lun"]
    assert f"OK, {len(luns)} LUN(s)" in out
    for lun in luns:
        assert f"  {lun['name']}: {lun['type']} " in out


def test_agent_example_passes_edif_agent_check_config(root: Path) -> None:
    out = _check(agent_main, _agent(root, secrets.token_bytes(32)))
    assert "configuration OK" in out
    assert "targets: 3 (1 psk, 1 certificate, 1 skip)" in out
    assert f"channel key: {root}/etc/edif/channel.key (from channel_key)" in out


def test_target_example_passes_edif_target_check_config(root: Path) -> None:
    out = _check(target_cli.main, _target(root, secrets.token_bytes(32)))
    assert "configuration OK" in out
    assert "port t0: wwpn 2100001b32000002" in out and "EDIF responder for 1 initiator(s) (psk)" in out
    assert "port t1: wwpn 2100001b32000005" in out and "security off" in out


def test_check_config_refuses_the_examples_without_their_key_files(root: Path) -> None:
    """What the installation step provides is what the tools check: without the generated files (a
    channel key readable by others, a missing PSK) check-config fails and names the file."""
    edifd_toml = _edifd(root)
    key = root / "etc/edifd/keys/edif-vm.key"
    key.chmod(0o644)
    result = CliRunner().invoke(edifd_main, ["check-config", "--config", str(edifd_toml)])
    assert result.exit_code != 0 and f"run chmod g-r,o-r {key}" in result.output
    agent_toml = _agent(root, secrets.token_bytes(32))
    (agent_toml.parent / "psk/t0").unlink()
    result = CliRunner().invoke(agent_main, ["check-config", "--config", str(agent_toml)])
    assert result.exit_code != 0 and "psk/t0" in result.output


# --- the commented defaults are the defaults --------------------------------------------------------------


def _uncomment_defaults(path: Path) -> Path:
    text = path.read_text()
    uncommented, n = re.subn(r"(?m)^(\s*)#([a-z_]+ = )", r"\1\2", text)
    assert n > 0, f"{path.name} shows no default"
    out = path.with_name("defaults-" + path.name)
    out.write_text(uncommented)
    return out


def test_edifd_example_defaults_are_the_loaders(root: Path) -> None:
    path = _edifd(root)
    assert edifd_config.load_config(_uncomment_defaults(path)) == edifd_config.load_config(path)


def _without_peers(cfg: sec_config.SecConfig) -> tuple[sec_config.SecConfig, dict[int, str]]:
    kinds = {w: type(p.credentials).__name__ for w, p in cfg.peers.items()}
    return dataclasses.replace(cfg, peers={}), kinds


def test_agent_example_defaults_are_the_loaders(root: Path) -> None:
    path = _agent(root, secrets.token_bytes(32))
    written = sec_config.load_config(path)
    assert _without_peers(sec_config.load_config(_uncomment_defaults(path))) == _without_peers(written)


def test_target_example_defaults_are_the_loaders(root: Path) -> None:
    path = _target(root, secrets.token_bytes(32))
    defaults = _uncomment_defaults(path)
    assert target_config.load_target_config(defaults) == target_config.load_target_config(path)
    auth = path.parent / "t0-initiators.toml"
    assert (sec_config.load_config(_uncomment_defaults(auth), peers_key="initiators").ike
            == sec_config.load_config(auth, peers_key="initiators").ike)


def _enable_table(text: str, table: str) -> str:
    """The text with the commented-out `# [table]` and the `# key = value` lines after it uncommented."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == f"# [{table}]":
            inside = True
            line = line.replace("# [", "[", 1)
        elif inside and re.match(r"\s*# [a-z_]+ = ", line):
            line = line.replace("# ", "", 1)
        elif inside and not line.lstrip().startswith("#"):
            inside = False
        out.append(line)
    return "".join(out)


def test_agent_example_metrics_table_uncommented_is_valid(root: Path) -> None:
    path = _agent(root, secrets.token_bytes(32))
    enabled = path.with_name("metrics-agent.toml")
    enabled.write_text(_enable_table(path.read_text(), "metrics"))
    assert sec_config.load_config(enabled).metrics == MetricsConfig("127.0.0.1", 9464, False)
    assert sec_config.load_config(path).metrics is None  # off as shipped
    _check(agent_main, enabled)


# --- every key is documented ------------------------------------------------------------------------------

_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^(?:#( ?))?([a-z_]+)\s*=")


def documented_keys(text: str) -> dict[str, set[str]]:
    """table path -> keys the file sets or shows in a `#key = ` / `# key = ` comment; a table may be
    commented out too (`# [metrics]`); quoted table names (WWPNs) become '*', and a table header counts
    as its parent's key."""
    keys: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        s = line.strip()
        m = _HEADER.match(s.lstrip("#").lstrip())
        if m:
            parts = ["*" if p.startswith('"') else p for p in re.findall(r'"[^"]*"|[^.]+', m.group(1))]
            table = ".".join(parts)
            for i, part in enumerate(parts):
                if part != "*":
                    keys.setdefault(".".join(parts[:i]), set()).add(part)
            continue
        m = _KEY.match(s)
        if m and (s[0] != "#" or m.group(1) is not None):
            keys.setdefault(table, set()).add(m.group(2))
    return keys


def _fields(cls: type) -> set[str]:
    names = {**TOML_NAME, **CLASS_TOML_NAME.get(cls, {})}
    return {names.get(f.name, f.name) for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name, tables", [
    ("edifd.toml", {"": edifd_config.Config, "daemon": edifd_config.DaemonConfig,
                    "hba": edifd_config.HbaConfig, "hba.port": edifd_config.HbaPortConfig,
                    "lun": edifd_config.LunConfig, "lun.export": edifd_config.ExportConfig}),
    ("agent.toml", {"": sec_config.SecConfig, "rekey": sec_config.RekeyPolicy, "ike": sec_config.IkePolicy,
                    "metrics": MetricsConfig}),
    ("target.toml", {"": target_server.TargetConfig, "port": target_server.TargetPortConfig,
                     "port.lun": target_server.LunConfig}),
])
def test_examples_document_every_key(name: str, tables: dict[str, type]) -> None:
    """Every key of the loader's configuration classes appears in the example, and no other: a new
    setting needs a line (and a comment) in examples/ before this passes."""
    found = documented_keys((EXAMPLES / name).read_text())
    for table, cls in tables.items():
        assert found.get(table, set()) == _fields(cls), f"{name} [{table or 'top level'}]"


def test_agent_example_shows_every_kind_of_target() -> None:
    """The per-target keys (no configuration class holds them as fields): PSK, certificate, skip."""
    found = documented_keys((EXAMPLES / "agent.toml").read_text())
    assert found["targets.*"] == {"psk_file", "cert", "key", "ca", "skip"}


def test_documented_keys_reads_headers_and_both_comment_forms() -> None:
    text = ('top = 1\n# Prose = not a key\n#dflt = 2\n# opt = 3\n[a."21:00"]\nk = 1\n'
            '  [[b.c]]\n  #d = 1\n# x: y = z\n# [off]\n# e = 1\n')
    assert documented_keys(text) == {"": {"top", "dflt", "opt", "a", "b", "off"}, "a.*": {"k"},
                                     "b": {"c"}, "b.c": {"d"}, "off": {"e"}}


# --- one deployment across the three examples --------------------------------------------------------------


def test_the_examples_describe_one_deployment() -> None:
    """edifd's HBA port logs in to target.toml's t0, the control LUN carries that port's WWPN, the agent
    authenticates t0, and t0 knows the HBA port as an initiator."""
    edifd = tomllib.loads((EXAMPLES / "edifd.toml").read_text())
    agent = tomllib.loads((EXAMPLES / "agent.toml").read_text())
    target = tomllib.loads((EXAMPLES / "target.toml").read_text())
    initiators = tomllib.loads((EXAMPLES / "t0-initiators.toml").read_text())
    w = sec_config.parse_wwpn
    port = edifd["hba"]["port"][0]
    t0 = next(p for p in target["port"] if p["name"] == "t0")
    control = next(lun for lun in edifd["lun"] if lun["type"] == "control")
    remote = next(lun for lun in edifd["lun"] if lun["type"] == "remote")
    assert w(control["wwpn"]) == w(port["wwpn"])
    assert w(remote["target_wwpn"]) == w(t0["wwpn"])
    assert int(port["target"].rpartition(":")[2]) == int(t0["listen"].rpartition(":")[2])
    assert w(t0["wwpn"]) in {w(k) for k in agent["targets"]}
    assert w(port["wwpn"]) in {w(k) for k in initiators["initiators"]}
    assert t0["auth"] == "t0-initiators.toml"
