"""edif-agent check-config: the security service's TOML, its credential files and the channel key,
every problem at once, exit 7 (security config refused); never key material in the output."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guest_agent import cli
from guest_agent.exits import EXIT_CONFIG

SECRET = "an excellent secret of 32 bytes!"
KEY_HEX = "ab" * 32
W1, W2, W3 = "21:00:00:1b:32:a0:b0:c2", "2100001b32a0b0c3", "0x2100001b32a0b0c4"


def write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def certificate_files(d: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    write(d / "host.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write(d / "host.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    write(tmp_path / "channel.key", KEY_HEX + "\n")
    write(tmp_path / "array1.psk", SECRET)
    certificate_files(tmp_path)
    return write(tmp_path / "agent.toml", f'''channel_key = "channel.key"
[targets."{W1}"]
psk_file = "array1.psk"
[targets."{W2}"]
cert = "host.pem"
key = "host.key"
ca = "host.pem"
[targets."{W3}"]
skip = true
''', 0o644)


def invoke(*args: str):
    r = CliRunner().invoke(cli.main, ["check-config", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert SECRET not in r.output and KEY_HEX[:16] not in r.output and "PRIVATE KEY" not in r.output
    return r


def test_help_has_an_example_and_the_exit_codes():
    r = invoke("--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for word in ("Example:", "edif-agent check-config --config", "Exit codes",
                 "7 configuration or input file refused", "--json", "--key"):
        assert word in text
    assert "check-config" in CliRunner().invoke(cli.main, ["--help"]).output


def test_a_good_configuration_prints_ok_and_a_summary(conf):
    r = invoke("--config", str(conf))
    assert r.exit_code == 0, r.output
    assert f"configuration OK: {conf}" in r.output
    assert "targets: 3 (1 psk, 1 certificate, 1 skip)" in r.output
    for line in ("target 21:00:00:1b:32:a0:b0:c2: psk", "target 21:00:00:1b:32:a0:b0:c3: certificate",
                 "target 21:00:00:1b:32:a0:b0:c4: skip", f"channel key: {conf.parent / 'channel.key'} "
                 "(from channel_key)"):
        assert line in r.output
    r = invoke("--config", str(conf), "--json")
    assert r.exit_code == 0 and json.loads(r.output) == {"ok": True, "problems": [], "warnings": []}


def test_every_problem_at_once_exit_7(conf, tmp_path):
    (tmp_path / "array1.psk").chmod(0o640)
    (tmp_path / "host.key").chmod(0o604)
    (tmp_path / "channel.key").chmod(0o644)
    text = conf.read_text().replace('ca = "host.pem"', 'ca = "missing.pem"')
    conf.write_text('keepalive_interval = "5"\nrekey = 1\n' + text)
    r = invoke("--config", str(conf), "--json")
    assert r.exit_code == EXIT_CONFIG
    out = json.loads(r.output)
    assert set(out) == {"ok", "problems", "warnings"} and out["ok"] is False and out["warnings"] == []
    got = out["problems"]
    for want in ("keepalive_interval: expected an integer or a float, got a string",
                 "rekey: expected a table, got an integer",
                 f'targets."{W1}": PSK file {tmp_path}/array1.psk is accessible by its group (mode 0640)',
                 f'targets."{W2}": private key file {tmp_path}/host.key is accessible by other users',
                 f"channel_key: channel key file {tmp_path}/channel.key is accessible by other users"):
        assert any(p.startswith(want) for p in got), (want, got)
    assert len(got) == 5, got
    r = invoke("--config", str(conf))
    assert r.exit_code == EXIT_CONFIG and "edif-agent: configuration refused (5 problems):" in r.output
    assert f"  - {conf}:rekey: expected a table, got an integer" in r.output


def test_key_option_is_checked_instead_of_channel_key(conf, tmp_path):
    loose = write(tmp_path / "other.key", KEY_HEX, 0o644)
    r = invoke("--config", str(conf), "--key", str(loose), "--json")
    assert r.exit_code == EXIT_CONFIG
    assert json.loads(r.output)["problems"] == [
        f"--key: channel key file {loose} is accessible by other users and its group (mode 0644); "
        f"run chmod g-r,o-r {loose}"]
    short = write(tmp_path / "short.key", "abcd")
    r = invoke("--config", str(conf), "--key", str(short))
    assert r.exit_code == EXIT_CONFIG and f"--key: channel key file {short}" in r.output
    r = invoke("--config", str(conf), "--key", str(tmp_path / "channel.key"))
    assert r.exit_code == 0 and "(from --key)" in r.output


def test_no_channel_key_and_no_targets_are_warnings(tmp_path):
    conf = write(tmp_path / "agent.toml", "keepalive_interval = 2.0\n", 0o644)
    r = invoke("--config", str(conf), "--json")
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out["ok"] is True and len(out["warnings"]) == 2
    assert out["warnings"][0].startswith("no channel key: run --config needs --key FILE or channel_key")
    r = invoke("--config", str(conf))
    assert r.exit_code == 0 and f"edif-agent: warning: {conf}: no [targets." in r.output


def test_unreadable_non_utf8_or_not_toml(tmp_path):
    r = invoke("--config", str(tmp_path / "missing.toml"))
    assert r.exit_code == EXIT_CONFIG and "cannot read: No such file or directory" in r.output
    bad = write(tmp_path / "latin1.toml", b'# caf\xe9\nkeepalive_interval = 5\n', 0o644)
    r = invoke("--config", str(bad), "--json")
    assert r.exit_code == EXIT_CONFIG
    assert json.loads(r.output)["problems"] == [
        "not valid TOML: not UTF-8 text (byte 0xe9 on line 1); TOML files are UTF-8"]
    r = invoke("--config", str(write(tmp_path / "x.toml", "targets = [", 0o644)))
    assert r.exit_code == EXIT_CONFIG and "not valid TOML" in r.output
    r = invoke()
    assert r.exit_code == 2 and "--config" in r.output


def test_run_config_refuses_a_non_utf8_file_with_exit_7(tmp_path):
    bad = write(tmp_path / "latin1.toml", b'channel_key = "k\xe9y"\n', 0o644)
    r = CliRunner().invoke(cli.main, ["run", "--config", str(bad)])
    assert r.exit_code == EXIT_CONFIG and isinstance(r.exception, SystemExit)
    assert "configuration refused" in r.output and "not UTF-8 text (byte 0xe9 on line 1)" in r.output


def test_the_labs_agent_configuration_is_accepted(tmp_path):
    """lab/scenario_edif.py writes agent-p<i>.toml; lab/guest/edifvm_edif.py stages its files 0600 and
    runs `run --config FILE --port <wwpn>`: check-config accepts what the lab passes."""
    from lab.scenario_edif import agent_config

    (tmp_path / "psk").mkdir()
    write(tmp_path / "psk" / "p0", SECRET)
    write(tmp_path / "channel-p0.key", KEY_HEX)
    conf = write(tmp_path / "agent-p0.toml", agent_config(0, 0x2100001B32000E01, "psk/p0"), 0o644)
    r = invoke("--config", str(conf), "--json")
    assert r.exit_code == 0 and json.loads(r.output) == {"ok": True, "problems": [], "warnings": []}
