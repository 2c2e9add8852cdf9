"""An HLS programme: its playlists, and the files its folder shows.

Owns loading a programme (master playlist, then every variant's media playlist, remembered
in the cache index so a VOD programme opens offline) and deciding the folder's files: one
seekable file per VOD variant part (a :class:`~.variant.HlsVariantSource`), `best` and
`worst` copies, and the sequential files (live variants, `auto`) described by the variants
a feed may play.

It must never speak FUSE or choose errnos, and never concatenate segments a player cannot
continue across: a discontinuity or a new init section starts a new part (a new file).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from ...cache import CacheStore
from ...errors import OriginError, PlaylistError
from ...redact import redact_url
from ..bytesource import ByteSource
from .playlist import (
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
from .segments import SegmentFetcher
from .throughput import Throughput
from .variant import HlsVariantSource

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    "ts": "video/mp2t", "aac": "audio/aac", "mp3": "audio/mpeg", "ac3": "audio/ac3",
    "ec3": "audio/eac3", "m4a": "audio/mp4", "mp4": "video/mp4",
}  # fmt: skip
# Containers whose segments carry their own headers, so that segments of different
# variants can follow one another in one file (RFC 8216 §6.2.4 needs aligned variants).
SWITCHABLE = ("ts", "aac", "mp3", "ac3", "ec3")


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
    """The playlists of one ``[[stream]]`` whose URL is an HLS playlist.

    Attributes:
        throughput: one estimate per programme: `auto` files opened later start from what
            earlier ones measured.
        start_behind: how many segments behind the live edge a live file starts.
    """

    def __init__(
        self,
        url: str,
        label: str,
        fetcher: SegmentFetcher,
        store: CacheStore,
        sources: dict[str, ByteSource],
        readahead_seconds: float,
        start_behind: int = 3,
    ) -> None:
        self.url = url
        self.label = label
        self.shown = redact_url(url)
        self.fetcher = fetcher
        self._store = store
        self._sources = sources
        self.readahead_seconds = readahead_seconds
        self.start_behind = start_behind
        self.throughput = Throughput()

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
            source.variant, source.live = item.stem, False
            self._sources[key] = source
        # A rebuilt programme (a reload) may ask with new headers: its fetcher's.
        source.fetcher, source.http = self.fetcher, self.fetcher.http
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


