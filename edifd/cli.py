"""Command-line entry point `edifd` (the host daemon): check-config and run.

The conventions every tool shares (exit codes, --version, -h, the problem lines) are in
`edifd.edges.command_line`; the log format in `edifd.edges.logs`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from edifd.config import Config, ConfigError, check_host, load_config
from edifd.edges.command_line import (
    CONTEXT_SETTINGS,
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_FAILURE,
    echo_problems,
    echo_warnings,
    version_option,
)
from edifd.edges.logs import LEVELS, current_level, set_level, setup_logging

log = logging.getLogger("edifd")

DEFAULT_CONFIG = "/etc/edifd/edifd.toml"

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
    show_default=True, help="edifd TOML configuration; relative paths in it are relative to its directory.")
_log_level_option = click.option(
    "--log-level", type=click.Choice(LEVELS), help="Log level (default: daemon.log_level, else info).")


def _load_or_exit(config_path: Path) -> Config:
    """The configuration, or every problem in it on stderr and exit status 7 (nothing touched)."""
    try:
        return load_config(config_path)
    except ConfigError as e:
        echo_problems("edifd", str(config_path), e.problems)
        sys.exit(EXIT_CONFIG)


def _check_host_or_exit(config_path: Path, cfg: Config, *, keys: bool = True) -> None:
    """`check_host`'s warnings, then its problems and exit status 7 (the same lines for check-config and
    run: one function decides what both refuse)."""
    found = check_host(cfg, keys=keys)
    echo_warnings("edifd", str(config_path), found.warnings)
    if found.problems:
        echo_problems("edifd", str(config_path), found.problems)
        sys.exit(EXIT_CONFIG)


def _ready_file_problem(ready_file: Path) -> str | None:
    parent = ready_file.parent
    if not parent.is_dir():
        return f"--ready-file {ready_file}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--ready-file {ready_file}: directory {parent} is not writable"
    if ready_file.is_dir():
        return f"--ready-file {ready_file}: is a directory"
    return None


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@version_option("edifd")
def edifd_main() -> None:
    """edifd: the host side of EDIF for virtualized hosts.

    It serves TCMU-backed LUNs through LIO (configured with rtslib-fb): each LUN is emulated by
    edifd in user space and exported to guests over tcm_loop, iSCSI or vhost-scsi.

    \b
    Example:
      edifd check-config --config /etc/edifd/edifd.toml
      edifd run --config /etc/edifd/edifd.toml --log-level info
      edifctl status            (what the running edifd serves)
    """


def _where(lun: Any) -> str:
    """How the LUN is exported, an iSCSI export's access mode included (ExportConfig.describe)."""
    return lun.export.describe()


@edifd_main.command("check-config", epilog=EXIT_CODES_HELP)
@_config_option
@click.option("--json", "as_json", is_flag=True,
              help='Print {"ok", "config", "problems", "warnings", "luns"} as JSON on stdout.')
@_log_level_option
def check_config(config_path: Path, as_json: bool, log_level: str | None) -> None:
    """Validate a configuration file and print what it would serve; changes nothing.

    The same checks as `run` makes before it touches LIO, key files included. Exit 0 when it is OK
    (warnings allowed), 7 with every problem listed.

    \b
    Example:
      edifd check-config --config /etc/edifd/edifd.toml
    """
    setup_logging(log_level or "warning")
    if as_json:
        out: dict[str, Any] = {"config": str(config_path), "problems": [], "warnings": [], "luns": []}
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            out["problems"] = e.problems
        else:
            found = check_host(cfg)
            out["problems"], out["warnings"] = list(found.problems), list(found.warnings)
            out["luns"] = [{"name": lun.name, "type": lun.type, "size": lun.size,
                            "block_size": lun.block_size, "path": str(lun.path), "export": _where(lun),
                            "export_mode": lun.export.mode}
                           for lun in cfg.luns]
        out["ok"] = not out["problems"]
        click.echo(json.dumps(out, indent=1, sort_keys=True))
        sys.exit(0 if out["ok"] else EXIT_CONFIG)
    cfg = _load_or_exit(config_path)
    _check_host_or_exit(config_path, cfg)
    click.echo(f"{config_path}: OK, {len(cfg.luns)} LUN(s); park_time {cfg.daemon.park_time:g} s, "
               "TCMU cmd_time_out "
               + (f"{cfg.daemon.cmd_time_out} s" if cfg.daemon.cmd_time_out is not None else "automatic"))
    for lun in cfg.luns:
        click.echo(f"  {lun.name}: {lun.type} {lun.size} bytes, {lun.block_size}-byte blocks, "
                   f"{lun.path}; {_where(lun)}")


@edifd_main.command("run", epilog=EXIT_CODES_HELP)
@_config_option
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Touch this file once every LUN is served (for scripts without systemd).")
@click.option("--teardown/--keep-lio", default=False, show_default=True,
              help="On exit, remove the LIO objects edifd serves. By default they stay, so a "
                   "restarted edifd re-attaches to its rings and guests see no error. A start "
                   "that fails or is stopped removes only what it created, either way.")
@click.option("--control-socket/--no-control-socket", default=True, show_default=True,
              help="Serve status and live commands (edifctl) on DAEMON.STATE_DIR/edifd.sock (mode 0600, "
                   "root or edifd's own user only).")
@_log_level_option
def run(config_path: Path, ready_file: Path | None, teardown: bool, control_socket: bool,
        log_level: str | None) -> None:
    """Serve the configured LUNs until SIGTERM or SIGINT.

    Status goes to DAEMON.STATE_DIR/status.json about once a second, and through the control socket
    to `edifctl`. Under systemd (Type=notify) it reports READY=1 once every LUN is served, and
    each log line carries its syslog priority.

    \b
    Example:
      edifd run --config /etc/edifd/edifd.toml --ready-file /run/edifd.ready
    """
    from edifd.daemon import Daemon, DaemonError, StartInterrupted

    cfg = _load_or_exit(config_path)
    # Refused before anything is served: the same checks as check-config, and a ready file that
    # could not be written once the LUNs are up.
    # Key files: loaded (same function, same refusal) as each control LUN opens.
    _check_host_or_exit(config_path, cfg, keys=False)
    problem = _ready_file_problem(ready_file) if ready_file else None
    if problem:
        echo_problems("edifd", "command line", [problem], what="refused")
        sys.exit(EXIT_CONFIG)
    setup_logging(log_level or cfg.daemon.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A stop request during start-up ends the start; like a failed start, it removes only the LIO
    # objects this run created (what it re-attached from an earlier edifd stays), whatever --teardown.
    daemon = Daemon(cfg, stop_requested=stop)
    from edifd.edges.metrics_http import MetricsError, start_metrics
    from edifd.metrics import with_hba_ports
    from edifd.status import STATUS_FILE, collect

    collect_lock = threading.Lock()  # the status writer, the control socket and the metrics take turns

    def snapshot(state: str = "running") -> dict[str, Any]:
        with collect_lock:
            return collect(daemon, state=state)

    try:  # before the LUNs: an address in use refuses the start with nothing touched
        metrics = start_metrics(cfg.metrics, "edifd", lambda: with_hba_ports(snapshot(), daemon.hba))
    except MetricsError as e:
        log.error("cannot start: %s", e)
        sys.exit(EXIT_FAILURE)
    try:
        daemon.start()
    except StartInterrupted as e:
        log.info("%s", e)
        _notify_systemd("STOPPING=1")
        if metrics is not None:
            metrics.stop()
        return
    except DaemonError as e:
        log.error("cannot start: %s", e)  # start() has undone its own work (see edifd.daemon)
        if metrics is not None:
            metrics.stop()
        sys.exit(EXIT_FAILURE)

    status_path = cfg.daemon.state_dir / STATUS_FILE
    try:
        cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("cannot create state dir %s: %s", cfg.daemon.state_dir, e.strerror)

    _write_status(status_path, snapshot())
    sock = _start_control_socket(cfg, config_path, snapshot) if control_socket else None
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
            _write_status(status_path, snapshot())
    finally:
        log.info("stopping (teardown=%s)", teardown)
        _notify_systemd("STOPPING=1")
        if sock is not None:
            sock.stop()
        if metrics is not None:
            metrics.stop()
        final = snapshot("stopped")
        daemon.stop(teardown=teardown)
        _write_status(status_path, final)
        log.info("stopped")


def _start_control_socket(cfg: Config, config_path: Path, snapshot: Any) -> Any:
    """The control socket's edge with the daemon's commands, or None if it cannot be served (edifd runs
    on without it; edifctl then reads status.json)."""
    from edifd.edges.control_socket import SOCKET_FILE, ControlSocket, ControlSocketError

    commands = ControlCommands(cfg, config_path, snapshot)
    sock = ControlSocket(cfg.daemon.state_dir / SOCKET_FILE, commands.table())
    try:
        sock.start()
    except ControlSocketError as e:
        log.error("control socket: %s; edifctl falls back to status.json", e)
        return None
    log.info("control socket %s", sock.path)
    return sock


class ControlCommands:
    """What edifd does for a control-socket request (`edifd.edges.control_socket` carries them).

    `reload` re-reads the configuration file and applies what changes nothing served: today that is
    `daemon.log_level` alone. Every other difference (LUNs, exports, the HBA ports, park and timeout
    settings, state_dir) is listed as needing a restart and left as it is; an invalid file changes
    nothing and answers with its problems."""

    def __init__(self, cfg: Config, config_path: Path, snapshot: Any) -> None:
        self.cfg, self.config_path, self._snapshot = cfg, config_path, snapshot

    def table(self) -> dict[str, Any]:
        return {"status": self.status, "log-level": self.log_level, "reload": self.reload}

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._snapshot()

    def log_level(self, args: dict[str, Any]) -> dict[str, Any]:
        level = args.get("level")
        before = current_level()
        if level is None:
            return {"level": before}
        if not isinstance(level, str) or level not in LEVELS:
            raise ValueError(f"level: one of {', '.join(LEVELS)}")
        set_level(level)
        log.warning("log level %s -> %s (edifctl)", before, level)
        return {"level": level, "was": before}

    def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            raise ValueError("configuration refused, nothing changed: "
                             + "; ".join(f"{self.config_path}:{p}" for p in e.problems)) from None
        applied: list[str] = []
        old = self.cfg
        if new.daemon.log_level != old.daemon.log_level or new.daemon.log_level != current_level():
            before = current_level()
            set_level(new.daemon.log_level)
            applied.append(f"daemon.log_level: {before} -> {new.daemon.log_level}")
        restart = [f"daemon.{k}" for k in ("state_dir", "park_time", "cmd_time_out", "redeliver_after")
                   if getattr(new.daemon, k) != getattr(old.daemon, k)]
        restart += [what for what, a, b in (("lun", new.luns, old.luns), ("hba", new.hba, old.hba),
                                             ("metrics", new.metrics, old.metrics)) if a != b]
        self.cfg = _with_log_level(old, new.daemon.log_level)
        log.warning("reload of %s: applied %s; needs a restart: %s", self.config_path,
                    ", ".join(applied) or "nothing", ", ".join(restart) or "nothing")
        return {"applied": applied, "needs_restart": restart}


def _with_log_level(cfg: Config, level: str) -> Config:
    from dataclasses import replace

    return replace(cfg, daemon=replace(cfg.daemon, log_level=level))


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
