"""Command-line entry points: `edifd` (the host daemon)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from edifd.config import Config, ConfigError, check_host, load_config

log = logging.getLogger("edifd")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _load_or_exit(config_path: Path) -> Config:
    """The configuration, or every problem in it on stderr and exit status 2 (nothing touched)."""
    try:
        return load_config(config_path)
    except ConfigError as e:
        for p in e.problems:
            click.echo(f"{config_path}: {p}", err=True)
        sys.exit(2)


def _check_host_or_exit(config_path: Path, cfg: Config, *, keys: bool = True) -> None:
    """`check_host`'s problems on stderr and exit status 2; its warnings on stderr (the same lines for
    check-config and run: one function decides what both refuse)."""
    found = check_host(cfg, keys=keys)
    for w in found.warnings:
        click.echo(f"{config_path}: warning: {w}", err=True)
    for p in found.problems:
        click.echo(f"{config_path}: {p}", err=True)
    if found.problems:
        sys.exit(2)


def _ready_file_problem(ready_file: Path) -> str | None:
    parent = ready_file.parent
    if not parent.is_dir():
        return f"--ready-file {ready_file}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--ready-file {ready_file}: directory {parent} is not writable"
    if ready_file.is_dir():
        return f"--ready-file {ready_file}: is a directory"
    return None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def edifd_main() -> None:
    """edifd: the host side of EDIF for virtualized hosts.

    It serves TCMU-backed LUNs through LIO (configured with rtslib-fb): each LUN is emulated by
    edifd in user space and exported to guests over tcm_loop, iSCSI or vhost-scsi.

    \b
    Typical use:
      edifd check-config --config /etc/edifd/edifd.toml
      edifd run --config /etc/edifd/edifd.toml
    """


@edifd_main.command("check-config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="/etc/edifd/edifd.toml", show_default=True, help="edifd TOML configuration.")
def check_config(config_path: Path) -> None:
    """Validate a configuration file and print what it would serve; changes nothing."""
    cfg = _load_or_exit(config_path)
    _check_host_or_exit(config_path, cfg)
    click.echo(f"{config_path}: OK, {len(cfg.luns)} LUN(s); park_time {cfg.daemon.park_time:g} s, "
               "TCMU cmd_time_out "
               + (f"{cfg.daemon.cmd_time_out} s" if cfg.daemon.cmd_time_out is not None else "automatic"))
    for lun in cfg.luns:
        ex = lun.export
        where = {"iscsi": f"iSCSI {ex.iqn} on {ex.portal[0]}:{ex.portal[1]}"
                          + (" (demo mode)" if ex.demo_mode else f" ({len(ex.initiators)} ACLs)"),
                 "loopback": "tcm_loop (host-local /dev/sdX)", "vhost": "vhost-scsi",
                 "none": "not exported"}[ex.fabric]
        click.echo(f"  {lun.name}: {lun.type} {lun.size} bytes, {lun.block_size}-byte blocks, "
                   f"{lun.path}; {where}")


@edifd_main.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="/etc/edifd/edifd.toml", show_default=True, help="edifd TOML configuration.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Touch this file once every LUN is served (for scripts without systemd).")
@click.option("--teardown/--keep-lio", default=False, show_default=True,
              help="On exit, remove the LIO objects edifd serves. By default they stay, so a "
                   "restarted edifd re-attaches to its rings and guests see no error. A start "
                   "that fails or is stopped removes only what it created, either way.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Overrides daemon.log_level.")
def run(config_path: Path, ready_file: Path | None, teardown: bool, log_level: str | None) -> None:
    """Serve the configured LUNs until SIGTERM or SIGINT."""
    from edifd.daemon import Daemon, DaemonError, StartInterrupted

    cfg = _load_or_exit(config_path)
    # Refused before anything is served: the same checks as check-config, and a ready file that
    # could not be written once the LUNs are up.
    # Key files: loaded (same function, same refusal) as each control LUN opens.
    _check_host_or_exit(config_path, cfg, keys=False)
    problem = _ready_file_problem(ready_file) if ready_file else None
    if problem:
        click.echo(f"edifd: {problem}", err=True)
        sys.exit(2)
    _setup_logging(log_level or cfg.daemon.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A stop request during start-up ends the start; like a failed start, it removes only the LIO
    # objects this run created (what it re-attached from an earlier edifd stays), whatever --teardown.
    daemon = Daemon(cfg, stop_requested=stop)
    try:
        daemon.start()
    except StartInterrupted as e:
        log.info("%s", e)
        _notify_systemd("STOPPING=1")
        return
    except DaemonError as e:
        log.error("cannot start: %s", e)  # start() has undone its own work (see edifd.daemon)
        sys.exit(1)
    from edifd.status import STATUS_FILE, collect

    status_path = cfg.daemon.state_dir / STATUS_FILE
    try:
        cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("cannot create state dir %s: %s", cfg.daemon.state_dir, e.strerror)
    _write_status(status_path, collect(daemon))
    if ready_file:
        try:
            ready_file.write_text("ready\n")
        except OSError as e:
            log.error("cannot write ready file %s: %s", ready_file, e.strerror)
    _notify_systemd("READY=1")
    log.info("serving %d LUN(s); status in %s", len(cfg.luns), status_path)
    try:
        while not stop.wait(1.0):
            _notify_systemd("WATCHDOG=1")
            _write_status(status_path, collect(daemon))
    finally:
        log.info("stopping (teardown=%s)", teardown)
        _notify_systemd("STOPPING=1")
        final = collect(daemon, state="stopped")
        daemon.stop(teardown=teardown)
        _write_status(status_path, final)
        log.info("stopped")


def _write_status(path: Path, data: dict) -> None:
    from edifd.status import write_status

    try:
        write_status(path, data)
    except OSError as e:  # a full or read-only state dir must not take the data path down
        log.warning("cannot write %s: %s", path, e.strerror)


def _notify_systemd(state: str) -> None:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave us one."""
    from edifd.edges.sd_notify import sd_notify

    sd_notify(state)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="/etc/edifd/edifd.toml", show_default=True,
              help="edifd configuration (its daemon.state_dir holds the status file).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status JSON.")
def edifctl_main(config_path: Path, as_json: bool) -> None:
    """Show what a running edifd serves: LUNs, exports, ring and channel counters.

    edifd rewrites DAEMON.STATE_DIR/status.json about once a second; this reads it. The file
    holds names and counters only, never keys.
    """
    import json
    import time

    from edifd.status import STATUS_FILE, read_status

    cfg = _load_or_exit(config_path)
    path = cfg.daemon.state_dir / STATUS_FILE
    try:
        st = read_status(path)
    except FileNotFoundError:
        click.echo(f"edifctl: no {path}: edifd has not run with this configuration", err=True)
        sys.exit(3)
    except (OSError, ValueError) as e:
        click.echo(f"edifctl: cannot read {path}: {e}", err=True)
        sys.exit(3)
    if as_json:
        click.echo(json.dumps(st, indent=1, sort_keys=True))
        return
    age = time.time() - float(st.get("time", 0))
    stale = st.get("state") == "running" and age > 5
    click.echo(f"edifd pid {st.get('pid')}: {st.get('state')}"
               + (f" (status {age:.0f} s old: edifd may have died)" if stale else ""))
    for lun in st.get("luns", []):
        ex = lun.get("export") or {}
        click.echo(f"  {lun['name']:<12} {lun['type']:<8} {lun['size'] >> 20} MiB  "
                   f"{ex.get('fabric')} {ex.get('wwn') or ''}  {lun.get('uio') or ''}"
                   + ("  (re-attached)" if lun.get("adopted") else ""))
        for what in ("ring", "medium"):
            counters = lun.get(what)
            if counters:
                click.echo(f"      {what}: " + ", ".join(f"{k}={v}" for k, v in counters.items()))
        ed = lun.get("edif")
        if ed and "error" not in ed:
            esp = ed.get("esp") or {}
            click.echo(f"      EDIF: app {'active' if ed.get('app_active') else 'not active'}, session "
                       f"{ed.get('session')}, generation {ed.get('generation')}, auth {ed.get('auth')}"
                       + (f", ESP {esp}" if esp else ""))
        ch = lun.get("channel")
        if ch:
            click.echo(f"      channel: {'established' if ch.get('established') else 'no agent'}, "
                       f"parked {ch.get('parked')}, queued {ch.get('queued')}, upstream issued/acked "
                       f"{ch.get('upstream_issued')}/{ch.get('upstream_acked')}, "
                       f"downstream next {ch.get('downstream_next')}")
    if stale:
        sys.exit(1)
