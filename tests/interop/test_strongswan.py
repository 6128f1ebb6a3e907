"""Interoperability of edifd.ike with strongSwan's charon (Debian 12: 5.9.8) over UDP on 127.0.0.1.

Each test starts its own charon (own strongswan.conf, explicit plugin list, key logging at ike=4/chd=4, free
non-500 ports, private /run so its hard-coded pid file cannot clash), runs one IKE SA against our sans-IO peer
through a small UDP edge with the non-ESP marker, and checks:
  * the IKE SA is ESTABLISHED on both sides (our events; `swanctl --list-sas` on charon's);
  * every key we derived (DH secret, SKEYSEED, SK_d, SK_ei/er with salts, SK_pi/pr, child key‖salt both
    directions) is byte-identical to what charon logged.
This kernel has no ESP/AEAD support, so charon cannot install the child SA: as responder it answers IKE_AUTH
with N(NO_PROPOSAL_CHOSEN) after logging the child keys, as initiator it deletes the child again. Both are
expected.

Needs root and: apt-get install strongswan-charon strongswan-swanctl libstrongswan-standard-plugins
libstrongswan-extra-plugins
(see docs/ike.md). If charon cannot be started the test fails when CI=true and is skipped otherwise.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edifd.ike import (
    AES_GCM_16_128,
    AES_GCM_16_256,
    AuthFailed,
    ChildSaEstablished,
    ChildSaFailed,
    Deleted,
    Established,
    Identity,
    IkeConfig,
    Initiator,
    Ipv4Selector,
    NegotiationFailed,
    Responder,
    Send,
    TransportProfile,
)
from edifd.ike.codes import DhGroup, ProtocolId
from edifd.ike.udp import frame, needs_marker, unframe
from tests.support.ci import unavailable

CHARON = "/usr/lib/ipsec/charon"
PSK = "interop-psk-0123456789abcdef"
PLUGINS = (
    "random nonce openssl pem pkcs1 pkcs8 x509 pubkey constraints curve25519 aes gcm sha2 hmac kdf "
    "kernel-netlink socket-default vici"
)
# The child SA covers only UDP to/from the discard port: should a CI kernel have ESP after all, charon's
# transport-mode policies must not capture other loopback traffic (our IKE datagrams included).
LOOP_TS = Ipv4Selector("127.0.0.1", "127.0.0.1", 17, 9, 9)

# charon's key-log labels -> names in IkeSa.export_key_material()
LABELS = {
    "shared Diffie Hellman secret": "shared",
    "SKEYSEED": "skeyseed",
    "Sk_d secret": "sk_d",
    "Sk_ei secret": "sk_ei",
    "Sk_er secret": "sk_er",
    "Sk_pi secret": "sk_pi",
    "Sk_pr secret": "sk_pr",
    "encryption initiator key": "child_i",
    "encryption responder key": "child_r",
}


def _unavailable(reason: str) -> None:
    unavailable(f"strongSwan interop cannot run: {reason}")


def _free_udp_ports(n: int) -> list[int]:
    """n distinct free loopback UDP ports (sockets held open together so that none is handed out twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- throwaway PKI ------------------------------------------------------------------------------------------


def _cert(
    subject: str, key, issuer_name: x509.Name | None, issuer_key, ca: bool, san: str | None
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edifd interop"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - keep the 3.11/crypto-38 spelling
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("edifd interop CA", self.ca_key, None, self.ca_key, True, None)  # self-signed
        self.keys, self.certs = {}, {}
        for who in ("initiator.test", "responder.test"):
            self.keys[who] = ec.generate_private_key(ec.SECP256R1())
            self.certs[who] = _cert(who, self.keys[who], self.ca.subject, self.ca_key, False, who)


# --- charon -------------------------------------------------------------------------------------------------


def _conn(name: str, charon_role: str, auth: str, suite, our_port: int) -> str:
    me, peer = ("initiator", "responder") if charon_role == "initiator" else ("responder", "initiator")
    ids = (f"{me}.test", f"{peer}.test") if auth == "cert" else (f"{me}@test", f"{peer}@test")
    bits = suite.key_bits
    lines = [
        f"  {name} {{",
        "    version = 2",
        "    send_cert = always",
        "    local_addrs = 127.0.0.1",
        f"    proposals = aes{bits}gcm16-prfsha256-x25519",
    ]
    if charon_role == "initiator":
        lines += ["    remote_addrs = 127.0.0.1", f"    remote_port = {our_port}"]
    else:
        lines += ["    remote_addrs = %any"]
    if auth == "cert":
        lines += [
            "    local {",
            "      auth = pubkey",
            f"      certs = {me}.test.crt",
            f"      id = {ids[0]}",
            "    }",
            "    remote {",
            "      auth = pubkey",
            f"      id = {ids[1]}",
            "      cacerts = ca.crt",
            "    }",
        ]
    else:
        lines += [
            "    local {",
            "      auth = psk",
            f"      id = {ids[0]}",
            "    }",
            "    remote {",
            "      auth = psk",
            f"      id = {ids[1]}",
            "    }",
        ]
    lines += [
        "    children {",
        "      c1 {",
        f"        esp_proposals = aes{bits}gcm16",
        "        local_ts = 127.0.0.1/32[udp/9]",
        "        remote_ts = 127.0.0.1/32[udp/9]",
        "        mode = transport",
        "      }",
        "    }",
        "  }",
    ]
    conf = "connections {\n" + "\n".join(lines) + "\n}\n"
    if auth == "psk":
        conf += (
            "secrets {\n  ike-1 {\n"
            f"    id-1 = {ids[0]}\n    id-2 = {ids[1]}\n"
            f'    secret = "{PSK}"\n  }}\n}}\n'
        )
    return conf


class Charon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.port_nat_t = _free_udp_ports(2)
        self.conf = root / "strongswan.conf"
        self.log = root / "charon.log"
        self.env = dict(os.environ, STRONGSWAN_CONF=str(self.conf), SWANCTL_DIR=str(root / "swanctl"))
        self.proc: subprocess.Popen | None = None

    def write(self, swanctl_conf: str, pki: Pki, charon_id: str | None) -> None:
        sw = self.root / "swanctl"
        for sub in (
            "conf.d x509 x509ca x509ocsp x509aa x509ac x509crl private rsa ecdsa bliss pkcs8 pkcs12 pubkey"
        ).split():
            (sw / sub).mkdir(parents=True, exist_ok=True)
        (sw / "swanctl.conf").write_text(swanctl_conf)
        pem = serialization.Encoding.PEM
        (sw / "x509ca" / "ca.crt").write_bytes(pki.ca.public_bytes(pem))
        if charon_id:
            (sw / "x509" / f"{charon_id}.crt").write_bytes(pki.certs[charon_id].public_bytes(pem))
            (sw / "ecdsa" / f"{charon_id}.key").write_bytes(
                pki.keys[charon_id].private_bytes(
                    pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
                )
            )
        vici = f"unix://{self.root}/charon.vici"
        self.conf.write_text(f"""charon {{
  port = {self.port}
  port_nat_t = {self.port_nat_t}
  install_routes = no
  install_virtual_ip = no
  retransmit_tries = 2
  load_modular = no
  load = {PLUGINS}
  plugins {{
    vici {{
      socket = {vici}
    }}
  }}
  filelog {{
    log {{
      path = {self.log}
      append = no
      flush_line = yes
      time_format = %T
      default = 1
      ike = 4
      chd = 4
      knl = 2
      cfg = 2
      mgr = 2
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
swanctl {{
  socket = {vici}
}}
""")

    def swanctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["swanctl", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        if not Path(CHARON).exists() or shutil.which("swanctl") is None:
            _unavailable(
                f"{CHARON} or swanctl missing (apt-get install strongswan-charon strongswan-swanctl "
                "libstrongswan-standard-plugins libstrongswan-extra-plugins)"
            )
        if os.geteuid() != 0:
            _unavailable("charon needs root")
        # A private /run keeps charon's hard-coded /var/run/charon.pid away from any other charon on the host.
        # Where mount namespaces are not allowed (unprivileged containers) charon runs directly instead.
        attempts = [[CHARON]]
        if shutil.which("unshare"):
            attempts.insert(0, ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs /run && exec {CHARON}"])
        failures = []
        for cmd in attempts:
            errfile = self.root / "charon.stderr"
            with errfile.open("wb") as err:  # a file, not a pipe: a chatty charon must never block on it
                self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
            if self._wait_for_vici():
                break
            self.stop()
            failures.append(f"{cmd[0]}: exit {self.proc.returncode} {errfile.read_text(errors='replace')}")
        else:
            _unavailable("charon did not start: " + "; ".join(failures) + f" (log: {self.log})")
        r = self.swanctl("--load-all")
        assert r.returncode == 0, r.stdout + r.stderr

    def _wait_for_vici(self) -> bool:
        for _ in range(100):
            if self.proc.poll() is not None:
                return False
            if self.swanctl("--stats", timeout=5).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def established(self, spi_i: bytes) -> bool:
        out = self.swanctl("--list-sas").stdout
        return any("ESTABLISHED" in ln and spi_i.hex() in ln for ln in out.splitlines())

    def logged_keys(self) -> dict[str, bytes]:
        """charon's DBG4 hex dumps: a 'label => N bytes @ 0x..' line, then rows from the same thread."""
        head = re.compile(r"^\S+ (\d+)\[(\w+)\] (.*?) => (\d+) bytes @ 0x[0-9a-f]+$")
        row = re.compile(r"^\S+ (\d+)\[\w+\] +\d+: ((?:[0-9A-F]{2} ?)+)")
        found: dict[str, bytes] = {}
        cur: list | None = None
        for ln in self.log.read_text(errors="replace").splitlines():
            m = head.match(ln)
            if m:
                cur = [m.group(1), m.group(3), int(m.group(4)), b""]
                continue
            m = row.match(ln)
            if m and cur and m.group(1) == cur[0] and len(cur[3]) < cur[2]:
                cur[3] += bytes.fromhex(m.group(2).replace(" ", ""))[: cur[2] - len(cur[3])]
                if len(cur[3]) == cur[2] and cur[1] in LABELS:
                    found[LABELS[cur[1]]] = cur[3]  # the last block wins
        return found


@pytest.fixture
def charon(tmp_path: Path):
    c = Charon(tmp_path)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


# --- our side: a UDP edge around the sans-IO session --------------------------------------------------------


def _config(role: str, auth: str, suite, pki: Pki) -> IkeConfig:
    other = "responder" if role == "initiator" else "initiator"
    common = dict(
        ike_ciphers=(suite,),
        child_ciphers=(suite,),
        dh_groups=(DhGroup.CURVE25519,),
        child_protocol=ProtocolId.ESP,
        use_transport_mode=True,
        local_ts=(LOOP_TS,),
        remote_ts=(LOOP_TS,),
        transport=TransportProfile.UDP,
    )
    if auth == "psk":
        return IkeConfig(
            local_id=Identity.email(f"{role}@test"),
            remote_id=Identity.email(f"{other}@test"),
            psk=PSK.encode(),
            **common,
        )
    return IkeConfig(
        local_id=Identity.fqdn(f"{role}.test"),
        remote_id=Identity.fqdn(f"{other}.test"),
        certificate=pki.certs[f"{role}.test"],
        private_key=pki.keys[f"{role}.test"],
        ca_certificates=(pki.ca,),
        **common,
    )


def _pump(
    sock: socket.socket, peer: tuple[str, int] | None, session, marker: bool, until, deadline: float
) -> list:
    """Receive datagrams, feed the session, send its answers, until `until(events)` or the deadline."""
    events: list = []
    while time.monotonic() < deadline and not until(events):
        sock.settimeout(0.2)  # wake up now and then: `until` may depend on time or on other processes
        try:
            data, src = sock.recvfrom(65535)
        except TimeoutError:
            continue
        for ev in session.receive(unframe(data, marker)):
            events.append(ev)
            if isinstance(ev, Send):
                sock.sendto(frame(ev.data, marker), src if peer is None else peer)
    return events


def _assert_keys_match(ours: dict[str, bytes], charon: dict[str, bytes]) -> None:
    expected = set(LABELS.values())
    assert expected <= charon.keys(), f"charon did not log {sorted(expected - charon.keys())}"
    assert expected <= ours.keys()
    mismatched = sorted(k for k in expected if ours[k] != charon[k])
    assert not mismatched, f"keys differ from charon's: {mismatched}"  # names only, never values


CASES = [(auth, suite) for auth in ("psk", "cert") for suite in (AES_GCM_16_128, AES_GCM_16_256)]
IDS = [f"{a}-aes{s.key_bits}gcm16" for a, s in CASES]


@pytest.mark.parametrize(("auth", "suite"), CASES, ids=IDS)
def test_our_initiator_charon_responder(charon: Charon, pki: Pki, auth: str, suite) -> None:
    charon.write(
        _conn("from-py", "responder", auth, suite, 0), pki, "responder.test" if auth == "cert" else None
    )
    charon.start()
    session = Initiator(_config("initiator", auth, suite, pki))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        marker = needs_marker(sock.getsockname()[1], charon.port)
        assert marker
        peer = ("127.0.0.1", charon.port)
        sock.sendto(frame(session.start(), marker), peer)
        done = (Established, AuthFailed, NegotiationFailed)
        events = _pump(
            sock,
            peer,
            session,
            marker,
            lambda evs: any(isinstance(e, done) for e in evs),
            time.monotonic() + 20,
        )
    assert [e for e in events if isinstance(e, (AuthFailed, NegotiationFailed))] == []
    est = [e for e in events if isinstance(e, Established)]
    assert len(est) == 1 and est[0].cipher == suite
    # No ESP in this kernel: charon derives and logs the child keys, fails the install and refuses the child.
    child = [e for e in events if isinstance(e, (ChildSaEstablished, ChildSaFailed))]
    assert len(child) == 1
    assert charon.established(session.spi_i)
    _assert_keys_match(session.export_key_material(), charon.logged_keys())


@pytest.mark.parametrize(("auth", "suite"), CASES, ids=IDS)
def test_charon_initiator_our_responder(charon: Charon, pki: Pki, auth: str, suite) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        our_port = sock.getsockname()[1]
        charon.write(
            _conn("to-py", "initiator", auth, suite, our_port),
            pki,
            "initiator.test" if auth == "cert" else None,
        )
        charon.start()
        marker = needs_marker(our_port, charon.port)
        session = Responder(_config("responder", auth, suite, pki))
        init = subprocess.Popen(
            ["swanctl", "--initiate", "--ike", "to-py", "--child", "c1"],
            env=charon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        finished: list[float] = []

        def done(evs: list) -> bool:
            # Until charon deletes the child it could not install; or, where the kernel has ESP, 1 s after
            # `swanctl --initiate` returned with everything established.
            if any(isinstance(e, (Deleted, AuthFailed, NegotiationFailed)) for e in evs):
                return True
            if init.poll() is not None and not finished:
                finished.append(time.monotonic())
            return bool(finished) and time.monotonic() - finished[0] > 1.0

        try:
            events = _pump(sock, None, session, marker, done, time.monotonic() + 20)
        finally:
            try:
                init.wait(timeout=10)
            except subprocess.TimeoutExpired:
                init.kill()
                init.wait()
    assert [e for e in events if isinstance(e, (AuthFailed, NegotiationFailed))] == []
    est = [e for e in events if isinstance(e, Established)]
    assert len(est) == 1 and est[0].cipher == suite
    child = [e for e in events if isinstance(e, ChildSaEstablished)]
    assert len(child) == 1 and child[0].cipher == suite and child[0].transport_mode
    assert charon.established(session.spi_i)
    logged = charon.logged_keys()
    _assert_keys_match(session.export_key_material(), logged)
    # The event the HBA would install carries the same keys: in = initiator->responder for a responder.
    c = child[0]
    assert c.key_in + c.salt_in == logged["child_i"] and c.key_out + c.salt_out == logged["child_r"]
