"""guest_agent.ping (tally, percentiles), guest_agent.backoff and guest_agent.state."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guest_agent.backoff import Backoff
from guest_agent.ping import PingTally, percentile
from guest_agent.state import MAX_STATE, StateFile, StateFileError


def test_percentile_nearest_rank():
    xs = [float(i) for i in range(1, 1001)]
    assert percentile(xs, 50) == 500.0
    assert percentile(xs, 99) == 990.0
    assert percentile(xs, 100) == 1000.0
    assert percentile([3.0], 50) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 0)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200))
def test_percentiles_are_ordered_samples(xs):
    p50, p99 = percentile(xs, 50), percentile(xs, 99)
    assert p50 in xs and p99 in xs and p50 <= p99 <= max(xs)


def test_tally_in_order_run():
    t = PingTally()
    for rid in range(1, 6):
        t.on_sent(rid, float(rid))
        t.on_upstream(9, rid)
        assert t.on_response(rid, rid + 0.5)
    rep = t.report()
    assert (rep["sent"], rep["received"], rep["in_order"], rep["duplicates"], rep["lost"]) == (5, 5, 5, 0, 0)
    assert rep["rtt_ms"] == {"n": 5, "p50": 500.0, "p99": 500.0, "max": 500.0}


def test_tally_duplicates_reordering_loss_and_unknown_ids():
    t = PingTally()
    for rid in (1, 2, 3, 4):
        t.on_sent(rid, 0.0)
    assert t.on_response(2, 1.0)
    assert t.on_response(1, 1.0)  # answers an earlier request than the one before: out of order
    assert not t.on_response(2, 1.0)  # again: duplicate
    assert not t.on_response(77, 1.0)  # never sent
    rep = t.report()
    assert (rep["received"], rep["in_order"], rep["out_of_order"], rep["duplicates"], rep["unexpected"],
            rep["lost"]) == (2, 1, 1, 1, 1, 2)
    with pytest.raises(ValueError):
        t.on_sent(1, 0.0)


def test_tally_upstream_sequence_checks_per_epoch():
    t = PingTally()
    for s in (1, 2, 4, 4, 3, 5):
        t.on_upstream(1, s)
    t.on_upstream(2, 1)  # a new epoch (host restart) starts its own count
    t.on_upstream(2, 2)
    assert (t.seq_gaps, t.seq_repeats) == (1, 2)


def test_tally_round_trips_through_json_form():
    t = PingTally()
    for rid in (5, 6, 7):
        t.on_sent(rid, 0.0)
        t.on_upstream(3, rid)
    t.on_response(5, 0.25)
    t.on_response(6, 0.5)
    u = PingTally.from_dict(t.to_dict())
    assert u.report() == t.report()
    assert not u.on_response(6, 1.0) and u.duplicates == 1  # remembered what was answered
    assert u.on_response(7, 1.0) and u.in_order == 3
    assert len(u.rtts) == 2  # send times do not survive a restart: no made-up RTT
    with pytest.raises(ValueError, match="not a saved ping tally"):
        PingTally.from_dict({"sent": 1})


def test_backoff_doubles_caps_and_resets():
    b = Backoff(initial=0.1, maximum=0.5)
    assert [b.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert b.failures == 5
    b.reset()
    assert b.next_delay() == 0.1 and b.failures == 1


@pytest.mark.parametrize("kw", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}])
def test_backoff_refuses_nonsense(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)


def test_state_file_round_trip_is_private_and_atomic(tmp_path):
    s = StateFile(tmp_path / "state")
    assert s.load() is None
    s.save(b"\x01\x02")
    s.save(b"new state")
    assert s.load() == b"new state"
    assert os.stat(s.path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no temporary left behind
    s.remove()
    assert s.load() is None


def test_state_file_errors(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(bytes(MAX_STATE + 1))
    with pytest.raises(StateFileError, match="larger than"):
        StateFile(big).load()
    with pytest.raises(StateFileError, match="cannot read agent state"):
        StateFile(tmp_path).load()  # a directory


def test_resent_ping_counts_once_and_a_late_first_answer_is_a_duplicate():
    t = PingTally()
    t.on_sent(10, 0.0)
    t.on_sent(11, 0.0)
    assert t.pending() == [10, 11]
    t.on_resent(10, 12)  # the channel gave up on 10
    assert t.pending() == [12, 11] and t.resent == 1 and t.sent == 2
    assert t.on_response(12, 0.5) and t.answered(10) and t.answered(12)
    assert not t.on_response(10, 0.6)  # the first request was acted on after all: a duplicate
    assert t.duplicates == 1
    assert t.rtts == [0.5]  # timed from the first send
    with pytest.raises(ValueError, match="not a pending ping"):
        t.on_resent(10, 13)
    with pytest.raises(ValueError, match="used twice"):
        t.on_resent(11, 12)
    u = PingTally.from_dict(t.to_dict())
    assert u.pending() == [11] and u.report() == t.report()
