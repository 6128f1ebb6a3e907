"""The security service: one `SecurityApp` joined to one control-disk channel (`edif-agent run --config`).

This module is the wiring only, and stays free of threads, disks and clocks so it can be driven by a test
loopback as well as by `ControlDiskEndpoint`: the caller hands it a `request(body) -> request_id` function
(the channel client's `request`, called under the endpoint lock) and feeds it every delivered message and a
tick about once a second. It turns the app's events into log lines a person can follow — never keys, salts or
PSKs (the events carry none; SPIs and WWPNs are not secret) — and keeps the figures the status file and the
Prometheus endpoint show (`edifd.metrics.agent_families`): outcomes of the IKE negotiations, SA installs and
deletes the host accepted, and the secure-session setup latency, measured with the app's own clock from the
SECURE_CONNECT (or the host's AUTH_NEEDED) that begins an attempt to the session being secure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edifd.fc import wwn_str
from edifd.metrics import LatencyHistogram
from edifd.proto import (
    AppStop,
    AuthNeeded,
    Body,
    Kind,
    Message,
    Response,
    SaFlags,
    SaUpdate,
    SecureConnect,
    Status,
)
from edifd.secapp.app import SecurityApp
from edifd.secapp.events import (
    AppEvent,
    AppNotice,
    ChannelLost,
    SessionDown,
    SessionFailed,
    SessionRekeyed,
    SessionSecure,
)


def describe(event: AppEvent) -> str:
    """One log line per app event. Only names, SPIs, reasons and cipher names: nothing secret."""
    if isinstance(event, SessionSecure):
        return (f"target {wwn_str(event.wwpn)}: session secure (cipher {event.cipher.name}, "
                f"spi in {event.spi_in:08x} out {event.spi_out:08x})")
    if isinstance(event, SessionRekeyed):
        return (f"target {wwn_str(event.wwpn)}: rekeyed by {event.trigger} "
                f"(spi in {event.old_spi_in:08x} -> {event.new_spi_in:08x})")
    if isinstance(event, SessionFailed):
        why = f"{event.reason.name}: {event.detail}"
        return f"target {wwn_str(event.wwpn)}: authentication failed ({why})"
    if isinstance(event, SessionDown):
        return f"target {wwn_str(event.wwpn)}: session down ({event.detail})"
    if isinstance(event, ChannelLost):
        return f"channel lost ({event.detail}); handshaking again"
    if isinstance(event, AppNotice):
        return f"notice: {event.detail}"
    return f"event {type(event).__name__}"  # pragma: no cover - AppEvent is a closed union


@dataclass
class ServiceFigures:
    """What the status file shows besides the app's own status (counts only)."""

    secured: int = 0
    rekeys: int = 0
    failures: int = 0
    downs: int = 0
    channel_lost: int = 0
    starts: int = 0
    requests: int = 0
    last_events: list[str] = field(default_factory=list)  # the last few log lines, for `status`
    outcomes: dict[str, int] = field(default_factory=dict)  # "success" or the AUTH_FAIL reason -> count
    rekey_triggers: dict[str, int] = field(default_factory=dict)  # "lifetime", "bytes", ... -> count
    sa_installs: dict[str, int] = field(default_factory=lambda: {"rx": 0, "tx": 0})  # answered OK
    sa_deletes: dict[str, int] = field(default_factory=lambda: {"rx": 0, "tx": 0})
    sa_refused: dict[str, int] = field(default_factory=dict)  # status name -> count
    setup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    KEEP = 20


def _bump(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


MAX_SA_REQUESTS = 64  # SA_UPDATEs awaiting their answer that we remember (a few per target in use)


class SecurityService:
    """Feeds a `SecurityApp` from one channel and sends its requests on it.

    Not thread-safe by itself: `ControlDiskEndpoint` callers hold the endpoint lock around every call (the
    reader threads deliver under it; the main loop uses `ep.call`).
    """

    def __init__(self, app: SecurityApp, request: Callable[[Body], int],
                 log: Callable[[str], None] = lambda _line: None) -> None:
        self.app = app
        self._request = request
        self._log = log
        self.figures = ServiceFigures()
        self.restart_needed = False  # ChannelLost: the caller re-handshakes, then calls start()
        self.stop_request: int | None = None  # request id of our APP_STOP
        self.stop_answered = False
        self._sa_requests: dict[int, tuple[str, bool]] = {}  # request id -> (direction, delete)
        self._setup_since: dict[int, float] = {}  # target WWPN -> when its current attempt began

    # -- inputs ------------------------------------------------------------------------------------

    def start(self) -> None:
        """After the channel handshake (again after ChannelLost): GET_PORT_INFO, GET_TARGETS, ..."""
        self.restart_needed = False
        self.figures.starts += 1
        self._handle(self.app.start())

    def on_message(self, msg: Message) -> None:
        if (self.stop_request is not None and msg.kind is Kind.RESPONSE
                and msg.request_id == self.stop_request):
            self.stop_answered = True
        if msg.kind is Kind.RESPONSE:
            self._sa_answered(msg)
        elif isinstance(msg.body, AuthNeeded):  # the host asks first after a relogin of its own
            self._setup_since.setdefault(msg.body.port.wwpn, self.app.now())
        self._handle(self.app.on_message(msg))

    def tick(self, now: float) -> None:
        if self.app.running:
            self._handle(self.app.tick(now))

    def stop(self) -> int | None:
        """APP_STOP (the host logs our secure sessions out); returns its request id."""
        self._handle(self.app.stop())
        return self.stop_request

    # -- outputs -----------------------------------------------------------------------------------

    def _handle(self, items: list[Body | AppEvent]) -> None:
        for item in items:
            if isinstance(item, Body):
                rid = self._request(item)
                self.app.sent(item, rid)
                self.figures.requests += 1
                if isinstance(item, AppStop):
                    self.stop_request = rid
                elif isinstance(item, SecureConnect):
                    self._setup_since.setdefault(item.port.wwpn, self.app.now())
                elif isinstance(item, SaUpdate):
                    self._sa_requests[rid] = (item.direction.name.lower(), SaFlags.DELETE in item.flags)
                    while len(self._sa_requests) > MAX_SA_REQUESTS:  # a host that never answers
                        del self._sa_requests[next(iter(self._sa_requests))]
                continue
            f = self.figures
            if isinstance(item, SessionSecure):
                f.secured += 1
                _bump(f.outcomes, "success")
                since = self._setup_since.pop(item.wwpn, None)
                if since is not None:
                    f.setup_latency.observe(self.app.now() - since)
            elif isinstance(item, SessionRekeyed):
                f.rekeys += 1
                _bump(f.rekey_triggers, item.trigger)
            elif isinstance(item, SessionFailed):
                f.failures += 1
                _bump(f.outcomes, item.reason.name.lower())
                self._setup_since.pop(item.wwpn, None)  # the retry is a new attempt
            elif isinstance(item, SessionDown):
                f.downs += 1
                self._setup_since.pop(item.wwpn, None)
            elif isinstance(item, ChannelLost):
                f.channel_lost += 1
                self.restart_needed = True
                self._setup_since.clear()
                self._sa_requests.clear()
            line = describe(item)
            f.last_events = (f.last_events + [line])[-ServiceFigures.KEEP:]
            self._log(line)

    def _sa_answered(self, msg: Message) -> None:
        sent = self._sa_requests.pop(msg.request_id, None)
        if sent is None or not isinstance(msg.body, Response):
            return
        direction, delete = sent
        if msg.body.status is Status.OK:
            _bump(self.figures.sa_deletes if delete else self.figures.sa_installs, direction)
        else:
            _bump(self.figures.sa_refused, msg.body.status.name.lower())

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The app's status (states, SPIs, SA ages, counters) plus the service's figures; no keys."""
        f = self.figures
        return {
            "app": self.app.status(now),
            "service": {
                "secured": f.secured, "rekeys": f.rekeys, "failures": f.failures, "downs": f.downs,
                "channel_lost": f.channel_lost, "starts": f.starts, "requests": f.requests,
                "stopping": self.stop_request is not None, "stop_answered": self.stop_answered,
                "last_events": list(f.last_events),
                "outcomes": dict(f.outcomes), "rekey_triggers": dict(f.rekey_triggers),
                "sa_installs": dict(f.sa_installs), "sa_deletes": dict(f.sa_deletes),
                "sa_refused": dict(f.sa_refused), "setup_latency": f.setup_latency.snapshot(),
            },
        }


def write_status(path: str, status: dict[str, Any]) -> None:
    """Atomically (tmp + rename), so a reader never sees half a file; mode 0644: it holds no secret."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(status, fh, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


class ServiceStatusError(Exception):
    """The status file cannot be read or is not the service's JSON."""


def read_status(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except OSError as e:
        raise ServiceStatusError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ServiceStatusError(f"{path} is not JSON (is it the file of run --status-file?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("app"), dict):
        raise ServiceStatusError(f"{path} is not a security service status (no 'app' section)")
    return data


def format_status(st: dict[str, Any]) -> str:
    """The status file for people: one line per target, then the service's counts."""
    app = st.get("app") or {}
    svc = st.get("service") or {}
    lines = [f"security service on {st.get('device', '?')} (port {st.get('port', '?')}): "
             f"{'running' if app.get('running') else 'stopped'}, local WWPN {app.get('local_wwpn') or '-'}"]
    for wwpn, t in sorted((app.get("targets") or {}).items()):
        if not isinstance(t, dict):
            continue
        sa = (f" cipher {t.get('cipher')} spi in {t.get('spi_in')} out {t.get('spi_out')} "
              f"age {t.get('sa_age_s')} s" if t.get("spi_in") else "")
        lines.append(f"  target {wwpn}: {t.get('state')}{sa}, failures {t.get('failures')}")
    lines.append(f"  secured {svc.get('secured', 0)}, rekeys {svc.get('rekeys', 0)}, failures "
                 f"{svc.get('failures', 0)}, channel lost {svc.get('channel_lost', 0)}")
    return "\n".join(lines)
