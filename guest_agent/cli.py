"""edif-agent: the EDIF VM's end of the control-disk channel to edifd.

Exit codes (scripts and the lab rely on them):

  0  done, and for ping: every request answered once, in order
  1  ping finished but something was lost, duplicated or out of order
  2  usage error (click)
  3  no usable control disk (discovery, --port, --device)
  4  the channel key file was refused
  5  the channel did not come up (no handshake within --timeout, or the host refused us)
  6  I/O error on the control disk, or the state file
  7  the security configuration (run --config) was refused
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from edifd.edges.secret_file import load_channel_key
from edifd.fc import wwn_str
from edifd.proto import (
    ChannelKeyError,
    EventAck,
    Keepalive,
    Kind,
    MessageType,
    PortRef,
    Status,
)

from .discovery import (
    DEFAULT_PRODUCT,
    DEFAULT_VENDOR,
    ControlDisk,
    DiscoveryError,
    discover,
    disk_for_device,
    parse_wwpn,
    select,
)
from .disk import ControlDiskEndpoint
from .ping import PingTally
from .service import SecurityService, ServiceStatusError, format_status, read_status, write_status
from .state import StateFile, StateFileError, decode_state, encode_state

EXIT_OK, EXIT_PING_PROBLEMS, EXIT_NO_DISK, EXIT_KEY, EXIT_NOT_ESTABLISHED, EXIT_IO = 0, 1, 3, 4, 5, 6
EXIT_CONFIG = 7


class AgentExit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def make_client(key: Any, *, port_index: int, block_size: int, capacity_blocks: int, parked_reads: int,
                state: bytes | None, **extra: Any) -> Any:
    """The sans-IO channel client (guest_agent.client); a seam for tests. `extra`: e.g. keepalive_ms."""
    from .client import ChannelClient

    return ChannelClient(key, port_index=port_index, block_size=block_size, capacity_blocks=capacity_blocks,
                         parked_reads=parked_reads, state=state, **extra)


# -- shared plumbing ---------------------------------------------------------------------------------


def _find_disk(device: str | None, port: str | None, vendor: str, product: str, sys_root: str) -> ControlDisk:
    wwpn = parse_wwpn(port) if port else None
    if device:
        d = disk_for_device(device, sys_root=sys_root)
        if wwpn is not None and d.wwpn not in (None, wwpn):
            raise DiscoveryError(f"{device} reports port {d.wwpn_text}, not {wwn_str(wwpn)}")
        return d
    return select(discover(vendor, product, sys_root=sys_root), wwpn=wwpn, vendor=vendor, product=product,
                  where=os.path.join(sys_root, "block"))


def _load_key(path: str) -> Any:
    try:
        return load_channel_key(path)
    except ChannelKeyError as e:
        raise AgentExit(EXIT_KEY, str(e)) from None


class Session:
    """One endpoint plus the application's record, persisted together in the --state file."""

    def __init__(self, disk: ControlDisk, key: Any, *, port_index: int, parked: int, direct: bool,
                 state_path: str | None, app_key: str | None = None, keepalive_ms: int = 0) -> None:
        self.disk = disk
        self.app_key = app_key
        self.app: dict[str, Any] = {}
        self.event = threading.Event()  # set on every delivery: wakes the application thread
        self.handlers: list[Callable[[Any], None]] = []
        self.state = StateFile(state_path) if state_path else None
        saved: bytes | None = None
        try:
            raw = self.state.load() if self.state else None
            if raw is not None:
                saved, self.app = decode_state(raw)
        except StateFileError as e:
            raise AgentExit(EXIT_IO, str(e)) from None
        self.record: Callable[[], dict[str, Any]] = lambda: {}
        # keepalive_ms goes into APP_START so the host can tell our death (only the security service sets it).
        extra = {"keepalive_ms": keepalive_ms} if keepalive_ms else {}
        client = make_client(key, port_index=port_index, block_size=disk.block_size,
                             capacity_blocks=disk.capacity_blocks, parked_reads=parked, state=saved, **extra)
        self.ep = ControlDiskEndpoint(client, disk.devnode, block_size=disk.block_size, parked=parked,
                                      direct=direct, persist=self._persist if self.state else None,
                                      on_message=self._deliver)
        try:
            self.ep.open()
        except OSError as e:
            raise AgentExit(EXIT_IO, str(e)) from None

    def _persist(self, snapshot: bytes) -> None:
        assert self.state is not None
        app = {self.app_key: self.record()} if self.app_key else {}
        self.state.save(encode_state(snapshot, app))

    def _deliver(self, msg: Any) -> None:  # reader thread, under the endpoint lock
        for h in self.handlers:
            h(msg)
        self.event.set()

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def locked(self, fn: Callable[[], Any]) -> Any:
        with self.ep.lock:
            return fn()

    def establish(self, timeout: float, *, again: bool = False) -> None:
        """Run the APP_START handshake unless the restored state is already established (`again`: always,
        e.g. after the host stopped answering while the client still counts the channel as up)."""
        ep = self.ep
        if again or not ep.call(lambda c: c.established):
            ep.call(lambda c: c.start())
        deadline = time.monotonic() + timeout
        while not ep.call(lambda c: c.established):
            if ep.fatal:
                raise AgentExit(EXIT_NOT_ESTABLISHED, f"channel failed: {ep.fatal}")
            if time.monotonic() > deadline:
                st = ep.status()
                raise AgentExit(
                    EXIT_NOT_ESTABLISHED,
                    f"no APP_START answer from edifd on {ep.path} within {timeout:g} s (wrong key? edifd "
                    f"not serving this LUN?) edge={st['edge']} last_error={st['last_error']}",
                )
            self.wait(0.2)


def _is_response(msg: Any) -> bool:
    return getattr(msg, "kind", None) is Kind.RESPONSE


def _is_heartbeat(msg: Any) -> bool:
    return getattr(msg, "type", None) is MessageType.HEARTBEAT


class _Stopper:
    """SIGTERM/SIGINT end the current command cleanly (the endpoint's threads are stopped)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--key", "key_path", metavar="FILE", envvar="EDIF_AGENT_KEY",
                     help="Channel key file (32 raw bytes or 64 hex digits, not readable by others); "
                          "the same key edifd has for this VM.  [env EDIF_AGENT_KEY]"),
        click.option("--port", metavar="WWPN", help="Use the control disk of this HBA port "
                     "(e.g. 50:01:43:80:12:34:56:78); needed when the VM has several."),
        click.option("--device", metavar="DEV", help="Use this block device, skipping discovery."),
        click.option("--vendor", default=DEFAULT_VENDOR, show_default=True,
                     help="INQUIRY vendor to look for."),
        click.option("--product", default=DEFAULT_PRODUCT, show_default=True,
                     help="INQUIRY product to look for."),
        click.option("--port-index", default=0, show_default=True, type=click.IntRange(0, 0xFFFF),
                     help="Port index the host gave this control LUN."),
        click.option("--parked", default=4, show_default=True, type=click.IntRange(1, 8),
                     help="READs kept parked on the host (K >= 4 lets several messages arrive at once)."),
        click.option("--state", "state_path", metavar="FILE",
                     help="Keep the channel state here, so a restarted agent resumes without loss or "
                          "duplicates."),
        click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Seconds to wait for the handshake, and for each reply."),
        click.option("--no-direct", is_flag=True, hidden=True, help="Open without O_DIRECT (tests)."),
        click.option("--sys-root", default="/sys", hidden=True, help="sysfs root (tests)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _run(body: Callable[[], int]) -> None:
    try:
        code = body()
    except AgentExit as e:
        click.echo(f"edif-agent: {e}", err=True)
        sys.exit(e.code)
    except DiscoveryError as e:
        click.echo(f"edif-agent: {e}", err=True)
        sys.exit(EXIT_NO_DISK)
    sys.exit(code)


# -- commands ----------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The EDIF VM's agent: talks to edifd over the emulated control disk.

    Each HBA port on the host appears in this VM as one SCSI disk with INQUIRY vendor EDIF, product
    CTRL, and the port's WWPN in VPD page 0x83. Messages to the host are WRITEs to that disk; the host
    answers through READs the agent keeps parked. Both sides share a per-VM channel key.

    \b
    Examples:
      edif-agent status                       list control disks and their ports
      edif-agent ping --key /etc/edif/channel.key --count 100
      edif-agent run --key /etc/edif/channel.key --state /var/lib/edif-agent/state

    Exit codes: 0 ok, 1 ping saw loss/duplicates/reordering, 2 usage, 3 no control disk,
    4 key refused, 5 channel not established, 6 disk or state file I/O error, 7 security config refused.
    """


@main.command()
@_common
@click.option("--count", "-c", default=10, show_default=True, type=click.IntRange(1),
              help="KEEPALIVE requests to send, one at a time.")
@click.option("--interval", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Pause between requests, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--report", "report_path", metavar="FILE",
              help="Also write the running report here (JSON, atomically replaced after every reply).")
@click.option("--resume-grace", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="With --state: seconds to wait for answers to pings a killed run left open before "
                   "sending them again.")
def ping(key_path: str | None, port: str | None, device: str | None, vendor: str, product: str,
         port_index: int, parked: int, state_path: str | None, timeout: float, no_direct: bool,
         sys_root: str, count: int, interval: float, as_json: bool, report_path: str | None,
         resume_grace: float) -> None:
    """Round trips to edifd: send KEEPALIVE requests and time the replies.

    Prints RTT p50/p99/max and the counts: sent, received, in order, duplicates, lost. With --state,
    a killed and restarted ping continues the same count: the tally is saved in the state file
    together with the channel state, so no reply is lost or counted twice across the restart.
    """

    def body() -> int:
        if not key_path:
            raise click.UsageError("--key FILE is required (or set EDIF_AGENT_KEY)")
        key = _load_key(key_path)
        disk = _find_disk(device, port, vendor, product, sys_root)
        s = Session(disk, key, port_index=port_index, parked=parked, direct=not no_direct,
                    state_path=state_path, app_key="ping")
        try:
            tally = PingTally.from_dict(s.app["ping"]) if "ping" in s.app else PingTally()
        except ValueError as e:
            raise AgentExit(EXIT_IO, f"cannot resume from {state_path}: {e}") from None
        s.record = tally.to_dict
        with _Stopper() as stopper:
            s.ep.start()
            try:
                return _ping(s, tally, count, interval, timeout, stopper.event, as_json, report_path,
                             resume_grace)
            finally:
                s.ep.stop(timeout=2.0)

    _run(body)


def _save_report(path: str, report: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, sort_keys=True)
    os.replace(tmp, path)


def _local_loss(msg: Any) -> bool:
    """The client's own RESPONSE(FAILED, LOST_DETAIL): this request's answer can never come (the host's
    epoch ended with it), so it may be sent again without risk of a double answer."""
    from .client import LOST_DETAIL

    body = getattr(msg, "body", None)
    return (_is_response(msg) and msg.epoch == 0 and msg.sequence == 0
            and getattr(body, "status", None) == Status.FAILED
            and getattr(body, "detail", None) == LOST_DETAIL)


def _ping(s: Session, tally: PingTally, count: int, interval: float, timeout: float, stop: threading.Event,
          as_json: bool, report_path: str | None, resume_grace: float) -> int:
    ep, disk = s.ep, s.disk
    redo: set[int] = set()  # request ids the channel gave up on

    def on_msg(msg: Any) -> None:  # under the endpoint lock, before the state is saved
        if _is_heartbeat(msg):
            return
        if _local_loss(msg):
            redo.add(msg.request_id)
            return
        tally.on_upstream(msg.epoch, msg.sequence)
        if _is_response(msg):
            tally.on_response(msg.request_id, time.monotonic())

    def collect_losses() -> None:  # abandoned WRITEs are reported only through take_responses()
        take = getattr(ep.client, "take_responses", None)
        if take is not None:
            for rid, m in take().items():
                if _local_loss(m):
                    redo.add(rid)

    s.handlers.append(on_msg)
    s.establish(timeout)

    def send(old: int | None = None) -> int:
        with ep.lock:
            rid = ep.client.request(Keepalive())
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
    if as_json:
        click.echo(json.dumps({**rep, **ep.status()}, sort_keys=True))
    else:
        r = rep["rtt_ms"]
        click.echo(f"ping {disk.devnode} (port {disk.wwpn_text}): {rep['sent']} sent, "
                   f"{rep['received']} received, {rep['in_order']} in order, "
                   f"{rep['duplicates']} duplicates, {rep['lost']} lost, {rep['resent']} re-sent")
        click.echo(f"rtt ms: p50 {r['p50']} p99 {r['p99']} max {r['max']} (n={r['n']})")
    ok = (rep["lost"] == 0 and rep["duplicates"] == 0 and rep["out_of_order"] == 0 and rep["unexpected"] == 0
          and rep["seq_gaps"] == 0 and rep["seq_repeats"] == 0 and rep["sent"] == count)
    return EXIT_OK if ok else EXIT_PING_PROBLEMS


@main.command()
@_common
@click.option("--probe", is_flag=True, help="Also open the chosen disk, run the handshake and one KEEPALIVE, "
              "and print the channel counters (needs --key).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--service", "service_file", metavar="FILE",
              help="Also show the security service's sessions from its --status-file (run --config).")
def status(key_path: str | None, port: str | None, device: str | None, vendor: str, product: str,
           port_index: int, parked: int, state_path: str | None, timeout: float, no_direct: bool,
           sys_root: str, probe: bool, as_json: bool, service_file: str | None) -> None:
    """List the control disks (device, port WWPN, serial, block size); --probe adds the channel counters,
    --service the security service's sessions (state, SPIs, SA age, failures; never keys)."""

    def body() -> int:
        if service_file:
            try:
                svc = read_status(service_file)
            except ServiceStatusError as e:
                raise AgentExit(EXIT_IO, str(e)) from None
            click.echo(json.dumps(svc, sort_keys=True) if as_json else format_status(svc))
            return EXIT_OK
        if device:
            disks = [disk_for_device(device, sys_root=sys_root)]
        else:
            disks = discover(vendor, product, sys_root=sys_root)
        out: dict[str, Any] = {"disks": [_disk_dict(d) for d in disks]}
        code = EXIT_OK if disks else EXIT_NO_DISK
        if probe:
            if not key_path:
                raise click.UsageError("--probe needs --key FILE")
            out["probe"] = _probe(_load_key(key_path), _find_disk(device, port, vendor, product, sys_root),
                                  port_index, parked, not no_direct, state_path, timeout)
        if as_json:
            click.echo(json.dumps(out, sort_keys=True))
        else:
            if not disks:
                click.echo(f"no EDIF control disk (vendor {vendor} product {product}) on "
                           f"{os.path.join(sys_root, 'block')}")
            for d in disks:
                click.echo(f"{d.devnode:<12} port {d.wwpn_text:<23} serial {d.serial or '-':<20} "
                           f"{d.block_size} B x {d.capacity_blocks} (found via {d.source})")
            if "probe" in out:
                p = out["probe"]
                click.echo(f"probe {p['device']}: established={p['established']} keepalive rtt ms "
                           f"{p['keepalive']['max']}")
                for k, v in sorted({**p.get("channel", {}), **p["edge"]}.items()):
                    click.echo(f"  {k:<24} {v}")
        return code

    _run(body)


def _probe(key: Any, disk: ControlDisk, port_index: int, parked: int, direct: bool, state_path: str | None,
           timeout: float) -> dict[str, Any]:
    s = Session(disk, key, port_index=port_index, parked=parked, direct=direct, state_path=state_path)
    tally = PingTally()

    def on_msg(msg: Any) -> None:
        if _is_response(msg):
            tally.on_response(msg.request_id, time.monotonic())

    s.handlers.append(on_msg)
    s.ep.start()
    try:
        s.establish(timeout)
        with s.ep.lock:
            rid = s.ep.client.request(Keepalive())
            tally.on_sent(rid, time.monotonic())
        s.ep.kick()
        deadline = time.monotonic() + timeout
        while not s.locked(lambda: tally.answered(rid)) and time.monotonic() < deadline:
            s.wait(0.2)
        return {"device": disk.devnode, "keepalive": s.locked(tally.report)["rtt_ms"], **s.ep.status()}
    finally:
        s.ep.stop(timeout=2.0)


def _disk_dict(d: ControlDisk) -> dict[str, Any]:
    return {"device": d.devnode, "name": d.name, "port": d.wwpn_text, "serial": d.serial, "vendor": d.vendor,
            "model": d.model, "block_size": d.block_size, "capacity_blocks": d.capacity_blocks,
            "source": d.source}


@main.command()
@_common
@click.option("--keepalive", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between KEEPALIVEs (without --config; with it, the config's keepalive_interval).")
@click.option("--status-file", metavar="FILE",
              help="Write the status here (JSON, no key material) about once a second "
                   "with --config, else after every keepalive.")
@click.option("--config", "config_path", metavar="FILE",
              help="Run the security service: authenticate the targets of this agent.toml (PSK files or "
                   "certificates per target WWPN, rekey policy, keepalive) over the channel. Its "
                   "channel_key is used unless --key is given.")
def run(key_path: str | None, port: str | None, device: str | None, vendor: str, product: str,
        port_index: int, parked: int, state_path: str | None, timeout: float, no_direct: bool,
        sys_root: str, keepalive: float, status_file: str | None, config_path: str | None) -> None:
    """Serve the channel until SIGTERM: handshake, keep READs parked, log and ack events.

    Without --config it is the channel keeper only (KEEPALIVEs). With --config it is the security service:
    GET_PORT_INFO, GET_TARGETS, SECURE_CONNECT and IKE over the AUTH_ELS relay for every configured target,
    SA_UPDATEs, AUTH_OK, rekeys; SIGTERM sends APP_STOP (the host logs the secure sessions out) first.
    Under systemd (Type=notify) it reports READY=1 once the handshake is done.
    """

    def body() -> int:
        if config_path:
            return _run_service(config_path, key_path, port, device, vendor, product, port_index, parked,
                                state_path, timeout, no_direct, sys_root, status_file)
        if not key_path:
            raise click.UsageError("--key FILE is required (or set EDIF_AGENT_KEY)")
        key = _load_key(key_path)
        disk = _find_disk(device, port, vendor, product, sys_root)
        s = Session(disk, key, port_index=port_index, parked=parked, direct=not no_direct,
                    state_path=state_path)

        def on_msg(msg: Any) -> None:  # under the endpoint lock
            if _is_heartbeat(msg) or _is_response(msg):
                return
            click.echo(f"event {msg.type.name} seq {msg.sequence}", err=True)
            if msg.type.needs_ack:  # e.g. SESSION_SHUTDOWN: the host waits (bounded) for this ack
                port = getattr(msg.body, "port", None)
                s.ep.client.request(EventAck(msg.type, msg.sequence, port if isinstance(port, PortRef)
                                             else PortRef(0)))
                s.ep.kick()

        s.handlers.append(on_msg)
        with _Stopper() as stopper:
            s.ep.start()
            try:
                s.establish(timeout)
                click.echo(f"edif-agent: channel up on {disk.devnode} (port {disk.wwpn_text})", err=True)
                sd_notify("READY=1")
                while not stopper.event.is_set() and not s.ep.fatal:
                    s.ep.call(lambda c: c.request(Keepalive()))
                    stopper.event.wait(keepalive)
                    # Nobody waits on these answers: do not hoard them in the client.
                    s.ep.call(lambda c: c.take_responses() if hasattr(c, "take_responses") else None)
                    if status_file:
                        write_status(status_file, {"device": disk.devnode, "port": disk.wwpn_text,
                                                   **s.ep.status()})
                sd_notify("STOPPING=1")
            finally:
                s.ep.stop(timeout=2.0)
        if s.ep.fatal:
            raise AgentExit(EXIT_IO, f"channel failed: {s.ep.fatal}")
        return EXIT_OK

    _run(body)


STOP_FLUSH_S = 5.0  # how long SIGTERM waits for the APP_STOP answer before exiting anyway


def _run_service(config_path: str, key_path: str | None, port: str | None, device: str | None, vendor: str,
                 product: str, port_index: int, parked: int, state_path: str | None, timeout: float,
                 no_direct: bool, sys_root: str, status_file: str | None) -> int:
    """`run --config`: the security service on one control disk (one HBA port)."""
    from edifd.secapp.app import SecurityApp
    from edifd.secapp.config import SecConfigError, load_config

    try:
        config = load_config(config_path)
    except SecConfigError as e:
        raise AgentExit(EXIT_CONFIG, f"configuration refused: {e}") from None
    if not key_path and config.channel_key is None:
        raise click.UsageError("no channel key: give --key FILE or channel_key in the configuration")
    key = _load_key(key_path or str(config.channel_key))
    disk = _find_disk(device, port, vendor, product, sys_root)
    s = Session(disk, key, port_index=port_index, parked=parked, direct=not no_direct, state_path=state_path,
                keepalive_ms=int(config.keepalive_interval * 1000))

    def log(line: str) -> None:
        click.echo(f"edif-agent: {line}", err=True)

    def request(b: Any) -> int:  # under the endpoint lock
        rid: int = s.ep.client.request(b)
        s.ep.kick()
        return rid

    app = SecurityApp(config, time.monotonic, port_index=port_index)
    svc = SecurityService(app, request, log)

    def on_msg(msg: Any) -> None:  # reader thread, under the endpoint lock
        svc.on_message(msg)

    def save_status() -> None:
        if status_file:
            st = s.locked(lambda: svc.status(time.monotonic()))
            write_status(status_file, {"device": disk.devnode, "port": disk.wwpn_text, **st,
                                       "channel": s.ep.status()})

    def established() -> bool:
        return bool(s.ep.call(lambda c: c.established))

    s.handlers.append(on_msg)
    log(f"security service for {len(app.sessions)} target(s) "
        f"({', '.join(wwn_str(w) for w in app.sessions) or 'none'})")
    with _Stopper() as stopper:
        s.ep.start()
        try:
            s.establish(timeout)
            log(f"channel up on {disk.devnode} (port {disk.wwpn_text})")
            s.locked(svc.start)
            sd_notify("READY=1")
            while not stopper.event.is_set() and not s.ep.fatal:
                stopper.event.wait(1.0)  # the app's timers (keepalive, rekey, retries) have 1 s grain
                if s.locked(lambda: svc.restart_needed):
                    # The host forgot us or stopped answering: a new handshake, then every target afresh.
                    try:
                        s.establish(timeout, again=True)
                    except AgentExit as e:
                        log(f"channel not back yet: {e}")
                        continue
                    s.locked(svc.start)
                s.ep.call(lambda c: (svc.tick(time.monotonic()),
                                     c.take_responses() if hasattr(c, "take_responses") else None))
                save_status()
            sd_notify("STOPPING=1")
            if established() and not s.ep.fatal:
                s.locked(svc.stop)
                log("APP_STOP sent: the host logs the secure sessions out")
                deadline = time.monotonic() + STOP_FLUSH_S
                while time.monotonic() < deadline and not s.locked(lambda: svc.stop_answered):
                    s.wait(0.1)
                log("APP_STOP answered" if svc.stop_answered else "APP_STOP not answered in time")
            save_status()
        finally:
            s.ep.stop(timeout=2.0)
    if s.ep.fatal:
        raise AgentExit(EXIT_IO, f"channel failed: {s.ep.fatal}")
    return EXIT_OK


def sd_notify(state: str) -> None:
    """systemd's notify protocol (a datagram to $NOTIFY_SOCKET); a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        pass  # notification is best effort; the unit's timeout catches a silent agent
