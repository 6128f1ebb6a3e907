"""edifctl: the operator's view of a running edifd, in the manner of `swanctl --list-*`.

Each listing (`status`, `luns`, `sessions`, `sas`, `channel`) asks edifd over its control socket
(DAEMON.STATE_DIR/edifd.sock, `edifd.edges.control_socket`) and, when nobody answers there, reads the
status file edifd rewrites about once a second (DAEMON.STATE_DIR/status.json), saying how old it is.
`--status-file FILE` reads a given file instead. `log-level` and `reload` need the running edifd.
`gen-key` makes a channel key file. `libvirt-xml` prints (or attaches) the libvirt devices of the exported
LUNs from the configuration alone. Nothing edifctl prints holds key material.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edifd.edges.command_line import (
    CONTEXT_SETTINGS,
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_IO,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    echo_problems,
    version_option,
)
from edifd.edges.logs import LEVELS, setup_logging

STALE_AFTER = 5.0  # s: a "running" status file older than this means edifd may have died


@dataclass
class Source:
    """Where the status comes from: the options of the group."""

    config_path: Path
    status_file: Path | None
    socket: Path | None

    def state_dir(self) -> Path:
        from edifd.config import ConfigError, load_config

        try:
            return load_config(self.config_path).daemon.state_dir
        except ConfigError as e:
            echo_problems("edifctl", str(self.config_path), e.problems)
            sys.exit(EXIT_CONFIG)

    def socket_path(self) -> Path:
        from edifd.edges.control_socket import SOCKET_FILE

        return self.socket if self.socket is not None else self.state_dir() / SOCKET_FILE


@dataclass
class Status:
    data: dict[str, Any]
    live: bool  # from the control socket (else a file)
    age: float  # seconds since edifd wrote it (0 for a live answer)


def _read_file(path: Path) -> Status:
    from edifd.status import read_status

    try:
        st = read_status(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        click.echo(f"edifctl: cannot read {path}: {e.strerror or e}", err=True)
        sys.exit(EXIT_IO)
    except ValueError as e:
        click.echo(f"edifctl: cannot read {path}: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    return Status(st, False, time.time() - float(st["time"]))


def fetch(src: Source) -> Status:
    """The status: live from the socket, else from the status file (its age on stderr)."""
    from edifd.edges.control_socket import ControlSocketError, request
    from edifd.status import STATUS_FILE, check_status

    if src.status_file is not None:
        try:
            return _read_file(src.status_file)
        except FileNotFoundError:
            click.echo(f"edifctl: no {src.status_file}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
    sock = src.socket_path()
    try:
        data = request(sock, "status")
        return Status(check_status(data), True, 0.0)
    except ControlSocketError as e:
        why = str(e)
    except ValueError as e:
        why = f"{sock}: edifd's answer is not a status: {e}"
    path = sock.parent / STATUS_FILE if src.socket is not None else src.state_dir() / STATUS_FILE
    try:
        st = _read_file(path)
    except FileNotFoundError:
        click.echo(f"edifctl: edifd is not running ({why}) and there is no {path}: edifd has not run "
                   "with this configuration", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    click.echo(f"edifctl: edifd does not answer ({why}); showing {path}, written {st.age:.0f} s ago",
               err=True)
    return st


def _stale(st: Status) -> bool:
    return not st.live and st.data.get("state") == "running" and st.age > STALE_AFTER


def _finish(st: Status) -> None:
    """Exit 1 when the status says running but is too old to be true."""
    if _stale(st):
        sys.exit(EXIT_FAILURE)


def _json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=1, sort_keys=True))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings=CONTEXT_SETTINGS, invoke_without_command=True, epilog=EXIT_CODES_HELP)
@version_option("edifctl")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="/etc/edifd/edifd.toml", show_default=True,
              help="edifd configuration: its daemon.state_dir holds edifd.sock and status.json.")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read this status file (e.g. a copy) instead of asking edifd.")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
              help="edifd's control socket (default: DAEMON.STATE_DIR/edifd.sock).")
@click.option("--json", "as_json", is_flag=True, help="Without a command: `status --json`.")
@click.option("--log-level", type=click.Choice(LEVELS), default="warning", show_default=True,
              help="edifctl's own log level.")
@click.pass_context
def main(ctx: click.Context, config_path: Path, status_file: Path | None, socket_path: Path | None,
         as_json: bool, log_level: str) -> None:
    """Show what a running edifd serves and steer it: LUNs, remote ports, SAs, the channel.

    Listings come from edifd's control socket, or from DAEMON.STATE_DIR/status.json (with its age)
    when edifd does not answer. Names, states and counters only: never keys. Without a command,
    edifctl shows `status`.

    \b
    Example:
      edifctl status
      edifctl sas --json
      edifctl --status-file /var/lib/edifd/status.json luns
      edifctl gen-key /etc/edifd/vm1.key
      edifctl libvirt-xml --via iscsi
    """
    setup_logging(log_level)
    ctx.obj = Source(config_path, status_file, socket_path)
    if ctx.invoked_subcommand is None:
        ctx.invoke(status, as_json=as_json)


@main.command(epilog=EXIT_CODES_HELP)
@_json_option
@click.pass_obj
def status(src: Source, as_json: bool) -> None:
    """Everything at once: each LUN with its export, ring, medium, channel and EDIF figures.

    \b
    Example:
      edifctl status
    """
    st = fetch(src)
    if as_json:
        _json(st.data)
        return _finish(st)
    d = st.data
    click.echo(f"edifd pid {d.get('pid')}: {d.get('state')}"
               + (f" (status {st.age:.0f} s old: edifd may have died)" if _stale(st) else ""))
    for lun in d.get("luns", []):
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
    _finish(st)


@main.command(epilog=EXIT_CODES_HELP)
@_json_option
@click.pass_obj
def luns(src: Source, as_json: bool) -> None:
    """The LUNs: name, type, size, block size, export (fabric and WWN), UIO device, re-attached or not.

    \b
    Example:
      edifctl luns
    """
    st = fetch(src)
    keys = ("name", "type", "size", "block_size", "export", "uio", "adopted")
    rows = [{k: lun.get(k) for k in keys} for lun in st.data.get("luns", [])]
    if as_json:
        _json(rows)
        return _finish(st)
    click.echo(f"{'NAME':<14}{'TYPE':<9}{'SIZE':>10}  {'BLOCK':>5}  {'EXPORT':<40}UIO")
    for r in rows:
        ex = r["export"] or {}
        click.echo(f"{r['name']:<14}{r['type']:<9}{_size(r['size']):>10}  {r['block_size'] or '-':>5}  "
                   f"{(ex.get('fabric') or 'none') + ' ' + (ex.get('wwn') or ''):<40}{r['uio'] or '-'}"
                   + ("  (re-attached)" if r["adopted"] else ""))
    _finish(st)


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


@main.command(epilog=EXIT_CODES_HELP)
@_json_option
@click.pass_obj
def sessions(src: Source, as_json: bool) -> None:
    """The remote ports of the HBA: link, login state, and for a port a control LUN drives, its EDIF
    login generation and authentication state (NOT_SECURE, NEEDED, IN_PROGRESS, AUTHENTICATED, FAILED).

    \b
    Example:
      edifctl sessions
    """
    st = fetch(src)
    rows = st.data.get("sessions", [])
    if as_json:
        _json(rows)
        return _finish(st)
    if not rows:
        click.echo("no HBA ports configured")
    for r in rows:
        if "error" in r:
            click.echo(f"  {r['error']}")
            continue
        link = "link up" if r.get("connected") else "no link"
        edif = ""
        if r.get("control_lun"):
            edif = (f"; EDIF via {r['control_lun']}: generation {r.get('generation')}, auth {r.get('auth')}, "
                    f"{'secure' if r.get('secure') else 'not secure'} login, app "
                    f"{'active' if r.get('app_active') else 'not active'}")
        remote = r.get("remote_wwpn") or "unknown remote port"
        click.echo(f"port {r.get('port')} {r.get('wwpn')} -> {remote}: "
                   f"{r.get('state')}, {link}, {r.get('outstanding')} outstanding{edif}")
    _finish(st)


@main.command(epilog=EXIT_CODES_HELP)
@_json_option
@click.pass_obj
def sas(src: Source, as_json: bool) -> None:
    """The security associations of each secure login: SPI, direction, cipher, age (seconds), frames,
    bytes; the login's rekeys and ESP drops. Never key material.

    \b
    Example:
      edifctl sas --json
    """
    st = fetch(src)
    rows = st.data.get("sas", [])
    if as_json:
        _json(rows)
        return _finish(st)
    if not rows:
        click.echo("no SAs")
    for r in rows:
        drops = ", ".join(f"{k} {v}" for k, v in sorted((r.get("drops") or {}).items())) or "none"
        click.echo(f"port {r.get('port')} -> {r.get('remote_wwpn')}: generation {r.get('generation')}, "
                   f"{r.get('rekeys')} rekeys, drops: {drops}"
                   + (", RX delete pending" if r.get("pending_rx_delete") else ""))
        for sa in r.get("sas", []):
            spi, age = sa.get("spi"), sa.get("age")
            spi_text = f"0x{spi:08x}" if isinstance(spi, int) else spi
            age_text = f"{age:.0f} s" if isinstance(age, (int, float)) else "-"
            click.echo(f"  {sa.get('direction', '?'):<3} SPI {spi_text}  {sa.get('cipher')}  age {age_text}  "
                       f"{sa.get('frames')} frames  {sa.get('bytes')} bytes")
    _finish(st)


@main.command(epilog=EXIT_CODES_HELP)
@_json_option
@click.pass_obj
def channel(src: Source, as_json: bool) -> None:
    """Each control LUN's channel: the agent's handshake, sequence figures (upstream issued/acked,
    queued, downstream next), parked READs and rejected messages by reason.

    \b
    Example:
      edifctl channel
    """
    st = fetch(src)
    rows = []
    for lun in st.data.get("luns", []):
        ch = lun.get("channel")
        if not isinstance(ch, dict):
            continue
        counters = ch.get("counters") if isinstance(ch.get("counters"), dict) else {}
        rows.append({
            "lun": lun["name"],
            **{k: ch.get(k) for k in ("established", "parked", "queued", "upstream_issued", "upstream_acked",
                                      "downstream_next")},
            "rejected": {k.removeprefix("rejected_"): v for k, v in sorted(counters.items())
                         if k.startswith("rejected_") and v},
            "counters": {k: v for k, v in sorted(counters.items()) if not k.startswith("rejected_")},
        })
    if as_json:
        _json(rows)
        return _finish(st)
    if not rows:
        click.echo("no control LUNs")
    for r in rows:
        click.echo(f"{r['lun']}: {'established' if r['established'] else 'no agent'}; upstream issued "
                   f"{r['upstream_issued']} acked {r['upstream_acked']} queued {r['queued']}; "
                   f"downstream next {r['downstream_next']}; parked READs {r['parked']}")
        rej = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"
        click.echo(f"  rejected: {rej}")
        other = ", ".join(f"{k} {v}" for k, v in r["counters"].items() if v)
        if other:
            click.echo(f"  counters: {other}")
    _finish(st)


def _live(src: Source, command: str, args: dict[str, Any] | None = None) -> Any:
    """A command only the running edifd can carry out."""
    from edifd.edges.control_socket import ControlRefused, ControlSocketError, ControlUnavailable, request

    sock = src.socket_path()
    try:
        return request(sock, command, args)
    except ControlUnavailable as e:
        click.echo(f"edifctl: edifd is not running ({e})", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except ControlRefused as e:
        click.echo(f"edifctl: edifd refused {command}: {e}", err=True)
        sys.exit(EXIT_FAILURE)
    except ControlSocketError as e:
        click.echo(f"edifctl: {e}", err=True)
        sys.exit(EXIT_IO)


@main.command("log-level", epilog=EXIT_CODES_HELP)
@click.argument("level", required=False, type=click.Choice(LEVELS))
@click.pass_obj
def log_level(src: Source, level: str | None) -> None:
    """Show or set the running edifd's log level (until it restarts or `reload` applies
    daemon.log_level).

    \b
    Example:
      edifctl log-level debug
    """
    res = _live(src, "log-level", {"level": level} if level else {})
    click.echo(f"log level {res.get('level')}" + (f" (was {res['was']})" if res.get("was") else ""))


@main.command(epilog=EXIT_CODES_HELP)
@click.pass_obj
def reload(src: Source) -> None:
    """Re-read edifd's configuration and apply what can change without touching a LUN.

    Today that is daemon.log_level only. Every other change (LUNs, exports, HBA ports, timings,
    state_dir) is listed as needing a restart, and nothing of it is applied; an invalid file changes
    nothing (exit 1 with its problems).

    \b
    Example:
      edifctl reload
    """
    res = _live(src, "reload")
    click.echo("applied: " + (", ".join(res.get("applied", [])) or "nothing"))
    restart = res.get("needs_restart", [])
    if restart:
        click.echo("changed, needs a restart of edifd (not applied): " + ", ".join(restart))


@main.command("gen-key", epilog=EXIT_CODES_HELP)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file (atomically) instead of refusing.")
def gen_key(path: Path, force: bool) -> None:
    """Write a new channel key to PATH: 32 random bytes as 64 hex digits, mode 0600, and print its
    fingerprint (the 16 hex digits edifd logs as it loads the key: compare them, never the key).

    The file is complete before it appears under PATH; an existing PATH is refused (exit 7) unless
    --force. Copy it to the EDIF VM (edif-agent --key) and name it in the control LUN's channel_key.

    \b
    Example:
      edifctl gen-key /etc/edifd/vm1.key
    """
    from edifd.edges.secret_file import load_channel_key
    from edifd.proto.errors import ChannelKeyError

    try:
        write_key_file(path, secrets.token_bytes(32), replace=force)
        key = load_channel_key(path)  # what edifd will read, under the same policy
    except FileExistsError:
        click.echo(f"edifctl: {path} exists; give a new path, or --force to replace it", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as e:
        click.echo(f"edifctl: cannot write {path}: {e.strerror or e}", err=True)
        sys.exit(EXIT_IO)
    except ChannelKeyError as e:
        click.echo(f"edifctl: wrote {path} but cannot read it back: {e}", err=True)
        sys.exit(EXIT_IO)
    click.echo(f"{path}: new channel key, fingerprint {key.fingerprint}")


@main.command("libvirt-xml", epilog=EXIT_CODES_HELP)
@click.option("--via", type=click.Choice(("iscsi", "vhost")),
              help="Only LUNs exported over this fabric (default: each LUN's own, iscsi or vhost).")
@click.option("--lun", "names", multiple=True, metavar="NAME",
              help="This LUN (repeatable). Default: every control LUN.")
@click.option("--all", "every", is_flag=True, help="Every LUN exported over iSCSI or vhost-scsi, not only "
                                                   "the control LUNs.")
@click.option("--initiator", metavar="IQN",
              help="The guest's iSCSI initiator name (default: the export's first `initiators` entry).")
@click.option("--host", "portal_host", metavar="ADDRESS",
              help="Address libvirt's QEMU connects to (default: the portal's; 127.0.0.1 for 0.0.0.0).")
@click.option("--controller", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Index of the virtio-scsi controller the iSCSI disks go on (printed too).")
@click.option("--first-unit", type=click.IntRange(0, 16383), default=0, show_default=True,
              help="SCSI unit (and sdX name) of the first iSCSI disk on that controller.")
@click.option("--secret-xml", is_flag=True,
              help="Print instead a shell script that defines the libvirt secret of each CHAP export and "
                   "sets its value from the export's chap_secret_file (the value is never printed).")
@click.option("--domain-xml", is_flag=True,
              help="Wrap the devices in a minimal <domain> (a start for a new EDIF VM; virt-xml-validate).")
@click.option("--attach", "domain", metavar="DOMAIN",
              help="Attach the devices to this libvirt domain (libvirt-python, python3-libvirt).")
@click.option("--live", is_flag=True, help="With --attach: the running domain.")
@click.option("--config", "persistent", is_flag=True, help="With --attach: the domain's definition "
                                                           "(neither: live if running, else the definition).")
@click.option("--connect", "uri", default="qemu:///system", show_default=True,
              help="libvirt URI for --attach.")
@click.pass_obj
def libvirt_xml(src: Source, via: str | None, names: tuple[str, ...], every: bool, initiator: str | None,
                portal_host: str | None, controller: int, first_unit: int, secret_xml: bool, domain_xml: bool,
                domain: str | None, live: bool, persistent: bool, uri: str) -> None:
    """libvirt XML that gives the EDIF VM its control disks, from edifd's configuration (no edifd needed).

    An iSCSI export becomes <disk type='network' device='lun'> (pass-through, so the guest sees edifd's
    INQUIRY and sense data) with the export's initiator name and, with CHAP, an <auth> naming a libvirt
    secret, on a virtio-scsi controller; a vhost-scsi export becomes <hostdev type='scsi_host'> with its
    WWPN (stable: export.wwn, or derived from the machine-id and the LUN name). One device per element:
    `virsh attach-device DOMAIN FILE` takes one. See docs/libvirt.md.

    \b
    Example:
      edifctl libvirt-xml --via iscsi --secret-xml | sh     (define the CHAP secret)
      edifctl libvirt-xml --via iscsi > ctl0.xml
      edifctl libvirt-xml --all --attach edif-vm --live --config
    """
    from edifd.config import ConfigError, load_config
    from edifd.libvirt_xml import LibvirtXmlError, domain_document, plan, select_luns

    try:
        cfg = load_config(src.config_path)
    except ConfigError as e:
        echo_problems("edifctl", str(src.config_path), e.problems)
        sys.exit(EXIT_CONFIG)
    if (live or persistent) and domain is None:
        click.echo("edifctl: --live and --config go with --attach DOMAIN", err=True)
        sys.exit(EXIT_USAGE)
    try:
        found = plan(select_luns(cfg, names=names, every=every, via=via), controller=controller,
                     first_unit=first_unit, initiator=initiator, host=portal_host)
    except LibvirtXmlError as e:
        click.echo(f"edifctl: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    for note in found.notes:
        click.echo(f"edifctl: note: {note}", err=True)
    if secret_xml or domain is not None:
        # What libvirtd will be given must be a secret edifd accepts (read under the policy, then dropped).
        from edifd.edges.secret_file import SecretFileError, load_chap_secret

        index = {lun.name: i for i, lun in enumerate(cfg.luns)}
        problems = []
        for sec in found.secrets:
            try:
                load_chap_secret(sec.secret_file)
            except SecretFileError as e:
                problems.append(f"lun[{index[sec.lun]}].export.chap_secret_file: {e}")
        if problems:
            echo_problems("edifctl", str(src.config_path), problems)
            sys.exit(EXIT_CONFIG)
    if secret_xml:
        if not found.secrets:
            click.echo("edifctl: no CHAP on the selected iSCSI exports: no libvirt secret to define",
                       err=True)
            sys.exit(EXIT_CONFIG)
        click.echo("#!/bin/sh\n# libvirt secrets of edifd's iSCSI CHAP exports (values read from the files)"
                   "\nset -e")
        for sec in found.secrets:
            xml_file = f"edifd-secret-{sec.lun}.xml"
            click.echo(f"# LUN {sec.lun}: usage {sec.usage}\ncat > {xml_file} <<'EOF'\n{sec.xml}\nEOF")
            click.echo("\n".join(sec.virsh_commands(xml_file)))
        return
    if domain is not None:
        return _attach(found, domain, live=live, config=persistent, uri=uri)
    if domain_xml:
        click.echo(domain_document(found.devices))
        return
    for dev in found.devices:
        click.echo(f"<!-- {dev.comment.replace('--', '- -')} -->\n{dev.xml}\n")


def _attach(found: Any, domain: str, *, live: bool, config: bool, uri: str) -> None:
    from edifd.edges.libvirt_attach import AttachError, AttachUnavailable, DeviceXml, attach

    try:
        done = attach([DeviceXml(d.xml, d.comment) for d in found.devices], domain, live=live, config=config,
                      uri=uri, iscsi_secret_usages=[s.usage for s in found.secrets])
    except AttachUnavailable as e:
        click.echo(f"edifctl: {e}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except AttachError as e:
        click.echo(f"edifctl: {e}", err=True)
        sys.exit(EXIT_FAILURE)
    for what in done:
        click.echo(f"{domain}: attached {what}")


def write_key_file(path: Path, material: bytes, *, replace: bool = False) -> None:
    """`material` as 64 hex digits and a newline at `path`, mode 0600, atomically: written and synced
    under a temporary name in the same directory, then linked into place (FileExistsError if `path`
    exists) or, with `replace`, renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, material.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never overwrites
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


__all__ = ["main", "write_key_file"]
