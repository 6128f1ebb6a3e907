"""edif-agent against the real channel: ChannelClient in an agent subprocess (killable), ChannelCore
in this process behind an emulated control disk (tests.support.agent.RemoteDiskServer).

What the lab proves on a real kernel, proved here in seconds: exactly-once, in-order delivery across
an agent SIGKILL and an edifd restart, counted by request ids and sequence numbers on both sides,
and a writer with the wrong key changes nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edifd.channel import BasicHandler, ChannelCore, StaticState
from edifd.proto import ChannelKey, Keepalive, MessageType, PortRef, SessionShutdown, ShutdownReason
from tests.support.agent import RemoteDiskServer, agent

KEY_HEX = "11" * 32
KEY = ChannelKey(bytes.fromhex(KEY_HEX))
N_BLOCKS = (16 << 20) // 512


class Recorder(BasicHandler):
    """Records every request the host acts on."""

    def __init__(self) -> None:
        super().__init__(StaticState(wwpn=0x2100_0024_FF00_0001))
        self.handled: list = []
        self.acks: list = []

    def handle(self, msg):  # type: ignore[override]
        self.handled.append(msg)
        return super().handle(msg)

    def keepalive(self, msg) -> None:  # the core's hook for KEEPALIVE (it answers it itself)
        self.handled.append(msg)

    def event_acked(self, msg) -> None:
        self.acks.append(msg)


class Host:
    def __init__(self, tmp: Path) -> None:
        self.handler = Recorder()
        self.saved: list = []
        self.server = RemoteDiskServer(str(tmp / "disk.sock"), self._core)

    def _core(self, restored):
        return ChannelCore(KEY, num_blocks=N_BLOCKS, handler=self.handler, park_time=0.3,
                           restored=restored, persist=self.saved.append)

    def restart(self) -> None:
        self.server.restart_host(self.saved[-1])

    def keepalives(self) -> list:
        return [m for m in self.handler.handled if isinstance(m.body, Keepalive)]


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    yield h
    h.server.close()


@pytest.fixture
def files(tmp_path):
    key = tmp_path / "channel.key"
    key.write_text(KEY_HEX)
    key.chmod(0o600)
    dev = tmp_path / "ctl.img"
    with open(dev, "wb") as fh:
        fh.truncate(N_BLOCKS * 512)  # the edge sizes the channel from the device's capacity
    return {"key": key, "dev": dev, "state": tmp_path / "agent.state", "report": tmp_path / "ping.json",
            "sock": tmp_path / "disk.sock"}


def finish(p: subprocess.Popen) -> tuple[int, dict]:
    out, err = p.communicate(timeout=60)
    try:
        return p.returncode, json.loads(out)
    except ValueError:
        raise AssertionError(f"rc={p.returncode} stdout={out!r} stderr={err[-2000:]!r}") from None


def wait_sent(report: Path, n: int, p: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()
        try:
            if json.loads(report.read_text())["sent"] >= n:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"ping never reached {n} sent")


def assert_clean(rep: dict, count: int) -> None:
    assert (rep["sent"], rep["received"], rep["lost"], rep["duplicates"]) == (count, count, 0, 0), rep
    assert (rep["unexpected"], rep["seq_gaps"], rep["seq_repeats"], rep["out_of_order"]) == (0, 0, 0, 0), rep
    assert rep["in_order"] == count


def assert_host_acted_once(host: Host) -> None:
    """No request id and no (epoch, sequence) acted on twice by the host."""
    ka = host.keepalives()
    assert len({m.request_id for m in ka}) == len(ka)
    assert len({(m.epoch, m.sequence) for m in ka}) == len(ka)


def test_ping_against_the_real_channel(host, files):
    rc, rep = finish(agent(files, "--key", str(files["key"]), "-c", "150"))
    assert rc == 0
    assert_clean(rep, 150)
    assert rep["resent"] == 0 and rep["established"] is True
    assert len(host.keepalives()) == 150
    assert host.server.core.counters["messages_in"] == 150  # what the lab compares with its ping count
    assert_host_acted_once(host)
    assert rep["channel"]["duplicates"] >= 0 and rep["channel"]["messages_in"] == 150


def test_agent_sigkill_mid_stream_loses_and_duplicates_nothing(host, files):
    args = ("--key", str(files["key"]), "-c", "200", "--state", str(files["state"]),
            "--report", str(files["report"]), "--resume-grace", "2")
    first = agent(files, *args)
    wait_sent(files["report"], 70, first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    rc, rep = finish(agent(files, *args))
    assert rc == 0, rep
    assert_clean(rep, 200)
    ka = host.keepalives()
    # Each ping acted on once; a re-sent ping (left unsent by the kill) may add one request.
    assert 200 <= len(ka) <= 200 + rep["resent"]
    assert_host_acted_once(host)


def test_edifd_restart_mid_stream_loses_and_duplicates_nothing(host, files):
    p = agent(files, "--key", str(files["key"]), "-c", "200", "--report", str(files["report"]))
    wait_sent(files["report"], 70, p)
    host.restart()
    rc, rep = finish(p)
    assert rc == 0, rep
    assert_clean(rep, 200)
    assert rep["channel"]["handshakes"] >= 2  # the agent noticed the new host and re-handshook
    assert_host_acted_once(host)
    assert 200 <= len(host.keepalives()) <= 200 + rep["resent"]


def test_wrong_key_writer_is_rejected_and_changes_nothing(host, files, tmp_path):
    rc, _ = finish(agent(files, "--key", str(files["key"]), "-c", "5"))
    assert rc == 0
    before = list(host.handler.handled)
    core = host.server.core
    counters = dict(core.counters)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("22" * 32)
    wrong.chmod(0o600)
    p = agent(files, "--key", str(wrong), "-c", "5", "--timeout", "1.5")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 5, (out, err)
    assert "no APP_START answer" in err
    assert host.handler.handled == before  # nothing it sent was acted on
    rejected = sum(v - counters[k] for k, v in core.counters.items() if k.startswith("rejected_"))
    assert rejected >= 1
    assert core.counters["messages_in"] == counters["messages_in"]
    assert core.counters["epochs"] == counters["epochs"]  # no session was created for it
    # The rightful agent is unaffected.
    rc, rep = finish(agent(files, "--key", str(files["key"]), "-c", "5"))
    assert rc == 0 and rep["received"] == 5


def test_run_serves_until_sigterm_and_reports_ready(host, files, tmp_path):
    import socket

    notify = tmp_path / "notify.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(notify))
    srv.settimeout(30)
    status = tmp_path / "status.json"
    p = agent(files, "--key", str(files["key"]), "--keepalive", "0.2", "--status-file", str(status),
              "--state", str(files["state"]), command=("run",), env={"NOTIFY_SOCKET": str(notify)})
    try:
        assert srv.recv(64) == b"READY=1"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(host.keepalives()) < 3:
            time.sleep(0.05)
        assert len(host.keepalives()) >= 3
        while not status.exists():
            time.sleep(0.05)
        st = json.loads(status.read_text())
        assert st["established"] is True and st["channel"]["responses"] >= 1
        # An event that needs an ack is acked, naming the event's sequence and port.
        port = PortRef(0x5001_4380_1234_5678, 0x010203, 7)
        seq = host.server.core.post_event(SessionShutdown(port, ShutdownReason.LOGO))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not host.handler.acks:
            time.sleep(0.05)
        (ack,) = host.handler.acks
        assert (ack.body.event_type, ack.body.event_sequence, ack.body.port) == (
            MessageType.SESSION_SHUTDOWN, seq, port)
        assert KEY_HEX[:16] not in status.read_text()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "channel up on" in err and "event SESSION_SHUTDOWN" in err
        assert srv.recv(64) == b"STOPPING=1"
    finally:
        srv.close()
        if p.poll() is None:
            p.kill()
