"""edif-target: the storage side of the lab — target ports with LUNs on backing files.

    edif-target check-config --config target.toml [--json]
    edif-target run --config target.toml [--log-level info]

SIGTERM/SIGINT: LOGO to every logged-in initiator, flush the backing files, exit 0. Exit codes and
--version as every tool (`edifd.edges.command_line`), logs as every tool (`edifd.edges.logs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

import click

from edifd.edges.command_line import (
    CONTEXT_SETTINGS,
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_FAILURE,
    echo_problems,
    version_option,
)
from edifd.edges.logs import LEVELS, setup_logging
from edifd.edges.metrics_http import MetricsError, run_on, start_metrics
from edifd.metrics import target_snapshot

from .config import ConfigError, load_target_config
from .server import TargetConfig, TargetServer

log = logging.getLogger("edif-target")

_config_option = click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
    help="edif-target TOML configuration; relative paths in it are relative to its directory.")
_log_level_option = click.option("--log-level", default="info", show_default=True, type=click.Choice(LEVELS),
                                 help="Log level.")


def _load(path: str, check_paths: bool = False) -> TargetConfig:
    try:
        return load_target_config(path, check_paths=check_paths)
    except ConfigError as e:
        echo_problems("edif-target", path, e.problems)
        sys.exit(EXIT_CONFIG)


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@version_option("edif-target")
def main() -> None:
    """FC target over TCP (FCIP) for the edifd lab: target ports with LUNs on sparse backing files,
    optionally an EDIF (FC-SP-2) responder per port.

    \b
    Example:
      edif-target check-config --config /etc/edif-target/target.toml
      edif-target run --config /etc/edif-target/target.toml --log-level info
    """


def _describe(cfg: TargetConfig) -> list[dict[str, Any]]:
    out = []
    for p in cfg.ports:
        auth = None
        if p.auth is not None:  # counts and kinds only: never a credential
            kinds = sorted({type(x.credentials).__name__.removesuffix("Credentials").lower()
                            for x in p.auth.peers.values() if x.credentials is not None})
            auth = {"initiators": len(p.auth.peers), "credentials": kinds}
        out.append({"name": p.name, "wwpn": f"{p.wwpn:016x}", "listen": f"{p.listen[0]}:{p.listen[1]}",
                    "security": p.security, "auth": auth,
                    "luns": [{"lun": lc.lun, "path": str(lc.path), "size": lc.size,
                              "block_size": lc.block_size} for lc in p.luns]})
    return out


@main.command("check-config", epilog=EXIT_CODES_HELP)
@_config_option
@click.option("--json", "as_json", is_flag=True, help='Print {"ok", "config", "problems", "ports"} as JSON.')
@_log_level_option
def check_config(config_path: str, as_json: bool, log_level: str) -> None:
    """Validate the configuration and print what it describes; opens nothing.

    Every problem is listed at once, by key path; the directories of the LUN backing files and of the
    pcap must exist. Exit 0 when the configuration is OK, 7 otherwise.

    \b
    Example:
      edif-target check-config --config target.toml --json
    """
    setup_logging(log_level)
    if as_json:
        out: dict[str, Any] = {"config": config_path, "problems": [], "ports": []}
        try:
            out["ports"] = _describe(load_target_config(config_path, check_paths=True))
        except ConfigError as e:
            out["problems"] = e.problems
        out["ok"] = not out["problems"]
        click.echo(json.dumps(out, indent=1, sort_keys=True))
        sys.exit(0 if out["ok"] else EXIT_CONFIG)
    cfg = _load(config_path, check_paths=True)
    for p in _describe(cfg):
        luns = ", ".join(f"{lc['lun']}={lc['path']} ({lc['size']} B, {lc['block_size']} B blocks)"
                         for lc in p["luns"])
        auth = ""
        if p["auth"] is not None:
            auth = (f"; EDIF responder for {p['auth']['initiators']} initiator(s) "
                    f"({', '.join(p['auth']['credentials']) or 'none'})")
        click.echo(f"port {p['name']}: wwpn {p['wwpn']} listen {p['listen']} "
                   f"security {'on' if p['security'] else 'off'}; LUNs: {luns or 'none'}{auth}")
    click.echo("configuration OK")


@main.command(epilog=EXIT_CODES_HELP)
@_config_option
@_log_level_option
def run(config_path: str, log_level: str) -> None:
    """Run the target ports until SIGTERM/SIGINT (then LOGO every initiator and flush the LUNs).

    \b
    Example:
      edif-target run --config target.toml --log-level debug
    """
    setup_logging(log_level)
    cfg = _load(config_path)
    try:
        asyncio.run(_serve(cfg))
    except (OSError, MetricsError) as e:
        log.error("%s", e)
        sys.exit(EXIT_FAILURE)


async def _serve(cfg: TargetConfig) -> None:
    server = TargetServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = start_metrics(cfg.metrics, "edif_target",
                            run_on(loop.call_soon_threadsafe, lambda: target_snapshot(server)))
    try:
        await server.start()
        log.info("edif-target ready: %d port(s)", len(server.ports))
        await stop.wait()
        log.info("stopping: logging out initiators and flushing LUNs")
    finally:
        await server.stop()
        if metrics is not None:
            metrics.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
