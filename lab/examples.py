"""The lab's configurations, derived from the commented examples in ``examples/``.

A lab scenario takes the example's table of the kind it needs (the control LUN, the HBA port, the agent's
target) and overrides only what is the lab's own: names, addresses, files, short timers. So a key the
examples document and the tools accept is what the lab runs with, and a key renamed in the tools breaks
the examples' test and the lab together. Stdlib only (tomllib): the guests import this with Debian's
python3.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict[str, Any]:
    with open(EXAMPLES / name, "rb") as f:
        return tomllib.load(f)


def first(tables: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """A deep copy of the first table whose keys have these values (e.g. the control LUN)."""
    for t in tables:
        if all(t.get(k) == v for k, v in match.items()):
            return copy.deepcopy(t)
    raise KeyError(f"no table with {match} in the example")


def derive(template: dict[str, Any], drop: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """The template without `drop`, with `overrides` (a dict value merges into a sub-table)."""
    out = {k: copy.deepcopy(v) for k, v in template.items() if k not in drop}
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string for what the lab writes
    if isinstance(v, list) and all(not isinstance(x, dict) for x in v):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def dumps(data: dict[str, Any], _path: str = "") -> str:
    """TOML for what the lab's configurations hold: scalars, lists of scalars, tables, arrays of tables."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        path = f"{_path}.{_key(k)}" if _path else _key(k)
        if isinstance(v, dict):
            out += f"\n[{path}]\n" + dumps(v, path)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out += f"\n[[{path}]]\n" + dumps(item, path)
    return out
