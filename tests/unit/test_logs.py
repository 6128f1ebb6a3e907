"""One log set-up for the four tools: the sd-daemon(3) priority prefix under systemd, one text format
elsewhere, and the progress lines of a long wait (edifd.edges.logs)."""

from __future__ import annotations

import io
import logging
import os
import threading

import pytest

from edifd.edges import logs


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp():
    buf = io.StringIO()
    logs.setup_logging("debug", stream=buf, journal=True)
    log = logging.getLogger("logs-test")
    log.error("disk gone")
    log.warning("slow")
    log.info("serving")
    log.debug("detail")
    assert _lines(buf) == ["<3>logs-test: disk gone", "<4>logs-test: slow", "<6>logs-test: serving",
                           "<7>logs-test: detail"]


def test_every_line_of_a_traceback_gets_the_prefix():
    buf = io.StringIO()
    logs.setup_logging("info", stream=buf, journal=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("logs-test").exception("failed")
    lines = _lines(buf)
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_text_format_elsewhere_has_time_level_and_logger():
    buf = io.StringIO()
    logs.setup_logging("info", stream=buf, journal=False)
    logging.getLogger("logs-test.agent").warning("handshake refused")
    logging.getLogger("logs-test.agent").debug("not shown at info")
    (line,) = _lines(buf)
    stamp, rest = line[:23], line[24:]
    assert stamp[4] == "-" and stamp[10] == " " and rest == "WARNING logs-test.agent: handshake refused"


def test_journal_is_detected_by_the_stream_systemd_named(tmp_path):
    with open(tmp_path / "stream", "w") as fh:
        st = os.fstat(fh.fileno())
        assert logs.under_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # inherited by a child whose stderr goes elsewhere: not the journal
        assert not logs.under_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not logs.under_journal(fh, {"JOURNAL_STREAM": "garbage"})
        assert not logs.under_journal(fh, {})
    assert not logs.under_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_setup_replaces_its_own_handler_and_levels_are_checked():
    a, b = io.StringIO(), io.StringIO()
    logs.setup_logging("info", stream=a, journal=True)
    logs.setup_logging("info", stream=b, journal=True)
    logging.getLogger("x").info("once")
    assert a.getvalue() == "" and _lines(b) == ["<6>x: once"]
    logs.set_level("error")
    assert logs.current_level() == "error"
    with pytest.raises(ValueError, match="one of debug, info, warning, error"):
        logs.set_level("loud")


def test_waiting_says_what_it_waits_for_until_the_block_ends():
    spoke = threading.Event()

    class Recorder(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())
            spoke.set()

    rec = Recorder()
    log = logging.getLogger("logs-test.waiting")
    log.addHandler(rec)
    log.setLevel(logging.INFO)
    try:
        waiting = logs.Waiting(log, "the APP_START answer from edifd on /dev/sdb", every=0.01, limit=60)
        with waiting:
            assert spoke.wait(10)  # the block is what waits; the ticker speaks meanwhile
        assert rec.lines[0].startswith("waiting for the APP_START answer from edifd on /dev/sdb (")
        assert rec.lines[0].endswith(" of 60 s)")
        assert waiting._thread is not None and not waiting._thread.is_alive()  # silent once the block ended
    finally:
        log.removeHandler(rec)
