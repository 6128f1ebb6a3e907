"""The Prometheus endpoints (edifd.edges.metrics_http) scraped over HTTP on loopback, parsed with
prometheus-client's own text parser.

One in-process EDIF stack, all real code: the agent's SecurityService (SecurityApp over a ChannelClient,
the SCSI loopback, pumped by a thread) -> ChannelCore -> EdifEngine -> Hba (FC over TCP) -> TargetServer
with its IKE responder. Once the session is secure and I/O went through ESP, each tool's endpoint is
scraped: its figures equal the counters of the objects it reports on, and no SA key, salt, PSK or channel
key appears in any of the three texts.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edifd.channel import ChannelCore
from edifd.channel.loopback import Loopback
from edifd.edges import metrics_http
from edifd.edges.metrics_http import MetricsError, run_on, start_metrics
from edifd.hba import Hba, PortConfig, RequireAuthWhenSecure, SessionState, Timers
from edifd.metrics import MetricsConfig, target_snapshot, with_hba_ports
from edifd.proto import Body, ChannelKey, SaUpdate
from edifd.runtime.engine import EdifEngine
from edifd.scsi import ScsiCommand, ScsiDisk, Status
from edifd.secapp.app import SecurityApp
from edifd.secapp.app import SessionState as AppState
from edifd.secapp.config import IkePolicy, PeerPolicy, PskCredentials, SecConfig
from edifd.target import LunConfig, TargetConfig, TargetPortConfig, TargetServer
from guest_agent.client import ChannelClient
from guest_agent.service import SecurityService
from tests.support.ci import unavailable

KEY = ChannelKey(bytes(range(1, 33)))
BLOCKS = (16 << 20) // 512
HOST, T1 = 0x2000001B32A0B0C1, 0x2100001B32A0B0C2  # the host's WWPN is lower: it originates PLOGI
PSK = b"correct horse battery staple 1!!"
MiB = 1 << 20
LOOPBACK = MetricsConfig("127.0.0.1", 0)  # port 0: a free port, read back from the endpoint


def _wait(cond, what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def scrape(endpoint) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(endpoint.url, timeout=10) as r:
        text = r.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    return text, samples


class Stack:
    def __init__(self, tmp: Path) -> None:
        responder = SecConfig(peers={HOST: PeerPolicy(HOST, PskCredentials(PSK))}, ike=IkePolicy())
        port = TargetPortConfig("t1", T1, T1 - (1 << 56), ("127.0.0.1", 0),
                                (LunConfig(0, str(tmp / "t1.img"), 8 * MiB),), True, responder)
        self.target = TargetServer(TargetConfig((port,)))
        self.target.start_thread(10)
        self.hba = Hba([PortConfig("p1", HOST, HOST - 1, self.target.port("t1").address, remote_wwpn=T1)],
                       Timers(io_timeout=8.0), policy=RequireAuthWhenSecure())
        self.hba.start_thread()
        self.engine = EdifEngine(self.hba, self.hba.ports[0])
        self.engine.start()
        _wait(lambda: self.hba.ports[0].session.state is SessionState.AUTH_PENDING, "the first login")
        self.core = ChannelCore(KEY, num_blocks=BLOCKS, handler=self.engine, state=self.engine,
                                park_time=0.2, name="ctl0")
        self.engine.attach(self.core.post_event)
        cfg = SecConfig(peers={T1: PeerPolicy(T1, PskCredentials(PSK))}, keepalive_interval=1.0,
                        keepalive_misses=20, ike=IkePolicy())
        self.client = ChannelClient(KEY, capacity_blocks=BLOCKS, clock=time.monotonic, keepalive_ms=1000)
        self.lb = Loopback(ScsiDisk(self.core), self.client)
        self.client.start()
        self.lb.pump()
        assert self.client.established
        self.secrets: list[bytes] = [PSK, KEY.material]  # and every SA key and salt the agent sends
        self.svc = SecurityService(SecurityApp(cfg, time.monotonic), self._request)
        self.lock = threading.Lock()
        self.paused = False
        self._stop = False
        with self.lock:
            self.svc.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _request(self, body: Body) -> int:
        if isinstance(body, SaUpdate) and body.key:
            self.secrets += [body.key, body.salt]
        return self.client.request(body)

    def _run(self) -> None:  # edif-agent's main loop, faster
        while not self._stop:
            if not self.paused:
                with self.lock:
                    self.svc.tick(time.monotonic())
                    for m in self.lb.pump(k=4, rounds=3):
                        self.svc.on_message(m)
                    self.core.tick()
            time.sleep(0.003)

    # what each tool hands its endpoint
    def edifd_snapshot(self) -> dict:
        lun = {"name": "ctl0", "type": "control", "size": BLOCKS * 512, "channel": self.core.status(),
               "edif": self.engine.status()}
        return with_hba_ports({"luns": [lun]}, self.hba)

    def agent_snapshot(self) -> dict:
        with self.lock:
            return {**self.svc.status(time.monotonic()),
                    "channel": {"parked": 4, "established": self.client.established,
                                "channel": dict(self.client.counters)}}

    def io(self) -> None:
        data = bytes(range(256)) * 256  # 64 KiB
        cdb = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, len(data) // 512, 0)
        assert self.hba.submit(T1, 0, ScsiCommand(cdb, data_out=data)).result(30).status == Status.GOOD
        cdb = struct.pack(">BBIBHB", 0x28, 0, 0, 0, len(data) // 512, 0)
        assert self.hba.submit(T1, 0, ScsiCommand(cdb, data_in_len=len(data))).result(30).data == data

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.engine.stop()
        self.hba.stop_thread()
        self.target.stop_thread(10)


@pytest.fixture
def stack(tmp_path: Path):
    s = Stack(tmp_path)
    yield s
    s.close()


def secret_free(text: str, secrets: list[bytes]) -> None:
    for secret in secrets:
        assert secret.hex() not in text and secret.hex().upper() not in text
        assert secret.decode("latin-1") not in text
    for secret in secrets[:2]:  # the PSK and the channel key: long enough to look for a part
        assert secret.hex()[:16] not in text


def test_three_endpoints_report_a_secured_session_and_no_key_material(stack: Stack):
    _wait(lambda: stack.svc.app.session(T1).state is AppState.SECURE, "the secure session")
    _wait(lambda: stack.hba.ports[0].session.state is SessionState.READY, "PRLI after AUTH_OK")
    stack.io()
    stack.paused = True  # the figures hold still while they are compared
    with stack.lock:
        pass
    endpoints = [start_metrics(LOOPBACK, "edifd", stack.edifd_snapshot),
                 start_metrics(LOOPBACK, "edif_target",
                               run_on(stack.target.call_soon, lambda: target_snapshot(stack.target))),
                 start_metrics(LOOPBACK, "edif_agent", stack.agent_snapshot)]
    try:
        texts = []
        # edifd: the channel's, the engine's, the ESP stage's and the HBA link's own counters.
        text, got = scrape(endpoints[0])
        texts.append(text)
        ch, edif = stack.core.status(), stack.engine.status()
        c, esp = ch["counters"], edif["esp"]
        lun = (("lun", "ctl0"),)
        assert got[("edifd_channel_messages_total", (("direction", "in"), *lun))] == c["messages_in"] > 0
        assert got[("edifd_channel_messages_total", (("direction", "out"), *lun))] == c["messages_out"] > 0
        assert got[("edifd_channel_heartbeats_total", lun)] == c["heartbeats"]
        assert got[("edifd_channel_redeliveries_total", lun)] == c["redelivered"]
        assert got[("edifd_channel_rejections_total", (*lun, ("reason", "replay")))] == c["rejected_replay"]
        assert got[("edifd_channel_parked_reads", lun)] == ch["parked"]
        pout = (("direction", "out"), *lun, ("protection", "protected"))
        assert got[("edifd_esp_frames_total", pout)] == esp["frames_out_protected"] > 0
        assert got[("edifd_esp_bytes_total", pout)] == esp["bytes_out_protected"] >= 64 * 1024
        assert got[("edifd_esp_drops_total", (*lun, ("reason", "icv")))] == 0
        assert got[("edifd_sa_updates_total", lun)] == edif["counters"]["sa_updates"] >= 2
        assert got[("edifd_auth_results_total", (*lun, ("result", "ok")))] == edif["counters"]["auth_ok"] >= 1
        assert got[("edifd_sessions", (("state", "ready"),))] == 1
        assert got[("edifd_sas", (("direction", "tx"), *lun))] == 1
        link = stack.hba.ports[0].counters
        assert got[("edifd_hba_frames_total", (("direction", "out"), ("port", "p1")))] == link.frames_out > 0
        assert got[("edifd_hba_bytes_total", (("direction", "in"), ("port", "p1")))] == link.bytes_in > 0
        assert got[("edifd_snapshot_success", ())] == 1
        assert any(name.startswith("process_") for name, _ in got)  # prometheus-client's own collectors

        # edif-target: its port, its session and its responder.
        text, got = scrape(endpoints[1])
        texts.append(text)
        port = stack.target.port("t1")
        r, pc = port.edif.counters, port.counters
        t1 = (("port", "t1"),)
        assert got[("edif_target_ike_negotiations_total", (("outcome", "authenticated"), *t1))] \
            == r.authenticated == 1
        assert got[("edif_target_sa_installs_total", t1)] == r.sa_installed == 2
        assert got[("edif_target_frames_total", (("direction", "in"), *t1))] == pc.frames_in > 0
        assert got[("edif_target_sessions", (*t1, ("state", "ready")))] == 1
        ini = ("initiator", "20:00:00:1b:32:a0:b0:c1")
        target_esp = port.sessions[0].transform.counters
        pin = (("direction", "in"), ini, *t1, ("protection", "protected"))
        assert got[("edif_target_esp_frames_total", pin)] == target_esp.frames_in_protected > 0

        # the agent: its service's figures.
        text, got = scrape(endpoints[2])
        texts.append(text)
        f = stack.svc.figures
        assert got[("edif_agent_sessions", (("state", "secure"),))] == 1
        success = (("outcome", "success"),)
        assert got[("edif_agent_ike_negotiations_total", success)] == f.outcomes["success"] == 1
        assert got[("edif_agent_sa_installs_total", (("direction", "rx"),))] == f.sa_installs["rx"] == 1
        assert got[("edif_agent_sa_installs_total", (("direction", "tx"),))] == f.sa_installs["tx"] == 1
        assert got[("edif_agent_secure_session_setup_seconds_count", ())] == f.setup_latency.count == 1
        assert got[("edif_agent_secure_session_setup_seconds_sum", ())] == pytest.approx(f.setup_latency.sum)
        assert got[("edif_agent_channel_messages_total", (("direction", "out"),))] \
            == stack.client.counters["messages_out"] > 0
        assert got[("edif_agent_requests_total", ())] == f.requests

        assert len(stack.secrets) >= 6  # PSK, channel key, RX and TX key and salt
        for text in texts:
            secret_free(text, stack.secrets)
    finally:
        for e in endpoints:
            e.stop()


def test_no_metrics_table_starts_nothing():
    calls: list[int] = []
    threads = threading.active_count()
    assert start_metrics(None, "edifd", lambda: calls.append(1) or {}) is None
    assert threading.active_count() == threads and calls == []


def test_stop_ends_the_thread_and_frees_the_port():
    endpoint = start_metrics(LOOPBACK, "edifd", lambda: {"luns": []})
    _, got = scrape(endpoint)
    assert got == {**got, ("edifd_snapshot_success", ()): 1}
    url = endpoint.url
    endpoint.stop()
    endpoint.stop()  # idempotent
    assert not endpoint.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    again = start_metrics(MetricsConfig("127.0.0.1", endpoint.address[1]), "edifd", lambda: {"luns": []})
    again.stop()


def test_an_address_in_use_is_a_clear_start_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MetricsError, match=rf"metrics.listen 127.0.0.1:{port}: cannot listen: "
                                               "Address already in use"):
            start_metrics(MetricsConfig("127.0.0.1", port), "edifd", lambda: {})


def test_without_the_package_the_start_error_names_it(monkeypatch):
    monkeypatch.setattr(metrics_http, "client_available", lambda: False)
    with pytest.raises(MetricsError, match="python3-prometheus-client"):
        start_metrics(LOOPBACK, "edif_agent", lambda: {})


def test_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        unavailable(f"no IPv6 loopback: {e}")
    endpoint = start_metrics(MetricsConfig("::1", 0), "edif_target", lambda: {"ports": []})
    try:
        assert endpoint.url.startswith("http://[::1]:")
        _, got = scrape(endpoint)
        assert got[("edif_target_snapshot_success", ())] == 1
    finally:
        endpoint.stop()


def test_a_target_loop_that_does_not_answer_fails_the_scrape_not_the_tool(caplog):
    caplog.set_level(logging.WARNING, logger="edifd.metrics")  # whatever an earlier test set it to
    snapshot = run_on(lambda fn: None, lambda: {"ports": []}, timeout=0.05)  # a loop that never runs it
    endpoint = start_metrics(LOOPBACK, "edif_target", snapshot)
    try:
        _, got = scrape(endpoint)
        assert got[("edif_target_snapshot_success", ())] == 0
        assert not any(name.startswith("edif_target_") and name != "edif_target_snapshot_success"
                       for name, _ in got)
        assert "the event loop did not answer within 0.05 s" in caplog.text
        _, got = scrape(endpoint)  # and the next scrape is served as well
        assert got[("edif_target_snapshot_success", ())] == 0
    finally:
        endpoint.stop()
