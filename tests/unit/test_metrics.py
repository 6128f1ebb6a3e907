"""edifd.metrics: the [metrics] table, the histogram, and snapshot dicts -> metric families (no sockets).

The families are rendered with prometheus-client's own text encoder and read back with its own parser, so
what is checked is what a scraper sees. The scrape over HTTP, with real SAs installed, is
test_metrics_http.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edifd import metrics
from edifd.channel import ChannelCore
from edifd.edif import DropReason, EspCounters
from edifd.metrics import (
    LatencyHistogram,
    MetricsConfig,
    SnapshotCollector,
    agent_families,
    edifd_families,
    parse_metrics_table,
    target_families,
    with_hba_ports,
)
from edifd.proto import ChannelKey
from edifd.runtime.login import EngineCounters

KEY = ChannelKey(bytes(range(1, 33)))


def scrape(convert, snap, prefix="edifd") -> dict[tuple[str, tuple], float]:
    """What a scraper reads: {(sample name, sorted labels): value}."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap, convert, prefix))
    text = generate_latest(reg).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


# --- [metrics] ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("listen, host, port", [
    ("127.0.0.1:9464", "127.0.0.1", 9464),
    ("[::1]:9464", "::1", 9464),
    (" 127.0.0.2:1 ", "127.0.0.2", 1),
])
def test_loopback_listen_addresses_are_accepted(listen, host, port):
    cfg, problems = parse_metrics_table({"listen": listen})
    assert problems == [] and cfg == MetricsConfig(host, port, False)


def test_no_table_means_no_endpoint():
    assert parse_metrics_table(None) == (None, [])


@pytest.mark.parametrize("table, words", [
    ({}, "metrics.listen: required"),
    ({"listen": 9464}, "metrics.listen: expected a string, got an integer"),
    ({"listen": "9464"}, "expected IP:PORT"),
    ({"listen": "localhost:9464"}, "host names are not accepted"),
    ({"listen": "::1:9464"}, 'an IPv6 address goes in brackets, e.g. "[::1]:9464"'),
    ({"listen": "[::1]"}, "expected IP:PORT"),
    ({"listen": "[127.0.0.1]:9464"}, "is not an IPv6 address"),
    ({"listen": "127.0.0.1:0"}, "expected a TCP port 1..65535"),
    ({"listen": "127.0.0.1:65536"}, "expected a TCP port 1..65535"),
    ({"listen": "127.0.0.1:http"}, "expected a TCP port 1..65535"),
    ({"listen": "127.0.0.1:9464", "allow_remote": "yes"}, "metrics.allow_remote: expected a boolean"),
    ({"listen": "127.0.0.1:9464", "port": 1}, "metrics.port: unknown key"),
])
def test_a_bad_table_is_a_clear_problem_and_no_config(table, words):
    cfg, problems = parse_metrics_table(table)
    assert cfg is None and len(problems) == 1 and words in problems[0], problems
    assert problems[0].startswith("metrics.")


def test_a_table_of_the_wrong_type_is_named_in_toml_words():
    assert parse_metrics_table([1], "agent.metrics") == (
        None, ["agent.metrics: expected a table ([metrics]), got an array"])


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464", "[2001:db8::1]:9464"])
def test_a_non_loopback_address_needs_allow_remote(listen):
    cfg, problems = parse_metrics_table({"listen": listen})
    assert cfg is None and "not a loopback address" in problems[0] and "allow_remote = true" in problems[0]
    cfg, problems = parse_metrics_table({"listen": listen, "allow_remote": True})
    assert problems == [] and cfg is not None and cfg.allow_remote


def test_asking_for_metrics_without_the_package_names_it(monkeypatch):
    monkeypatch.setattr(metrics, "client_available", lambda: False)
    cfg, problems = parse_metrics_table({"listen": "127.0.0.1:9464"})
    assert cfg is None and len(problems) == 1
    assert "prometheus-client" in problems[0] and "python3-prometheus-client" in problems[0]
    assert "edif[metrics]" in problems[0]
    assert parse_metrics_table(None) == (None, [])  # no table: the package is not needed


def test_listen_text_round_trips():
    assert MetricsConfig("::1", 9464).listen == "[::1]:9464"
    assert MetricsConfig("127.0.0.1", 9464).listen == "127.0.0.1:9464"


# --- the histogram ------------------------------------------------------------------------------------------


def test_histogram_is_cumulative_and_json_safe():
    h = LatencyHistogram((0.1, 1.0, 10.0))
    for v in (0.05, 0.1, 0.5, 3.0, 100.0, -1.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap == {"buckets": [[0.1, 3], [1.0, 4], [10.0, 5]], "count": 6, "sum": pytest.approx(103.65)}
    got = scrape(agent_families, {"service": {"setup_latency": snap}}, "edif_agent")
    name = "edif_agent_secure_session_setup_seconds"
    assert got[(f"{name}_bucket", (("le", "0.1"),))] == 3
    assert got[(f"{name}_bucket", (("le", "10.0"),))] == 5
    assert got[(f"{name}_bucket", (("le", "+Inf"),))] == 6
    assert got[(f"{name}_count", ())] == 6 and got[(f"{name}_sum", ())] == pytest.approx(103.65)


# --- edifd --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PortStatus:  # the shape of edifd.hba.port.PortStatus
    name: str
    counters: dict
    remote_counters: dict


class FakeHba:
    def __init__(self, ports=None, error: Exception | None = None) -> None:
        self.ports, self.error = ports or [], error

    def status(self, timeout: float):
        assert timeout == metrics.HBA_TIMEOUT
        if self.error:
            raise self.error
        return self.ports


def edifd_snapshot() -> dict:
    core = ChannelCore(KEY, num_blocks=(16 << 20) // 512, name="ctl0")
    core.counters.update(messages_in=7, messages_out=9, heartbeats=3, redelivered=2, rejected_replay=4,
                         rejected_bad_mac=1, reads_parked=11)
    esp = EspCounters(frames_in_protected=10, bytes_in_protected=1000, frames_out_protected=12,
                      bytes_out_protected=2400, frames_out_clear=3, rekeys=1)
    esp.drop(DropReason.ICV)
    esp.drop(DropReason.ICV)
    esp.drop(DropReason.REPLAY)
    engine = EngineCounters(requests=20, refused=2, auth_ok=1, auth_fail=1, auth_retry_later=3,
                            els_sent=2, els_received=2, sa_updates=4)
    lun = {"name": "ctl0", "type": "control", "size": 16 << 20, "channel": core.status(),
           "edif": {"session": "ready", "generation": 3, "auth": "AUTHENTICATED",
                    "sa": {"rx": [{"spi": 0x101}], "tx": [{"spi": 0x202}]},
                    "esp": esp.snapshot(), "counters": engine.snapshot()}}
    port = PortStatus("p1", {"frames_in": 40, "frames_out": 41, "bytes_in": 4000, "bytes_out": 4100,
                             "link_resets": 1, "connects": 2, "decode_errors": {"bad_sof": 1}},
                      {"logins": 2, "login_failures": 1, "commands": 30})
    return with_hba_ports({"luns": [lun, {"name": "data0", "type": "file", "size": 1}]}, FakeHba([port]))


def test_edifd_figures_equal_the_status_counters():
    got = scrape(edifd_families, edifd_snapshot())
    lun = (("lun", "ctl0"),)
    assert got[("edifd_channel_messages_total", (("direction", "in"), *lun))] == 7
    assert got[("edifd_channel_messages_total", (("direction", "out"), *lun))] == 9
    assert got[("edifd_channel_rejections_total", (("lun", "ctl0"), ("reason", "replay")))] == 4
    assert got[("edifd_channel_rejections_total", (("lun", "ctl0"), ("reason", "bad_mac")))] == 1
    assert got[("edifd_channel_rejections_total", (("lun", "ctl0"), ("reason", "gap")))] == 0
    assert got[("edifd_channel_heartbeats_total", lun)] == 3
    assert got[("edifd_channel_redeliveries_total", lun)] == 2
    assert got[("edifd_channel_reads_parked_total", lun)] == 11
    assert got[("edifd_channel_parked_reads", lun)] == 0
    assert got[("edifd_channel_established", lun)] == 0
    pin = (("direction", "in"), ("lun", "ctl0"), ("protection", "protected"))
    assert got[("edifd_esp_frames_total", pin)] == 10 and got[("edifd_esp_bytes_total", pin)] == 1000
    assert got[("edifd_esp_drops_total", (("lun", "ctl0"), ("reason", "icv")))] == 2
    assert got[("edifd_esp_drops_total", (("lun", "ctl0"), ("reason", "replay")))] == 1
    assert got[("edifd_esp_drops_total", (("lun", "ctl0"), ("reason", "unknown_spi")))] == 0  # always there
    assert got[("edifd_esp_rekeys_total", lun)] == 1
    assert got[("edifd_sa_updates_total", lun)] == 4
    assert got[("edifd_sas", (("direction", "rx"), *lun))] == 1
    assert got[("edifd_sessions", (("state", "ready"),))] == 1
    assert got[("edifd_auth_results_total", (("lun", "ctl0"), ("result", "retry_later")))] == 3
    assert got[("edifd_edif_requests_total", (("lun", "ctl0"), ("result", "refused")))] == 2
    assert got[("edifd_edif_requests_total", (("lun", "ctl0"), ("result", "ok")))] == 18
    port_in = (("direction", "in"), ("port", "p1"))
    assert got[("edifd_hba_frames_total", port_in)] == 40 and got[("edifd_hba_bytes_total", port_in)] == 4000
    assert got[("edifd_hba_decode_errors_total", (("port", "p1"), ("reason", "bad_sof")))] == 1
    assert got[("edifd_hba_logins_total", (("port", "p1"),))] == 2
    assert got[("edifd_snapshot_success", ())] == 1
    assert not any(labels and dict(labels).get("lun") == "data0" for _, labels in got)  # a file LUN has none


def test_engine_setup_latency_is_exported_when_the_status_has_it():
    snap = edifd_snapshot()
    h = LatencyHistogram((0.5, 1.0))
    h.observe(0.7)
    snap["luns"][0]["edif"]["setup_latency"] = h.snapshot()
    got = scrape(edifd_families, snap)
    assert got[("edifd_secure_session_setup_seconds_bucket", (("le", "1.0"), ("lun", "ctl0")))] == 1
    assert got[("edifd_secure_session_setup_seconds_bucket", (("le", "0.5"), ("lun", "ctl0")))] == 0


def test_an_hba_that_does_not_answer_leaves_the_lun_figures():
    snap = with_hba_ports({"luns": []}, FakeHba(error=TimeoutError("loop busy")))
    assert "hba_ports" not in snap
    assert with_hba_ports({"luns": []}, None) == {"luns": []}


def test_a_failing_snapshot_is_a_zero_success_gauge_not_an_error(caplog):
    caplog.set_level(logging.WARNING, logger="edifd.metrics")  # whatever an earlier test set it to
    def broken() -> dict:
        raise RuntimeError("state gone")

    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(broken, edifd_families, "edifd"))
    fams = list(text_string_to_metric_families(generate_latest(reg).decode()))
    assert [(f.name, [s.value for s in f.samples]) for f in fams] == [("edifd_snapshot_success", [0.0])]
    assert "state snapshot failed: RuntimeError: state gone" in caplog.text


def test_malformed_parts_of_a_snapshot_are_skipped():
    snap = {"luns": [None, {"name": "x", "channel": "nonsense", "edif": {"counters": {"auth_ok": "many"}}}],
            "hba_ports": ["?"]}
    got = scrape(edifd_families, snap)
    assert got == {("edifd_snapshot_success", ()): 1}


# --- edif-target --------------------------------------------------------------------------------------------


def target_snapshot() -> dict:
    esp = EspCounters(frames_in_protected=5, bytes_in_protected=500)
    esp.drop(DropReason.UNKNOWN_SPI)
    session = {"logins": 1, "logouts": 0, "login_failures": 0, "commands": 9, "dropped_frames": 1}
    return {"ports": [{
        "name": "t1", "wwpn": "21:00:00:1b:32:a0:b0:c2",
        "counters": {"frames_in": 50, "frames_out": 60, "bytes_in": 5000, "bytes_out": 6000,
                     "link_resets": 0, "connects": 3, "decode_errors": {}},
        "sessions": [{"initiator": "20:00:00:1b:32:a0:b0:c1", "state": "ready", "counters": session,
                      "esp": esp.snapshot()},
                     {"initiator": None, "state": "connected", "counters": {}, "esp": None}],
        "closed_sessions": {"logins": 2, "commands": 4},
        "responder": {"auth_els": 6, "authenticated": 2, "auth_failed": 1, "refused": 0, "sa_installed": 4,
                      "sa_removed": 1, "teardowns": 0}}]}


def test_target_figures_equal_the_snapshot():
    got = scrape(target_families, target_snapshot(), "edif_target")
    port = (("port", "t1"),)
    assert got[("edif_target_frames_total", (("direction", "out"), *port))] == 60
    assert got[("edif_target_bytes_total", (("direction", "in"), *port))] == 5000
    assert got[("edif_target_sessions", (("port", "t1"), ("state", "ready")))] == 1
    assert got[("edif_target_sessions", (("port", "t1"), ("state", "connected")))] == 1
    assert got[("edif_target_sessions", (("port", "t1"), ("state", "logged_in")))] == 0
    assert got[("edif_target_logins_total", port)] == 3  # live + finished sessions: never goes down
    assert got[("edif_target_commands_total", port)] == 13
    ini = (("initiator", "20:00:00:1b:32:a0:b0:c1"), ("port", "t1"))
    assert got[("edif_target_esp_drops_total", (*ini, ("reason", "unknown_spi")))] == 1
    pin = (("direction", "in"), *ini, ("protection", "protected"))
    assert got[("edif_target_esp_frames_total", pin)] == 5
    assert got[("edif_target_ike_negotiations_total", (("outcome", "authenticated"), *port))] == 2
    assert got[("edif_target_ike_negotiations_total", (("outcome", "failed"), *port))] == 1
    assert got[("edif_target_sa_installs_total", port)] == 4
    assert got[("edif_target_sa_deletes_total", port)] == 1


# --- the agent ----------------------------------------------------------------------------------------------


def test_agent_figures_equal_the_service_status():
    snap = {"app": {"running": True, "targets": {
                "21:00:00:1b:32:a0:b0:c2": {"state": "secure", "sa_age_s": 12.5},
                "21:00:00:1b:32:a0:b0:c3": {"state": "failed", "sa_age_s": None}},
                "counters": {"els_rejected": 1, "unexpected": 0}},
            "service": {"downs": 1, "channel_lost": 2, "starts": 3, "requests": 40,
                        "outcomes": {"success": 2, "auth_failed": 1}, "rekey_triggers": {"lifetime": 1},
                        "sa_installs": {"rx": 3, "tx": 3}, "sa_deletes": {"rx": 1, "tx": 1},
                        "sa_refused": {"limit": 1}},
            "channel": {"parked": 4, "established": True,
                        "channel": {"messages_in": 30, "messages_out": 40, "heartbeats": 5, "duplicates": 1}}}
    got = scrape(agent_families, snap, "edif_agent")
    assert got[("edif_agent_sessions", (("state", "secure"),))] == 1
    assert got[("edif_agent_sessions", (("state", "failed"),))] == 1
    assert got[("edif_agent_sessions", (("state", "negotiating"),))] == 0
    assert got[("edif_agent_sa_age_seconds", (("target", "21:00:00:1b:32:a0:b0:c2"),))] == 12.5
    assert got[("edif_agent_ike_negotiations_total", (("outcome", "success"),))] == 2
    assert got[("edif_agent_ike_negotiations_total", (("outcome", "auth_failed"),))] == 1
    assert got[("edif_agent_rekeys_total", (("trigger", "lifetime"),))] == 1
    assert got[("edif_agent_sa_installs_total", (("direction", "tx"),))] == 3
    assert got[("edif_agent_sa_deletes_total", (("direction", "rx"),))] == 1
    assert got[("edif_agent_sa_update_refusals_total", (("status", "limit"),))] == 1
    assert got[("edif_agent_channel_losses_total", ())] == 2
    assert got[("edif_agent_channel_messages_total", (("direction", "out"),))] == 40
    assert got[("edif_agent_channel_redeliveries_total", ())] == 1
    assert got[("edif_agent_channel_established", ())] == 1
    assert got[("edif_agent_running", ())] == 1


def test_docs_list_every_metric_and_its_labels():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for spec in (metrics.EDIFD, metrics.TARGET, metrics.AGENT):
        for name, (kind, _doc, labels) in spec.items():
            row = f"| `{name}{'_total' if kind == 'counter' else ''}` | {kind} | {', '.join(labels) or '-'} |"
            assert row in doc, row
