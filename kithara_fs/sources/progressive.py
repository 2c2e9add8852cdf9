"""A progressive HTTP file (mp3, m4a, flac, ogg, opus, wav…) as one virtual byte space.

Owns one remote resource: learning its length and validators (a one-byte ranged probe),
serving bytes from the cache entry, and the download loop that fills the cache from a
position onwards — ranged GETs carrying If-Range, resumed at the last byte received after a
dropped connection, sequential spooling from byte 0 when the origin ignores Range.

It must never speak FUSE or choose errnos, never decide *when* to download (the scheduler
does), and never store or serve a byte whose version it has not checked: when the origin
changes, the old version is dropped and the generation counter moves on.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Protocol

import trio

from ..bitrate import HEAD_BYTES, TAIL_BYTES, bytes_per_second
from ..budget import ChangeSignal, Deadline
from ..cache import CacheEntry, EntryMeta
from ..errors import CacheError, OriginError, RemoteChangedError
from ..net import Backoff, HttpClient, ResourceInfo, redact_url

log = logging.getLogger(__name__)

# An open asks the origin whether the cached version is still current at most this often:
# players open a file several times in a row (probe, then play), and one conditional request
# a minute per file is plenty to notice a republished episode.
REVALIDATE_INTERVAL = 60.0
# Read-ahead for a file whose headers give no byte rate assumes CD audio (1411 kbit/s), the
# highest rate common in the wild, so an unknown format still gets its full seconds ahead.
FALLBACK_BYTE_RATE = 176_400
# Read-ahead is never smaller than one kernel read request plus a little, nor so large that
# one stream could fill the cache: 64 KiB .. 256 MiB.
MIN_WINDOW = 64 * 1024
MAX_WINDOW = 256 * 1024 * 1024
# A download's first request ends at its target, and at least 256 KiB past its start, so a
# seek fetches nothing beyond the window it declared. A download that outlives its first
# request has a reader keeping up with it — sequential reading — so its later requests are
# open-ended and a long read pays the request round trip once, not once per window.
FIRST_REQUEST = 256 * 1024
# On open, the head and tail that players probe are fetched at once: 128 KiB covers ID3v2
# without large cover art and the first frames; 64 KiB covers ID3v1/APE tags, the last Ogg
# page and a short file's MP4 index. A player that wants more reads on as usual.
PREFETCH_HEAD = 128 * 1024
PREFETCH_TAIL = 64 * 1024
# The byte-rate parser needs at least this much of the head (or the whole file).
MIN_PARSE_HEAD = 64 * 1024
# After a failed size probe, getattr answers "size 0" at once for this long instead of
# probing (and making `ls` wait) again: an origin that is down stays down for a while.
PROBE_RETRY_AFTER = 30.0
# The download rate shown in status is averaged over this many seconds.
RATE_WINDOW = 3.0
# Persist the cache index after this many new bytes, so a crash loses at most this much
# download work; 8 MiB keeps the fsync rate far below one per second on fast links.
FLUSH_EVERY = 8 * 1024 * 1024


class DownloadCursor(Protocol):
    """The scheduler's handle on one running download.

    ``pos`` is advanced by the download as bytes land; ``target`` is moved by the scheduler
    as readers advance. The download stops once ``pos`` reaches ``target``.
    """

    pos: int
    target: int


class ProgressiveSource:
    """One progressive HTTP resource, its cached bytes and its downloads.

    Attributes:
        url: the resource URL (may carry credentials: log ``shown`` instead).
        shown: the redacted URL.
        entry: the cache entry holding its bytes.
        changed: notified whenever bytes land, metadata arrives or a download ends.
        generation: bumped when the origin's version changes; handles opened on an older
            generation must fail with ESTALE rather than see the new bytes.
        last_error: the most recent failure, for status displays.
    """

    def __init__(
        self, url: str, http: HttpClient, entry: CacheEntry, readahead_seconds: float = 30.0
    ) -> None:
        self.url = url
        self.readahead_seconds = readahead_seconds
        self._byte_rate: float | None = None
        self.shown = redact_url(url)
        self.entry = entry
        self.http = http
        self.changed = ChangeSignal()
        self.generation = 0
        self.last_error: OriginError | None = None
        self._probe_claimed = False
        self._probe_lock = trio.Lock()
        self._validated_at: float | None = None
        # When the current or latest background size probe started (trio clock), if ever.
        self.probe_started: float | None = None
        self._probe_failed_at: float | None = None
        self._received: deque[tuple[float, int]] = deque()

    # -- metadata ----------------------------------------------------------------------------

    @property
    def length(self) -> int | None:
        meta = self.entry.meta
        return None if meta is None else meta.length

    @property
    def info(self) -> ResourceInfo | None:
        meta = self.entry.meta
        if meta is None:
            return None
        return ResourceInfo(
            meta.length, meta.etag, meta.last_modified, meta.content_type, meta.accepts_ranges
        )

    async def ensure_info(self) -> ResourceInfo:
        """Length and validators, probing the origin once if they are not cached.

        Raises:
            OriginError: the origin cannot be reached, or does not report a length.
        """
        async with self._probe_lock:
            info = self.info
            if info is not None:
                return info
            try:
                info = await self.http.probe(self.url)
                if info.length is None:
                    raise OriginError(self.shown, "origin does not report the length")
            except OriginError as exc:
                self.last_error = exc
                raise
            finally:
                self.changed.notify()
            self.entry.set_meta(_meta(info))
            self.last_error = None
            self._validated_at = trio.current_time()
        await self.entry.flush()
        return info

    async def revalidate(self, deadline: Deadline) -> None:
        """On open: check the cached version against the origin (at most once a minute).

        A changed origin replaces the cached version: handles opened before get ESTALE, the
        opener gets the new bytes. An unreachable origin means offline: the cache serves.
        """
        with trio.move_on_at(deadline.at):
            # One check at a time: overlapping opens share its answer instead of replacing
            # the version twice (which would fail the first opener's new handle).
            async with self._probe_lock:
                info = self.info
                now = trio.current_time()
                if info is None or (
                    self._validated_at is not None
                    and now - self._validated_at < REVALIDATE_INTERVAL
                ):
                    return
                try:
                    current = await self.http.revalidate(self.url, info)
                except OriginError as exc:
                    log.info("%s: not revalidated (%s); serving the cached version",
                             self.shown, exc.reason)  # fmt: skip
                    return
                self._validated_at = now
                if current is not None and current.length is not None and self.info == info:
                    self._replace_version(current)

    @property
    def probing(self) -> bool:
        """A size probe is running, or claimed and about to run."""
        return self._probe_claimed or self._probe_lock.locked()

    def claim_probe(self) -> bool:
        """Reserve the one background probe; False if the size is known or a probe is on."""
        if self.length is not None or self.probing:
            return False
        failed = self._probe_failed_at
        if failed is not None and trio.current_time() - failed < PROBE_RETRY_AFTER:
            return False
        self._probe_claimed = True
        self.probe_started = trio.current_time()
        return True

    async def probe_in_background(self) -> None:
        """Learn the size for getattr (after :meth:`claim_probe`); failures are logged."""
        try:
            await self.ensure_info()
        except OriginError as exc:
            self._probe_failed_at = trio.current_time()
            log.warning("%s: size unknown: %s", self.shown, exc.reason)
        finally:
            self._probe_claimed = False
            self.changed.notify()

    async def wait_length(self, deadline: Deadline) -> int | None:
        """The length, waiting until ``deadline`` for a probe in flight; None if unknown."""
        while self.length is None and self.probing:
            if not await self.changed.wait(deadline):
                break
        return self.length

    # -- bytes -------------------------------------------------------------------------------

    def read_cached(self, offset: int, size: int) -> bytes | None:
        return self.entry.read(offset, size)

    def first_missing(self, offset: int) -> int:
        return self.entry.ranges.first_missing(offset)

    def byte_rate(self) -> float | None:
        """Bytes per second of audio, from the container headers once they are cached."""
        length = self.length
        if self._byte_rate is not None or not length:
            return self._byte_rate
        head_size = min(self.entry.ranges.present_end(0), HEAD_BYTES, length)
        if head_size < min(length, MIN_PARSE_HEAD):
            return None
        head = self.entry.read(0, head_size) or b""
        tail = b""
        for size in (TAIL_BYTES, PREFETCH_TAIL):
            tail = self.entry.read(max(0, length - size), min(size, length)) or b""
            if tail:
                break
        rate = bytes_per_second(head, tail, length)
        if rate is None and (head_size < min(length, HEAD_BYTES) or not tail):
            return None  # more of the head or the tail may still tell: ask again later
        self._byte_rate = rate or FALLBACK_BYTE_RATE
        log.debug("%s: %.0f bytes per second of audio", self.shown, self._byte_rate)
        return self._byte_rate

    def readahead_bytes(self) -> int:
        """The read-ahead window: ``readahead_seconds`` of audio, in bytes."""
        rate = self.byte_rate() or FALLBACK_BYTE_RATE
        return int(min(MAX_WINDOW, max(MIN_WINDOW, rate * self.readahead_seconds)))

    def probe_ranges(self) -> list[tuple[int, int]]:
        """What players read before they play: the head and the tail of the file."""
        length = self.length or 0
        head = (0, min(length, PREFETCH_HEAD))
        tail = (max(head[1], length - PREFETCH_TAIL), length)
        return [span for span in (head, tail) if span[0] < span[1]]

    @property
    def accepts_ranges(self) -> bool:
        meta = self.entry.meta
        return meta is None or meta.accepts_ranges

    async def download(self, cursor: DownloadCursor) -> None:
        """Fill the cache from ``cursor.pos`` until ``cursor.target``, the end, or failure.

        Skips ranges already present. Transient failures (dropped connection, 5xx) are
        retried with backoff, resuming at the first byte not yet received.

        Raises:
            OriginError: the retries are spent, or the origin refuses for good.
            RemoteChangedError: the origin now serves another version (the cache is reset).
            CacheError: downloaded bytes could not be stored.
        """
        info = self.info
        if info is None:
            info = await self.ensure_info()
        generation = self.generation
        backoff = Backoff(self.http.policy)
        unflushed = 0
        first_request = True
        while True:
            if generation != self.generation:
                return
            length = info.length or 0
            start = self.entry.ranges.first_missing(cursor.pos)
            if start >= length or start >= cursor.target:
                return
            cursor.pos = start
            following = self.entry.ranges.next_present(start)
            stop = length if following is None else following
            if info.accepts_ranges and first_request:
                stop = min(stop, max(cursor.target, start + FIRST_REQUEST))
                first_request = False
            last = stop - 1
            dropped: OriginError | None = None
            try:
                # Opening retries transient failures itself; only a body that breaks off
                # after it started is retried here, resuming at the first byte not received.
                async with self.http.open_range(self.url, start, last, expected=info) as body:
                    if body.start != start:
                        info = self._note_ranges_ignored(info)
                    offset = body.start
                    try:
                        async for chunk in body.chunks():
                            if generation != self.generation:
                                return
                            if not self.entry.write(offset, chunk):
                                raise CacheError(f"{self.shown}: cannot store downloaded bytes")
                            offset += len(chunk)
                            cursor.pos = max(cursor.pos, offset)
                            self._note_received(len(chunk))
                            unflushed += len(chunk)
                            backoff.reset()
                            self.changed.notify()
                            if unflushed >= FLUSH_EVERY:
                                unflushed = 0
                                await self.entry.flush()
                            # Stopping early is only safe where a later request can resume
                            # here; without Range support, spool on to the end instead.
                            if offset > last or (info.accepts_ranges and offset >= cursor.target):
                                break
                        else:
                            if offset <= last:
                                # The body ended cleanly but short: as good as a drop, and
                                # retried with backoff rather than re-requested in a hot loop.
                                raise OriginError(
                                    self.shown, f"body ended at byte {offset}, before {last + 1}",
                                    transient=True,
                                )
                    except OriginError as exc:
                        if not exc.transient:
                            raise
                        dropped = exc
            except RemoteChangedError as exc:
                self._invalidate(generation, exc)
                raise
            except OriginError as exc:
                self.last_error = exc
                raise
            if dropped is not None:
                try:
                    await backoff.pause(dropped)
                except OriginError:
                    self.last_error = dropped
                    raise

    def _note_received(self, size: int) -> None:
        self.last_error = None
        now = trio.current_time()
        self._received.append((now, size))
        while self._received and self._received[0][0] < now - RATE_WINDOW:
            self._received.popleft()

    def download_rate(self) -> float:
        """Bytes per second received over the last few seconds."""
        now = trio.current_time()
        recent = sum(size for when, size in self._received if when >= now - RATE_WINDOW)
        return recent / RATE_WINDOW

    # -- versions ----------------------------------------------------------------------------

    def _note_ranges_ignored(self, info: ResourceInfo) -> ResourceInfo:
        if info.accepts_ranges:
            log.info("%s: origin ignores Range; downloading sequentially from byte 0", self.shown)
            info = replace(info, accepts_ranges=False)
            self.entry.set_meta(_meta(info))
        return info

    def _replace_version(self, info: ResourceInfo) -> None:
        log.info("%s: changed on the origin; dropping the cached version", self.shown)
        self.generation += 1
        self.entry.reset()
        self.entry.set_meta(_meta(info))
        self.changed.notify()

    def _invalidate(self, generation: int, exc: RemoteChangedError) -> None:
        """Drop the old version once, however many downloads notice the change."""
        self.last_error = exc
        if generation != self.generation:
            return
        log.warning("%s: %s; dropping cached bytes", self.shown, exc.reason)
        self.generation += 1
        self.entry.reset()
        self.changed.notify()


def _meta(info: ResourceInfo) -> EntryMeta:
    if info.length is None:
        raise ValueError("a cached resource needs a length")
    return EntryMeta(
        length=info.length,
        etag=info.etag,
        last_modified=info.last_modified,
        content_type=info.content_type,
        accepts_ranges=info.accepts_ranges,
    )
