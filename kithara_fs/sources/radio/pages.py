"""Ogg pages in a station's stream, and the header pages a reader joining late must get first.

Owns :class:`PageWalker`, which follows an Ogg stream (Vorbis, Opus, FLAC in Ogg) page by
page as bytes go by: it finds a page by its capture pattern, checks its CRC, steps to the
next one, and resynchronises the same way after damage or a reconnect. It also keeps the
stream's header pages: the beginning-of-stream pages and the header packets after them
(pages with granule position 0, or -1 while a header packet spans pages), up to the first
audio page. A reader that starts later than those pages gets them first, so its player
can decode: Icecast does the same for every listener of an Ogg mount. A chained stream (a
new logical stream per track) brings new headers, which replace the old from then on.

It must never hold more than a page and one header set, and never do I/O.
"""

from __future__ import annotations

import zlib
from collections import deque

# Ogg's CRC-32 is zlib's polynomial unreflected, from 0, with no final inversion (RFC 3533
# §6). zlib computes the reflected one in C: with every byte's bits reversed, a start value
# that zlib inverts to 0, and the result's inversion undone and its bits reversed, it gives
# Ogg's. (A table loop in Python cost ~15 ms per 64 KiB page, and a hostile stream of fake
# page headers made it ~50 s of CPU per MB.)
_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))

CAPTURE = b"OggS"
HEADER = 27
# The largest page: 27 + 255 lacing values + 255 × 255 bytes.
MAX_PAGE = 27 + 255 + 255 * 255
# Header pages kept for late readers: Vorbis setup headers run to tens of KiB; more than
# this is not a header set we can replay.
MAX_HEADERS = 256 * 1024
# Header sets kept for rewinds across a chain's links (a new set per track): the newest 16
# and at most 1 MiB of them, however many links the ring holds.
MAX_SETS = 16
MAX_SETS_BYTES = 1024 * 1024
_NO_GRANULE = 0xFFFFFFFFFFFFFFFF


def ogg_crc(page: bytes) -> int:
    raw = zlib.crc32(page.translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def page_length(held: bytes | bytearray | memoryview, at: int) -> int | None:
    """The length of the page whose header starts at ``at`` if enough of it is held; 0 if
    the bytes there are no page header; None if more bytes are needed to tell."""
    if len(held) - at < HEADER:
        return None
    if held[at : at + 4] != CAPTURE or held[at + 4] != 0:
        return 0
    segments = held[at + 26]
    if len(held) - at < HEADER + segments:
        return None
    return HEADER + segments + sum(held[at + HEADER : at + HEADER + segments])


def page_is_valid(page: bytes) -> bool:
    stored = int.from_bytes(page[22:26], "little")
    return ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) == stored


class PageWalker:
    """Follows the pages of one continuous Ogg stream.

    Attributes:
        position: how many bytes it has been given.
        last_start: where the latest whole, valid page starts (None: not in sync).
        next_start: where the page after it starts.
        headers: the header sets completed since :meth:`take_headers` was last called,
            each as where its pages start in the stream and their bytes.
        kbps: always 0 (Ogg pages state no bitrate).
        cuttable: False: tracks are not cut from Ogg streams.
    """

    kbps = 0
    cuttable = False

    def __init__(self) -> None:
        self.position = 0
        self.last_start: int | None = None
        self.next_start: int | None = None
        self.headers: list[tuple[int, bytes]] = []
        self._set_start = 0
        self._set = bytearray()
        self._set_open = False
        self._held = bytearray()  # the bytes from _held_at to position not yet judged
        self._held_at = 0

    @property
    def synced(self) -> bool:
        return self.next_start is not None

    def take_headers(self) -> list[tuple[int, bytes]]:
        taken, self.headers = self.headers, []
        return taken

    @property
    def opening(self) -> int | None:
        """Where a header set still being received starts (None when none is)."""
        return self._set_start if self._set_open else None

    def feed(self, data: bytes) -> None:
        self._held += data
        self.position += len(data)
        while True:
            if self.next_start is None:
                found = self._held.find(CAPTURE)
                if found < 0:
                    self._drop_before(self._held_at + max(0, len(self._held) - 3))
                    return
                self._drop_before(self._held_at + found)
                at = self._held_at
            else:
                at = self.next_start
            offset = at - self._held_at
            length = page_length(self._held, offset)
            if length is None or (length and len(self._held) - offset < length):
                return  # the rest of the page is still to come
            page = bytes(self._held[offset : offset + length])
            if length == 0 or not page_is_valid(page):
                # Not a page (or a damaged one): search again just past where it seemed to be.
                self.next_start = self.last_start = None
                self._drop_before(at + 1)
                continue
            self._note(at, page)
            self.last_start = at
            self.next_start = at + length
            self._drop_before(self.next_start)

    def _note(self, at: int, page: bytes) -> None:
        """Collect header pages: the BOS pages and the granule-0 pages after them."""
        flags = page[5]
        granule = int.from_bytes(page[6:14], "little")
        if flags & 0x02:
            if not self._set_open:  # the first logical stream, or a new link of a chain
                self._set_start, self._set, self._set_open = at, bytearray(), True
            self._set += page
        elif self._set_open:
            if granule in (0, _NO_GRANULE):
                self._set += page
                if len(self._set) > MAX_HEADERS:
                    self._set, self._set_open = bytearray(), False
            else:
                self.headers.append((self._set_start, bytes(self._set)))
                self._set, self._set_open = bytearray(), False

    def _drop_before(self, absolute: int) -> None:
        drop = min(absolute, self.position) - self._held_at
        if drop > 0:
            del self._held[:drop]
            self._held_at += drop


def is_ogg_type(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return "ogg" in kind or "opus" in kind or "vorbis" in kind


class HeaderSets:
    """An Ogg station's header sets by where they start in its ring (a chain has several)."""

    def __init__(self) -> None:
        self._sets: deque[tuple[int, bytes]] = deque()

    def add(self, sets: list[tuple[int, bytes]], oldest: int) -> None:
        """New sets, and the ring's oldest position (older sets no longer in force go)."""
        self._sets.extend(sets)
        while len(self._sets) > 1 and (
            self._sets[1][0] <= oldest or len(self._sets) > MAX_SETS
            or sum(len(pages) for _, pages in self._sets) > MAX_SETS_BYTES
        ):  # fmt: skip
            self._sets.popleft()

    def start(self, position: int, opening: int | None) -> tuple[int, bytes]:
        """Where a reader starting at ``position`` really starts, and what it gets first:
        the header pages in force there when it starts past them, or the start of the
        header pages when it would start among them (``opening``: a set still arriving)."""
        if opening is not None and position >= opening:
            return opening, b""
        chosen = b""
        for start, pages in self._sets:
            if start > position:
                break
            if position < start + len(pages):
                return start, b""
            chosen = pages
        return position, chosen
