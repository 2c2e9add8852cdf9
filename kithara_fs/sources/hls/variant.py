"""One VOD variant part of an HLS programme as one seekable byte space.

Owns :class:`HlsVariantSource`: the init section followed by the media segments of one
variant part, decrypted, with an exact length learnt from size probes of every segment
before any segment body is fetched (remembered in the cache index, so it opens offline).
Bytes are cached like any source's, at their offsets in that byte space.

It must never speak FUSE or choose errnos, and never join segments a player cannot continue
across (the programme gives it one part: no discontinuity, one init section).
"""

from __future__ import annotations

import bisect
import json
from contextlib import aclosing

import trio

from ...cache import CacheEntry, CacheStore, EntryMeta
from ...errors import OriginError
from ...net import Backoff, ResourceInfo
from ...redact import redact_url
from ..bytesource import ByteSource, DownloadCursor
from .playlist import Resource
from .segments import PROBE_CONCURRENCY, SegmentFetcher

# Persist the index after this many new bytes (as for progressive files).
FLUSH_EVERY = 8 * 1024 * 1024


class HlsVariantSource(ByteSource):
    """One VOD variant part: init section, then media segments, decrypted, as one byte space.

    Its cache entry is keyed by the media playlist URL and the part number; its version
    (the entry's ETag) is the playlist's fingerprint, so a changed playlist starts afresh.
    """

    def __init__(
        self,
        key: str,
        fetcher: SegmentFetcher,
        entry: CacheEntry,
        store: CacheStore,
        pieces: list[Resource],
        *,
        duration: float,
        fingerprint: str,
        content_type: str,
        readahead_seconds: float,
    ) -> None:
        super().__init__(key, fetcher.http, entry, readahead_seconds)
        self.shown = redact_url(key.split("#kithara-part=")[0])
        self.fetcher = fetcher
        self._store = store
        self._pieces = pieces
        self._duration = duration
        self._fingerprint = fingerprint
        self._content_type = content_type
        self._sizes: list[int] = []
        self._starts: list[int] = []
        remembered = store.document(self._sizes_name)
        meta = entry.meta
        if remembered is not None and meta is not None and meta.etag == fingerprint:
            try:
                sizes = json.loads(remembered)
                if len(sizes) == len(pieces) and all(isinstance(s, int) for s in sizes):
                    self._set_sizes(sizes)
            except ValueError:
                pass
        if meta is not None and (meta.etag != fingerprint or not self._sizes):
            entry.reset()

    @property
    def _sizes_name(self) -> str:
        return f"hls-sizes:{self.url}"

    def _set_sizes(self, sizes: list[int]) -> None:
        self._sizes = sizes
        self._starts = []
        total = 0
        for size in sizes:
            self._starts.append(total)
            total += size

    async def ensure_info(self) -> ResourceInfo:
        async with self._info_lock:
            if not self._sizes or self.entry.meta is None:
                sizes = [0] * len(self._pieces)
                todo = iter(range(len(self._pieces)))

                async def measure() -> None:
                    # A few workers share the list: one task per segment would cost memory
                    # for every segment of a 200 000-segment playlist at once.
                    for index in todo:
                        sizes[index] = await self.fetcher.plain_size(self._pieces[index])

                try:
                    async with trio.open_nursery() as nursery:
                        for _ in range(min(PROBE_CONCURRENCY, len(self._pieces))):
                            nursery.start_soon(measure)
                except* OriginError as group:
                    error = group.exceptions[0]
                    assert isinstance(error, OriginError)
                    self.last_error = error
                    self.changed.notify()
                    raise error from None
                self._set_sizes(sizes)
                self.entry.set_meta(EntryMeta(sum(sizes), etag=self._fingerprint,
                                              content_type=self._content_type))  # fmt: skip
                self._store.save_document(self._sizes_name, json.dumps(sizes))
                self.last_error = None
                self.changed.notify()
            meta = self.entry.meta
            assert meta is not None
        await self.entry.flush()
        return ResourceInfo(meta.length, meta.etag, None, meta.content_type)

    def byte_rate(self) -> float | None:
        length = self.length
        if not length or self._duration <= 0:
            return None
        return length / self._duration

    def segment_count(self) -> int:
        return len(self._pieces)

    async def download(self, cursor: DownloadCursor) -> None:
        """Fill the cache from ``cursor.pos``, segment by segment, until ``cursor.target``.

        Within an unencrypted segment the request starts at the wanted byte; an encrypted
        one is fetched from the cipher block that holds it. A dropped transfer resumes at the
        first byte not received, after a backoff pause.
        """
        await self.ensure_info()
        version = self.version
        backoff = Backoff(self.http.policy)
        length = self.length or 0
        unflushed = 0
        while version == self.version:
            start = self.entry.ranges.first_missing(cursor.pos)
            if start >= length or start >= cursor.target:
                return
            cursor.pos = start
            index = bisect.bisect_right(self._starts, start) - 1
            piece_start, size = self._starts[index], self._sizes[index]
            offset = start
            try:
                chunks = self.fetcher.read(self._pieces[index], start - piece_start, size)
                async with aclosing(chunks):
                    async for chunk in chunks:
                        if version != self.version:
                            return
                        offset = self._keep(offset, chunk, cursor)
                        unflushed += len(chunk)
                        backoff.reset()
                        if offset >= cursor.target:
                            break
            except OriginError as exc:
                self.last_error = exc
                if not exc.retryable:
                    raise
                await backoff.pause(exc)
                continue
            if unflushed >= FLUSH_EVERY:
                unflushed = 0
                self.flush_behind(cursor)
