"""What edifd reports about itself: the status `edifctl` shows, from the control socket or status.json.

The daemon rewrites it atomically about once a second and on exit. It holds names, counters and
states only; nothing in it is secret (channel keys stay in their files, SA keys never leave the HBA).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edifd.daemon import Daemon

STATUS_FILE = "status.json"
HBA_STATUS_TIMEOUT = 1.0  # s: a busy HBA loop delays the status by at most this (then says so)


def _counters(obj: Any) -> dict[str, Any] | None:
    """Counters an object exposes as a dict or a dataclass (`counters` or `stats`), else None."""
    for attr in ("counters", "stats"):
        value = getattr(obj, attr, None)
        if callable(value):
            value = value()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items() if isinstance(v, (int, float, str, bool))}
    return None


def collect(daemon: Daemon, *, state: str = "running") -> dict[str, Any]:
    luns = []
    for served in daemon.luns:
        cfg = served.config
        ex = served.export
        entry: dict[str, Any] = {
            "name": cfg.name,
            "type": cfg.type,
            "size": cfg.size,
            "block_size": cfg.block_size,
            "export": {"fabric": cfg.export.fabric, "wwn": ex.wwn if ex is not None else None},
            "uio": served.backstore.uio_name if served.backstore is not None else None,
            "adopted": served.adopted,
            "ring": _counters(served.handler) if served.handler is not None else None,
            "medium": _counters(served.medium),
        }
        entry.update(served.kind.status())  # a control LUN: its channel and its EDIF engine
        luns.append(entry)
    sessions, sas = _sessions(daemon, luns)
    return {"pid": os.getpid(), "state": state, "time": time.time(), "luns": luns, "sessions": sessions,
            "sas": sas}


def _sessions(daemon: Daemon, luns: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    """One entry per HBA port (its remote port: link, login state, and, when a control LUN's EDIF engine
    drives it, the EDIF view: generation, auth state), and one per port with SAs (SPIs, ciphers, ages,
    frames and bytes, the login's rekeys and ESP drops). Built from the LUN entries' `edif` tables and
    the HBA's own status; no key material is in either."""
    from edifd.fc import wwn_str

    engines = {lun["edif"].get("local_wwpn"): (lun["name"], lun["edif"]) for lun in luns
               if isinstance(lun.get("edif"), dict) and "error" not in lun["edif"]}
    hba = getattr(daemon, "hba", None)
    ports: list[Any] = []
    error = None
    if hba is not None:
        try:
            ports = hba.status(timeout=HBA_STATUS_TIMEOUT)
        except Exception as e:  # a busy or stopped HBA loop: say so, the rest of the status stands
            error = f"{type(e).__name__}: {e}"
    sessions: list[dict[str, Any]] = []
    sas: list[dict[str, Any]] = []
    for p in ports:
        wwpn = wwn_str(p.wwpn)
        ctl, ed = engines.get(wwpn, (None, None))
        s: dict[str, Any] = {
            "port": p.name, "wwpn": wwpn, "remote_wwpn": wwn_str(p.remote_wwpn) if p.remote_wwpn else None,
            "state": p.state, "connected": p.connected, "outstanding": p.outstanding, "control_lun": ctl,
        }
        if ed is not None:
            s.update({k: ed.get(k) for k in ("generation", "auth", "secure", "app_active", "logged_in")})
            table = ed.get("sa") if isinstance(ed.get("sa"), dict) else {}
            esp = ed.get("esp") if isinstance(ed.get("esp"), dict) else {}
            entries = [{k: e.get(k) for k in ("direction", "spi", "cipher", "age", "frames", "bytes")}
                       for d in ("tx", "rx") for e in table.get(d) or [] if isinstance(e, dict)]
            if entries or esp:
                sas.append({"port": p.name, "control_lun": ctl, "generation": ed.get("generation"),
                            "remote_wwpn": s["remote_wwpn"], "rekeys": esp.get("rekeys", 0),
                            "pending_rx_delete": table.get("pending_rx_delete"),
                            "drops": esp.get("drops", {}), "sas": entries})
        sessions.append(s)
    if error is not None:
        sessions.append({"error": f"HBA status: {error}"})
    return sessions, sas


def write_status(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class StatusFileError(ValueError):
    """The status file is not what edifd writes (truncated, edited, another program's)."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_status(data: Any) -> dict[str, Any]:
    """`data` if it has the shape `collect` gives it (what edifctl relies on), else StatusFileError
    naming the first thing wrong. Optional parts (counters, channel, EDIF) must be tables if present."""
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
        raise StatusFileError(f"expected a JSON object, got {kind.get(type(data), 'null')}")
    if not _number(data.get("time")):
        raise StatusFileError(f"time: expected a number, got {data.get('time')!r}")
    if not isinstance(data.get("state"), str):
        raise StatusFileError("state: expected a string")
    luns = data.get("luns", [])
    if not isinstance(luns, list):
        raise StatusFileError("luns: expected a list")
    for i, lun in enumerate(luns):
        if not isinstance(lun, dict):
            raise StatusFileError(f"luns[{i}]: expected an object")
        for key, ok in (("name", lambda v: isinstance(v, str)), ("type", lambda v: isinstance(v, str)),
                        ("size", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)):
            if not ok(lun.get(key)):
                what = "a size in bytes" if key == "size" else "a string"
                raise StatusFileError(f"luns[{i}].{key}: missing or not {what}")
        for key in ("export", "ring", "medium", "edif", "channel"):
            if lun.get(key) is not None and not isinstance(lun[key], dict):
                raise StatusFileError(f"luns[{i}].{key}: expected an object")
    for part in ("sessions", "sas"):  # absent in a status file of an older edifd
        rows = data.get(part, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise StatusFileError(f"{part}: expected a list of objects")
    for i, row in enumerate(data.get("sas", [])):
        entries = row.get("sas", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise StatusFileError(f"sas[{i}].sas: expected a list of objects")
    return data


def read_status(path: Path) -> dict[str, Any]:
    """The status file, checked (`check_status`); OSError, or ValueError for a malformed file."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StatusFileError(f"not JSON: {e}") from None
    return check_status(data)
