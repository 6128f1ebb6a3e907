"""Which Debian archive this machine's apt already uses, so the lab's debootstrap fetches from the same place.

Reads ``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/*.list`` (one-line ``deb`` entries) and
``*.sources`` (deb822 stanzas), in apt's order, and picks the first URI that serves a Debian release
suite (a codename such as ``bookworm`` or an alias such as ``stable``; not ``-security``, ``-updates``,
...) with the ``main`` component. The parsers take text, so they are tested without the machine's files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

ETC_APT = Path("/etc/apt")
# Debian release suites (codenames and aliases). A derivative's suites (jammy, noble, ...) are not here: its
# archive cannot serve a Debian guest, and debootstrap then falls back to its own default.
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
})
_SCHEMES = ("http://", "https://", "file:/")


def _serves_debian_main(uri: str, suites: Iterable[str], components: Iterable[str]) -> bool:
    return (uri.startswith(_SCHEMES) and "main" in components
            and any(s.rstrip("/") in DEBIAN_SUITES for s in suites))


def one_line_uris(text: str) -> Iterator[str]:
    """Debian main-archive URIs of one-line entries: ``deb [options] URI suite component...``."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options, possibly spread over several words
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3 and _serves_debian_main(words[0], words[1:2], words[2:]):
            yield words[0]


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as {lower-case field: value}; comment lines do not end a paragraph."""
    fields: dict[str, str] = {}
    last = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, last = {}, ""
        elif raw[0] in " \t" and last:  # a continuation line
            fields[last] += " " + raw.strip()
        elif ":" in raw:
            name, value = raw.split(":", 1)
            last = name.strip().lower()
            fields[last] = value.strip()


def deb822_uris(text: str) -> Iterator[str]:
    """Debian main-archive URIs of deb822 stanzas (``Types: deb``, ``URIs``, ``Suites``, ``Components``)."""
    for st in _stanzas(text):
        if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
            continue
        suites, components = st.get("suites", "").split(), st.get("components", "").split()
        for uri in st.get("uris", "").split():
            if _serves_debian_main(uri, suites, components):
                yield uri


def source_files(etc_apt: Path = ETC_APT) -> list[Path]:
    """apt's source files in the order apt reads them."""
    parts = etc_apt / "sources.list.d"
    extra = sorted(p for p in parts.glob("*") if p.suffix in (".list", ".sources")) if parts.is_dir() else []
    return [p for p in [etc_apt / "sources.list", *extra] if p.is_file()]


def apt_mirror(etc_apt: Path = ETC_APT) -> str | None:
    """The first Debian main-archive URI of this machine's apt sources (no trailing slash), or None."""
    for path in source_files(etc_apt):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        uris = deb822_uris(text) if path.suffix == ".sources" else one_line_uris(text)
        for uri in uris:
            return uri.rstrip("/")
    return None
