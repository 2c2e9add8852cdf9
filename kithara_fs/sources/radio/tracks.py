"""A station's finished tracks: the audio between two title changes, as files in the cache.

Owns cutting tracks out of the station's ring (from the frame boundary at one title change
to the frame boundary at the next), storing each one whole as a cache entry (so it is
checksummed, counted against the cache's size and kept across mounts), naming it
``<HH.MM.SS> <title>.<ext>`` by its local start time, keeping the newest ``keep`` of them
(older ones are deleted), and listing them as a folder (:class:`Tracks`, a
:class:`~kithara_fs.sources.base.Listing` whose generation moves on with each new track).

Only tracks received whole are kept: the one playing when the station connected, and one
that a reconnect interrupted, are not; nor one longer than the ring, nor one in a format
without frames to cut at (only MP3 and ADTS AAC streams have tracks).

It must never write a track whose bytes the ring no longer holds, never keep a track
whose bytes failed to store, and never fetch anything: a track exists only as recorded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...cache import EntryMeta, RingFile
from ...errors import OriginError
from ...net import ResourceInfo
from ...redact import redact_url
from ..base import Context, Listed, Listing
from ..bytesource import ByteSource, DownloadCursor

if TYPE_CHECKING:
    from ...cache import CacheEntry
    from ...net import HttpClient

log = logging.getLogger(__name__)

# Bytes copied from the ring to a track's entry per write.
COPY_PIECE = 1024 * 1024
# A name is at most 255 bytes; the title is cut to leave room for the time and extension.
MAX_NAME_BYTES = 255
_EXTENSIONS = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/aac": "aac",
    "audio/aacp": "aac", "audio/x-aac": "aac", "audio/adts": "aac",
}  # fmt: skip


def _safe(text: str) -> str:
    """Text fit for a file name: no separators or control characters, no leading dots."""
    text = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in text)
    return text.strip().lstrip(".")


def _file_name(stamp: str, title: str, extension: str, suffix: str) -> str:
    """``<stamp> <title><suffix>.<extension>``, the title cut so it fits in 255 bytes."""
    title = _safe(title)
    room = MAX_NAME_BYTES - len(f"{stamp} {suffix}.{extension}".encode())
    while title and len(title.encode()) > room:
        title = title[:-1].rstrip()
    base = f"{stamp} {title}" if title else stamp
    return f"{base}{suffix}.{extension}"


class TrackSource(ByteSource):
    """One finished track: a complete cache entry of known length, never downloaded."""

    def __init__(self, url: str, http: HttpClient, entry: CacheEntry, kbps: int) -> None:
        super().__init__(url, http, entry)
        self.live = False
        self._byte_rate = kbps * 125.0 if kbps else None

    async def ensure_info(self) -> ResourceInfo:
        meta = self.entry.meta
        if meta is None:
            raise OriginError(self.shown, "this track is no longer in the cache")
        return ResourceInfo(meta.length, content_type=meta.content_type)

    async def download(self, cursor: DownloadCursor) -> None:
        # A recorded track has no origin to fetch it from again.
        raise OriginError(self.shown, "this track's bytes are no longer in the cache")


@dataclass
class _Track:
    url: str
    name: str
    started: float  # wall clock
    source: TrackSource


@dataclass
class _Cut:
    """A track being received: it starts at ``start``; ``end`` once its successor began."""

    start: int
    title: str
    started: float
    end: int | None = None


class Tracks(Listing):
    """The finished tracks of one station, newest last."""

    what = "station tracks"

    def __init__(self, station_url: str, context: Context, keep: int, extension: str) -> None:
        self.station_url = station_url
        self.http = context.http
        self.store = context.store
        self._spawn = context.spawn
        self.shown = redact_url(station_url)
        self.keep = keep
        self.extension = extension
        self.content_type: str | None = None
        self.kbps = 0
        self._generation = 0
        self._done: list[_Track] = []
        self._retired: list[_Track] = []  # deleted once no reader has them open
        self._receiving: _Cut | None = None
        self._finishing: _Cut | None = None
        self._document = f"radio.tracks:{station_url}"
        self._prefix = f"{station_url}#track/"
        self._recall()

    # -- the listing -------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        gone = [t for t in self._done if not t.source.complete()]
        if gone:  # evicted from the cache meanwhile
            self._done = [t for t in self._done if t not in gone]
            self._generation += 1
        return self._generation

    async def load(self) -> list[Listed]:
        return [Listed(t.name, t.source) for t in self._done if t.source.complete()]

    # -- what the station tells it ---------------------------------------------------------

    def abandon(self) -> None:
        """The audio stops being continuous (a reconnect): the track in progress is lost."""
        self._receiving = None
        self._finishing = None

    def title_changed(self, boundary: int, title: str, cuttable: bool) -> None:
        """A new title from ring position ``boundary`` (a frame start when ``cuttable``)."""
        if not cuttable or self.keep == 0:
            self._receiving = None
            return
        previous = self._receiving
        if previous is not None and self._finishing is None:
            previous.end = boundary
            self._finishing = previous
        self._receiving = _Cut(boundary, title, time.time())

    def audio(self, ring: RingFile) -> None:
        """Audio arrived: a track whose end is now in the ring is stored."""
        cut = self._finishing
        if cut is None or cut.end is None or ring.written < cut.end:
            return
        self._finishing = None
        if cut.start < ring.oldest:
            log.info("%s: track %r was longer than the station's ring; not kept", self.shown,
                     cut.title)  # fmt: skip
            return
        self._store(cut, ring)

    # -- storing -----------------------------------------------------------------------------

    def _store(self, cut: _Cut, ring: RingFile) -> None:
        assert cut.end is not None
        length = cut.end - cut.start
        if length <= 0:
            return
        # The start time and ring position: two tracks may end in one chunk (one millisecond).
        url = f"{self._prefix}{round(cut.started * 1000)}-{cut.start}"
        entry = self.store.entry(url)
        entry.reset()
        entry.set_meta(EntryMeta(length, content_type=self.content_type))
        position = cut.start
        try:
            while position < cut.end:
                data = ring.read(position, min(COPY_PIECE, cut.end - position))
                if data is None or not entry.write(position - cut.start, data):
                    raise OSError("not stored")
                position += len(data)
        except (OSError, ValueError) as exc:
            log.warning("%s: track %r not kept: %s", self.shown, cut.title, exc)
            self.store.forget(url)
            return
        source = TrackSource(url, self.http, entry, self.kbps)
        track = _Track(url, self._name(cut), cut.started, source)
        self._done.append(track)
        log.info("%s: finished track %r (%d bytes)", self.shown, track.name, length)
        if self._spawn is not None:
            self._spawn(f"track {track.name}", entry.flush)  # its index row, beside the audio
        self._trim()
        self._generation += 1
        self._remember()

    def _name(self, cut: _Cut) -> str:
        stamp = time.strftime("%H.%M.%S", time.localtime(cut.started))
        extension = _EXTENSIONS.get((self.content_type or "").split(";")[0].strip().lower(),
                                    self.extension)  # fmt: skip
        taken = {t.name for t in self._done}
        name, count = _file_name(stamp, cut.title, extension, ""), 1
        while name in taken:
            count += 1
            name = _file_name(stamp, cut.title, extension, f" ({count})")
        return name

    def _trim(self) -> None:
        while len(self._done) > self.keep:
            self._retired.append(self._done.pop(0))
        kept = []
        for track in self._retired:
            if track.source.entry.readers > 0:
                kept.append(track)  # a reader has it open: deleted at a later trim
            else:
                self.store.forget(track.url)
        self._retired = kept

    # -- across mounts -----------------------------------------------------------------------

    def _remember(self) -> None:
        rows = [{"url": t.url, "name": t.name, "started": t.started, "kbps": self.kbps}
                for t in self._done]  # fmt: skip
        self.store.save_document(self._document, json.dumps(rows))

    def _recall(self) -> None:
        """The tracks an earlier mount kept, if their bytes are still cached whole."""
        text = self.store.document(self._document)
        if not text:
            return
        try:
            rows: list[dict[str, Any]] = json.loads(text)
            for row in rows[-self.keep :] if self.keep else []:
                url, name = str(row["url"]), str(row["name"])
                # Only this station's tracks, under names we would have made.
                if not url.startswith(self._prefix) or name != _safe(name):
                    continue
                entry = self.store.entry(url)
                source = TrackSource(url, self.http, entry, int(row.get("kbps") or 0))
                if source.complete() and name not in {t.name for t in self._done}:
                    self._done.append(_Track(url, name, float(row["started"]), source))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: the list of kept tracks is unreadable (%s); starting afresh",
                        self.shown, exc)  # fmt: skip
            self._done = []
