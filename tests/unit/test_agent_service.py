"""The security service (guest_agent/service.py and `edif-agent run --config`).

In process: `SecurityService` over the real ChannelClient <-> SCSI loopback <-> ChannelCore, with
tests.support.secapp's FakeHost as the HBA (its Rig). As a process: `edif-agent run --config`
against the real ChannelCore behind the emulated control disk (tests.support.agent.RemoteDiskServer),
SIGTERM -> APP_STOP.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from edifd.channel import ChannelCore
from edifd.proto import (
    AppStop,
    AuthFailReason,
    AuthNeeded,
    Cipher,
    Heartbeat,
    Message,
    MessageType,
    PortRef,
    Response,
    RoleFlags,
    SaDirection,
    SaFlags,
    SaUpdate,
    SecureConnect,
    Status,
)
from edifd.secapp.app import (
    AppNotice,
    ChannelLost,
    SessionDown,
    SessionFailed,
    SessionRekeyed,
    SessionSecure,
    SessionState,
)
from edifd.secapp.config import RekeyPolicy
from guest_agent.service import SecurityService, describe, write_status
from tests.support.agent import RemoteDiskServer, agent
from tests.support.clock import Clock
from tests.support.secapp import (
    BLOCKS,
    KEY,
    PSK1,
    PSK2,
    T1,
    T2,
    ChannelHba,
    FakeTarget,
    Rig,
    assert_keys_crosswise,
)


class ServiceRig(Rig):
    def __init__(self, **cfg) -> None:
        super().__init__(**cfg)
        self.stops: list[Message] = []
        self.hba.app_stopped = self.stops.append  # the channel core's hook: it answers APP_STOP itself
        self.lines: list[str] = []
        self.svc = SecurityService(self.app, self.client.request, self.lines.append)
        self.connected = True  # False: the host's end is unreachable (nothing moves on the disk)

    def settle(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            if not self.connected:
                return
            for body in self.hba.outbox:
                self.core.post_event(body)
            self.hba.outbox = []
            msgs = self.lb.pump()
            for m in msgs:
                self.svc.on_message(m)
            if not msgs and not self.hba.outbox and self.client.outstanding == 0:
                return
        raise AssertionError("the exchange did not settle")

    def advance(self, dt: float) -> None:
        self.clock.now += dt
        if self.connected:
            self.core.tick()
        self.svc.tick(self.clock.now)
        self.settle()


def secret_free(text: str) -> None:
    for secret in (PSK1, PSK2, KEY.material):
        assert secret.decode(errors="replace")[:12] not in text
        assert secret.hex()[:16] not in text


def test_service_secures_the_target_and_logs_it():
    rig = ServiceRig(keepalive_interval=5.0)
    rig.svc.start()
    rig.settle()
    s = rig.app.session(T1)
    assert s.state is SessionState.SECURE
    assert_keys_crosswise(rig.hba, rig.target, rig.app)
    assert rig.svc.figures.secured == 1 and rig.svc.figures.starts == 1
    assert any("session secure" in line and "21:00:00:1b:32:a0:b0:c2" in line for line in rig.lines)
    st = rig.svc.status()
    assert st["app"]["targets"]["21:00:00:1b:32:a0:b0:c2"]["state"] == SessionState.SECURE.value
    assert st["service"]["secured"] == 1 and st["service"]["last_events"] == rig.lines
    secret_free(json.dumps(st) + "\n".join(rig.lines))
    # Every request went through the real channel and was answered by request id.
    assert rig.app.counters["unexpected"] == 0 and rig.client.outstanding == 0
    assert rig.svc.figures.requests >= 7  # GET_PORT_INFO, GET_TARGETS, SECURE_CONNECT, 2 ELS, 2 SA, AUTH_OK


def test_service_rekeys_by_lifetime_and_counts_it():
    rig = ServiceRig(keepalive_interval=5.0, rekey=RekeyPolicy(lifetime=30.0, bytes=0))
    rig.svc.start()
    rig.settle()
    old = rig.app.session(T1).current.spi_in
    for _ in range(8):
        rig.advance(5.0)
    assert rig.svc.figures.rekeys >= 1
    assert rig.app.session(T1).current.spi_in != old
    assert any("rekeyed by lifetime" in line for line in rig.lines)
    assert_keys_crosswise(rig.hba, rig.target, rig.app)


def test_service_stop_sends_app_stop_and_sees_its_answer():
    rig = ServiceRig(keepalive_interval=5.0)
    rig.svc.start()
    rig.settle()
    rid = rig.svc.stop()
    assert rid is not None and not rig.svc.stop_answered
    rig.settle()
    assert rig.svc.stop_answered and not rig.app.running
    assert [m.request_id for m in rig.stops] == [rid] and isinstance(rig.stops[0].body, AppStop)
    # Stopped: ticks send nothing (no keepalive, no rekey, no reconnect).
    before = rig.svc.figures.requests
    rig.advance(60.0)
    assert rig.svc.figures.requests == before and rig.svc.status()["service"]["stopping"] is True


def test_host_silence_asks_for_a_new_handshake_and_start_authenticates_again():
    rig = ServiceRig(keepalive_interval=5.0)
    rig.svc.start()
    rig.settle()
    rig.connected = False
    for _ in range(5):
        rig.advance(5.0)
    assert rig.svc.restart_needed and rig.svc.figures.channel_lost == 1
    assert rig.app.session(T1).state is not SessionState.SECURE
    assert any(line.startswith("channel lost") for line in rig.lines)
    # What the CLI loop does: handshake again, then start().
    rig.connected = True
    rig.client.start()
    rig.lb.pump()
    assert rig.client.established
    rig.svc.start()
    rig.settle()
    assert not rig.svc.restart_needed and rig.app.session(T1).state is SessionState.SECURE
    assert rig.svc.figures.secured == 2 and rig.svc.figures.starts == 2


def test_sa_installs_and_deletes_are_counted_when_the_host_accepts_them():
    rig = ServiceRig(keepalive_interval=5.0, rekey=RekeyPolicy(lifetime=30.0, bytes=0))
    rig.svc.start()
    rig.settle()
    f = rig.svc.figures
    assert f.sa_installs == {"rx": 1, "tx": 1} and f.sa_deletes == {"rx": 0, "tx": 0}
    assert f.outcomes == {"success": 1} and f.setup_latency.count == 1
    for _ in range(8):
        rig.advance(5.0)
    assert f.rekeys >= 1 and f.rekey_triggers == {"lifetime": f.rekeys}
    # make-before-break: a new pair, then the old pair deleted; the host holds one pair again
    assert f.sa_installs == {"rx": 1 + f.rekeys, "tx": 1 + f.rekeys}
    assert f.sa_deletes == {"rx": f.rekeys, "tx": f.rekeys}
    assert f.setup_latency.count == 1  # a rekey is not a session setup
    st = rig.svc.status()["service"]
    assert st["sa_installs"] == f.sa_installs and st["setup_latency"]["count"] == 1
    secret_free(json.dumps(st))


class ScriptedApp:
    """What SecurityService uses of a SecurityApp, scripted, on a clock the test moves."""

    running = True

    def __init__(self) -> None:
        self.t = 100.0
        self.next: list = []  # what the next call returns

    def now(self) -> float:
        return self.t

    def _out(self, *_args) -> list:
        out, self.next = self.next, []
        return out

    start = on_message = tick = _out

    def sent(self, body, rid) -> None:
        pass


def scripted() -> tuple[ScriptedApp, SecurityService, list]:
    app, sent = ScriptedApp(), []

    def request(body) -> int:
        sent.append(body)
        return len(sent)

    return app, SecurityService(app, request), sent  # type: ignore[arg-type]


def heartbeat() -> Message:
    return Message(Heartbeat())


def test_setup_latency_runs_from_secure_connect_or_auth_needed_to_secure():
    app, svc, _ = scripted()
    h = svc.figures.setup_latency
    app.next = [SecureConnect(PortRef(T1))]
    svc.start()  # t = 100
    app.t, app.next = 102.5, [SessionSecure(T1, 1, 2, Cipher(1))]
    svc.on_message(heartbeat())
    assert (h.count, h.sum) == (1, 2.5)
    # The host asks first (its own relogin): AUTH_NEEDED starts the clock.
    app.t = 200.0
    svc.on_message(Message(AuthNeeded(PortRef(T2), RoleFlags.TARGET)))
    app.t, app.next = 200.5, [SecureConnect(PortRef(T2))]  # our answer does not restart it
    svc.tick(app.t)
    app.t, app.next = 201.0, [SessionSecure(T2, 3, 4, Cipher(1))]
    svc.on_message(heartbeat())
    assert (h.count, h.sum) == (2, 3.5)
    # A failed attempt is not a setup; the retry starts a new one.
    app.t, app.next = 300.0, [SecureConnect(PortRef(T1))]
    svc.tick(app.t)
    app.t, app.next = 301.0, [SessionFailed(T1, AuthFailReason.TIMEOUT, "no answer")]
    svc.tick(app.t)
    app.t, app.next = 330.0, [SecureConnect(PortRef(T1))]
    svc.tick(app.t)
    app.t, app.next = 330.25, [SessionSecure(T1, 5, 6, Cipher(1))]
    svc.tick(app.t)
    assert (h.count, h.sum) == (3, 3.75)
    assert svc.figures.outcomes == {"success": 3, "timeout": 1}
    buckets = dict((le, n) for le, n in h.snapshot()["buckets"])
    assert buckets[0.25] == 1 and buckets[1.0] == 2 and buckets[2.5] == 3


def test_sa_updates_count_by_the_hosts_answer():
    app, svc, sent = scripted()
    ref = PortRef(T1, 0x020200, 1)
    app.next = [SaUpdate(ref, 0x101, SaDirection.RX, Cipher(1), bytes(16), bytes(4)),
                SaUpdate(ref, 0x202, SaDirection.TX, Cipher(1), bytes(16), bytes(4)),
                SaUpdate(ref, 0x303, SaDirection.RX, Cipher(1), flags=SaFlags.DELETE)]
    svc.start()
    assert len(sent) == 3
    for rid, status in ((1, Status.OK), (2, Status.LIMIT), (3, Status.OK)):
        svc.on_message(Message(Response(MessageType.SA_UPDATE, status), request_id=rid))
    svc.on_message(Message(Response(MessageType.SA_UPDATE, Status.OK), request_id=3))  # a duplicate
    f = svc.figures
    assert f.sa_installs == {"rx": 1, "tx": 0} and f.sa_deletes == {"rx": 1, "tx": 0}
    assert f.sa_refused == {"limit": 1}


@pytest.mark.parametrize("event, words", [
    (SessionSecure(T1, 0x1234, 0x5678, Cipher(1)), ["secure", "00001234", "00005678"]),
    (SessionRekeyed(T1, 1, 2, "bytes"), ["rekeyed by bytes", "00000001 -> 00000002"]),
    (SessionFailed(T2, AuthFailReason.PEER_REJECTED, "N(AUTHENTICATION_FAILED)"),
     ["authentication failed", "PEER_REJECTED", "21:00:00:1b:32:a0:b0:c3"]),
    (SessionDown(T1, "LOGO"), ["session down", "LOGO"]),
    (ChannelLost("no message for 15 s"), ["channel lost", "15 s"]),
    (AppNotice("target x not configured"), ["notice", "not configured"]),
])
def test_describe_names_what_happened(event, words):
    line = describe(event)
    for w in words:
        assert w in line


def test_write_status_is_atomic_json(tmp_path: Path):
    p = tmp_path / "status.json"
    write_status(str(p), {"a": 1})
    write_status(str(p), {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert not (tmp_path / "status.json.tmp").exists()


# -- the CLI as a process ----------------------------------------------------------------------------------


class ThreadedHba(ChannelHba):
    """ChannelHba behind a RemoteDiskServer: events are posted from a pump thread (as edifd's HBA does)."""

    def __init__(self, targets) -> None:
        super().__init__(None, Clock(), targets)
        self.core: ChannelCore | None = None
        self.core_server: RemoteDiskServer | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.stops: list[Message] = []

    def app_stopped(self, msg: Message) -> None:  # the core answers APP_STOP itself and calls this
        self.stops.append(msg)

    def handle(self, msg: Message):  # type: ignore[override]
        with self.lock:
            return super().handle(msg)

    def _pump(self) -> None:
        while not self.stop.wait(0.02):
            with self.lock:
                out, self.outbox = self.outbox, []
            for body in out:
                assert self.core is not None
                self.core.post_event(body)


@pytest.fixture
def svc_host(tmp_path):
    hba = ThreadedHba([FakeTarget(T1, 0x020200, PSK1), FakeTarget(T2, 0x020300, PSK1)])

    def make_core(_restored):
        hba.core = ChannelCore(KEY, num_blocks=BLOCKS, handler=hba, park_time=0.3)
        return hba.core

    server = RemoteDiskServer(str(tmp_path / "disk.sock"), make_core)
    hba.core_server = server
    hba.thread.start()
    yield hba
    hba.stop.set()
    server.close()


def write_agent_files(tmp_path: Path) -> dict[str, Path]:
    key = tmp_path / "channel.key"
    key.write_text(KEY.material.hex())
    key.chmod(0o600)
    (tmp_path / "psk").mkdir()
    for name, psk in (("a", PSK1), ("b", PSK2)):
        f = tmp_path / "psk" / name
        f.write_bytes(psk)
        f.chmod(0o600)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'channel_key = "{key}"\nkeepalive_interval = 1.0\nreconnect_delay = 1.0\n'
        "auth_retry_backoff = 30.0\n"
        '[targets."21:00:00:1b:32:a0:b0:c2"]\npsk_file = "psk/a"\n'
        '[targets."21:00:00:1b:32:a0:b0:c3"]\npsk_file = "psk/b"\n'  # the wrong PSK for T2
    )
    dev = tmp_path / "ctl.img"
    with open(dev, "wb") as fh:
        fh.truncate(BLOCKS * 512)
    return {"key": key, "config": cfg, "dev": dev, "sock": tmp_path / "disk.sock",
            "status": tmp_path / "status.json"}


def wait_for(pred, p, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_run_config_secures_one_target_fails_the_wrong_psk_and_stops_with_app_stop(svc_host, tmp_path):
    files = write_agent_files(tmp_path)
    p = agent(files, "--config", str(files["config"]), "--status-file", str(files["status"]),
              command=("run",))
    try:
        def states() -> dict:
            t = read_status(files["status"]).get("app", {}).get("targets", {})
            return {w: v["state"] for w, v in t.items()}

        wait_for(lambda: states().get("21:00:00:1b:32:a0:b0:c2") == SessionState.SECURE.value
                 and states().get("21:00:00:1b:32:a0:b0:c3") == SessionState.FAILED.value, p)
        st = read_status(files["status"])
        assert st["service"]["secured"] == 1 and st["service"]["failures"] == 1
        assert st["channel"]["established"] is True
        with svc_host.lock:
            assert_sas = {d for (d, _spi) in svc_host.sa[T1]}
            assert len(assert_sas) == 2 and svc_host.sa[T2] == {}  # no SA_UPDATE for the failed target
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert len(svc_host.stops) == 1 and isinstance(svc_host.stops[0].body, AppStop)
        assert "session secure" in err and "authentication failed (PEER_REJECTED" in err
        assert "APP_STOP answered" in err
        final = read_status(files["status"])
        assert final["service"]["stop_answered"] is True and final["app"]["running"] is False
        secret_free(err + files["status"].read_text())
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_run_config_refuses_a_bad_configuration(tmp_path):
    files = write_agent_files(tmp_path)
    files["config"].write_text('[targets."21:00:00:1b:32:a0:b0:c2"]\n')  # no credentials, no default PSK
    p = agent(files, "--config", str(files["config"]), command=("run",))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 7 and "no default PSK" in err


def test_status_service_shows_the_sessions_without_keys(tmp_path: Path):
    from click.testing import CliRunner

    from guest_agent import cli

    rig = ServiceRig(keepalive_interval=5.0)
    rig.svc.start()
    rig.settle()
    p = tmp_path / "status.json"
    write_status(str(p), {"device": "/dev/sdb", "port": "50:01:43:80:12:34:56:78", **rig.svc.status()})
    r = CliRunner().invoke(cli.main, ["status", "--service", str(p), "--sys-root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "target 21:00:00:1b:32:a0:b0:c2: secure cipher" in r.output and "secured 1" in r.output
    secret_free(r.output)
    r = CliRunner().invoke(cli.main, ["status", "--service", str(p), "--json", "--sys-root", str(tmp_path)])
    assert json.loads(r.output)["app"]["targets"]["21:00:00:1b:32:a0:b0:c2"]["state"] == "secure"
    p.write_text("not json")
    r = CliRunner().invoke(cli.main, ["status", "--service", str(p), "--sys-root", str(tmp_path)])
    assert r.exit_code == cli.EXIT_IO and "not JSON" in r.output
    r = CliRunner().invoke(cli.main, ["status", "--service", str(tmp_path / "none.json")])
    assert r.exit_code == cli.EXIT_IO and "cannot read" in r.output


def test_run_config_rehandshakes_after_host_silence_and_authenticates_again(svc_host, tmp_path):
    files = write_agent_files(tmp_path)
    p = agent(files, "--config", str(files["config"]), "--status-file", str(files["status"]),
              command=("run",))
    server = svc_host.core_server
    try:
        def svc() -> dict:
            return read_status(files["status"]).get("service", {})

        wait_for(lambda: svc().get("secured") == 1, p)
        # The host's disk stops answering (every READ and WRITE blocks) for longer than keepalive_interval x
        # keepalive_misses (1 s x 3): the app declares the channel lost and the loop handshakes again.
        with server.lock:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and svc().get("channel_lost", 0) == 0:
                time.sleep(0.1)
        assert svc()["channel_lost"] == 1
        wait_for(lambda: svc().get("secured") == 2 and svc().get("starts") == 2, p)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "channel lost" in err and err.count("session secure") == 2
        secret_free(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
