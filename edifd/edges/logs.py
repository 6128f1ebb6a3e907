"""The log lines of the four tools (edifd, edifctl, edif-agent, edif-target): one set-up, two formats.

Under systemd (stderr is the stream named by $JOURNAL_STREAM, "DEVICE:INODE", systemd.exec(5)) every
line starts with its syslog priority in angle brackets, `<3>` for an error to `<7>` for debug, the
sd-daemon(3) convention journald parses, and carries no timestamp (the journal stamps each line), so
`journalctl -p err -u edifd` finds the errors. Elsewhere every tool writes

    2026-12-04 01:16:53,123 WARNING edifd.daemon: lun data0: ...

`Waiting` is for the long waits (the agent's handshake, the kernel's LUN scan): while its block runs, a
line every few seconds says what is awaited and for how long, instead of silence.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# syslog(3) priorities for the logging levels (sd-daemon(3) prefixes).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two named ones takes the lower's)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def under_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """True when `stream` is the journal stream systemd connected ($JOURNAL_STREAM names its device and
    inode; a child whose stderr was redirected elsewhere inherits the variable but not the stream)."""
    dev_ino = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = dev_ino.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's capture, a StringIO)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """`<N>name: message`, with the prefix on every line of a multi-line record (a traceback)."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


_HANDLER_MARK = "_edif_tool_handler"


def setup_logging(level: str = "info", *, stream: TextIO | None = None, journal: bool | None = None) -> None:
    """Route every logger of the process to `stream` (default stderr) in the tool format: the journal
    format when `journal` (default: `under_journal(stream)`), else the text format. Called once per
    command; calling it again replaces the handler it installed (never one somebody else added)."""
    stream = stream if stream is not None else sys.stderr
    if journal is None:
        journal = under_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the level of every logger of the process (edifctl log-level, through the control socket)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    logging.getLogger().setLevel(getattr(logging, level.upper()))


def current_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()


class Waiting:
    """While the `with` block runs, log "waiting for WHAT (N s)" every `every` seconds at INFO.

    The block does the waiting (a blocking call, a poll loop); this only speaks for it, from its own
    thread, and stops as the block ends, however it ends."""

    def __init__(self, log: logging.Logger, what: str, *, every: float = 5.0,
                 limit: float | None = None) -> None:
        self.log, self.what, self.every, self.limit = log, what, every, limit
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def _speak(self) -> None:
        while not self._done.wait(self.every):
            waited = time.monotonic() - self._start
            of = f" of {self.limit:g} s" if self.limit is not None else ""
            self.log.info("waiting for %s (%.0f s%s)", self.what, waited, of)

    def __enter__(self) -> Waiting:
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._speak, name="waiting", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
