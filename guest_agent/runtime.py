"""What `edif-agent ping`, `status --probe` and `run` do on one control disk, without click.

`check_config(config, key)` is `check-config` (no disk, no channel). `AgentRuntime(options, log=...)` runs one
command: the CLI parses the options into `ChannelOptions`,
calls one method and prints what it returns; `log` is the logger of what goes to stderr (the journal), with
levels (`edifd.edges.logs` formats it). A handshake wait says every few seconds what it waits for.
Errors are `AgentExit` (an exit code and a message) or `AgentUsageError` (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from edifd.edges.logs import Waiting
from edifd.edges.sd_notify import sd_notify
from edifd.fc import wwn_str
from edifd.proto import (
    ChannelKey,
    ChannelKeyError,
    EventAck,
    Keepalive,
    Kind,
    Message,
    MessageType,
    PortRef,
    Status,
)

from .channel import ChannelOptions, ChannelSession, find_disk, load_key
from .exits import EXIT_CONFIG, EXIT_IO, EXIT_OK, EXIT_PING_PROBLEMS, AgentExit, AgentUsageError
from .ping import PingTally
from .service import SecurityService, write_status

STOP_FLUSH_S = 5.0  # how long SIGTERM waits for the APP_STOP answer before exiting anyway
_StopHandler = Callable[[int, FrameType | None], Any] | int | None


def _is_response(msg: Message) -> bool:
    return msg.kind is Kind.RESPONSE


def _is_heartbeat(msg: Message) -> bool:
    return msg.type is MessageType.HEARTBEAT


def _local_loss(msg: Message) -> bool:
    """The client's own RESPONSE(FAILED, LOST_DETAIL): this request's answer can never come (the host's
    epoch ended with it), so it may be sent again without risk of a double answer."""
    from .client import LOST_DETAIL

    body = msg.body
    return (_is_response(msg) and msg.epoch == 0 and msg.sequence == 0
            and getattr(body, "status", None) == Status.FAILED
            and getattr(body, "detail", None) == LOST_DETAIL)


def _save_report(path: str, report: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, sort_keys=True)
    os.replace(tmp, path)


class Stopper:
    """SIGTERM/SIGINT end the current command cleanly (the endpoint's threads are stopped)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, _StopHandler] = {}

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass(frozen=True)
class PingOutcome:
    report: dict[str, Any]  # PingTally.report() plus device and port
    channel: dict[str, Any]  # the endpoint's status at the end (edge and client counters)
    code: int  # EXIT_OK, or EXIT_PING_PROBLEMS


@dataclass(frozen=True)
class ConfigCheck:
    """What `check-config` found: every problem (exit 7 if any), warnings, and for an accepted file
    what it describes (counts, kinds and paths; never key material)."""

    problems: list[str]
    warnings: list[str]
    targets: dict[str, str]  # WWPN text -> "psk", "certificate" or "skip"
    channel_key: str | None  # the key file that was checked, and where it came from, e.g. "FILE (--key)"
    summary: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_config(config_path: str, key_path: str | None = None) -> ConfigCheck:
    """Validate the security service's TOML (edifd.secapp.config): the policy, every PSK, private-key and
    certificate file (secret-file permission policy), and the channel key `run --config` would use
    (`key_path`, else the file's channel_key). Every problem is collected; nothing raises."""
    from edifd.confcheck import load_toml
    from edifd.edges.secret_file import load_channel_key
    from edifd.secapp.config import CertCredentials, PskCredentials, SecConfigError, parse_config

    problems: list[str] = []
    warnings: list[str] = []
    path = Path(config_path)
    data: dict[str, Any] = {}
    config = None
    try:
        data = load_toml(path, SecConfigError)
        config = parse_config(data, str(path), path.parent)
    except SecConfigError as e:
        problems += e.problems
    key_file, origin = None, ""
    if key_path:
        key_file, origin = key_path, "--key"
    elif config is not None and config.channel_key is not None:
        key_file, origin = str(config.channel_key), "channel_key"
    elif config is None and isinstance(data.get("channel_key"), str) and data["channel_key"] \
            and "\0" not in data["channel_key"]:
        key_file, origin = os.path.join(path.parent, data["channel_key"]), "channel_key"
    if key_file is not None:
        try:
            load_channel_key(key_file)
        except ChannelKeyError as e:
            problems.append(f"{origin}: {e}")
    elif config is not None:  # (a refused file may well name one)
        warnings.append("no channel key: run --config needs --key FILE or channel_key in the configuration")
    targets: dict[str, str] = {}
    summary: list[str] = []
    if config is not None:
        for w, peer in sorted(config.peers.items()):
            c = peer.credentials
            targets[wwn_str(w)] = ("skip" if c is None else "psk" if isinstance(c, PskCredentials)
                                   else "certificate" if isinstance(c, CertCredentials) else "other")
        if not targets:
            warnings.append("no [targets.\"<wwpn>\"] entries: the service would secure no target")
        kinds = list(targets.values())
        summary.append(f"targets: {len(targets)} ({kinds.count('psk')} psk, "
                       f"{kinds.count('certificate')} certificate, {kinds.count('skip')} skip)")
        summary += [f"target {w}: {k}" for w, k in targets.items()]
        rk = config.rekey
        summary.append(f"rekey: lifetime {rk.lifetime:g} s ({'off' if not rk.lifetime else 'on'}), "
                       f"bytes {rk.bytes} ({'off' if not rk.bytes else 'on'}); "
                       f"keepalive {config.keepalive_interval:g} s")
    if key_file is not None:
        summary.append(f"channel key: {key_file} (from {origin})")
    return ConfigCheck(problems, warnings, targets, f"{key_file} ({origin})" if key_file else None, summary)


HANDSHAKE_SAY_EVERY = 5.0  # s between the "waiting for the APP_START answer" lines


def _establish(s: ChannelSession, log: logging.Logger, timeout: float, *, again: bool = False) -> None:
    """The APP_START handshake, saying every few seconds what it waits for (the wait itself is
    ChannelSession.establish's, with its timeout and its error)."""
    what = f"the APP_START answer from edifd on {s.disk.devnode} (port {s.disk.wwpn_text})"
    with Waiting(log, what, every=HANDSHAKE_SAY_EVERY, limit=timeout):
        s.establish(timeout, again=again)


class AgentRuntime:
    def __init__(self, options: ChannelOptions, *, log: logging.Logger | None = None) -> None:
        self.o = options
        self._log = log or logging.getLogger("edif-agent")

    def _key(self, path: str | None = None) -> ChannelKey:
        path = path or self.o.key_path
        if not path:
            raise AgentUsageError("--key FILE is required (or set EDIF_AGENT_KEY)")
        return load_key(path)

    # -- ping --------------------------------------------------------------------------------------------

    def ping(self, *, count: int, interval: float, report_path: str | None,
             resume_grace: float) -> PingOutcome:
        """KEEPALIVE round trips, one at a time; with --state a killed run resumes the same count."""
        key = self._key()
        s = ChannelSession(find_disk(self.o), key, self.o, app_key="ping")
        try:
            tally = PingTally.from_dict(s.app["ping"]) if "ping" in s.app else PingTally()
        except ValueError as e:
            raise AgentExit(EXIT_IO, f"cannot resume from {self.o.state_path}: {e}") from None
        s.record = tally.to_dict
        with Stopper() as stopper:
            try:
                return self._ping(s, tally, count=count, interval=interval, stop=stopper.event,
                                  report_path=report_path, resume_grace=resume_grace)
            finally:
                s.ep.stop(timeout=2.0)

    def _ping(self, s: ChannelSession, tally: PingTally, *, count: int, interval: float,
              stop: threading.Event, report_path: str | None, resume_grace: float) -> PingOutcome:
        ep, disk, timeout = s.ep, s.disk, self.o.timeout
        redo: set[int] = set()  # request ids the channel gave up on

        def on_msg(msg: Message) -> None:  # under the endpoint lock, before the state is saved
            if _is_heartbeat(msg):
                return
            if _local_loss(msg):
                redo.add(msg.request_id)
                return
            tally.on_upstream(msg.epoch, msg.sequence)
            if _is_response(msg):
                tally.on_response(msg.request_id, time.monotonic())

        def collect_losses() -> None:  # abandoned WRITEs are reported only through take_responses()
            take = getattr(s.client, "take_responses", None)
            if take is not None:
                for rid, m in take().items():
                    if _local_loss(m):
                        redo.add(rid)

        # The handler goes in before the endpoint starts: a resumed agent's first READ may bring the
        # host's redelivered answer at once, and a message no handler saw would still be consumed (and
        # saved as consumed) by the client, so the tally would miss it and count a sequence gap.
        s.handlers.append(on_msg)
        ep.start()
        _establish(s, self._log, timeout)

        def send(old: int | None = None) -> int:
            with ep.lock:
                rid = s.client.request(Keepalive())
                if old is None:
                    tally.on_sent(rid, time.monotonic())
                else:
                    tally.on_resent(old, rid)
                ep.save()  # the queued request and our record of it, together
            ep.kick()
            return rid

        def settle(rids: list[int], until: float) -> list[int]:
            """Wait for these requests' answers; re-send those the channel gave up on. Returns the
            request ids still unanswered (the newest of each ping)."""
            live = list(rids)
            while not stop.is_set() and not ep.fatal:
                with ep.lock:
                    collect_losses()
                    again = [r for r in live if r in redo and not tally.answered(r)]
                    redo.difference_update(again)
                    live = [r for r in live if not tally.answered(r)]
                for r in again:
                    live[live.index(r)] = send(old=r)
                if not live or time.monotonic() > until:
                    break
                s.wait(0.2)
            if ep.fatal:
                raise AgentExit(EXIT_IO, f"channel failed: {ep.fatal}")
            return live

        def report() -> dict[str, Any]:
            return s.locked(lambda: {**tally.report(), "device": disk.devnode, "port": disk.wwpn_text})

        # Pings a previous run left unanswered: the host redelivers what it answered right after the
        # handshake; what is still unanswered after the grace time never reached it, so send it again.
        left = settle(s.locked(tally.pending), time.monotonic() + resume_grace)
        for r in left:
            send(old=r)
        while s.locked(lambda: tally.sent) < count and not stop.is_set():
            settle([send()], time.monotonic() + timeout)  # unanswered after the timeout: lost
            if report_path:
                _save_report(report_path, report())
            if interval:
                stop.wait(interval)
        settle(s.locked(tally.pending), time.monotonic() + timeout)
        s.wait(0.2)  # a duplicate would arrive right behind the answer
        rep = report()
        if report_path:
            _save_report(report_path, rep)
        ok = (rep["lost"] == 0 and rep["duplicates"] == 0 and rep["out_of_order"] == 0
              and rep["unexpected"] == 0 and rep["seq_gaps"] == 0 and rep["seq_repeats"] == 0
              and rep["sent"] == count)
        return PingOutcome(rep, ep.status(), EXIT_OK if ok else EXIT_PING_PROBLEMS)

    # -- status --probe ----------------------------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        """Handshake and one KEEPALIVE on the chosen disk: its RTT and the channel counters."""
        key = self._key()
        disk = find_disk(self.o)
        s = ChannelSession(disk, key, self.o)
        tally = PingTally()

        def on_msg(msg: Message) -> None:
            if _is_response(msg):
                tally.on_response(msg.request_id, time.monotonic())

        s.handlers.append(on_msg)
        s.ep.start()
        try:
            _establish(s, self._log, self.o.timeout)
            with s.ep.lock:
                rid = s.client.request(Keepalive())
                tally.on_sent(rid, time.monotonic())
            s.ep.kick()
            deadline = time.monotonic() + self.o.timeout
            while not s.locked(lambda: tally.answered(rid)) and time.monotonic() < deadline:
                s.wait(0.2)
            return {"device": disk.devnode, "keepalive": s.locked(tally.report)["rtt_ms"], **s.ep.status()}
        finally:
            s.ep.stop(timeout=2.0)

    # -- run ---------------------------------------------------------------------------------------------

    def keep_channel(self, *, keepalive: float, status_file: str | None) -> int:
        """`run` without --config: handshake, KEEPALIVEs, log and ack events, until SIGTERM."""
        key = self._key()
        disk = find_disk(self.o)
        s = ChannelSession(disk, key, self.o)

        def on_msg(msg: Message) -> None:  # under the endpoint lock
            if _is_heartbeat(msg) or _is_response(msg):
                return
            self._log.info("event %s seq %d", msg.type.name, msg.sequence)
            if msg.type.needs_ack:  # e.g. SESSION_SHUTDOWN: the host waits (bounded) for this ack
                port = getattr(msg.body, "port", None)
                s.request(EventAck(msg.type, msg.sequence, port if isinstance(port, PortRef) else PortRef(0)))

        s.handlers.append(on_msg)
        with Stopper() as stopper:
            s.ep.start()
            try:
                _establish(s, self._log, self.o.timeout)
                self._log.info("channel up on %s (port %s)", disk.devnode, disk.wwpn_text)
                sd_notify("READY=1")
                while not stopper.event.is_set() and not s.ep.fatal:
                    s.ep.call(lambda c: c.request(Keepalive()))
                    stopper.event.wait(keepalive)
                    s.ep.call(lambda c: s.drop_responses())
                    if status_file:
                        write_status(status_file, {"device": disk.devnode, "port": disk.wwpn_text,
                                                   **s.ep.status()})
                sd_notify("STOPPING=1")
            finally:
                s.ep.stop(timeout=2.0)
        if s.ep.fatal:
            raise AgentExit(EXIT_IO, f"channel failed: {s.ep.fatal}")
        return EXIT_OK

    def serve(self, *, config_path: str, status_file: str | None) -> int:
        """`run --config`: the security service on one control disk (one HBA port)."""
        from edifd.secapp.app import SecurityApp
        from edifd.secapp.config import SecConfigError, load_config

        try:
            config = load_config(config_path)
        except SecConfigError as e:
            raise AgentExit(EXIT_CONFIG, "configuration refused", problems=tuple(e.problems),
                            source=config_path) from None
        if not self.o.key_path and config.channel_key is None:
            raise AgentUsageError("no channel key: give --key FILE or channel_key in the configuration")
        key = self._key(self.o.key_path or str(config.channel_key))
        disk = find_disk(self.o)
        s = ChannelSession(disk, key, self.o, keepalive_ms=int(config.keepalive_interval * 1000))

        log = self._log.info  # the service's lines (events of the app: secured, rekeyed, failed, ...)

        app = SecurityApp(config, time.monotonic, port_index=self.o.port_index)
        svc = SecurityService(app, s.request, log)
        from edifd.edges.metrics_http import MetricsError, start_metrics

        try:
            metrics = start_metrics(config.metrics, "edif_agent", lambda: {
                **s.locked(lambda: svc.status(time.monotonic())), "channel": s.ep.status()})
        except MetricsError as e:
            raise AgentExit(EXIT_CONFIG, str(e)) from None

        def save_status() -> None:
            if status_file:
                st = s.locked(lambda: svc.status(time.monotonic()))
                write_status(status_file, {"device": disk.devnode, "port": disk.wwpn_text, **st,
                                           "channel": s.ep.status()})

        s.handlers.append(svc.on_message)  # reader thread, under the endpoint lock
        log(f"security service for {len(app.sessions)} target(s) "
            f"({', '.join(wwn_str(w) for w in app.sessions) or 'none'})")
        with Stopper() as stopper:
            s.ep.start()
            try:
                _establish(s, self._log, self.o.timeout)
                log(f"channel up on {disk.devnode} (port {disk.wwpn_text})")
                s.locked(svc.start)
                sd_notify("READY=1")
                while not stopper.event.is_set() and not s.ep.fatal:
                    stopper.event.wait(1.0)  # the app's timers (keepalive, rekey, retries) have 1 s grain
                    if s.locked(lambda: svc.restart_needed):
                        # The host forgot us or stopped answering: a new handshake, then every target afresh.
                        try:
                            _establish(s, self._log, self.o.timeout, again=True)
                        except AgentExit as e:
                            self._log.warning("channel not back yet: %s", e)
                            continue
                        s.locked(svc.start)
                    s.ep.call(lambda c: (svc.tick(time.monotonic()), s.drop_responses()))
                    save_status()
                sd_notify("STOPPING=1")
                if s.established and not s.ep.fatal:
                    s.locked(svc.stop)
                    log("APP_STOP sent: the host logs the secure sessions out")
                    deadline = time.monotonic() + STOP_FLUSH_S
                    while time.monotonic() < deadline and not s.locked(lambda: svc.stop_answered):
                        s.wait(0.1)
                    if svc.stop_answered:
                        log("APP_STOP answered")
                    else:
                        self._log.warning("APP_STOP not answered in time")
                save_status()
            finally:
                s.ep.stop(timeout=2.0)
                if metrics is not None:
                    metrics.stop()
        if s.ep.fatal:
            raise AgentExit(EXIT_IO, f"channel failed: {s.ep.fatal}")
        return EXIT_OK
