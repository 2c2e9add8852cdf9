"""Checksums of cached bytes: every byte served from the cache is verified first.

Owns :class:`Checksums`, the record of which bytes of a data file were written and what
their CRC-32 was when they arrived from the network. Bytes are grouped into *pieces*: runs
written one after another, never crossing a 64 KiB block boundary. A piece grows as a
download appends to it (CRC-32 continues over appended bytes without reading the old ones
back: ``crc32(b, crc32(a)) == crc32(a + b)``), so a sequential download makes one piece per
block. A read checks every piece it touches against the bytes on disk; a piece that does not
match is dropped, so its bytes count as missing and are downloaded again.

Why CRC-32: it detects the damage a cache meets (bit flips, torn or zeroed pages, a data
file overwritten or truncated by something else) and continues across appends, which a keyed
or cryptographic hash does not do for free. It is computed by zlib-ng's SIMD CRC-32 (the
``zlib-ng`` package), which gives exactly ``zlib.crc32``'s values, so caches written before
stay valid, at about 6× the speed of the system zlib here (9 µs instead of 54 µs per 128 KiB
read, on every cached read). It
is not a defence against someone who can write the cache folder on purpose — that is the
user (the folder is 0700). Its speed is measured in ``bench/`` against the reads it guards.

It must never do I/O itself (the caller passes the bytes it read), and never vouch for a
byte it was not given when it was written.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from zlib_ng import zlib_ng as zlib

from ..ranges import RangeSet

# Pieces never cross a multiple of this: a read of n bytes verifies at most n + 2 blocks,
# and one damaged spot costs at most one block of re-download. 64 KiB is half a FUSE read
# request (128 KiB), so the extra read from disk stays small next to the request itself.
BLOCK = 64 * 1024


class Checksums:
    """The pieces of one data file: sorted, non-overlapping ``(start, end, crc)`` runs."""

    def __init__(self, pieces: Iterable[tuple[int, int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._pieces: list[tuple[int, int, int]] = []
        for piece in sorted(pieces):
            self._insert(piece)

    # -- recording -------------------------------------------------------------------------

    def add(self, offset: int, data: bytes | memoryview) -> None:
        """Record ``data`` written at ``offset`` (bytes that were not recorded before)."""
        view = memoryview(data)
        position = offset
        while view:
            boundary = (position // BLOCK + 1) * BLOCK
            part, view = view[: boundary - position], view[boundary - position :]
            self._append(position, part)
            position += len(part)

    def _append(self, start: int, part: memoryview) -> None:
        index = bisect.bisect_left(self._starts, start) - 1
        if index >= 0:
            first, end, crc = self._pieces[index]
            # Extend the piece that ends exactly here, if it lies in the same block.
            if end == start and first // BLOCK == start // BLOCK:
                self._pieces[index] = (first, end + len(part), zlib.crc32(part, crc))
                return
        self._insert((start, start + len(part), zlib.crc32(part)))

    def _insert(self, piece: tuple[int, int, int]) -> None:
        index = bisect.bisect_left(self._starts, piece[0])
        self._starts.insert(index, piece[0])
        self._pieces.insert(index, piece)

    # -- checking --------------------------------------------------------------------------

    def covering(self, offset: int, end: int) -> list[tuple[int, int, int]] | None:
        """The pieces that together hold every byte of ``[offset, end)``, in order; None
        when some byte of it is in no piece."""
        pieces = self._touching(offset, end)
        if not pieces or pieces[0][0] > offset or pieces[-1][1] < end:
            return None
        for before, after in zip(pieces, pieces[1:], strict=False):
            if after[0] > before[1]:
                return None
        return pieces

    def span_to_read(self, offset: int, end: int) -> tuple[int, int] | None:
        """The bytes to read from disk so that ``[offset, end)`` can be verified: the whole
        pieces it touches. None when some byte of it is in no piece."""
        pieces = self.covering(offset, end)
        return None if pieces is None else (pieces[0][0], pieces[-1][1])

    def damaged(self, base: int, data: bytes, offset: int, end: int) -> list[tuple[int, int]]:
        """The pieces touching ``[offset, end)`` whose bytes in ``data`` (read from disk at
        ``base``) do not match their checksum; an empty list means all is verified."""
        return self.damaged_among(self._touching(offset, end), base, data)

    @staticmethod
    def damaged_among(
        pieces: list[tuple[int, int, int]], base: int, data: bytes
    ) -> list[tuple[int, int]]:
        """Those of ``pieces`` whose bytes in ``data`` (read from disk at ``base``) do not
        match their checksum."""
        view = memoryview(data)
        bad = []
        for start, stop, crc in pieces:
            chunk = view[start - base : stop - base]
            if len(chunk) != stop - start or zlib.crc32(chunk) != crc:
                bad.append((start, stop))
        return bad

    def drop(self, spans: Iterable[tuple[int, int]]) -> None:
        """Forget these pieces (their bytes are missing from now on)."""
        gone = {start for start, _ in spans}
        kept = [piece for piece in self._pieces if piece[0] not in gone]
        self._pieces = kept
        self._starts = [piece[0] for piece in kept]

    def _touching(self, offset: int, end: int) -> list[tuple[int, int, int]]:
        # Bisect both ends: this runs twice on every cached read, over files of many pieces.
        first = max(0, bisect.bisect_right(self._starts, offset) - 1)
        stop = bisect.bisect_left(self._starts, end, first)
        found = self._pieces[first:stop]
        if found and found[0][1] <= offset:
            del found[0]
        return found

    # -- views -----------------------------------------------------------------------------

    def ranges(self) -> RangeSet:
        """The bytes the pieces vouch for."""
        return RangeSet((start, end) for start, end, _ in self._pieces)

    def pieces(self) -> list[tuple[int, int, int]]:
        return list(self._pieces)

    def copy(self) -> Checksums:
        clone = Checksums()
        clone._starts, clone._pieces = list(self._starts), list(self._pieces)
        return clone

    def __len__(self) -> int:
        return len(self._pieces)
