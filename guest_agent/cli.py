"""edif-agent: the EDIF VM's end of the control-disk channel to edifd (click over `runtime.AgentRuntime`).

Exit codes (scripts and the lab rely on them; guest_agent.exits, the table of every tool):

  0  done, and for ping: every request answered once, in order
  1  ping finished but something was lost, duplicated or out of order
  2  usage error (click)
  3  no usable control disk (discovery, --port, --device)
  4  the channel key file was refused
  5  the channel did not come up (no handshake within --timeout, or the host refused us)
  6  I/O error on the control disk, or the state file
  7  the security configuration (run --config, check-config) was refused
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from edifd.edges.command_line import (
    CONTEXT_SETTINGS,
    EXIT_CODES_HELP,
    echo_error,
    echo_problems,
    echo_warnings,
    version_option,
)
from edifd.edges.logs import LEVELS, setup_logging
from edifd.edges.sd_notify import sd_notify

from .channel import ChannelOptions, find_disk
from .discovery import DEFAULT_PRODUCT, DEFAULT_VENDOR, ControlDisk, DiscoveryError, discover, parse_wwpn
from .exits import (
    EXIT_CONFIG,
    EXIT_IO,
    EXIT_KEY,
    EXIT_NO_DISK,
    EXIT_NOT_ESTABLISHED,
    EXIT_OK,
    EXIT_PING_PROBLEMS,
    AgentExit,
    AgentUsageError,
)
from .runtime import AgentRuntime, check_config
from .service import ServiceStatusError, format_status, read_status
from .udev_id import udev_id

__all__ = [
    "EXIT_CONFIG", "EXIT_IO", "EXIT_KEY", "EXIT_NOT_ESTABLISHED", "EXIT_NO_DISK", "EXIT_OK",
    "EXIT_PING_PROBLEMS", "AgentExit", "main", "sd_notify",
]


log = logging.getLogger("edif-agent")

_log_level_option = click.option("--log-level", default="info", show_default=True, type=click.Choice(LEVELS),
                                 help="Log level of the lines on stderr (the journal under systemd).")

WWPN_FORMS = "50:01:43:80:12:34:56:78, 5001438012345678, 0x5001438012345678 or naa.5001438012345678"


def _wwpn_param(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--port must be a WWPN (a usage error, exit 2, before any disk is looked at); kept as text."""
    if value is not None:
        try:
            parse_wwpn(value)
        except DiscoveryError:
            raise click.BadParameter(f"bad WWPN {value!r}: give 16 hex digits (not all zero) as "
                                     f"{WWPN_FORMS}") from None
    return value


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command shares; they arrive as the `channel` keyword (a ChannelOptions)."""
    opts = [
        click.option("--key", "key_path", metavar="FILE", envvar="EDIF_AGENT_KEY",
                     help="Channel key file (32 raw bytes or 64 hex digits, not readable by others); "
                          "the same key edifd has for this VM.  [env EDIF_AGENT_KEY]"),
        click.option("--port", metavar="WWPN", callback=_wwpn_param,
                     help="Use the control disk of this HBA port (e.g. 50:01:43:80:12:34:56:78); needed "
                          "when the VM has several."),
        click.option("--device", metavar="DEV", help="Use this block device instead of discovering one; "
                     "it must be an EDIF control LUN (INQUIRY vendor/product, and --port's VPD 0x83 "
                     "designator), else exit 3 before anything is written."),
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
        _log_level_option,
        click.option("--no-direct", is_flag=True, hidden=True, help="Open without O_DIRECT (tests)."),
        click.option("--sys-root", default="/sys", hidden=True, help="sysfs root (tests)."),
    ]

    @functools.wraps(fn)  # keeps the command's own click options (its __click_params__) and its help
    def wrapper(*, key_path: str | None, port: str | None, device: str | None, vendor: str, product: str,
                port_index: int, parked: int, state_path: str | None, timeout: float, log_level: str,
                no_direct: bool, sys_root: str, **rest: Any) -> Any:
        setup_logging(log_level)
        channel = ChannelOptions(key_path=key_path, port=port, device=device, vendor=vendor, product=product,
                                 port_index=port_index, parked=parked, state_path=state_path, timeout=timeout,
                                 direct=not no_direct, sys_root=sys_root)
        return fn(channel=channel, **rest)

    out: Callable[..., Any] = wrapper
    for o in reversed(opts):
        out = o(out)
    return out


def _run(body: Callable[[], int]) -> None:
    try:
        code = body()
    except AgentUsageError as e:
        raise click.UsageError(str(e)) from None
    except AgentExit as e:
        if e.problems:
            echo_problems("edif-agent", e.source, e.problems, what=str(e))
        else:
            echo_error("edif-agent", str(e))
        sys.exit(e.code)
    except DiscoveryError as e:
        echo_error("edif-agent", str(e))
        sys.exit(EXIT_NO_DISK)
    sys.exit(code)


# -- commands ----------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@version_option("edif-agent")
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
      edif-agent check-config --config /etc/edif-agent/agent.toml
    """


@main.command(epilog=EXIT_CODES_HELP)
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
def ping(*, channel: ChannelOptions, count: int, interval: float, as_json: bool, report_path: str | None,
         resume_grace: float) -> None:
    """Round trips to edifd: send KEEPALIVE requests and time the replies.

    Prints RTT p50/p99/max and the counts: sent, received, in order, duplicates, lost. With --state,
    a killed and restarted ping continues the same count: the tally is saved in the state file
    together with the channel state, so no reply is lost or counted twice across the restart.

    \b
    Example:
      edif-agent ping --key /etc/edif/channel.key --count 100 --interval 0.1
    """

    def body() -> int:
        runtime = AgentRuntime(channel, log=log)
        result = runtime.ping(count=count, interval=interval, report_path=report_path,
                              resume_grace=resume_grace)
        rep = result.report
        if as_json:
            click.echo(json.dumps({**rep, **result.channel}, sort_keys=True))
        else:
            r = rep["rtt_ms"]
            click.echo(f"ping {rep['device']} (port {rep['port']}): {rep['sent']} sent, "
                       f"{rep['received']} received, {rep['in_order']} in order, "
                       f"{rep['duplicates']} duplicates, {rep['lost']} lost, {rep['resent']} re-sent")
            click.echo(f"rtt ms: p50 {r['p50']} p99 {r['p99']} max {r['max']} (n={r['n']})")
        return result.code

    _run(body)


@main.command(epilog=EXIT_CODES_HELP)
@_common
@click.option("--probe", is_flag=True, help="Also open the chosen disk, run the handshake and one KEEPALIVE, "
              "and print the channel counters (needs --key).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--service", "service_file", metavar="FILE",
              help="Also show the security service's sessions from its --status-file (run --config).")
def status(*, channel: ChannelOptions, probe: bool, as_json: bool, service_file: str | None) -> None:
    """List the control disks (device, port WWPN, serial, block size); --probe adds the channel counters,
    --service the security service's sessions (state, SPIs, SA age, failures; never keys).

    \b
    Example:
      edif-agent status --service /run/edif-agent/status.json
    """
    o = channel

    def body() -> int:
        if service_file:
            try:
                svc = read_status(service_file)
            except ServiceStatusError as e:
                raise AgentExit(EXIT_IO, str(e)) from None
            click.echo(json.dumps(svc, sort_keys=True) if as_json else format_status(svc))
            return EXIT_OK
        if o.device:
            disks = [find_disk(o)]  # the same identity check as every command (exit 3 if refused)
        else:
            disks = discover(o.vendor, o.product, sys_root=o.sys_root)
        out: dict[str, Any] = {"disks": [_disk_dict(d) for d in disks]}
        code = EXIT_OK if disks else EXIT_NO_DISK
        if probe:
            if not o.key_path:
                raise click.UsageError("--probe needs --key FILE")
            out["probe"] = AgentRuntime(o, log=log).probe()
        if as_json:
            click.echo(json.dumps(out, sort_keys=True))
        else:
            if not disks:
                click.echo(f"no EDIF control disk (vendor {o.vendor} product {o.product}) on "
                           f"{os.path.join(o.sys_root, 'block')}")
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


def _disk_dict(d: ControlDisk) -> dict[str, Any]:
    return {"device": d.devnode, "name": d.name, "port": d.wwpn_text, "serial": d.serial, "vendor": d.vendor,
            "model": d.model, "block_size": d.block_size, "capacity_blocks": d.capacity_blocks,
            "source": d.source}


@main.command(epilog=EXIT_CODES_HELP)
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
def run(*, channel: ChannelOptions, keepalive: float, status_file: str | None,
        config_path: str | None) -> None:
    """Serve the channel until SIGTERM: handshake, keep READs parked, log and ack events.

    Without --config it is the channel keeper only (KEEPALIVEs). With --config it is the security service:
    GET_PORT_INFO, GET_TARGETS, SECURE_CONNECT and IKE over the AUTH_ELS relay for every configured target,
    SA_UPDATEs, AUTH_OK, rekeys; SIGTERM sends APP_STOP (the host logs the secure sessions out) first.
    Under systemd (Type=notify) it reports READY=1 once the handshake is done.

    \b
    Example:
      edif-agent run --config /etc/edif-agent/agent.toml --state /var/lib/edif-agent/state
    """

    def body() -> int:
        runtime = AgentRuntime(channel, log=log)
        if config_path:
            return runtime.serve(config_path=config_path, status_file=status_file)
        return runtime.keep_channel(keepalive=keepalive, status_file=status_file)

    _run(body)


@main.command("check-config", epilog=EXIT_CODES_HELP)
@click.option("--config", "config_path", metavar="FILE", required=True,
              help="The security service's agent.toml (the file `run --config` takes).")
@click.option("--key", "key_path", metavar="FILE", envvar="EDIF_AGENT_KEY",
              help="Also check this channel key file (else the configuration's channel_key, if any).  "
                   "[env EDIF_AGENT_KEY]")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"ok": ..., "problems": [...], "warnings": [...]}.')
@_log_level_option
def check_config_cmd(*, config_path: str, key_path: str | None, as_json: bool, log_level: str) -> None:
    """Check the security configuration without touching a disk: the policy, every PSK, private-key
    and certificate file (the secret-file permission policy: chmod 0600), and the channel key.

    Prints OK with what the file describes (targets and their kind of credentials, never key
    material), or every problem by key path at once.

    \b
    Example:
      edif-agent check-config --config /etc/edif-agent/agent.toml --key /etc/edif/channel.key
    """
    setup_logging(log_level)
    res = check_config(config_path, key_path)
    if as_json:
        click.echo(json.dumps({"ok": res.ok, "problems": res.problems, "warnings": res.warnings}))
    elif res.ok:
        click.echo(f"configuration OK: {config_path}")
        for line in res.summary:
            click.echo(f"  {line}")
    else:
        echo_problems("edif-agent", config_path, res.problems)
    if not as_json:
        echo_warnings("edif-agent", config_path, res.warnings)
    sys.exit(EXIT_OK if res.ok else EXIT_CONFIG)


main.add_command(udev_id)  # udev's PROGRAM for systemd/60-edif-control.rules (guest_agent/udev_id.py)
