"""The security service: one `SecurityApp` joined to one control-disk channel (`edif-agent run --config`).

This module is the wiring only, and stays free of threads, disks and clocks so it can be driven by a test
loopback as well as by `ControlDiskEndpoint`: the caller hands it a `request(body) -> request_id` function
(the channel client's `request`, called under the endpoint lock) and feeds it every delivered message and a
tick about once a second. It turns the app's events into log lines a person can follow — never keys, salts or
PSKs (the events carry none; SPIs and WWPNs are not secret) — and keeps the figures the status file shows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edifd.fc import wwn_str
from edifd.proto import AppStop, Body, Kind, Message
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

    KEEP = 20


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
                continue
            f = self.figures
            if isinstance(item, SessionSecure):
                f.secured += 1
            elif isinstance(item, SessionRekeyed):
                f.rekeys += 1
            elif isinstance(item, SessionFailed):
                f.failures += 1
            elif isinstance(item, SessionDown):
                f.downs += 1
            elif isinstance(item, ChannelLost):
                f.channel_lost += 1
                self.restart_needed = True
            line = describe(item)
            f.last_events = (f.last_events + [line])[-ServiceFigures.KEEP:]
            self._log(line)

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
