"""edif-target configuration (TOML), validated completely before anything is opened.

    pcap = "/var/tmp/edif-target.pcap"      # optional: trace of every frame (linktype 225)

    [[port]]
    name = "t0"
    wwpn = "21:00:00:1b:32:00:00:02"          # or "0x2100001b32000002"
    wwnn = "20:00:00:1b:32:00:00:02"
    listen = "127.0.0.1:3225"                 # host[:port], default port 3225 (FCIP)
    security = false                          # FC-SP security bit in PLOGI ACC

      [[port.lun]]
      lun = 0
      path = "/var/lib/edif-target/t0-lun0.img" # sparse file, created on demand
      size = "1GiB"
      block_size = 512
      read_only = false

Every problem is reported with its key path (``port[0].lun[1].size: ...``) in one `ConfigError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edifd.confcheck import load_toml
from edifd.config import ConfigError, parse_size
from edifd.fc import FCIP_TCP_PORT
from edifd.scsi import BLOCK_SIZES

from .server import LunConfig, TargetConfig, TargetPortConfig

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_WWN_COLON = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){7}$")
_WWN_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{16}$")

__all__ = ["ConfigError", "load_target_config", "parse_listen", "parse_target_config", "parse_wwn"]


def parse_wwn(value: Any) -> int:
    """'21:00:00:1b:32:00:00:02', '0x2100001b32000002', '2100001b32000002' or an int -> int."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and (_WWN_COLON.match(value) or _WWN_HEX.match(value)):
        n = int(value.replace(":", "").removeprefix("0x"), 16)
    else:
        raise ValueError(f"expected a WWN like 21:00:00:1b:32:00:00:02, got {value!r}")
    if not 0 < n < 1 << 64:
        raise ValueError("a WWN is a non-zero 64-bit value")
    return n


def parse_listen(value: Any) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); the default port is 3225."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected host[:port]")
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port_s = rest.removeprefix(":") if rest else ""
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    else:
        host, port_s = v, ""
    if not host:
        raise ValueError("empty host")
    if not port_s:
        return host, FCIP_TCP_PORT
    if not port_s.isdigit() or not 0 <= int(port_s) < 65536:
        raise ValueError(f"bad TCP port {port_s!r}")
    return host, int(port_s)


def _lun(t: Any, where: str, problems: list[str], base: Path) -> LunConfig | None:
    if not isinstance(t, dict):
        problems.append(f"{where}: expected a table")
        return None
    n = len(problems)
    unknown = set(t) - {"lun", "path", "size", "block_size", "read_only"}
    problems += [f"{where}.{k}: unknown key" for k in sorted(unknown)]
    lun = t.get("lun")
    if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun < 16384:
        problems.append(f"{where}.lun: expected an integer 0..16383")
    path = t.get("path")
    if not isinstance(path, str) or not path:
        problems.append(f"{where}.path: expected a file path")
    bs = t.get("block_size", 512)
    if bs not in BLOCK_SIZES or isinstance(bs, bool):
        problems.append(f"{where}.block_size: must be 512, 1024, 2048 or 4096")
    size = 0
    try:
        size = parse_size(t.get("size"))
        if isinstance(bs, int) and bs and size % bs:
            problems.append(f"{where}.size: {size} is not a multiple of the block size {bs}")
    except ValueError as e:
        problems.append(f"{where}.size: {e}")
    ro = t.get("read_only", False)
    if not isinstance(ro, bool):
        problems.append(f"{where}.read_only: expected true or false")
    if len(problems) > n:
        return None
    p = Path(path)  # type: ignore[arg-type]
    if not p.is_absolute():
        p = base / p
    return LunConfig(lun, str(p), size, bs, ro)  # type: ignore[arg-type]


def _auth(value: Any, where: str, problems: list[str], base: Path) -> Any:
    """The EDIF responder's credentials: a TOML file in edif-agent's format with [initiators."<wwpn>"]
    tables (PSK files or certificates + CA) and an optional [ike] table (docs/secapp.md §4, §6)."""
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: expected the path of an initiator-credentials file")
        return None
    from edifd.secapp.config import SecConfigError, load_config  # EDIF only

    p = Path(value)
    if not p.is_absolute():
        p = base / p
    try:
        cfg = load_config(p, peers_key="initiators")
    except SecConfigError as e:
        problems += [f"{where} ({p}): {x}" for x in e.problems]
        return None
    if not cfg.peers:
        problems.append(f"{where} ({p}): no [initiators.\"<wwpn>\"] entries")
        return None
    return cfg


def parse_target_config(data: dict[str, Any], base: Path = Path("."), source: str = "config") -> TargetConfig:
    problems: list[str] = []
    unknown = set(data) - {"pcap", "port"}
    problems += [f"{k}: unknown key" for k in sorted(unknown)]
    pcap = data.get("pcap")
    if pcap is not None and (not isinstance(pcap, str) or not pcap):
        problems.append("pcap: expected a file path")
    raw_ports = data.get("port")
    if not isinstance(raw_ports, list) or not raw_ports:
        problems.append("port: at least one [[port]] table is required")
        raw_ports = []
    ports: list[TargetPortConfig] = []
    for i, t in enumerate(raw_ports):
        where = f"port[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{where}: expected a table")
            continue
        n = len(problems)
        unknown = set(t) - {"name", "wwpn", "wwnn", "listen", "security", "lun", "auth"}
        problems += [f"{where}.{k}: unknown key" for k in sorted(unknown)]
        name = t.get("name", f"port{i}")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append(f"{where}.name: 1-64 characters of A-Z a-z 0-9 _ . -")
        wwns = {}
        for key in ("wwpn", "wwnn"):
            try:
                wwns[key] = parse_wwn(t.get(key))
            except ValueError as e:
                problems.append(f"{where}.{key}: {e}")
        try:
            listen = parse_listen(t.get("listen", f"0.0.0.0:{FCIP_TCP_PORT}"))
        except ValueError as e:
            problems.append(f"{where}.listen: {e}")
        sec = t.get("security", False)
        if not isinstance(sec, bool):
            problems.append(f"{where}.security: expected true or false")
        auth = None
        raw_auth = t.get("auth")
        if raw_auth is not None:
            auth = _auth(raw_auth, f"{where}.auth", problems, base)
            sec = True
        raw_luns = t.get("lun", [])
        if not isinstance(raw_luns, list):
            problems.append(f"{where}.lun: expected [[port.lun]] tables")
            raw_luns = []
        luns = [_lun(lt, f"{where}.lun[{j}]", problems, base) for j, lt in enumerate(raw_luns)]
        numbers = [x.lun for x in luns if x is not None]
        if len(set(numbers)) != len(numbers):
            problems.append(f"{where}.lun: duplicate LUN numbers")
        if len(problems) == n:
            ports.append(TargetPortConfig(name, wwns["wwpn"], wwns["wwnn"], listen,
                                          tuple(x for x in luns if x is not None), sec, auth))
    for key, what in (("name", "names"), ("wwpn", "WWPNs"), ("listen", "listen addresses")):
        values = [getattr(p, key) for p in ports]
        if len(set(values)) != len(values):
            problems.append(f"port: duplicate {what}")
    paths = [lc.path for p in ports for lc in p.luns]
    if len(set(paths)) != len(paths):
        problems.append("port.lun.path: two LUNs share a backing file")
    if problems:
        raise ConfigError(problems, source)
    return TargetConfig(tuple(ports), pcap)


def load_target_config(path: str | Path) -> TargetConfig:
    p = Path(path)
    return parse_target_config(load_toml(p, ConfigError), p.parent, str(p))
