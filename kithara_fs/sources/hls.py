"""An HLS programme: its playlists, and each VOD variant part as one seekable byte space.

Owns loading a programme (master playlist, then every variant's media playlist, remembered
in the cache index so a VOD programme opens offline), deciding the files its folder shows,
and :class:`HlsVariantSource`: the init section followed by the media segments of one
variant part, decrypted, with an exact length learnt from size probes before any segment
body is fetched. Bytes are cached like any source's, at their offsets in that byte space.

It must never speak FUSE or choose errnos, and never concatenate segments a player cannot
continue across: a discontinuity or a new init section starts a new part (a new file).
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass

import trio

from ..cache import CacheEntry, CacheStore, EntryMeta
from ..errors import OriginError, PlaylistError
from ..hls import (
    MasterPlaylist,
    MediaPlaylist,
    Resource,
    Segment,
    Variant,
    container_extension,
    parse,
    unique,
    variant_stem,
)
from ..net import Backoff, ResourceInfo
from ..redact import redact_url
from .base import ByteSource, DownloadCursor
from .segments import PROBE_CONCURRENCY, SegmentFetcher

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    "ts": "video/mp2t", "aac": "audio/aac", "mp3": "audio/mpeg", "ac3": "audio/ac3",
    "ec3": "audio/eac3", "m4a": "audio/mp4", "mp4": "video/mp4",
}  # fmt: skip
# Containers whose segments carry their own headers, so that segments of different
# variants can follow one another in one file (RFC 8216 §6.2.4 needs aligned variants).
SWITCHABLE = ("ts", "aac", "mp3", "ac3", "ec3")
# Persist the index after this many new bytes (as for progressive files).
FLUSH_EVERY = 8 * 1024 * 1024


@dataclass(frozen=True)
class VariantMedia:
    """One variant (or the lone media playlist) with its loaded media playlist."""

    variant: Variant
    media: MediaPlaylist
    stem: str
    extension: str


@dataclass(frozen=True)
class ProgrammeFile:
    """A file of the programme folder: a seekable VOD part, or a sequential feed.

    Attributes:
        name: file name in the folder.
        source: the byte space of a VOD variant part (None for feeds).
        feed: for `auto` and live files, the variants the feed may play, best first.
        live: the playlists are live (no EXT-X-ENDLIST yet).
        role: "variant", "best", "worst" or "auto".
        variant: the variant's stem ("" for `auto`, which changes).
    """

    name: str
    source: HlsVariantSource | None
    feed: tuple[VariantMedia, ...] = ()
    live: bool = False
    role: str = "variant"
    variant: str = ""


class Programme:
    """The playlists of one ``[[stream]]`` whose URL is an HLS playlist."""

    def __init__(
        self,
        url: str,
        label: str,
        fetcher: SegmentFetcher,
        store: CacheStore,
        sources: dict[str, ByteSource],
        readahead_seconds: float,
    ) -> None:
        self.url = url
        self.label = label
        self.shown = redact_url(url)
        self.fetcher = fetcher
        self._store = store
        self._sources = sources
        self.readahead_seconds = readahead_seconds

    async def load(self) -> list[ProgrammeFile]:
        """Fetch (or recall) the playlists and decide the folder's files.

        Raises:
            OriginError: a playlist cannot be fetched.
            PlaylistError: a playlist is malformed or unsupported.
        """
        top = await self.playlist(self.url)
        if isinstance(top, MediaPlaylist):
            lone = Variant(self.url, 0, "")
            return self._files([VariantMedia(lone, top, "stream", container_extension(top))])
        loaded: list[MediaPlaylist | None] = [None] * len(top.variants)

        async def load_variant(index: int, variant: Variant) -> None:
            media = await self.playlist(variant.uri)
            if not isinstance(media, MediaPlaylist):
                raise PlaylistError(redact_url(variant.uri), "a variant is a master playlist")
            loaded[index] = media

        try:
            async with trio.open_nursery() as nursery:
                for index, variant in enumerate(top.variants):
                    nursery.start_soon(load_variant, index, variant)
        except* OriginError as group:  # one clear cause, not a group of them
            raise group.exceptions[0] from None
        return self._files(_named(top, [m for m in loaded if m is not None]))

    async def playlist(self, url: str, *, fresh: bool = False) -> MasterPlaylist | MediaPlaylist:
        """A parsed playlist; a remembered ended (VOD) one is used without asking the origin."""
        name = f"hls-playlist:{url}"
        if not fresh and (remembered := self._store.document(name)) is not None:
            try:
                saved = json.loads(remembered)
                playlist = await _parse(saved["text"].encode(), saved["url"])
            except (ValueError, KeyError, TypeError, PlaylistError):
                log.info("%s: remembered playlist unusable; fetching it", self.label)
            else:
                if isinstance(playlist, MasterPlaylist) or playlist.ended:
                    return playlist
        fetched = await self.fetcher.playlist(url)
        playlist = await _parse(fetched.data, fetched.url)
        if isinstance(playlist, MasterPlaylist) or playlist.ended:
            text = fetched.data.decode("utf-8-sig")
            self._store.save_document(name, json.dumps({"text": text, "url": fetched.url}))
        return playlist

    def _files(self, variants: list[VariantMedia]) -> list[ProgrammeFile]:
        files: list[ProgrammeFile] = []
        live = any(not v.media.ended for v in variants)
        for item in variants:
            if live or not item.media.segments:
                files.append(ProgrammeFile(f"{item.stem}.{item.extension}", None, (item,), True,
                                           variant=item.stem))  # fmt: skip
                continue
            parts = item.media.parts()
            for number, segments in enumerate(parts, start=1):
                suffix = f".part{number}" if len(parts) > 1 else ""
                name = f"{item.stem}{suffix}.{item.extension}"
                source = self._variant_source(item, number, segments)
                files.append(ProgrammeFile(name, source, variant=item.stem))
        ranked = sorted((v for v in variants if not v.variant.rendition),
                        key=lambda v: v.variant.bandwidth)  # fmt: skip
        if len(ranked) < 2:
            return files
        for role, item in (("best", ranked[-1]), ("worst", ranked[0])):
            for file in [f for f in files if f.feed == (item,) or _belongs(f, item)]:
                name = role + file.name[len(item.stem):]
                files.append(ProgrammeFile(name, file.source, file.feed, file.live, role,
                                           item.stem))  # fmt: skip
        switchable = all(v.extension in SWITCHABLE for v in ranked) and (
            len({v.extension for v in ranked}) == 1 and len({v.variant.codecs for v in ranked}) == 1
        )
        extension = ranked[0].extension
        if switchable or extension in ("m4a", "mp4"):
            # fMP4 cannot change variant mid-file: `auto` picks one variant at open instead.
            files.append(ProgrammeFile(f"auto.{extension}", None, tuple(reversed(ranked)),
                                       live, "auto"))  # fmt: skip
        return files

    def _variant_source(
        self, item: VariantMedia, number: int, segments: Sequence[Segment]
    ) -> HlsVariantSource:
        key = f"{item.media.url}#kithara-part={number}"
        source = self._sources.get(key)
        if not isinstance(source, HlsVariantSource):
            entry = self._store.entry(key)
            pieces: list[Resource] = []
            if segments[0].init is not None:
                pieces.append(segments[0].init)
            pieces += [s.media for s in segments]
            source = HlsVariantSource(
                key, self.fetcher, entry, self._store, pieces,
                duration=sum(s.duration for s in segments),
                fingerprint=item.media.fingerprint,
                content_type=CONTENT_TYPES.get(item.extension, "application/octet-stream"),
                readahead_seconds=self.readahead_seconds,
            )  # fmt: skip
            self._sources[key] = source
        source.readahead_seconds = self.readahead_seconds
        return source


async def _parse(data: bytes, url: str) -> MasterPlaylist | MediaPlaylist:
    """Parse in a worker thread: a large playlist takes seconds, and the event loop must
    keep answering the kernel meanwhile (a live playlist is parsed again at every reload)."""
    return await trio.to_thread.run_sync(parse, data, url)


def _belongs(file: ProgrammeFile, item: VariantMedia) -> bool:
    return (
        file.source is not None
        and file.role == "variant"
        and file.source.url.startswith(f"{item.media.url}#kithara-part=")
    )


def _named(top: MasterPlaylist, media: list[MediaPlaylist]) -> list[VariantMedia]:
    stems = unique([variant_stem(v) for v in top.variants])
    return [
        VariantMedia(v, m, stem, container_extension(m, v.codecs))
        for v, m, stem in zip(top.variants, media, stems, strict=True)
    ]


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
        async with self._probe_lock:
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
        generation = self.generation
        backoff = Backoff(self.http.policy)
        length = self.length or 0
        unflushed = 0
        while generation == self.generation:
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
                        if generation != self.generation:
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
                await self.entry.flush()
