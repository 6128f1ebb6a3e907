"""RFC 4303 anti-replay window: edge cases and a property test against a set-based model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edifd.edif import EdifError, ReplayVerdict, ReplayWindow


def accept_all(w: ReplayWindow, *seqs: int) -> None:
    for s in seqs:
        assert w.check(s) is ReplayVerdict.OK, s
        w.accept(s)


def test_zero_is_never_acceptable() -> None:
    w = ReplayWindow()
    assert w.check(0) is ReplayVerdict.ZERO
    with pytest.raises(EdifError):
        w.accept(0)


def test_duplicate_is_refused() -> None:
    w = ReplayWindow()
    accept_all(w, 1, 2, 3)
    for s in (1, 2, 3):
        assert w.check(s) is ReplayVerdict.DUPLICATE


def test_window_edge_exactly() -> None:
    w = ReplayWindow(64)
    accept_all(w, 100)
    # highest - 63 is the oldest number inside a 64-wide window; highest - 64 is outside.
    assert w.check(100 - 63) is ReplayVerdict.OK
    assert w.check(100 - 64) is ReplayVerdict.TOO_OLD
    accept_all(w, 37)
    assert w.check(37) is ReplayVerdict.DUPLICATE


def test_out_of_order_within_window() -> None:
    w = ReplayWindow(32)
    accept_all(w, 10, 5, 9, 6, 7, 8, 1)
    for s in (1, 5, 6, 7, 8, 9, 10):
        assert w.check(s) is ReplayVerdict.DUPLICATE
    for s in (2, 3, 4, 11):
        assert w.check(s) is ReplayVerdict.OK
    assert w.highest == 10


def test_gaps_stay_acceptable() -> None:
    w = ReplayWindow(32)
    accept_all(w, 1, 3, 5)
    assert w.check(2) is ReplayVerdict.OK and w.check(4) is ReplayVerdict.OK
    assert w.check(5) is ReplayVerdict.DUPLICATE


def test_far_ahead_jump_resets_the_bitmap() -> None:
    w = ReplayWindow(64)
    accept_all(w, 1, 2, 3)
    accept_all(w, 1_000_000)
    assert w.check(3) is ReplayVerdict.TOO_OLD
    assert w.check(1_000_000 - 1) is ReplayVerdict.OK  # a gap, never seen
    assert w.check(1_000_000) is ReplayVerdict.DUPLICATE


def test_jump_of_exactly_the_window_size() -> None:
    w = ReplayWindow(32)
    accept_all(w, 5)
    accept_all(w, 5 + 32)
    assert w.check(5) is ReplayVerdict.TOO_OLD
    assert w.check(6) is ReplayVerdict.OK


def test_max_sequence_number() -> None:
    w = ReplayWindow()
    accept_all(w, 0xFFFFFFFF)
    assert w.check(0xFFFFFFFF) is ReplayVerdict.DUPLICATE


def test_check_changes_nothing() -> None:
    w = ReplayWindow()
    accept_all(w, 7)
    before = (w.highest, repr(w))
    for s in (0, 1, 7, 8, 10**6):
        w.check(s)
    assert (w.highest, repr(w)) == before
    assert w.check(8) is ReplayVerdict.OK


@pytest.mark.parametrize("size", [0, 31, 4097, True, 64.0, "64"])
def test_bad_window_size(size: object) -> None:
    with pytest.raises(EdifError):
        ReplayWindow(size)  # type: ignore[arg-type]


def _model_ok(seen: set[int], highest: int, size: int, seq: int) -> bool:
    if seq <= 0:
        return False
    if seq > highest:
        return True
    return highest - seq < size and seq not in seen


@settings(max_examples=200, deadline=None)
@given(size=st.sampled_from([32, 64, 128]),
       seqs=st.lists(st.integers(min_value=0, max_value=400), max_size=120))
def test_matches_the_set_model(size: int, seqs: list[int]) -> None:
    w = ReplayWindow(size)
    seen: set[int] = set()
    highest = 0
    for s in seqs:
        ok = _model_ok(seen, highest, size, s)
        assert (w.check(s) is ReplayVerdict.OK) == ok
        if ok:
            w.accept(s)
            seen.add(s)
            highest = max(highest, s)
        assert w.highest == highest
