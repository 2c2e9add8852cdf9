"""The interval set, by examples and against a model (a plain set of byte offsets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kithara_fs.ranges import RangeSet


def test_add_coalesces_touching_and_overlapping() -> None:
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    assert r.spans() == [(10, 20), (30, 40)]
    r.add(20, 30)  # touches both: one run
    assert r.spans() == [(10, 40)]
    r.add(5, 12)
    r.add(38, 50)
    assert r.spans() == [(5, 50)]
    r.add(60, 60)  # empty: ignored
    assert r.spans() == [(5, 50)]


def test_queries() -> None:
    r = RangeSet([(0, 10), (20, 30)])
    assert r.covers(0, 10) and r.covers(22, 30) and r.covers(5, 5)
    assert not r.covers(5, 15) and not r.covers(9, 21)
    assert r.present_end(3) == 10 and r.present_end(10) == 10 and r.present_end(15) == 15
    assert r.next_present(10) == 20 and r.next_present(25) == 25 and r.next_present(30) is None
    assert r.first_missing(0) == 10 and r.first_missing(12) == 12
    assert r.missing(0, 40) == [(10, 20), (30, 40)]
    assert r.missing(2, 8) == []
    assert r.total() == 20


def test_rejects_bad_intervals() -> None:
    with pytest.raises(ValueError):
        RangeSet().add(5, 4)
    with pytest.raises(ValueError):
        RangeSet().add(-1, 4)


spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(spans, st.integers(0, 240), st.integers(0, 60))
def test_matches_a_set_of_offsets(adds: list[tuple[int, int]], start: int, size: int) -> None:
    r = RangeSet()
    model: set[int] = set()
    for s, n in adds:
        r.add(s, s + n)
        model.update(range(s, s + n))
    # Structure: sorted, disjoint, never touching.
    flat = r.spans()
    for (_, e1), (s2, _) in zip(flat, flat[1:], strict=False):
        assert e1 < s2
    assert r.total() == len(model)
    end = start + size
    assert r.covers(start, end) == all(i in model for i in range(start, end))
    gaps = [i for a, b in r.missing(start, end) for i in range(a, b)]
    assert gaps == [i for i in range(start, end) if i not in model]
    first = r.first_missing(start)
    assert first not in model and all(i in model for i in range(start, first))
    nxt = r.next_present(start)
    later = [i for i in model if i >= start]
    assert nxt == (min(later) if later else None)
