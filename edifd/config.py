"""edifd configuration: one TOML file, validated completely before anything is touched.

A bad file is refused with every problem named by its key path (``lun[1].size: ...``), so an
operator fixes it in one go; nothing in LIO changes until the whole file is valid.

Relative paths (``daemon.state_dir``, a LUN's ``path`` and ``channel_key``, a port's ``pcap``) are
relative to the configuration file's directory, as in every tool's configuration; a LUN without
``path`` gets ``NAME.img`` in the state directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edifd.confcheck import ProblemCollector as _Reader
from edifd.confcheck import load_toml
from edifd.confcheck import parse_size as _parse_size
from edifd.edges.secret_file import SecretFileError, load_channel_key, load_chap_secret
from edifd.metrics import MetricsConfig, parse_metrics_table
from edifd.proto.errors import ChannelKeyError
from edifd.tcmu.lio import IscsiChap, stable_naa

# TCMU's per-command timeout must never fire before our own parked-READ heartbeat, or the
# kernel fails a parked READ with NOT READY / LUN COMMUNICATION FAILURE. Keep a wide margin.
MIN_CMD_TIMEOUT_MARGIN = 10.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[^\s]+)?$")
_NAA_RE = re.compile(r"^naa\.[0-9a-fA-F]{16}$")
_WWPN_RE = re.compile(r"^(0x)?[0-9a-fA-F]{16}$|^([0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}$")
_CONTROL_KEYS = ("channel_key", "port_index", "wwpn", "queue_limit")
DEFAULT_QUEUE_LIMIT = 64  # lowered to what a small control LUN holds when queue_limit is not written

EXPORTS = ("none", "loopback", "iscsi", "vhost")
# file: data LUN on a backing file; control: the EDIF VM channel; remote: a LUN of a storage target
# reached through the software HBA (its CDBs are forwarded as FCP).
LUN_TYPES = ("file", "control", "remote")
_REMOTE_KEYS = ("hba_port", "target_wwpn", "remote_lun")


class ConfigError(ValueError):
    """The configuration is invalid; `problems` lists each one with its key path."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def parse_size(value: Any) -> int:
    """'64MiB', '1G', '4096' or an int -> bytes (binary units, up to T)."""
    return _parse_size(value, example="64MiB", units="KMGT")


@dataclass(frozen=True)
class ExportConfig:
    fabric: str = "none"  # none | loopback (host-local /dev/sdX) | iscsi | vhost
    iqn: str | None = None  # iscsi target name
    portal: tuple[str, int] = ("127.0.0.1", 3260)  # iscsi: ADDRESS ("[v6]" in brackets), PORT
    demo_mode: bool = False  # iscsi: any initiator, read-write, no CHAP: a loopback portal only...
    insecure_demo: bool = False  # ... unless this says the operator means it on another address
    initiators: tuple[str, ...] = ()  # iscsi node ACLs when not in demo mode
    chap_user: str | None = None  # one-way CHAP: each initiator proves itself with these
    chap_secret_file: Path | None = None
    mutual_user: str | None = None  # mutual CHAP: the target proves itself with these
    mutual_secret_file: Path | None = None
    wwn: str | None = None  # loopback/vhost naa. WWPN; vhost: derived (stable) when absent

    @property
    def chap(self) -> IscsiChap | None:
        """The CHAP settings for LIO (`edifd.tcmu.lio.IscsiExport.chap`), or None without CHAP."""
        if self.chap_user is None or self.chap_secret_file is None:
            return None
        return IscsiChap(self.chap_user, self.chap_secret_file, self.mutual_user, self.mutual_secret_file)

    @property
    def mode(self) -> str | None:
        """An iSCSI export's access mode (None for other fabrics): "demo" (loopback portal, any
        initiator), "insecure-demo", "acl" (node ACLs, no CHAP), "chap" or "mutual-chap"."""
        if self.fabric != "iscsi":
            return None
        if self.demo_mode:
            return "demo" if portal_is_loopback(self.portal[0]) else "insecure-demo"
        if self.chap_user is None:
            return "acl"
        return "mutual-chap" if self.mutual_user is not None else "chap"

    def describe(self) -> str:
        """What check-config says of the export, e.g. "iSCSI iqn... on 127.0.0.1:3260: ACL + CHAP
        (1 initiator, CHAP user edif-vm)". Names and paths only."""
        if self.fabric != "iscsi":
            return {"loopback": "tcm_loop (host-local /dev/sdX)", "vhost": f"vhost-scsi {self.wwn}",
                    "none": "not exported"}[self.fabric]
        where = f"iSCSI {self.iqn} on {self.portal[0]}:{self.portal[1]}"
        n = len(self.initiators)
        acls = f"{n} initiator{'s' if n != 1 else ''}"
        return where + ": " + {
            "demo": "demo mode (any initiator on this host, no CHAP)",
            "insecure-demo": "INSECURE demo mode (any initiator that reaches the portal, no CHAP)",
            "acl": f"ACL only ({acls}; no CHAP: an initiator name is not authentication)",
            "chap": f"ACL + CHAP ({acls}, CHAP user {self.chap_user})",
            "mutual-chap": f"ACL + mutual CHAP ({acls}, CHAP user {self.chap_user}, target user "
                           f"{self.mutual_user})",
        }[self.mode or "acl"]


def portal_is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (written "[::1]" in a portal)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LunConfig:
    name: str
    type: str
    size: int
    path: Path
    block_size: int = 512
    vendor: str = "EDIF"
    product: str = "DISK"
    revision: str = "0001"
    serial: str = ""
    export: ExportConfig = field(default_factory=ExportConfig)
    # Control LUNs only (the EDIF VM channel of one HBA port):
    channel_key: Path | None = None  # the per-EDIF-VM key file; None: every WRITE is refused
    port_index: int = 0  # the HBA port this LUN represents (carried, MAC'd, in every message)
    wwpn: int | None = None  # that port's WWPN: VPD 0x83 target-port designator and PORT_INFO
    queue_limit: int = 64  # upstream messages held for the agent before EVENT_OVERFLOW
    # Remote LUNs only (size and block size come from the target's READ CAPACITY):
    hba_port: str | None = None  # name of the [[hba.port]] that reaches the target
    target_wwpn: int | None = None
    remote_lun: int = 0
    # File LUNs only: an existing backing file whose size differs from `size` is refused unless this
    # is true (then edifd grows a smaller one, sparse, and serves the first `size` bytes of a larger one).
    resize: bool = False


@dataclass(frozen=True)
class HbaPortConfig:
    """One initiator port of the software HBA: its names and the FC-over-TCP link to a target port."""

    name: str
    wwpn: int
    wwnn: int
    target: tuple[str, int]
    security: bool = False  # PLOGI carries the security bit (EDIF)
    pcap: Path | None = None  # capture every frame of this port's link


@dataclass(frozen=True)
class HbaConfig:
    io_timeout: float = 30.0  # a command fails with a clear sense if not done by then, relogins included
    ports: tuple[HbaPortConfig, ...] = ()


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/edifd")
    park_time: float = 5.0
    cmd_time_out: int | None = None  # None: the TCMU edge picks one that outlasts park_time
    log_level: str = "info"
    redeliver_after: float = 1.0  # control channel: resend an unacknowledged message after this


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    luns: tuple[LunConfig, ...]
    hba: HbaConfig = field(default_factory=HbaConfig)
    metrics: MetricsConfig | None = None  # [metrics]: the Prometheus endpoint; None = off


def _ascii_field(r: _Reader, value: str, width: int, where: str) -> str:
    if not value.isascii() or not value.isprintable() or len(value) > width:
        r.problems.append(f"{where}: must be printable ASCII of at most {width} characters")
    return value


_ISCSI_ONLY = ("iqn", "demo_mode", "insecure_demo", "initiators", "chap_user", "chap_secret_file",
               "mutual_user", "mutual_secret_file")
_CHAP_USER_RE = re.compile(r"^[!-~]{1,255}$")


def _read_portal(r: _Reader, t: dict, where: str) -> tuple[str, int]:
    portal_s = r.take(t, "portal", where, str, "127.0.0.1:3260")
    host, _, port_s = portal_s.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        r.problems.append(f"{where}.portal: expected ADDRESS:PORT, got {portal_s!r}")
        return ExportConfig.portal
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        r.problems.append(f"{where}.portal: {host!r} is not an IP address (LIO listens on addresses; "
                          "an IPv6 one in brackets: [::1]:3260)")
        return ExportConfig.portal
    if ip.version == 6 and bare == host:
        r.problems.append(f"{where}.portal: write an IPv6 address in brackets, e.g. [{host}]:{port_s}")
        return ExportConfig.portal
    return host, int(port_s)


def _read_chap_user(r: _Reader, t: dict, key: str, where: str) -> str | None:
    user = r.take(t, key, where, str)
    if user is not None and (not _CHAP_USER_RE.match(user) or user.startswith("NULL")):
        r.problems.append(f"{where}.{key}: 1..255 printable ASCII characters without spaces, not "
                          "beginning with NULL (LIO reads that as 'unset')")
        return None
    return user


def _read_export(r: _Reader, t: dict, where: str, lun_name: str, base: Path,
                 machine_id: str) -> ExportConfig:
    r.unknown(t, {"fabric", "portal", "wwn", *_ISCSI_ONLY}, where)
    fabric = r.take(t, "fabric", where, str, "none")
    if fabric not in EXPORTS:
        r.problems.append(f"{where}.fabric: must be one of {', '.join(EXPORTS)}")
    if fabric != "iscsi":
        for key in ("insecure_demo", "chap_user", "chap_secret_file", "mutual_user", "mutual_secret_file"):
            if key in t:
                r.problems.append(f"{where}.{key}: only for fabric = \"iscsi\"")
    iqn = r.take(t, "iqn", where, str)
    if fabric == "iscsi":
        iqn = iqn or f"iqn.2026-11.io.edifd:{lun_name.lower()}"
        if not _IQN_RE.match(iqn):
            r.problems.append(f"{where}.iqn: not an iSCSI qualified name (iqn.YYYY-MM.reversed.domain:name)")
    portal = _read_portal(r, t, where)
    demo = r.take(t, "demo_mode", where, bool, False)
    insecure = r.take(t, "insecure_demo", where, bool, False)
    initiators = r.take(t, "initiators", where, list, [])
    for i, ini in enumerate(initiators):
        if not isinstance(ini, str) or not _IQN_RE.match(ini):
            r.problems.append(f"{where}.initiators[{i}]: not an iSCSI qualified name")
    chap_user = _read_chap_user(r, t, "chap_user", where)
    mutual_user = _read_chap_user(r, t, "mutual_user", where)
    files = {}
    for key in ("chap_secret_file", "mutual_secret_file"):
        raw = r.take(t, key, where, str)
        files[key] = _resolve(raw, base) if raw is not None else None
    if fabric == "iscsi":
        _check_iscsi_access(r, t, where, portal, demo, insecure, bool(initiators))
    wwn = r.take(t, "wwn", where, str)
    if wwn is not None and not _NAA_RE.match(wwn):
        r.problems.append(f"{where}.wwn: expected naa. followed by 16 hex digits")
    elif wwn is None and fabric == "vhost":
        # Stable across restarts and reboots (the guest's libvirt XML names it), distinct per host.
        wwn = stable_naa("vhost", machine_id, lun_name)
    return ExportConfig(fabric, iqn, portal, demo, insecure, tuple(str(i) for i in initiators), chap_user,
                        files["chap_secret_file"], mutual_user, files["mutual_secret_file"], wwn)


def _check_iscsi_access(r: _Reader, t: dict, where: str, portal: tuple[str, int], demo: bool,
                        insecure: bool, acls: bool) -> None:
    """Who may log in: demo mode (anyone) only on loopback or when insecure_demo says so; otherwise
    node ACLs, with CHAP written completely (user and secret file, mutual only over one-way)."""
    chap = [k for k in ("chap_user", "chap_secret_file", "mutual_user", "mutual_secret_file") if k in t]
    if insecure and not demo:
        r.problems.append(f"{where}.insecure_demo: only with demo_mode = true")
    if demo:
        if acls or chap:
            r.problems.append(f"{where}.demo_mode: demo mode admits any initiator without CHAP; remove "
                              f"{', '.join((['initiators'] if acls else []) + chap)} or demo_mode")
        elif not portal_is_loopback(portal[0]) and not insecure:
            r.problems.append(f"{where}.demo_mode: on portal {portal[0]}:{portal[1]} anyone who reaches it "
                              "logs in without CHAP; use a loopback portal (127.0.0.1, [::1]), initiators "
                              "with CHAP, or insecure_demo = true to mean it")
        return
    if not acls:
        r.problems.append(f"{where}: iscsi export needs initiators (ACLs) or demo_mode = true")
        if chap:
            r.problems.append(f"{where}.chap_user: CHAP is set per initiator ACL: give initiators")
    for user, secret in (("chap_user", "chap_secret_file"), ("mutual_user", "mutual_secret_file")):
        if (user in t) != (secret in t):
            have, missing = (user, secret) if user in t else (secret, user)
            r.problems.append(f"{where}.{missing}: required with {have} (CHAP needs a user and a secret)")
    if ("mutual_user" in t or "mutual_secret_file" in t) and "chap_user" not in t:
        r.problems.append(f"{where}.mutual_user: mutual CHAP needs one-way CHAP too (chap_user and "
                          "chap_secret_file): the target proves itself only to an initiator that did")


def _resolve(raw: str, base: Path) -> Path:
    """A path the operator wrote: relative ones are relative to the configuration file's directory."""
    p = Path(raw)
    return p if p.is_absolute() else base / p


def _read_lun(r: _Reader, t: dict, where: str, state_dir: Path, base: Path,
              machine_id: str) -> LunConfig | None:
    r.unknown(t, {"name", "type", "size", "path", "block_size", "vendor", "product", "revision",
                  "serial", "export", "resize", *_CONTROL_KEYS, *_REMOTE_KEYS}, where)
    name = r.take(t, "name", where, str, "", required=True)
    if name and not _NAME_RE.match(name):
        r.problems.append(f"{where}.name: letters, digits, '_', '.', '-' only (LIO object name)")
    lun_type = r.take(t, "type", where, str, "file")
    if lun_type not in LUN_TYPES:
        r.problems.append(f"{where}.type: must be one of {', '.join(LUN_TYPES)}")
    size = 0
    # A remote LUN's size is the target's (READ CAPACITY at start). Giving it here lets edifd export
    # the LUN before the target is reachable (a secure target needs the EDIF VM's authentication
    # first); the capacity is checked against it once the login completes.
    raw_size = r.take(t, "size", where, (str, int), None, required=lun_type != "remote")
    if raw_size is not None:
        try:
            size = parse_size(raw_size)
        except ValueError as e:
            r.problems.append(f"{where}.size: {e}")
    block_size = r.take(t, "block_size", where, int, 512)
    if block_size not in (512, 4096):
        r.problems.append(f"{where}.block_size: 512 or 4096")
    elif size % block_size:
        r.problems.append(f"{where}.size: not a multiple of block_size {block_size}")
    # Written: relative to the file's directory; not written: NAME.img in the state directory.
    raw_path = r.take(t, "path", where, str)
    path = _resolve(raw_path, base) if raw_path is not None else state_dir / f"{name}.img"
    vendor = _ascii_field(r, r.take(t, "vendor", where, str, "EDIF"), 8, f"{where}.vendor")
    product = _ascii_field(r, r.take(t, "product", where, str, "DISK"), 16, f"{where}.product")
    revision = _ascii_field(r, r.take(t, "revision", where, str, "0001"), 4, f"{where}.revision")
    serial = _ascii_field(r, r.take(t, "serial", where, str, f"EDIF-{name}"), 32, f"{where}.serial")
    export = _read_export(r, r.take(t, "export", where, dict, {}), f"{where}.export", name or "lun", base,
                          machine_id)
    channel_key, port_index, wwpn, queue_limit = _read_control(r, t, where, lun_type, size, block_size, base)
    hba_port, target_wwpn, remote_lun = _read_remote(r, t, where, lun_type)
    resize = r.take(t, "resize", where, bool, False)
    if "resize" in t and lun_type != "file":
        r.problems.append(f"{where}.resize: only for type = \"file\" (the LUN with a backing file)")
    return LunConfig(name, lun_type, size, path, block_size, vendor, product, revision, serial, export,
                     channel_key, port_index, wwpn, queue_limit, hba_port, target_wwpn, remote_lun, resize)


def _wwpn(r: _Reader, raw: str | None, where: str) -> int | None:
    if raw is None:
        return None
    if not _WWPN_RE.match(raw) or not int(raw.replace(":", ""), 16):
        r.problems.append(f"{where}: 16 hex digits (0x optional) or xx:xx:...:xx, not zero")
        return None
    return int(raw.replace(":", ""), 16)


def _read_remote(r: _Reader, t: dict, where: str, lun_type: str) -> tuple[str | None, int | None, int]:
    if lun_type != "remote":
        for key in _REMOTE_KEYS:
            if key in t:
                r.problems.append(f"{where}.{key}: only for type = \"remote\"")
        return None, None, 0
    hba_port = r.take(t, "hba_port", where, str, None, required=True)
    target_wwpn = _wwpn(r, r.take(t, "target_wwpn", where, str, None, required=True), f"{where}.target_wwpn")
    remote_lun = r.take(t, "remote_lun", where, int, 0)
    if not 0 <= remote_lun < 1 << 14:
        r.problems.append(f"{where}.remote_lun: 0..16383")
    return hba_port, target_wwpn, remote_lun


def _read_hba(r: _Reader, h: dict, base: Path) -> HbaConfig:
    r.unknown(h, {"io_timeout", "port"}, "hba")
    io_timeout = float(r.take(h, "io_timeout", "hba", (int, float), 30.0))
    if not 1 <= io_timeout <= 600:
        r.problems.append("hba.io_timeout: seconds between 1 and 600")
    ports: list[HbaPortConfig] = []
    for i, t in enumerate(r.take(h, "port", "hba", list, [])):
        where = f"hba.port[{i}]"
        if not isinstance(t, dict):
            r.problems.append(f"{where}: expected a table ([[hba.port]])")
            continue
        r.unknown(t, {"name", "wwpn", "wwnn", "target", "security", "pcap"}, where)
        name = r.take(t, "name", where, str, "", required=True)
        if name and not _NAME_RE.match(name):
            r.problems.append(f"{where}.name: letters, digits, '_', '.', '-' only")
        wwpn = _wwpn(r, r.take(t, "wwpn", where, str, None, required=True), f"{where}.wwpn")
        wwnn = _wwpn(r, r.take(t, "wwnn", where, str, None, required=True), f"{where}.wwnn")
        raw_target = r.take(t, "target", where, str, "", required=True)
        host, _, port_s = raw_target.rpartition(":")
        target = ("", 0)
        if raw_target and (not host or not port_s.isdigit() or not 0 < int(port_s) < 65536):
            r.problems.append(f"{where}.target: expected ADDRESS:PORT of the target port, got {raw_target!r}")
        elif raw_target:
            target = (host, int(port_s))
        security = r.take(t, "security", where, bool, False)
        raw_pcap = r.take(t, "pcap", where, str, None)
        pcap = None if raw_pcap is None else _resolve(raw_pcap, base)
        if wwpn is not None and wwnn is not None and target[1]:
            ports.append(HbaPortConfig(name, wwpn, wwnn, target, security, pcap))
    names = [p.name for p in ports]
    for n in sorted({n for n in names if names.count(n) > 1}):
        r.problems.append(f"hba.port: duplicate name {n!r}")
    return HbaConfig(io_timeout, tuple(ports))


def _read_control(r: _Reader, t: dict, where: str, lun_type: str, size: int, block_size: int,
                  base: Path) -> tuple[Path | None, int, int | None, int]:
    if lun_type != "control":
        for key in _CONTROL_KEYS:
            if key in t:
                r.problems.append(f"{where}.{key}: only for type = \"control\"")
        return None, 0, None, 64
    raw_key = r.take(t, "channel_key", where, str)
    key_path = _resolve(raw_key, base) if raw_key is not None else None
    port_index = r.take(t, "port_index", where, int, 0)
    if not 0 <= port_index <= 0xFFFF:
        r.problems.append(f"{where}.port_index: 0..65535")
    wwpn = None
    raw_wwpn = r.take(t, "wwpn", where, str)
    if raw_wwpn is not None:
        if not _WWPN_RE.match(raw_wwpn) or not int(raw_wwpn.replace(":", ""), 16):
            r.problems.append(f"{where}.wwpn: 16 hex digits (0x optional) or xx:xx:...:xx, not zero")
        else:
            wwpn = int(raw_wwpn.replace(":", ""), 16)
    written = "queue_limit" in t
    queue_limit = r.take(t, "queue_limit", where, int, DEFAULT_QUEUE_LIMIT)
    if size and block_size in (512, 4096):
        from edifd.proto.lba import LANES, ChannelGeometry, GeometryError

        try:
            window = ChannelGeometry(block_size, size // block_size).window
        except GeometryError as e:
            r.problems.append(f"{where}.size: {e}")
        else:
            top = window // 4 - LANES
            if not written:
                # The default adapts to a small LUN; only a LUN too small for any queue is an error,
                # and it names the setting the operator wrote (size), not the default.
                queue_limit = min(DEFAULT_QUEUE_LIMIT, top)
                if top < 2:
                    r.problems.append(f"{where}.size: a control LUN of {size} bytes holds fewer than 2 "
                                      "upstream messages (queue_limit); give it a larger size")
            elif not 2 <= queue_limit <= top:
                r.problems.append(f"{where}.queue_limit: 2..{top} for a control LUN of this size "
                                  f"({size} bytes); lower queue_limit or raise size")
    return key_path, port_index, wwpn, queue_limit


def parse_config(data: dict, source: str = "config", base: Path | None = None,
                 machine_id: str | None = None) -> Config:
    """The configuration in `data` (decoded TOML), or ConfigError with every problem. Relative paths
    (`daemon.state_dir`, a LUN's `path` and `channel_key`, a port's `pcap`, an export's CHAP secret
    files) are taken relative to `base`, the configuration file's directory (default: the current
    directory); a LUN without `path` gets NAME.img in the state directory. A vhost export without `wwn`
    gets one derived from `machine_id` (default: this host's, `read_machine_id`) and the LUN's name."""
    base = base if base is not None else Path.cwd()
    machine_id = machine_id if machine_id is not None else read_machine_id()
    r = _Reader()
    r.unknown(data, {"daemon", "lun", "hba", "metrics"}, "")
    metrics, problems = parse_metrics_table(data.get("metrics"))
    r.problems += problems
    d = r.take(data, "daemon", "", dict, {})
    r.unknown(d, {"state_dir", "park_time", "cmd_time_out", "log_level", "redeliver_after"}, "daemon")
    state_dir = _resolve(r.take(d, "state_dir", "daemon", str, "/var/lib/edifd"), base)
    park_time = float(r.take(d, "park_time", "daemon", (int, float), 5.0))
    cmd_time_out = r.take(d, "cmd_time_out", "daemon", int, None)
    log_level = r.take(d, "log_level", "daemon", str, "info")
    if not 0.1 <= park_time <= 300:
        r.problems.append("daemon.park_time: seconds between 0.1 and 300")
    if cmd_time_out not in (None, 0) and cmd_time_out < park_time + MIN_CMD_TIMEOUT_MARGIN:
        r.problems.append(
            f"daemon.cmd_time_out: must be 0 (off) or at least park_time + {MIN_CMD_TIMEOUT_MARGIN:g} s, "
            "so the kernel never times out a parked READ before our heartbeat completes it")
    if log_level not in ("debug", "info", "warning", "error"):
        r.problems.append("daemon.log_level: debug, info, warning or error")
    redeliver_after = float(r.take(d, "redeliver_after", "daemon", (int, float), 1.0))
    if not 0.05 <= redeliver_after <= 60:
        r.problems.append("daemon.redeliver_after: seconds between 0.05 and 60")
    daemon = DaemonConfig(state_dir, park_time, cmd_time_out, log_level, redeliver_after)

    luns: list[LunConfig] = []
    for i, t in enumerate(r.take(data, "lun", "", list, [])):
        if not isinstance(t, dict):
            r.problems.append(f"lun[{i}]: expected a table ([[lun]])")
            continue
        lun = _read_lun(r, t, f"lun[{i}]", state_dir, base, machine_id)
        if lun is not None:
            luns.append(lun)
    hba = _read_hba(r, r.take(data, "hba", "", dict, {}), base)
    hba_names = {p.name for p in hba.ports}
    for i, lun in enumerate(luns):
        if lun.type == "remote" and lun.hba_port and lun.hba_port not in hba_names:
            r.problems.append(f"lun[{i}].hba_port: no [[hba.port]] named {lun.hba_port!r}")
    _duplicate_names(r, luns)
    seen: set[str] = set()
    ports: set[int] = set()
    for lun in luns:
        if lun.name in seen:
            r.problems.append(f"lun: duplicate name {lun.name!r}")
        seen.add(lun.name)
        if lun.type == "control":
            if lun.port_index in ports:
                r.problems.append(f"lun: two control LUNs for port_index {lun.port_index} (one per HBA port)")
            ports.add(lun.port_index)
    if r.problems:
        raise ConfigError(r.problems, source)
    return Config(daemon, tuple(luns), hba, metrics)


def _duplicate_names(r: _Reader, luns: list[LunConfig]) -> None:
    """Two exports under one WWN (a tcm_loop/vhost naa., an iSCSI target IQN) or two LUNs with one
    unit serial (the backstore's WWN, VPD 0x80/0x83): LIO would merge or refuse them, a multipath
    initiator would take two disks for one."""
    owners: dict[tuple[str, str], int] = {}
    for i, lun in enumerate(luns):
        ex = lun.export
        keys = [("export.wwn", ex.wwn.lower()) if ex.wwn and ex.fabric in ("loopback", "vhost") else None,
                ("export.iqn", ex.iqn.lower()) if ex.iqn and ex.fabric == "iscsi" else None,
                ("serial", lun.serial)]
        for key in keys:
            if key is None:
                continue
            if key in owners:
                r.problems.append(f"lun[{i}].{key[0]}: {key[1]} is also lun[{owners[key]}]'s "
                                  "(one WWN per export, one serial per LUN)")
            else:
                owners[key] = i


MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def read_machine_id(files: tuple[Path, ...] = MACHINE_ID_FILES) -> str:
    """This host's machine-id (machine-id(5)): set once at installation, kept across reboots. "" when
    there is none (derived WWNs are then the same on every such host, which matters only to a host
    that runs two edifd with the same LUN names)."""
    for f in files:
        try:
            text = f.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text
    return ""


def load_config(path: str | Path) -> Config:
    path = Path(path)
    return parse_config(load_toml(path, ConfigError), str(path), path.absolute().parent)


# ---------------------------------------------------------------------------------------------
# The host checks: what the configuration names on this machine (key files, backing files,
# directories). `edifd check-config` and `edifd run` both call `check_host`, and the file LUN's
# open calls `backing_problem`, so the three can never disagree.

# LUN types whose `path` may be a block device. None today: a device node is refused.
BLOCK_DEVICE_TYPES: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostCheck:
    """Problems (`run` refuses to start, `check-config` fails) and warnings (both say them)."""

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _mib(n: int) -> str:
    return f"{n} bytes ({n / (1 << 20):g} MiB)" if n >= 1 << 20 else f"{n} bytes"


def backing_problem(lun: LunConfig, where: str) -> str | None:
    """Why `lun`'s backing path must not be served, or None. A missing file is fine (edifd creates
    it, sparse); a missing directory is not (`lun_dir_problem`)."""
    try:
        st = os.stat(lun.path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{where}.path: cannot stat {lun.path}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{where}.path: {lun.path} is a directory; give the path of the backing file"
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        if lun.type not in BLOCK_DEVICE_TYPES:
            return (f"{where}.path: {lun.path} is a device node; a {lun.type} LUN needs a regular "
                    "backing file")
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"{where}.path: {lun.path} is not a regular file"
    if st.st_size != lun.size and not lun.resize:
        return (f"{where}.path: {lun.path} exists with {_mib(st.st_size)}, the LUN's size is "
                f"{_mib(lun.size)}; give the path of a new file or of one of that size, or set "
                f"{where}.resize = true to let edifd "
                + ("grow it" if st.st_size < lun.size else "serve only its first size bytes"))
    return None


def lun_dir_problem(lun: LunConfig, where: str, state_dir: Path) -> str | None:
    """A file LUN's directory that does not exist (other than the state dir, which run creates)."""
    parent = lun.path.parent
    if parent == state_dir or parent.is_dir():
        return None
    if parent.exists():
        return f"{where}.path: {parent} is not a directory"
    return f"{where}.path: directory {parent} does not exist; create it (edifd creates only daemon.state_dir)"


def _chap_problems(ex: ExportConfig, where: str) -> list[str]:
    """Each CHAP secret file loaded under the secret-file policy (edifd run loads them again as it
    makes the export, with the same function); the two directions may not share a secret."""
    problems: list[str] = []
    secrets: dict[str, str] = {}
    for key in ("chap_secret_file", "mutual_secret_file"):
        path = getattr(ex, key)
        if path is None:
            continue
        try:
            secrets[key] = load_chap_secret(path)
        except SecretFileError as e:
            problems.append(f"{where}.{key}: {e}")
    if len(secrets) == 2 and secrets["chap_secret_file"] == secrets["mutual_secret_file"]:
        # RFC 3720 8.2.1: a secret used in both directions lets an attacker reflect a challenge.
        problems.append(f"{where}.mutual_secret_file: holds the same secret as chap_secret_file; each "
                        "direction needs its own (RFC 3720 8.2.1)")
    secrets.clear()
    return problems


def check_host(cfg: Config, *, keys: bool = True) -> HostCheck:
    """Every check of what `cfg` names on this host. Reads key and CHAP secret files (one permission
    policy for all tools: `edifd.edges.secret_file`), stats backing paths and directories; changes nothing.

    `keys=False` (edifd run) leaves the channel key files to the control LUN's open, which loads them
    with the same `load_channel_key` and refuses them with the same words (a failed start undoes
    itself). CHAP secret files are loaded either way, so run refuses a bad one before LIO is touched
    (LIO's export loads it again, with the same `load_chap_secret`, as it writes it to configfs)."""
    problems: list[str] = []
    warnings: list[str] = []
    sd = cfg.daemon.state_dir
    if not sd.exists():
        warnings.append(f"daemon.state_dir: {sd} does not exist; edifd run will create it")
    elif not sd.is_dir():
        problems.append(f"daemon.state_dir: {sd} is not a directory")
    if not cfg.luns:
        warnings.append("no [[lun]]: edifd would serve nothing (0 LUNs)")
    backing: dict[tuple[int, int] | str, int] = {}
    for i, lun in enumerate(cfg.luns):
        where = f"lun[{i}]"
        if lun.type == "control":
            if lun.channel_key is None:
                warnings.append(f"{where}.channel_key: not set; control LUN {lun.name} will refuse every "
                                "message (WRITE) from the EDIF VM")
            elif keys:
                try:
                    load_channel_key(lun.channel_key)
                except ChannelKeyError as e:
                    problems.append(f"{where}.channel_key: {e}")
        problems += _chap_problems(lun.export, f"{where}.export")
        if lun.export.mode == "acl" and not portal_is_loopback(lun.export.portal[0]):
            warnings.append(f"{where}.export: initiators without CHAP on portal {lun.export.portal[0]}: "
                            "anyone who reaches it and states an allowed initiator name logs in; set "
                            "chap_user and chap_secret_file")
        if lun.type != "file":
            continue
        for problem in (lun_dir_problem(lun, where, sd), backing_problem(lun, where)):
            if problem:
                problems.append(problem)
        # One backing file per LUN: the same path, or two names (a hard or symbolic link) of one file.
        ids: list[tuple[int, int] | str] = [os.path.realpath(lun.path)]
        try:
            st = os.stat(lun.path)
            ids.append((st.st_dev, st.st_ino))
        except OSError:
            pass
        other = next((backing[k] for k in ids if k in backing), None)
        if other is not None:
            problems.append(f"{where}.path: {lun.path} is also lun[{other}]'s backing file "
                            "(one backing file per LUN)")
        for k in ids:
            backing.setdefault(k, i)
    return HostCheck(tuple(problems), tuple(warnings))
