"""Prometheus metrics of edifd, edif-target and the agent's security service: snapshot dicts in,
metric families out (docs/metrics.md lists every name and label).

Each tool hands its endpoint (`edifd.edges.metrics_http`) a callable that returns a snapshot of its
state as plain dicts — edifd the dict it writes to status.json (`with_hba_ports` adds the HBA link
counters), edif-target `target_snapshot(server)`, the agent its service status — and one converter of
this module: `edifd_families`, `target_families` or `agent_families`. On each scrape `SnapshotCollector`
calls the one, then the other. Nothing here opens a socket or reads a clock.

The snapshots hold names, states and counts only; a converter reads the numbers it knows and nothing
else, so no key, salt, PSK or channel key can reach a label or a value (tests/unit/test_metrics.py scrapes
with installed SAs and looks for their key bytes). SPIs are not exported either (they say nothing an
alert needs, and change at every rekey).

`prometheus_client` is imported lazily, when families are built: the tools run without it, and asking for
``[metrics]`` without it is a configuration problem naming the package (`parse_metrics_table`). Only APIs
of prometheus-client 0.16 (Debian 12) are used.

Configuration, the same ``[metrics]`` table in the three tools' files::

    [metrics]
    listen = "127.0.0.1:9464"   # IP:PORT, IPv6 in brackets: "[::1]:9464"
    allow_remote = false        # true: allow a non-loopback address (the endpoint has no auth, no TLS)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edifd.confcheck import ProblemCollector, toml_type
from edifd.edif.counters import BlockReason, DropReason
from edifd.edif.latency import SETUP_BUCKETS, LatencyHistogram  # noqa: F401  (re-exported: the agent service, tests)
from edifd.fc import wwn_str

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

PACKAGE = "prometheus-client"
INSTALL_HINT = ("install Debian's python3-prometheus-client, or pip's prometheus-client "
                "(the 'metrics' extra: pip install 'edif[metrics]')")
DEFAULT_LISTEN = "127.0.0.1:9464"

Snapshot = Mapping[str, Any]
Converter = Callable[[Snapshot], list["Metric"]]


class MetricsUnavailable(RuntimeError):
    """[metrics] asks for an endpoint but prometheus-client is not installed."""


def client_available() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def missing_client_message() -> str:
    return f"the Prometheus endpoint needs the {PACKAGE} package: {INSTALL_HINT}"


# --- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsConfig:
    """Where the endpoint listens. Built by `parse_metrics_table`; port 0 (tests) takes a free port."""

    host: str
    port: int
    allow_remote: bool = False

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port). The host is an IP address, never a name: the
    loopback rule below must not depend on what a resolver answers. ValueError says what is wrong."""
    form = 'IP:PORT, IPv6 in brackets, e.g. "127.0.0.1:9464" or "[::1]:9464"'
    v = value.strip()
    if v.startswith("["):
        host, bracket, rest = v[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"expected {form}; got {value!r}")
        port_s = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address; expected {form}") from None
    else:
        host, colon, port_s = v.rpartition(":")
        if not colon or not host:
            raise ValueError(f"expected {form}; got {value!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets, e.g. \"[{host}]:{port_s}\"; got {value!r}")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address (host names are not accepted); "
                             f"expected {form}") from None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"port {port_s!r}: expected a TCP port 1..65535")
    return host, int(port_s)


def parse_metrics_table(table: Any, where: str = "metrics") -> tuple[MetricsConfig | None, list[str]]:
    """The ``[metrics]`` table of a tool's configuration -> (config or None, problems).

    No table: metrics off, (None, []). A table: `listen` is required, `allow_remote` (default false) is
    needed for an address that is not loopback, and prometheus-client must be installed. Every problem is
    a `key.path: message` line for the tool's own error list; nothing is opened or bound here."""
    if table is None:
        return None, []
    if not isinstance(table, dict):
        return None, [f"{where}: expected a table ([metrics]), got {toml_type(table)}"]
    r = ProblemCollector()
    r.unknown(table, {"listen", "allow_remote"}, where)
    raw = r.take(table, "listen", where, str, required=True)
    allow_remote = r.take(table, "allow_remote", where, bool, False)
    cfg = None
    if raw is not None:
        try:
            host, port = parse_listen(raw)
        except ValueError as e:
            r.problems.append(f"{where}.listen: {e}")
        else:
            if not ipaddress.ip_address(host).is_loopback and not allow_remote:
                r.problems.append(
                    f"{where}.listen: {host} is not a loopback address and the endpoint has no "
                    "authentication or TLS; listen on 127.0.0.1 or [::1] (scrape through a tunnel or "
                    f"proxy), or set {where}.allow_remote = true")
            else:
                cfg = MetricsConfig(host, port, allow_remote)
    if not client_available():
        r.problems.append(f"{where}: {missing_client_message()}")
    return (cfg if not r.problems else None), r.problems


# --- a histogram the tools can keep without prometheus-client -----------------------------------------------

# Secure-session setup: an IKE exchange relayed through the control LUN's parked READs takes a few tens of
# milliseconds on an idle host and seconds on a loaded one or with retransmissions.
# --- building families --------------------------------------------------------------------------------------

# name -> (type, help, label names). Counters are named without _total (prometheus-client appends it).
Spec = dict[str, tuple[str, str, tuple[str, ...]]]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _table(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


class _Builder:
    """Samples by family and label values; a label set seen twice is summed (two links of one initiator)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._samples: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in spec}
        self._histograms: dict[str, list[tuple[tuple[str, ...], Mapping[str, Any]]]] = {}

    def add(self, name: str, value: Any, **labels: Any) -> None:
        n = _number(value)
        if n is None:
            return
        names = self.spec[name][2]
        key = tuple(str(labels[k]) if labels[k] is not None else "" for k in names)
        series = self._samples[name]
        series[key] = series.get(key, 0.0) + n

    def add_all(self, name: str, table: Any, label: str, **labels: Any) -> None:
        """One sample per entry of a {label value: number} table (drops by reason, ...)."""
        for k, v in _table(table).items():
            self.add(name, v, **labels, **{label: k})

    def histogram(self, name: str, snap: Any, **labels: Any) -> None:
        if isinstance(snap, Mapping) and _number(snap.get("count")) is not None:
            key = tuple(str(labels[k]) for k in self.spec[name][2])
            self._histograms.setdefault(name, []).append((key, snap))

    def families(self) -> list[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        out: list[Metric] = []
        for name, (kind, doc, labels) in self.spec.items():
            if kind == "histogram":
                h = HistogramMetricFamily(name, doc, labels=labels)
                for key, snap in self._histograms.get(name, []):
                    buckets = [(floatToGoString(le), float(n)) for le, n in snap.get("buckets", [])
                               if _number(le) is not None and _number(n) is not None]
                    buckets.append(("+Inf", float(snap["count"])))
                    h.add_metric(list(key), buckets, float(_number(snap.get("sum")) or 0.0))
                out.append(h)
                continue
            fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=labels)
            for key, value in sorted(self._samples[name].items()):
                fam.add_metric(list(key), value)
            out.append(fam)
        return out


class SnapshotCollector:
    """A prometheus_client collector (duck-typed: `collect`, `describe`) that, on each scrape, takes one
    snapshot and converts it. Scrapes are serialized. A snapshot that fails is logged and yields only
    `<prefix>_snapshot_success 0`, never a traceback to the scraper."""

    def __init__(self, snapshot: Callable[[], Snapshot], convert: Converter, prefix: str) -> None:
        self._snapshot, self._convert, self.prefix = snapshot, convert, prefix
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # no snapshot at registration time

    def collect(self) -> list[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily

        ok = GaugeMetricFamily(f"{self.prefix}_snapshot_success",
                               "1 if this scrape's state snapshot was taken, 0 if it failed (see the log)")
        with self._lock:
            try:
                families = self._convert(self._snapshot())
            except Exception as e:  # a scrape must never take the tool down nor dump a traceback
                log.warning("metrics: state snapshot failed: %s: %s", type(e).__name__, e)
                ok.add_metric([], 0.0)
                return [ok]
        ok.add_metric([], 1.0)
        return [*families, ok]


# --- edifd --------------------------------------------------------------------------------------------------

EDIFD: Spec = {
    "edifd_channel_messages": ("counter", "Channel messages acted on (in: from the agent) or sent (out)",
                               ("lun", "direction")),
    "edifd_channel_rejections": ("counter", "Control-LUN WRITEs refused, by reason", ("lun", "reason")),
    "edifd_channel_heartbeats": ("counter", "Parked READs completed with a heartbeat", ("lun",)),
    "edifd_channel_reads_parked": ("counter", "READs parked to wait for an upstream message", ("lun",)),
    "edifd_channel_parked_reads": ("gauge", "READs parked now", ("lun",)),
    "edifd_channel_redeliveries": ("counter", "Upstream messages delivered again", ("lun",)),
    "edifd_channel_retries": ("counter", "Downstream retries recognised and not acted on again", ("lun",)),
    "edifd_channel_events_posted": ("counter", "Upstream events queued", ("lun",)),
    "edifd_channel_events_lost": ("counter", "Upstream events dropped on a full queue", ("lun",)),
    "edifd_channel_handshakes": ("counter", "APP_START handshakes begun", ("lun",)),
    "edifd_channel_epochs": ("counter", "Channel epochs established", ("lun",)),
    "edifd_channel_agent_silent": ("counter", "Times the agent missed three keepalives", ("lun",)),
    "edifd_channel_queued_messages": ("gauge", "Upstream messages not yet acknowledged", ("lun",)),
    "edifd_channel_established": ("gauge", "1 while an agent holds an epoch", ("lun",)),
    "edifd_hba_frames": ("counter", "FC frames on the HBA port's link", ("port", "direction")),
    "edifd_hba_bytes": ("counter", "Bytes on the HBA port's link (FCIP records)", ("port", "direction")),
    "edifd_hba_link_resets": ("counter", "Links lost or reset", ("port",)),
    "edifd_hba_connects": ("counter", "TCP links established", ("port",)),
    "edifd_hba_decode_errors": ("counter", "Undecodable link data, by reason", ("port", "reason")),
    "edifd_hba_logins": ("counter", "Sessions that became ready (PRLI accepted)", ("port",)),
    "edifd_hba_login_failures": ("counter", "Failed logins", ("port",)),
    "edifd_hba_commands": ("counter", "SCSI commands sent to the remote port", ("port",)),
    "edifd_esp_frames": ("counter", "Frames through the ESP stage of the current login",
                         ("lun", "direction", "protection")),
    "edifd_esp_bytes": ("counter", "Data-field bytes through the ESP stage of the current login",
                        ("lun", "direction", "protection")),
    "edifd_esp_drops": ("counter", "Inbound frames the ESP stage dropped, by reason", ("lun", "reason")),
    "edifd_esp_blocked": ("counter", "Outbound FCP frames that could not be protected, by reason",
                          ("lun", "reason")),
    "edifd_esp_rekeys": ("counter", "TX switches to a new SA in the current login", ("lun",)),
    "edifd_sa_updates": ("counter", "SA_UPDATE requests carried out (installs and deletes)", ("lun",)),
    "edifd_sas": ("gauge", "SAs installed now", ("lun", "direction")),
    "edifd_sessions": ("gauge", "Remote-port sessions by state", ("state",)),
    "edifd_session_generation": ("gauge", "Login generation of the LUN's remote port", ("lun",)),
    "edifd_auth_results": ("counter", "AUTH_OK / AUTH_FAIL requests by result", ("lun", "result")),
    "edifd_auth_els": ("counter", "AUTH_ELS relayed (out: ELS_SEND, in: ELS_RCVD)", ("lun", "direction")),
    "edifd_auth_els_timeouts": ("counter", "ELS_SENDs without an answer in time", ("lun",)),
    "edifd_session_shutdowns": ("counter", "SESSION_SHUTDOWN events sent", ("lun",)),
    "edifd_esp_teardowns": ("counter", "Secure sessions torn down on the ESP stage's request", ("lun",)),
    "edifd_app_stops": ("counter", "APP_STOPs from the security application", ("lun",)),
    "edifd_agent_lost": ("counter", "Secure sessions held because the agent went silent", ("lun",)),
    "edifd_edif_requests": ("counter", "EDIF requests handled by the engine, and those refused",
                            ("lun", "result")),
    "edifd_secure_session_setup_seconds": ("histogram", "Secure login to AUTH_OK", ("lun",)),
}

_ESP_TRAFFIC = (("frames_in_protected", "in", "protected"), ("frames_in_clear", "in", "clear"),
                ("frames_out_protected", "out", "protected"), ("frames_out_clear", "out", "clear"))


def _esp(b: _Builder, prefix: str, esp: Any, **labels: Any) -> None:
    esp = _table(esp)
    for key, direction, protection in _ESP_TRAFFIC:
        b.add(f"{prefix}_esp_frames", esp.get(key), **labels, direction=direction, protection=protection)
        b.add(f"{prefix}_esp_bytes", esp.get(key.replace("frames", "bytes")), **labels,
              direction=direction, protection=protection)
    drops, blocked = _table(esp.get("drops")), _table(esp.get("blocked"))
    if esp:  # every reason, so an alert on ICV failures has a series before the first one
        for r in DropReason:
            b.add(f"{prefix}_esp_drops", drops.get(r.value, 0), **labels, reason=r.value)
        for br in BlockReason:
            b.add(f"{prefix}_esp_blocked", blocked.get(br.value, 0), **labels, reason=br.value)
    b.add(f"{prefix}_esp_rekeys", esp.get("rekeys"), **labels)


HBA_TIMEOUT = 1.0  # s; as edifd.status waits for a busy HBA loop


def with_hba_ports(status: dict[str, Any], hba: Any) -> dict[str, Any]:
    """edifd's status dict (edifd.status.collect) plus `hba_ports`: the link counters of each HBA port
    (`Hba.status()`, taken on the HBA's loop). An HBA that does not answer within `HBA_TIMEOUT` s
    leaves them out."""
    if hba is None:
        return status
    try:
        ports = [dataclasses.asdict(p) for p in hba.status(timeout=HBA_TIMEOUT)]
    except Exception as e:  # the LUN figures are still worth a scrape
        log.warning("metrics: HBA status failed: %s: %s", type(e).__name__, e)
        return status
    return {**status, "hba_ports": ports}


def edifd_families(snap: Snapshot) -> list[Metric]:
    """edifd's status dict (+ `hba_ports`, see `with_hba_ports`) -> families."""
    b = _Builder(EDIFD)
    sessions: dict[str, int] = {}
    for lun in snap.get("luns") or []:
        if not isinstance(lun, Mapping):
            continue
        name = lun.get("name")
        ch = _table(lun.get("channel"))
        c = _table(ch.get("counters"))
        if ch:
            b.add("edifd_channel_messages", c.get("messages_in"), lun=name, direction="in")
            b.add("edifd_channel_messages", c.get("messages_out"), lun=name, direction="out")
            for key, v in c.items():
                if key.startswith("rejected_"):
                    b.add("edifd_channel_rejections", v, lun=name, reason=key.removeprefix("rejected_"))
            for metric, key in (("heartbeats", "heartbeats"), ("reads_parked", "reads_parked"),
                                ("redeliveries", "redelivered"), ("retries", "retries"),
                                ("events_posted", "events_posted"), ("events_lost", "events_lost"),
                                ("handshakes", "handshakes"), ("epochs", "epochs"),
                                ("agent_silent", "agent_silent")):
                b.add(f"edifd_channel_{metric}", c.get(key), lun=name)
            b.add("edifd_channel_parked_reads", ch.get("parked"), lun=name)
            b.add("edifd_channel_queued_messages", ch.get("queued"), lun=name)
            b.add("edifd_channel_established", ch.get("established"), lun=name)
        edif = _table(lun.get("edif"))
        if "session" in edif:
            state = str(edif["session"])
            sessions[state] = sessions.get(state, 0) + 1
            b.add("edifd_session_generation", edif.get("generation"), lun=name)
        sa = _table(edif.get("sa"))
        for direction in ("rx", "tx"):
            if isinstance(sa.get(direction), list):
                b.add("edifd_sas", len(sa[direction]), lun=name, direction=direction)
        if edif.get("esp") is not None:
            _esp(b, "edifd", edif.get("esp"), lun=name)
        e = _table(edif.get("counters"))
        if e:
            for result, key in (("ok", "auth_ok"), ("fail", "auth_fail"),
                                ("retry_later", "auth_retry_later")):
                b.add("edifd_auth_results", e.get(key), lun=name, result=result)
            b.add("edifd_auth_els", e.get("els_sent"), lun=name, direction="out")
            b.add("edifd_auth_els", e.get("els_received"), lun=name, direction="in")
            for metric, key in (("auth_els_timeouts", "els_timeouts"), ("sa_updates", "sa_updates"),
                                ("session_shutdowns", "shutdowns"), ("esp_teardowns", "teardowns"),
                                ("app_stops", "app_stops"), ("agent_lost", "agent_lost")):
                b.add(f"edifd_{metric}", e.get(key), lun=name)
            requests, refused = _number(e.get("requests")), _number(e.get("refused"))
            if requests is not None and refused is not None:
                b.add("edifd_edif_requests", requests - refused, lun=name, result="ok")
                b.add("edifd_edif_requests", refused, lun=name, result="refused")
        b.histogram("edifd_secure_session_setup_seconds", edif.get("setup_latency"), lun=name)
    for state, n in sessions.items():
        b.add("edifd_sessions", n, state=state)
    for p in snap.get("hba_ports") or []:
        if not isinstance(p, Mapping):
            continue
        port, c, rc = p.get("name"), _table(p.get("counters")), _table(p.get("remote_counters"))
        for direction in ("in", "out"):
            b.add("edifd_hba_frames", c.get(f"frames_{direction}"), port=port, direction=direction)
            b.add("edifd_hba_bytes", c.get(f"bytes_{direction}"), port=port, direction=direction)
        b.add("edifd_hba_link_resets", c.get("link_resets"), port=port)
        b.add("edifd_hba_connects", c.get("connects"), port=port)
        b.add_all("edifd_hba_decode_errors", c.get("decode_errors"), "reason", port=port)
        b.add("edifd_hba_logins", rc.get("logins"), port=port)
        b.add("edifd_hba_login_failures", rc.get("login_failures"), port=port)
        b.add("edifd_hba_commands", rc.get("commands"), port=port)
    return b.families()


# --- edif-target --------------------------------------------------------------------------------------------

TARGET: Spec = {
    "edif_target_frames": ("counter", "FC frames on the target port's links", ("port", "direction")),
    "edif_target_bytes": ("counter", "Bytes on the target port's links (FCIP records)",
                          ("port", "direction")),
    "edif_target_link_resets": ("counter", "Links closed on a decode error", ("port",)),
    "edif_target_connects": ("counter", "TCP links accepted", ("port",)),
    "edif_target_decode_errors": ("counter", "Undecodable link data, by reason", ("port", "reason")),
    "edif_target_sessions": ("gauge", "Links by state (connected, logged_in, ready)", ("port", "state")),
    "edif_target_logins": ("counter", "Sessions that became ready (PRLI accepted)", ("port",)),
    "edif_target_logouts": ("counter", "Sessions logged out", ("port",)),
    "edif_target_login_failures": ("counter", "Failed logins", ("port",)),
    "edif_target_commands": ("counter", "SCSI commands received", ("port",)),
    "edif_target_dropped_frames": ("counter", "Frames dropped by the sessions", ("port",)),
    "edif_target_esp_frames": ("counter", "Frames through the ESP stage of the initiator's current login",
                               ("port", "initiator", "direction", "protection")),
    "edif_target_esp_bytes": ("counter", "Data-field bytes through the ESP stage of the current login",
                              ("port", "initiator", "direction", "protection")),
    "edif_target_esp_drops": ("counter", "Inbound frames the ESP stage dropped, by reason",
                              ("port", "initiator", "reason")),
    "edif_target_esp_blocked": ("counter", "Outbound FCP frames that could not be protected, by reason",
                                ("port", "initiator", "reason")),
    "edif_target_esp_rekeys": ("counter", "TX switches to a new SA in the current login",
                               ("port", "initiator")),
    "edif_target_ike_negotiations": ("counter", "IKE negotiations answered, by outcome", ("port", "outcome")),
    "edif_target_auth_els": ("counter", "AUTH_ELS requests received", ("port",)),
    "edif_target_sa_installs": ("counter", "SAs installed (RX and TX)", ("port",)),
    "edif_target_sa_deletes": ("counter", "SA pairs removed (IKE Delete)", ("port",)),
    "edif_target_esp_teardowns": ("counter", "Sessions logged out on the ESP stage's request", ("port",)),
}

_SESSION_TOTALS = ("logins", "logouts", "login_failures", "commands", "dropped_frames")


def _session_state(s: Any) -> str:
    if getattr(s, "image_pair", False):
        return "ready"
    return "logged_in" if getattr(s, "logged_in", False) else "connected"


def target_snapshot(server: Any) -> dict[str, Any]:
    """edif-target's state as plain dicts: per port its link counters, its live sessions (state,
    initiator, counters, the ESP counters of EDIF links), the counters of finished sessions and the
    responder's. Call it on the target's event loop (it reads what the loop changes)."""
    ports = []
    for port in server.ports:
        sessions = []
        for s in port.sessions:
            counters = getattr(s.transform, "counters", None)  # an EspTransform on EDIF ports
            sessions.append({
                "initiator": wwn_str(s.initiator_wwpn) if s.initiator_wwpn else None,
                "state": _session_state(s),
                "counters": s.counters.snapshot(),
                "esp": counters.snapshot() if hasattr(counters, "snapshot") else None,
            })
        closed: dict[str, int] = {}
        for c in port.sessions_closed:
            for k in _SESSION_TOTALS:
                closed[k] = closed.get(k, 0) + int(c.get(k, 0))
        ports.append({
            "name": port.config.name,
            "wwpn": wwn_str(port.config.wwpn),
            "counters": port.counters.snapshot(),
            "sessions": sessions,
            "closed_sessions": closed,
            "responder": port.edif.counters.snapshot() if port.edif is not None else None,
        })
    return {"ports": ports}


def target_families(snap: Snapshot) -> list[Metric]:
    """`target_snapshot` -> families."""
    b = _Builder(TARGET)
    for p in snap.get("ports") or []:
        if not isinstance(p, Mapping):
            continue
        port, c = p.get("name"), _table(p.get("counters"))
        for direction in ("in", "out"):
            b.add("edif_target_frames", c.get(f"frames_{direction}"), port=port, direction=direction)
            b.add("edif_target_bytes", c.get(f"bytes_{direction}"), port=port, direction=direction)
        b.add("edif_target_link_resets", c.get("link_resets"), port=port)
        b.add("edif_target_connects", c.get("connects"), port=port)
        b.add_all("edif_target_decode_errors", c.get("decode_errors"), "reason", port=port)
        for state in ("connected", "logged_in", "ready"):
            b.add("edif_target_sessions", 0, port=port, state=state)
        totals = dict(_table(p.get("closed_sessions")))
        for s in p.get("sessions") or []:
            if not isinstance(s, Mapping):
                continue
            b.add("edif_target_sessions", 1, port=port, state=s.get("state"))
            sc = _table(s.get("counters"))
            for k in _SESSION_TOTALS:
                totals[k] = totals.get(k, 0) + (_number(sc.get(k)) or 0)
            if s.get("esp") is not None:
                _esp(b, "edif_target", s.get("esp"), port=port, initiator=s.get("initiator"))
        for k in _SESSION_TOTALS:
            b.add(f"edif_target_{k}", totals.get(k, 0), port=port)
        r = p.get("responder")
        if isinstance(r, Mapping):
            for outcome, key in (("authenticated", "authenticated"), ("failed", "auth_failed"),
                                 ("refused", "refused")):
                b.add("edif_target_ike_negotiations", r.get(key), port=port, outcome=outcome)
            b.add("edif_target_auth_els", r.get("auth_els"), port=port)
            b.add("edif_target_sa_installs", r.get("sa_installed"), port=port)
            b.add("edif_target_sa_deletes", r.get("sa_removed"), port=port)
            b.add("edif_target_esp_teardowns", r.get("teardowns"), port=port)
    return b.families()


# --- the agent's security service ---------------------------------------------------------------------------

AGENT: Spec = {
    "edif_agent_sessions": ("gauge", "Configured targets by session state", ("state",)),
    "edif_agent_ike_negotiations": ("counter",
                                    "IKE negotiations by outcome (success, or the AUTH_FAIL reason)",
                                    ("outcome",)),
    "edif_agent_rekeys": ("counter", "Completed rekeys by trigger", ("trigger",)),
    "edif_agent_sa_installs": ("counter", "SA_UPDATE installs the host accepted", ("direction",)),
    "edif_agent_sa_deletes": ("counter", "SA_UPDATE deletes the host accepted", ("direction",)),
    "edif_agent_sa_update_refusals": ("counter", "SA_UPDATEs the host refused, by status", ("status",)),
    "edif_agent_sa_age_seconds": ("gauge", "Age of the SA pair in use", ("target",)),
    "edif_agent_session_downs": ("counter", "Secure sessions that went down", ()),
    "edif_agent_channel_losses": ("counter", "Times the host was lost and the channel handshaken again", ()),
    "edif_agent_starts": ("counter", "Application starts (after each channel handshake)", ()),
    "edif_agent_requests": ("counter", "Requests sent to the host", ()),
    "edif_agent_els_rejected": ("counter", "AUTH_ELS payloads the IKE driver refused", ()),
    "edif_agent_unexpected_responses": ("counter", "Responses to no request of ours", ()),
    "edif_agent_running": ("gauge", "1 while the security application runs", ()),
    "edif_agent_channel_messages": ("counter", "Channel messages received (in) and sent (out)",
                                    ("direction",)),
    "edif_agent_channel_heartbeats": ("counter", "Heartbeats received", ()),
    "edif_agent_channel_rejected_reads": ("counter", "READ data the client could not use", ()),
    "edif_agent_channel_write_retries": ("counter", "WRITEs sent again", ()),
    "edif_agent_channel_redeliveries": ("counter", "Upstream messages received twice (redelivered)", ()),
    "edif_agent_channel_readers": ("gauge", "READs the agent keeps parked at the host (reader threads)", ()),
    "edif_agent_channel_established": ("gauge", "1 while the channel holds an epoch", ()),
    "edif_agent_secure_session_setup_seconds": (
        "histogram", "SECURE_CONNECT (or the host's AUTH_NEEDED) to the session being secure", ()),
}


def agent_families(snap: Snapshot) -> list[Metric]:
    """The service's status (guest_agent.service.SecurityService.status) with the channel endpoint's
    status under `channel`, as the agent's status file holds it -> families."""
    # Here, not at the top: edifd.secapp.config imports this module for its [metrics] table.
    from edifd.secapp.session import SessionState as AgentSessionState

    b = _Builder(AGENT)
    app, svc = _table(snap.get("app")), _table(snap.get("service"))
    states = {s.value: 0 for s in AgentSessionState}
    for wwpn, t in _table(app.get("targets")).items():
        if isinstance(t, Mapping) and t.get("state") in states:
            states[t["state"]] += 1
            b.add("edif_agent_sa_age_seconds", t.get("sa_age_s"), target=wwpn)
    if app:
        for state, n in states.items():
            b.add("edif_agent_sessions", n, state=state)
        b.add("edif_agent_running", app.get("running"))
        ac = _table(app.get("counters"))
        b.add("edif_agent_els_rejected", ac.get("els_rejected"))
        b.add("edif_agent_unexpected_responses", ac.get("unexpected"))
    b.add_all("edif_agent_ike_negotiations", svc.get("outcomes"), "outcome")
    b.add_all("edif_agent_rekeys", svc.get("rekey_triggers"), "trigger")
    b.add_all("edif_agent_sa_installs", svc.get("sa_installs"), "direction")
    b.add_all("edif_agent_sa_deletes", svc.get("sa_deletes"), "direction")
    b.add_all("edif_agent_sa_update_refusals", svc.get("sa_refused"), "status")
    for metric, key in (("session_downs", "downs"), ("channel_losses", "channel_lost"), ("starts", "starts"),
                        ("requests", "requests")):
        b.add(f"edif_agent_{metric}", svc.get(key))
    b.histogram("edif_agent_secure_session_setup_seconds", svc.get("setup_latency"))
    ep = _table(snap.get("channel"))
    cc = _table(ep.get("channel"))
    if cc:
        b.add("edif_agent_channel_messages", cc.get("messages_in"), direction="in")
        b.add("edif_agent_channel_messages", cc.get("messages_out"), direction="out")
        b.add("edif_agent_channel_heartbeats", cc.get("heartbeats"))
        b.add("edif_agent_channel_rejected_reads", cc.get("rejected"))
        b.add("edif_agent_channel_write_retries", cc.get("write_retries"))
        b.add("edif_agent_channel_redeliveries", cc.get("duplicates"))
    b.add("edif_agent_channel_readers", ep.get("parked"))
    b.add("edif_agent_channel_established", ep.get("established"))
    return b.families()


# The tools' converters, by the prefix of their metric names (edifd.edges.metrics_http.start_metrics).
CONVERTERS: dict[str, Converter] = {
    "edifd": edifd_families,
    "edif_target": target_families,
    "edif_agent": agent_families,
}
