"""Sequential HLS feeds: live playlists and `auto` files, read once from start to end.

Owns, for one open handle, the task that walks a programme's segments in order — reloading
a live playlist at its target duration (half of it when nothing changed, RFC 8216 §6.3.4),
starting a few segments behind the live edge, skipping sequence gaps with a log line,
ending at EXT-X-ENDLIST — and, for `auto`, choosing the variant of each next segment from
measured throughput (:class:`Throughput`). Fetched bytes wait in a small buffer for the
reader; fetching stays at most ``readahead_seconds`` of audio ahead of it.

It must never speak FUSE or choose errnos, and never switch variant where the bytes could
not be continued: only between variants of one container that carries its own headers
(MPEG-TS, ADTS), never inside fMP4, and only at segment boundaries.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import trio

from ...budget import ChangeSignal, Deadline
from ...errors import KitharaError, OriginError, PlaylistError
from ..base import Feed, Sequential
from .playlist import MediaPlaylist, Resource
from .programme import SWITCHABLE, Programme, ProgrammeFile, VariantMedia
from .throughput import Throughput

log = logging.getLogger(__name__)

# Bytes already read that stay in the buffer: the kernel may repeat the tail of a read.
KEEP_BEHIND = 64 * 1024
# Live reads wait at least this many target durations for the next segment (the parser caps
# a target duration at 15 s, so this never holds a reader beyond 30 s).
LIVE_WAIT_TARGETS = 2.0
# Fetched bytes waiting unread are bounded in bytes too, not only in seconds: a playlist whose
# segments claim zero seconds (#EXTINF:0) would otherwise be fetched whole into memory. 8 MiB
# is over three minutes of 320 kbit/s audio.
MAX_AHEAD_BYTES = 8 * 1024 * 1024


class SegmentFeed:
    """One reader's sequential view of a programme (a live variant, or `auto`).

    Attributes:
        changed: notified when bytes arrive, the feed ends or fails, or the reader consumed.
        variant: the name (stem) of the variant being fetched now.
        eof: every segment has been fetched (EXT-X-ENDLIST seen); the buffer drains to EOF.
        error: why the feed stopped, for the reader to raise.
    """

    def __init__(
        self,
        programme: Programme,
        variants: tuple[VariantMedia, ...],
        *,
        live: bool,
        start_behind: int,
        readahead_seconds: float,
        throughput: Throughput,
        label: str,
    ) -> None:
        self.programme = programme
        self.variants = variants
        self.live = live
        self.start_behind = start_behind
        self.readahead_seconds = readahead_seconds
        self.throughput = throughput
        self.label = label
        self.changed = ChangeSignal()
        self.eof = False
        self.error: KitharaError | None = None
        self._buffer = bytearray()
        self._base = 0  # offset of _buffer[0]
        self.consumed = 0
        # (end offset, seconds) of each segment appended, for the read-ahead bound.
        self._segments: deque[tuple[int, float]] = deque()
        self._playlists = [v.media for v in variants]
        self._loaded_at = [trio.current_time()] * len(variants)
        self._grew = [True] * len(variants)
        switchable = all(v.extension in SWITCHABLE for v in variants)
        self._adaptive = switchable and len(variants) > 1
        self.current = self._first_choice()
        self.variant: str | None = variants[self.current].stem

    @property
    def produced(self) -> int:
        return self._base + len(self._buffer)

    @property
    def min_wait(self) -> float:
        """The shortest budget a blocking read should have: two target durations when live."""
        if not self.live:
            return 0.0
        return LIVE_WAIT_TARGETS * max(p.target_duration for p in self._playlists)

    def _first_choice(self) -> int:
        # Without a measurement, start with the lowest variant: it starts playing soonest,
        # and the first segment's download time then tells which variant fits.
        if self.throughput.estimate is None:
            return len(self.variants) - 1
        return self.throughput.choose(self.variants, len(self.variants) - 1)

    # -- the reader's side -------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes | None:
        """Up to ``size`` bytes at ``offset``; b"" at the end; None if none arrived yet.

        Raises:
            KitharaError: the feed failed (after its retries), or ``offset`` was dropped.
        """
        if offset < self._base:
            raise OriginError(self.label, f"offset {offset} is no longer held (sequential file)")
        if offset < self.produced:
            start = offset - self._base
            data = bytes(self._buffer[start : start + size])
            self.consumed = max(self.consumed, offset + len(data))
            drop = self.consumed - KEEP_BEHIND - self._base
            if drop > 0:
                del self._buffer[:drop]
                self._base += drop
            self.changed.notify()
            return data
        if self.error is not None:
            raise self.error
        if self.eof:
            return b""
        return None

    def has_data_at(self, offset: int) -> bool:
        return offset < self.produced or self.eof or self.error is not None

    # -- the fetching task -------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch segments until the end, the reader closes (cancellation) or a failure."""
        try:
            await self._walk()
        except KitharaError as exc:
            log.warning("%s: %s", self.label, exc)
            self.error = exc
        except Exception as exc:
            log.exception("%s: internal error in a feed", self.label)
            self.error = KitharaError(f"internal error: {exc!r}")
        finally:
            self.changed.notify()

    def discard(self) -> None:
        """The reader closed: free the buffered bytes (the feed object may outlive it)."""
        self._buffer = bytearray()
        self._segments.clear()

    async def _walk(self) -> None:
        sequence: int | None = None
        last_init: Resource | None = None
        if self.live:
            # The playlist at hand is the one the folder was listed with, perhaps long ago:
            # its segments may have left the origin, so a live file starts from a fresh one.
            await self._reload(self.current, wait=False)
        while True:
            media = self._playlists[self.current]
            if sequence is None:
                sequence = media.first_sequence
                if self.live:
                    sequence = max(sequence, media.next_sequence - self.start_behind)
            segment = media.segment(sequence)
            if segment is None:
                if media.segments and sequence < media.first_sequence:
                    log.warning("%s: segments %d to %d left the playlist before they were "
                                "fetched; skipping them", self.label, sequence,
                                media.first_sequence - 1)  # fmt: skip
                    sequence = media.first_sequence
                    continue
                if media.ended:
                    self.eof = True
                    return
                await self._reload(self.current)
                continue
            if segment.init is not None and segment.init != last_init:
                self._append(await self.programme.fetcher.whole(segment.init), 0.0)
                last_init = segment.init
            started = trio.current_time()
            data = await self.programme.fetcher.whole(segment.media)
            self.throughput.sample(len(data), trio.current_time() - started)
            self._append(data, segment.duration)
            sequence += 1
            if self._adaptive:
                await self._adapt()
            await self._wait_for_room()

    async def _adapt(self) -> None:
        choice = self.throughput.choose(self.variants, self.current)
        if choice == self.current:
            return
        estimate = self.throughput.estimate or 0.0
        log.info("%s: switching variant %s -> %s (throughput estimate %.0f kbit/s)",
                 self.label, self.variants[self.current].stem, self.variants[choice].stem,
                 estimate / 1000)  # fmt: skip
        self.current = choice
        self.variant = self.variants[choice].stem
        if self.live:
            await self._reload(choice, wait=False)

    async def _reload(self, index: int, *, wait: bool = True) -> None:
        """Fetch a live playlist again, no sooner than RFC 8216 §6.3.4 allows."""
        media = self._playlists[index]
        if wait:
            pause = media.target_duration if self._grew[index] else media.target_duration / 2
            await trio.sleep_until(self._loaded_at[index] + pause)
        playlist = await self.programme.playlist(self.variants[index].variant.uri, fresh=True)
        if not isinstance(playlist, MediaPlaylist):
            raise PlaylistError(self.label, "a live variant became a master playlist")
        self._grew[index] = playlist.next_sequence != media.next_sequence or playlist.ended
        self._playlists[index] = playlist
        self._loaded_at[index] = trio.current_time()

    def _append(self, data: bytes, seconds: float) -> None:
        self._buffer += data
        self._segments.append((self.produced, seconds))
        self.changed.notify()

    async def _wait_for_room(self) -> None:
        """Pause while more than ``readahead_seconds`` of audio wait unread."""
        while True:
            while self._segments and self._segments[0][0] <= self.consumed:
                self._segments.popleft()
            ahead = sum(seconds for _, seconds in self._segments)
            full = self.produced - self.consumed > MAX_AHEAD_BYTES
            if not full and (ahead <= self.readahead_seconds or math.isclose(ahead, 0.0)):
                return
            await self.changed.wait(Deadline.never())


class FeedFile(Sequential):
    """A live variant or `auto`: read like a pipe, each open fetching from then on."""

    def __init__(self, programme: Programme, file: ProgrammeFile, start_behind: int) -> None:
        self.programme = programme
        self.file = file
        self.start_behind = start_behind
        self.shown = programme.shown
        self.live = file.live
        self.variant = file.feed[-1].stem

    def open_feed(self, label: str) -> Feed:
        return SegmentFeed(
            self.programme, self.file.feed, live=self.file.live,
            start_behind=self.start_behind, readahead_seconds=self.programme.readahead_seconds,
            throughput=self.programme.throughput, label=label,
        )  # fmt: skip


