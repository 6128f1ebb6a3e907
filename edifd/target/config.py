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

Every problem is reported with its key path (``port[0].lun[1].size: ...``) in one `ConfigError`, in one
pass: a duplicate name, WWPN, listen address, LUN number or backing file is named at each later use
(``port[1].wwpn: duplicate WWPN ..., also port[0].wwpn``) even when the ports have other problems too.
Type errors use TOML's words (``expected a string, got an integer``); a missing key is ``required``.
WWPNs and WWNNs are strings (a TOML integer would be decimal). `check_paths` (``check-config``) also
checks that the directories of the backing files and the pcap exist. Relative paths (a LUN's `path`,
`pcap`, the auth credential files) are relative to the configuration file's directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edifd.confcheck import load_toml, toml_type
from edifd.config import ConfigError, parse_size
from edifd.fc import FCIP_TCP_PORT
from edifd.metrics import parse_metrics_table
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


def _bool(t: dict, key: str, where: str, problems: list[str], default: bool = False) -> bool:
    v = t.get(key, default)
    if not isinstance(v, bool):
        problems.append(f"{where}.{key}: expected a boolean (true or false), got {toml_type(v)}")
        return default
    return v


def _file_path(v: Any, where: str, problems: list[str], what: str = "a file path") -> bool:
    """A path given as a TOML string; records the problem and returns False otherwise."""
    if v is None:
        problems.append(f"{where}: required")
    elif not isinstance(v, str):
        problems.append(f"{where}: expected a string ({what}), got {toml_type(v)}")
    elif not v:
        problems.append(f"{where}: empty file path")
    elif "\0" in v:
        problems.append(f"{where}: a file path cannot contain a NUL character")
    else:
        return True
    return False


def _check_file_dir(p: Path, where: str, problems: list[str]) -> None:
    """The directory a file is created in must exist (checked by check-config, before anything runs)."""
    d = p.parent
    if not d.is_dir():
        problems.append(f"{where}: directory {d} does not exist" if not d.exists()
                        else f"{where}: {d} is not a directory")
    elif p.is_dir():
        problems.append(f"{where}: {p} is a directory, not a file")


def _lun(t: Any, where: str, problems: list[str], base: Path,
         check_paths: bool) -> tuple[LunConfig | None, int | None, str | None]:
    """(the LUN, or None if it has problems; its number and its backing file's path when those parsed,
    for the duplicate checks)."""
    if not isinstance(t, dict):
        problems.append(f"{where}: expected a table, got {toml_type(t)}")
        return None, None, None
    n = len(problems)
    unknown = set(t) - {"lun", "path", "size", "block_size", "read_only"}
    problems += [f"{where}.{k}: unknown key" for k in sorted(unknown)]
    lun = t.get("lun")
    number = None
    if lun is None:
        problems.append(f"{where}.lun: required")
    elif not isinstance(lun, int) or isinstance(lun, bool):
        problems.append(f"{where}.lun: expected an integer 0..16383, got {toml_type(lun)}")
    elif not 0 <= lun < 16384:
        problems.append(f"{where}.lun: must be 0..16383, got {lun}")
    else:
        number = lun
    path = t.get("path")
    p = None
    if _file_path(path, f"{where}.path", problems):
        p = Path(path)
        if not p.is_absolute():
            p = base / p
        if check_paths:
            _check_file_dir(p, f"{where}.path", problems)
    bs = t.get("block_size", 512)
    if not isinstance(bs, int) or isinstance(bs, bool):
        problems.append(f"{where}.block_size: expected an integer (512, 1024, 2048 or 4096), "
                        f"got {toml_type(bs)}")
    elif bs not in BLOCK_SIZES:
        problems.append(f"{where}.block_size: must be 512, 1024, 2048 or 4096")
    size = 0
    raw_size = t.get("size")
    if raw_size is None:
        problems.append(f"{where}.size: required")
    elif not isinstance(raw_size, str | int) or isinstance(raw_size, bool):
        problems.append(f"{where}.size: expected a size such as 64MiB (a string or an integer), "
                        f"got {toml_type(raw_size)}")
    else:
        try:
            size = parse_size(raw_size)
            if isinstance(bs, int) and bs in BLOCK_SIZES and size % bs:
                problems.append(f"{where}.size: {size} is not a multiple of the block size {bs}")
        except ValueError as e:
            problems.append(f"{where}.size: {e}")
    ro = _bool(t, "read_only", where, problems)
    path_s = str(p) if p is not None else None
    if len(problems) > n or p is None:
        return None, number, path_s
    return LunConfig(lun, str(p), size, bs, ro), number, path_s


def _auth(value: Any, where: str, problems: list[str], base: Path) -> Any:
    """The EDIF responder's credentials: a TOML file in edif-agent's format with [initiators."<wwpn>"]
    tables (PSK files or certificates + CA) and an optional [ike] table (docs/secapp.md §4, §6)."""
    if not _file_path(value, where, problems, "the path of an initiator-credentials file"):
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


def _wwn(v: Any, where: str, problems: list[str]) -> int | None:
    if v is None:
        problems.append(f"{where}: required")
        return None
    if not isinstance(v, str):  # TOML integers would be read in decimal: 16 hex digits are text
        problems.append(f"{where}: expected a string like 21:00:00:1b:32:00:00:02 or 0x2100001b32000002, "
                        f"got {toml_type(v)}")
        return None
    try:
        return parse_wwn(v)
    except ValueError as e:
        problems.append(f"{where}: {e}")
        return None


def _duplicates(seen: list[tuple[str, Any, str]], what: str, problems: list[str]) -> None:
    """`seen` is (key path, value, shown value) in file order: every later use of a value is named."""
    first: dict[Any, str] = {}
    for where, value, shown in seen:
        if value in first:
            problems.append(f"{where}: duplicate {what} {shown}, also {first[value]}")
        else:
            first[value] = where


def parse_target_config(data: dict[str, Any], base: Path = Path("."), source: str = "config",
                        check_paths: bool = False) -> TargetConfig:
    """Validate a decoded TOML document; every problem is collected. `check_paths` (check-config) also
    checks that the directories of the LUN backing files and of the pcap exist."""
    problems: list[str] = []
    unknown = set(data) - {"pcap", "port", "metrics"}
    problems += [f"{k}: unknown key" for k in sorted(unknown)]
    metrics, metrics_problems = parse_metrics_table(data.get("metrics"))
    problems += metrics_problems
    pcap = data.get("pcap")
    if pcap is not None and _file_path(pcap, "pcap", problems):
        pcap = str(Path(pcap) if Path(pcap).is_absolute() else base / pcap)  # relative: to the file's dir
        if check_paths:
            _check_file_dir(Path(pcap).absolute(), "pcap", problems)
    elif pcap is not None:
        pcap = None
    raw_ports = data.get("port")
    if raw_ports is not None and not isinstance(raw_ports, list):
        problems.append(f"port: expected an array of [[port]] tables, got {toml_type(raw_ports)}")
        raw_ports = []
    elif not raw_ports:
        problems.append("port: at least one [[port]] table is required")
        raw_ports = []
    ports: list[TargetPortConfig] = []
    names: list[tuple[str, Any, str]] = []
    wwpns: list[tuple[str, Any, str]] = []
    listens: list[tuple[str, Any, str]] = []
    backing: list[tuple[str, Any, str]] = []
    for i, t in enumerate(raw_ports):
        where = f"port[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{where}: expected a table, got {toml_type(t)}")
            continue
        n = len(problems)
        unknown = set(t) - {"name", "wwpn", "wwnn", "listen", "security", "lun", "auth"}
        problems += [f"{where}.{k}: unknown key" for k in sorted(unknown)]
        name = t.get("name", f"port{i}")
        if not isinstance(name, str):
            problems.append(f"{where}.name: expected a string, got {toml_type(name)}")
        elif not _NAME_RE.match(name):
            problems.append(f"{where}.name: 1-64 characters of A-Z a-z 0-9 _ . -")
        else:
            names.append((f"{where}.name", name, repr(name)))
        wwpn = _wwn(t.get("wwpn"), f"{where}.wwpn", problems)
        wwnn = _wwn(t.get("wwnn"), f"{where}.wwnn", problems)
        if wwpn is not None:
            wwpns.append((f"{where}.wwpn", wwpn, t["wwpn"]))
        raw_listen = t.get("listen", f"0.0.0.0:{FCIP_TCP_PORT}")
        listen = None
        if not isinstance(raw_listen, str):
            problems.append(f"{where}.listen: expected a string host[:port], got {toml_type(raw_listen)}")
        else:
            try:
                listen = parse_listen(raw_listen)
                if listen[1] != 0:  # port 0: each port gets its own ephemeral TCP port
                    listens.append((f"{where}.listen", listen, raw_listen))
            except ValueError as e:
                problems.append(f"{where}.listen: {e}")
        sec = _bool(t, "security", where, problems)
        auth = None
        raw_auth = t.get("auth")
        if raw_auth is not None:
            auth = _auth(raw_auth, f"{where}.auth", problems, base)
            sec = True
        raw_luns = t.get("lun", [])
        if not isinstance(raw_luns, list):
            problems.append(f"{where}.lun: expected an array of [[port.lun]] tables, "
                            f"got {toml_type(raw_luns)}")
            raw_luns = []
        luns, numbers = [], []
        for j, lt in enumerate(raw_luns):
            lc, number, path = _lun(lt, f"{where}.lun[{j}]", problems, base, check_paths)
            luns.append(lc)
            if number is not None:
                numbers.append((f"{where}.lun[{j}].lun", number, f"{number}"))
            if path is not None:
                backing.append((f"{where}.lun[{j}].path", path, path))
        _duplicates(numbers, "LUN number", problems)
        if len(problems) == n:
            ports.append(TargetPortConfig(name, wwpn, wwnn, listen,  # type: ignore[arg-type]
                                          tuple(x for x in luns if x is not None), sec, auth))
    _duplicates(names, "port name", problems)
    _duplicates(wwpns, "WWPN", problems)
    _duplicates(listens, "listen address", problems)
    _duplicates(backing, "backing file", problems)
    if problems:
        raise ConfigError(problems, source)
    return TargetConfig(tuple(ports), pcap, metrics)


def load_target_config(path: str | Path, check_paths: bool = False) -> TargetConfig:
    """Read and validate a TOML file (UTF-8); relative LUN and auth paths are relative to its directory."""
    p = Path(path)
    return parse_target_config(load_toml(p, ConfigError), p.parent, str(p), check_paths)
