"""A pure set of half-open byte intervals.

Owns the arithmetic of "which bytes do we have": insert with coalescing, presence, the
missing parts of a span and the first gap after an offset. Every read and every download
decision goes through it, so it is small, exhaustively tested and has no I/O.

It must never know about files, the network or time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class RangeSet:
    """Sorted, disjoint, non-adjacent half-open intervals ``[start, end)``.

    Invariant: ``_starts`` and ``_ends`` have equal length, and for each i,
    ``_starts[i] < _ends[i] < _starts[i + 1]`` (touching intervals are merged).
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, spans: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in spans:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Insert ``[start, end)``, merging with every interval it touches or overlaps."""
        if start < 0 or end < start:
            raise ValueError(f"bad interval [{start}, {end})")
        if start == end:
            return
        # First interval whose end reaches start (touching counts), last whose start <= end.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        """True when every byte of ``[start, end)`` is present (an empty span is covered)."""
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def present_end(self, offset: int) -> int:
        """End of the present run containing ``offset``, or ``offset`` itself if it is absent."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and self._ends[i] > offset:
            return self._ends[i]
        return offset

    def next_present(self, offset: int) -> int | None:
        """Start of the first present byte at or after ``offset``, if any."""
        if self.present_end(offset) > offset:
            return offset
        i = bisect.bisect_right(self._starts, offset)
        return self._starts[i] if i < len(self._starts) else None

    def first_missing(self, offset: int) -> int:
        """The first absent byte at or after ``offset`` (unbounded: callers clip to a length)."""
        return self.present_end(offset)

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The absent sub-intervals of ``[start, end)``, in order."""
        gaps: list[tuple[int, int]] = []
        pos = start
        while pos < end:
            pos = self.present_end(pos)
            if pos >= end:
                break
            nxt = self.next_present(pos)
            gap_end = end if nxt is None else min(nxt, end)
            gaps.append((pos, gap_end))
            pos = gap_end
        return gaps

    def total(self) -> int:
        """Number of bytes present."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.spans())

    def __len__(self) -> int:
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.spans() == other.spans()

    def __repr__(self) -> str:
        return f"RangeSet({self.spans()!r})"
