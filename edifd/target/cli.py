"""edif-target: the storage side of the lab — target ports with LUNs on backing files.

    edif-target check-config --config target.toml
    edif-target run --config target.toml [--log-level info]

SIGTERM/SIGINT: LOGO to every logged-in initiator, flush the backing files, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from .config import ConfigError, load_target_config
from .server import TargetConfig, TargetServer

log = logging.getLogger("edif-target")


def _load(path: str, check_paths: bool = False) -> TargetConfig:
    try:
        return load_target_config(path, check_paths=check_paths)
    except ConfigError as e:
        click.echo(f"edif-target: invalid configuration {path}:", err=True)
        for p in e.problems:
            click.echo(f"  - {p}", err=True)
        sys.exit(2)


@click.group()
def main() -> None:
    """FC target over TCP (FCIP) for the edifd lab."""


@main.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def check_config(config_path: str) -> None:
    """Validate the configuration and print what it describes.

    Every problem is listed at once, by key path; the directories of the LUN backing files and of the
    pcap must exist. Exit 0 when the configuration is OK, 2 otherwise.
    """
    cfg = _load(config_path, check_paths=True)
    for p in cfg.ports:
        luns = ", ".join(f"{lc.lun}={lc.path} ({lc.size} B, {lc.block_size} B blocks)" for lc in p.luns)
        auth = ""
        if p.auth is not None:  # counts and kinds only: never a credential
            kinds = sorted({type(x.credentials).__name__.removesuffix("Credentials").lower()
                            for x in p.auth.peers.values() if x.credentials is not None})
            auth = f"; EDIF responder for {len(p.auth.peers)} initiator(s) ({', '.join(kinds) or 'none'})"
        click.echo(f"port {p.name}: wwpn {p.wwpn:016x} listen {p.listen[0]}:{p.listen[1]} "
                   f"security {'on' if p.security else 'off'}; LUNs: {luns or 'none'}{auth}")
    click.echo("configuration OK")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_path: str, log_level: str) -> None:
    """Run the target ports until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = _load(config_path)
    try:
        asyncio.run(_serve(cfg))
    except OSError as e:
        click.echo(f"edif-target: {e}", err=True)
        sys.exit(1)


async def _serve(cfg: TargetConfig) -> None:
    server = TargetServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        log.info("edif-target ready: %d port(s)", len(server.ports))
        await stop.wait()
        log.info("stopping: logging out initiators and flushing LUNs")
    finally:
        await server.stop()
    log.info("stopped")


if __name__ == "__main__":
    main()
