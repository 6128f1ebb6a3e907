"""The short fault soak of `make test` (bench/soak.py; `make soak` runs the full one): 1,000 messages with a
fault every 50, by sequence numbers 0 lost, 0 duplicated, 0 out of order, every request answered or failed
exactly once, nothing acted on twice. And the soak can tell: under protocol version 1's rule (a READ's
cursor acknowledges) its keyless reads make messages go missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak  # noqa: E402

from edifd.channel import upstream  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2])
def test_the_short_soak_is_exact(seed):
    r = soak.run_soak(1000, 50, seed)
    assert sum(r["faults"].values()) == 20 and len(r["faults"]) >= 5, r["faults"]
    assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0), r
    assert (r["answered_or_failed_twice"], r["unanswered"], r["host_acted_twice"]) == (0, 0, 0), r
    assert r["upstream_issued"] >= 1000 and r["requests"] > 300 and r["exact"]


def test_the_soak_sees_what_version_1s_read_acknowledgement_loses(monkeypatch):
    hint = upstream.UpstreamQueue.hint

    def v1_hint(self, residue, now):
        c = hint(self, residue, now)
        if c is not None and c > self.acked:
            self.ack(c)  # the old rule: a READ's cursor drops what it covers
        return c

    monkeypatch.setattr(upstream.UpstreamQueue, "hint", v1_hint)
    r = soak.run_soak(1000, 50, 1)
    assert r["faults"].get("rogue_reads", 0) >= 1 and r["lost"] > 0 and not r["exact"]
