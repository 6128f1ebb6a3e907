"""Loading and validation of TOML configuration files that report every problem at once, each by
key path.

Shared by edifd's configuration (`edifd.config`), edif-target's (`edifd.target.config`) and the
security application's (`edifd.secapp.config`): an operator sees `lun[1].size: required` and
`targets."21:00:…".psk_file: …` in one run instead of fixing one error per start.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_toml(path: Path, error: Callable[[list[str], str], Exception]) -> dict[str, Any]:
    """The decoded TOML document at `path`; a file that cannot be read or is not TOML raises
    `error([problem], str(path))`, the caller's own ConfigError type, with the same words for all."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error([f"cannot read: {e.strerror}"], str(path)) from None
    try:
        text = raw.decode("utf-8")  # TOML is UTF-8 whatever the locale says
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error([f"not valid TOML: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                     "TOML files are UTF-8"], str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error([f"not valid TOML: {e}"], str(path)) from None


# What the operator wrote, in TOML's words (a type error never says "int" or "dict").
_TOML_TYPES = {"str": "a string", "int": "an integer", "float": "a float", "bool": "a boolean",
               "list": "an array", "dict": "a table", "datetime": "a date-time", "date": "a date",
               "time": "a time"}


def toml_type(value_or_type: Any) -> str:
    """'a string', 'an integer', 'a table', ... for a decoded TOML value or a Python type."""
    t = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return _TOML_TYPES.get(t.__name__, t.__name__)


def expected_kind(kind: type | tuple, number: str = "an integer or a float") -> str:
    """'a string', 'an integer or a float'... for the Python type(s) a key accepts (`number`: int|float)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return number
    return " or ".join(toml_type(k) for k in kinds)


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: Any, *, example: str = "64MiB", allow_zero: bool = False, units: str = "KMGTP") -> int:
    """'64MiB', '1G', '4096' or an int -> bytes (binary units, suffixes among `units`).

    The one size syntax of every configuration; `allow_zero` for sizes where 0 means "off".
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as {example}")
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    suffix = (m.group(2) or "")[:1].lower() if m else ""
    if isinstance(value, int):
        n = value
    elif m and (suffix in ("", "b") or suffix.upper() in units):
        n = int(m.group(1)) * _UNITS[suffix]
    else:
        raise ValueError(f"expected a size such as {example}, got {value!r}")
    if allow_zero and n < 0:
        raise ValueError("size must not be negative")
    if not allow_zero and n <= 0:
        raise ValueError("size must be positive")
    return n


def key_path(where: str, key: str) -> str:
    """Key path of `key` inside table `where` ('' = the top level)."""
    return f"{where}.{key}" if where else key


class ProblemCollector:
    """Reads typed values out of parsed TOML tables, collecting problems instead of raising."""

    # How a key taking int or float words its type; edifd's own files keep "int/float" (tests pin it).
    number_words = "int/float (an integer or a float)"

    def __init__(self) -> None:
        self.problems: list[str] = []

    def take(self, table: dict, key: str, where: str, kind: type | tuple, default: Any = None,
             required: bool = False) -> Any:
        if key not in table:
            if required:
                self.problems.append(f"{key_path(where, key)}: required")
            return default
        value = table[key]
        # bool is an int subclass in Python; TOML true is never a number here.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            want, got = expected_kind(kind, self.number_words), toml_type(value)
            self.problems.append(f"{key_path(where, key)}: expected {want}, got {got}")
            return default
        return value

    def seconds(self, table: dict, key: str, where: str, default: float, lo: float, hi: float,
                zero_ok: bool = False) -> float:
        v = float(self.take(table, key, where, (int, float), default))
        if not (lo <= v <= hi or (zero_ok and v == 0)):
            extra = " (or 0 = off)" if zero_ok else ""
            self.problems.append(f"{key_path(where, key)}: seconds between {lo:g} and {hi:g}{extra}")
            return default
        return v

    def unknown(self, table: dict, known: set[str], where: str) -> None:
        for key in sorted(set(table) - known):
            self.problems.append(f"{key_path(where, key)}: unknown key")
