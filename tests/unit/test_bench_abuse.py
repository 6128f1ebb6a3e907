"""bench/abuse.py at a small size: every refusal counted exactly, nothing acted on, the log bounded per
burst and reason, the legitimate agent answered throughout (figures only printed: no timing asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import abuse  # noqa: E402


def test_a_flood_of_refused_writes_is_counted_exactly_and_logged_boundedly():
    r = abuse.run(writes=3000, ping_every=500)
    assert r["counters_exact"] and sum(r["sent"].values()) >= 3000, (r["sent"], r["counted"])
    assert r["acted_on_during_flood"] == 0
    assert 0 < r["log_lines"] <= r["log_lines_bound"]
    assert r["pings_during"] == 6  # each one answered (run() raises otherwise)
