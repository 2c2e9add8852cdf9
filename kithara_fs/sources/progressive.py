"""A progressive HTTP file (mp3, m4a, flac, ogg, opus, wav…) as one virtual byte space.

Owns one remote resource: learning its length and validators (a one-byte ranged probe),
serving bytes from the cache entry, and the download loop that fills the cache from a
position onwards — ranged GETs carrying If-Range, resumed at the last byte received after a
dropped connection, sequential spooling from byte 0 when the origin ignores Range.

It must never speak FUSE or choose errnos, never decide *when* to download (the scheduler
does), and never store or serve a byte whose version it has not checked: when the origin
changes, the old version is dropped and the version counter moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import trio

from ..bitrate import HEAD_BYTES, TAIL_BYTES, bytes_per_second
from ..budget import Deadline
from ..cache import CacheEntry, EntryMeta
from ..errors import OriginError, RemoteChangedError
from ..net import Backoff, Body, HttpClient, ResourceInfo
from . import radio
from .base import Context, Kind, Sequential, Spec
from .bytesource import FALLBACK_BYTE_RATE, OPENING_TAIL, ByteSource, DownloadCursor
from .versions import VaryingVersions

log = logging.getLogger(__name__)

# An open asks the origin whether the cached version is still current at most this often:
# players open a file several times in a row (a first look, then play), and one conditional
# request a minute per file is plenty to notice a republished episode.
REVALIDATE_INTERVAL = 60.0
# A request ends at the cursor's target, which the scheduler sizes (after a seek, just the
# read; then doubling with each read on). Once the reader reads on with its whole window the
# cursor is open-ended: one request serves the rest, paced by the reader. A download that
# reached its target waits this long for its reader to move the target on, keeping an
# open-ended request's connection meanwhile (a player at 1x moves it with every read; one
# paused by its user does not), before it ends.
HOLD_SECONDS = 10.0
# The byte-rate parser needs at least this much of the head (or the whole file).
MIN_PARSE_HEAD = 64 * 1024
# Persist the cache index after this many new bytes, so a crash loses at most this much
# download work; 8 MiB keeps the fsync rate far below one per second on fast links.
FLUSH_EVERY = 8 * 1024 * 1024
# ...and not more often than this: each save writes every checksum piece of the file, which
# on a fast link (200 MB/s here) was 7 % of a download's CPU; a crash then costs at most a
# second of download work.
FLUSH_INTERVAL = 1.0


class ProgressiveSource(ByteSource):
    """One progressive HTTP resource: probed for its length, downloaded with ranged GETs."""

    def __init__(
        self, url: str, http: HttpClient, entry: CacheEntry, readahead_seconds: float = 30.0,
        as_station: Callable[[], Sequential] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(url, http, entry, readahead_seconds)
        self._validated_at: float | None = None
        # Dynamic ad insertion (``versions_vary``, podcast hosts): versions.py decides.
        self.varying = VaryingVersions(self.shown)
        # What reads this URL if it turns out to be an internet radio station.
        self._as_station = as_station

    # -- metadata ----------------------------------------------------------------------------

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
        async with self._info_lock:
            info = self.info
            if info is not None:
                return info
            if self.endless is not None:  # known to be a station: no length will come
                raise OriginError(self.shown, "an endless stream (internet radio)")
            try:
                if self.versions_vary:
                    info, final = await self.http.probe_where(self.url)
                    self.varying.resolved(final)
                else:
                    info = await self.http.probe(self.url)
                if info.length is None and info.endless and self._as_station is not None:
                    if self.endless is None:
                        log.info("%s: an internet radio station; read as an endless file "
                                 '(kind = "radio" adds titles, rewind and tracks)', self.shown)
                        self.endless = self._as_station()
                    raise OriginError(self.shown, "an endless stream (internet radio)")
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
        opener gets the new bytes. An origin that fails or does not answer by ``deadline``
        means offline: the cache serves, and neither this file nor any other of that host
        waits for a check again for a minute.
        """
        if self.info is None or self.http.recently_unreachable(self.url) or self.versions_vary:
            # With ad insertion, every answer may be "another version": the cached one is kept
            # (a republished episode comes with a new enclosure URL in its feed).
            return
        with trio.move_on_at(deadline.at) as scope:
            # One check at a time: overlapping opens share its answer instead of replacing
            # the version twice (which would fail the first opener's new handle).
            async with self._info_lock:
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
                    self._validated_at = now
                    if exc.transient:
                        self.http.note_unreachable(self.url)
                    log.info("%s: not revalidated (%s); serving the cached version",
                             self.shown, exc.reason)  # fmt: skip
                    return
                self._validated_at = now
                if current is not None and current.length is not None and self.info == info:
                    self._replace_version(current)
        if scope.cancelled_caught:
            self._validated_at = trio.current_time()
            self.http.note_unreachable(self.url)
            log.info("%s: origin did not answer the revalidation in time; serving the cached "
                     "version", self.shown)  # fmt: skip

    # -- bytes -------------------------------------------------------------------------------

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
        for size in (TAIL_BYTES, OPENING_TAIL):
            tail = self.entry.read(max(0, length - size), min(size, length)) or b""
            if tail:
                break
        rate = bytes_per_second(head, tail, length)
        if rate is None and (head_size < min(length, HEAD_BYTES) or not tail):
            return None  # more of the head or the tail may still tell: ask again later
        self._byte_rate = rate or FALLBACK_BYTE_RATE
        log.debug("%s: %.0f bytes per second of audio", self.shown, self._byte_rate)
        return self._byte_rate

    async def download(self, cursor: DownloadCursor) -> None:
        """Fill the cache from ``cursor.pos`` until ``cursor.target``, the end, or failure.

        Skips ranges already present. Transient failures (dropped connection, 5xx) are
        retried with backoff, resuming at the first byte not yet received.

        Raises:
            OriginError: the retries are spent, or the origin refuses for good.
            RemoteChangedError: the origin now serves another version (the cache is reset).
            CacheError: downloaded bytes could not be stored.

        With ``versions_vary``, an answer of another version is asked again for the cached
        one, or taken: versions.py says which.
        """
        info = self.info
        if info is None:
            info = await self.ensure_info()
        version = self.version
        backoff = Backoff(self.http.policy)
        unflushed = 0
        flushed_at = trio.current_time()
        while True:
            if version != self.version:
                return
            length = info.length or 0
            # A version downloaded whole: from the first missing byte to the end, whoever
            # asked for what, since another request may bring another version.
            start = self.entry.ranges.first_missing(0 if self.spools_whole else cursor.pos)
            if start >= length:
                return
            if start >= cursor.target and not self.spools_whole:
                # Done, unless the reader reads on within HOLD_SECONDS: then the next request
                # is open-ended (sequential reading) instead of one more per window.
                if not info.accepts_ranges or not await cursor.wait_for_target(
                    start, HOLD_SECONDS
                ):
                    return
                continue
            cursor.pos = start
            following = self.entry.ranges.next_present(start)
            stop = length if following is None else following
            if info.accepts_ranges and not cursor.open_ended:
                stop = min(stop, max(cursor.target, start + 1))
            last = stop - 1
            dropped: OriginError | None = None
            whole = self.spools_whole
            self.varying.spooling += whole
            try:
                # Opening retries transient failures itself; only a body that breaks off
                # after it started is retried here, resuming at the first byte not received.
                where = self.varying.where(self.url)
                # A version downloaded whole asks for everything left: an answer of yet
                # another version then still runs from byte 0 to its end, and is taken.
                asked_last = None if self.spools_whole else last
                async with self.http.open_range(where, start, asked_last, expected=info,
                                                adopt=self.versions_vary) as body:  # fmt: skip
                    # While another download brings the current version whole, none is taken.
                    if self.versions_vary and self.varying.take(body, stored=(
                            self.entry.ranges.total() > 0 or self.varying.spooling > whole)):
                        info = self._take_version(body)
                        version, last = self.version, (info.length or 0) - 1
                        cursor.version = version  # joinable by readers of the version taken
                        if not whole:
                            whole, self.varying.spooling = True, self.varying.spooling + 1
                        if body.start != 0 or body.expected_bytes not in (None, info.length):
                            # Not the new version from byte 0 to its end: ask for that.
                            await backoff.pause(OriginError(
                                self.shown, "another version answered", transient=True))
                            continue
                    if body.start != start:
                        info = self._note_ranges_ignored(info)
                    offset = body.start
                    # Socket reads as large as the reader's read-ahead (64 KiB to 1 MiB): few
                    # per-read costs for a fast reader with a large window, small chunks held
                    # while a slow stream waits for its reader (net/backend.py).
                    body.want(cursor.reach)
                    try:
                        async for chunk in body.chunks():
                            if version != self.version:
                                return
                            offset = self._keep(offset, chunk, cursor)
                            body.want(cursor.reach)
                            unflushed += len(chunk)
                            backoff.reset()
                            if (unflushed >= FLUSH_EVERY
                                    and trio.current_time() - flushed_at >= FLUSH_INTERVAL):
                                unflushed, flushed_at = 0, trio.current_time()  # fmt: skip
                                self.flush_behind(cursor)
                            if offset > last:
                                break
                            # At the target, wait a while for a reader to move it on rather
                            # than close the connection: a reader as fast as the link does so
                            # at once, and a new request per window would cost a round trip
                            # and a connection each. Stopping is only safe where a later
                            # request can resume here; without Range support, spool on.
                            if (info.accepts_ranges and offset >= cursor.target
                                    and not await cursor.wait_for_target(offset, HOLD_SECONDS)):
                                break  # fmt: skip
                        else:
                            if offset <= last:
                                # The body ended cleanly but short: as good as a drop, and
                                # retried with backoff rather than re-requested in a hot loop.
                                raise OriginError(
                                    self.shown, f"body ended at byte {offset}, before {last + 1}",
                                    transient=True,
                                )
                    except OriginError as exc:
                        if not exc.retryable:
                            raise
                        dropped = exc
            except RemoteChangedError as exc:
                if self.versions_vary and self.varying.spooling > whole:
                    return  # another download brings this version whole, these bytes too
                if self.versions_vary and await self.varying.ask_again(exc, backoff):
                    continue
                self._invalidate(version, exc)
                raise
            except OriginError as exc:
                if self.varying.through_feed_url(exc):
                    continue
                self.last_error = exc
                raise
            finally:
                self.varying.spooling -= whole
            if dropped is not None:
                try:
                    await backoff.pause(dropped)
                except OriginError:
                    self.last_error = dropped
                    raise

    def _take_version(self, body: Body) -> ResourceInfo:
        """``body``'s version becomes the one cached, downloaded whole from byte 0. Bytes of
        the old one still in flight (another download) are dropped: the version counter
        moves on. Handles that were served nothing follow it (engine/stream.py)."""
        info = replace(body.info, accepts_ranges=False)
        self._replace_version(info, quiet=True)
        self.varying.resolved(body.final_url)
        return info

    def _note_ranges_ignored(self, info: ResourceInfo) -> ResourceInfo:
        if info.accepts_ranges:
            log.info("%s: origin ignores Range; downloading sequentially from byte 0", self.shown)
            info = replace(info, accepts_ranges=False)
            self.entry.set_meta(_meta(info))
        return info

    def _replace_version(self, info: ResourceInfo, quiet: bool = False) -> None:
        self.varying.forget()
        if not quiet:
            log.info("%s: changed on the origin; dropping the cached version", self.shown)
        self.version += 1
        self.entry.reset()
        self.entry.set_meta(_meta(info))
        self.changed.notify()

    def _invalidate(self, version: int, exc: RemoteChangedError) -> None:
        """Drop the old version once, however many downloads notice the change."""
        self.last_error = exc
        self.varying.forget()
        if version != self.version:
            return
        log.warning("%s: %s; dropping cached bytes", self.shown, exc.reason)
        self.version += 1
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


def build(spec: Spec, context: Context) -> ProgressiveSource:
    """One source per URL: paths that name the same URL share it."""
    source = context.sources.get(spec.url)
    if not isinstance(source, ProgressiveSource):
        source = ProgressiveSource(spec.url, context.http, context.store.entry(spec.url),
                                   as_station=lambda: radio.endless_file(spec.url, context))
        context.sources[spec.url] = source
    # A rebuilt stream (a reload) may ask with new headers: from now on, with those.
    source.http = context.http
    source.readahead_seconds = spec.readahead_seconds
    return source


KIND = Kind(name="file", build=build)
