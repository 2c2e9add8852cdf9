"""One station's upstream: one connection shared by every reader, its ring, its titles.

Owns, per station URL, the single connection (opened at the first reader's open, closed
:data:`LINGER` seconds after the last one closes), reconnecting with backoff when it drops
and trying a station playlist's relays in order; the ICY split of what arrives (audio into
the ring on disk, metadata to ``titles``); the station's name, genre and bitrate from its
headers; the frame boundaries where readers start and tracks are cut; and the (time,
position) samples that say where "ten seconds ago" is in the ring.

It must never block a reader on another, nor the connection on a reader: readers read the
ring at their own pace and one that falls behind is moved forward. It must never add or
drop an audio byte, never hand out a byte the ring no longer holds, and never speak FUSE.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import trio

from ...budget import ChangeSignal
from ...cache import RingFile
from ...errors import KitharaError, OriginError
from ...net import LiveBody
from ...redact import redact_text, redact_url
from ..base import Context
from . import icy, stations
from .frames import FrameWalker
from .icy import IcyDemuxer, Metadata, clean
from .pages import HeaderSets, PageWalker, is_ogg_type
from .titles import Titles
from .tracks import Tracks

log = logging.getLogger(__name__)

# The connection stays open this long after the last reader closed: a player that opens
# the file again (mpv and ffmpeg probe, then reopen) finds it running, rewind included.
LINGER = 5.0
# Reconnects wait 0.5 s, then twice as long each time, up to 5 s (with jitter), so a
# blocking reader (30 s budget) sees bytes again soon after a source restart.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 5.0
# A connection that brought at least this much was a working one: the backoff starts over.
WORKED_BYTES = 64 * 1024
# One (time, position) sample this often: how finely a rewind finds its start; at most
# this many (83 minutes of them: a slow station's ring may hold more than a rewind needs).
SAMPLE_EVERY = 0.25
MAX_SAMPLES = 20_000
# While a station stays unreachable, a warning this often.
UNREACHABLE_LOG_EVERY = 60.0
# A gap stays in status this long after the connection came back.
GAP_SHOWN = 300.0
# A reader that fell out of the ring restarts this far ahead of the ring's oldest byte, so
# it does not fall out again at once.
CATCH_UP_SECONDS = 2.0


class Station:
    """The shared upstream of one station URL.

    Attributes:
        url: the station URL (a stream or a station playlist; may carry credentials).
        shown: the redacted URL.
        changed: notified when audio arrives and when the connection fails for good.
        name, genre, bitrate: what the station's headers said (bitrate in kbit/s).
        content_type: the audio's Content-Type.
        titles: what it says it plays (``titles.py``).
        fatal: why readers cannot be served: every URL failed before any audio came, with
            an error another try cannot mend (cleared when a reader opens again).
        tracks: its finished tracks (a folder's listing).
    """

    def __init__(self, url: str, context: Context, options: Mapping[str, Any],
                 extension: str) -> None:  # fmt: skip
        self.url = url
        self.shown = redact_url(url)
        self.http = context.http
        self.store = context.store
        self._spawn = context.spawn
        self.user_agent: str | None = options.get("user_agent")
        self.ring_size: int = options["ring_size"]
        self.changed = ChangeSignal()
        self.name: str | None = None
        self.genre: str | None = None
        self.bitrate: int | None = None
        self.content_type: str | None = None
        self.titles = Titles(self.shown)
        self.fatal: OriginError | None = None
        self.tracks = Tracks(url, context, options["tracks_kept"], extension)
        self.ring: RingFile | None = None
        self.walker: FrameWalker | PageWalker = FrameWalker()
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self._headers = HeaderSets()
        self._readers = 0
        self._idle_since = 0.0
        self._running = False
        self.connected = False
        self._gap: tuple[float, str] | None = None  # (wall time, cause) of the latest gap
        self._first_title = True  # no title came on this connection yet
        self._lingered = False  # the latest connection ended because nobody read
        self._failed_attempts = 0  # attempts failed since audio last came
        self._warned_at = 0.0

    def configure(self, options: Mapping[str, Any]) -> None:
        """Options from a (re)built path naming this station: the User-Agent from the next
        connection, the ring's size from the next ring, the tracks kept at once."""
        self.user_agent = options.get("user_agent")
        self.ring_size = options["ring_size"]
        self.tracks.keep = options["tracks_kept"]

    # -- readers -----------------------------------------------------------------------------

    def attach(self, rewind_seconds: float) -> tuple[int, bytes]:
        """A reader opened: the ring position it starts at, and the bytes it must get first
        (an Ogg stream's header pages, when it starts past them). Starts the connection if
        needed."""
        if not self._running:
            self._start()  # may raise (no ring, or the mount is stopping): nothing counted
        self._readers += 1
        position = self.start_position(rewind_seconds)
        if not isinstance(self.walker, PageWalker):
            return position, b""
        return self._headers.start(position, self.walker.opening)

    def detach(self) -> None:
        self._readers -= 1
        if self._readers == 0:
            self._idle_since = trio.current_time()

    def start_position(self, rewind_seconds: float) -> int:
        """Where a new reader starts: the latest frame start, or as far back as asked (and
        held); the first byte of the connection if nothing came yet."""
        ring = self.ring
        if ring is None or ring.written == 0:
            return 0 if ring is None else ring.written
        live = self.walker.last_start if self.walker.synced else None
        if live is None or live < ring.oldest:
            live = ring.written
        if rewind_seconds <= 0:
            return live
        since = trio.current_time() - rewind_seconds
        for when, position in self._samples:
            if position >= ring.oldest and when >= since:
                return min(position, live)
        return live

    def catch_up_position(self) -> int:
        """Where a reader that fell out of the ring goes on: a little past its oldest byte."""
        assert self.ring is not None
        return self.start_position(self.ring_seconds() - CATCH_UP_SECONDS)

    def ring_seconds(self) -> float:
        """Roughly how many seconds of audio the ring holds now."""
        if self.ring is None:
            return 0.0
        for when, position in self._samples:
            if position >= self.ring.oldest:
                return trio.current_time() - when
        return 0.0

    def read(self, position: int, size: int) -> bytes | None:
        """Audio at a ring position (see :meth:`RingFile.read`)."""
        if self.ring is None:
            return None
        return self.ring.read(position, size)

    @property
    def written(self) -> int:
        return 0 if self.ring is None else self.ring.written

    # -- what status shows -------------------------------------------------------------------

    def status_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "title": self.titles.title or None, "station": self.name, "genre": self.genre,
            "bitrate": self.bitrate or self.walker.kbps or None,
            "content_type": self.content_type,
        }  # fmt: skip
        if self.fatal is not None:
            fields["error"] = redact_text(str(self.fatal))
        elif self._gap is not None and (not self.connected
                                        or time.time() - self._gap[0] < GAP_SHOWN):  # fmt: skip
            stamp = time.strftime("%H:%M:%S", time.localtime(self._gap[0]))
            state = "reconnected" if self.connected else "reconnecting"
            fields["error"] = f"gap at {stamp} ({state}): {self._gap[1]}"
        return fields

    # -- the connection ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._spawn is None:
            raise KitharaError("the mount is not running")
        self.fatal = None
        if self.ring is None:
            self.ring = self.store.ring(self.ring_size)
            self.walker = FrameWalker()
            self._samples.clear()
            self._headers = HeaderSets()
        self._running = True
        self._lingered = False
        self._spawn(f"station {self.shown}", self._run)

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._linger, nursery.cancel_scope)
                await self._receive()
                nursery.cancel_scope.cancel()
        except OSError as exc:
            log.error("%s: the station's ring failed: %s", self.shown, exc)
            self.fatal = OriginError(self.shown, f"the station's ring on disk failed: {exc}")
        except Exception as exc:  # a bug must fail the readers, not leave them waiting
            log.exception("%s: internal error in the station's connection", self.shown)
            self.fatal = OriginError(self.shown, f"internal error: {exc!r}")
        finally:
            self._running = False
            self.connected = False
            self.tracks.abandon()
            if self._readers == 0 and self.ring is not None:
                self.ring.close()
                self.ring = None
            self.changed.notify()
        if self._lingered and self._readers and self.fatal is None:
            # A reader opened between the linger's decision and this end: it needs a
            # connection (only after a linger: a mount that is stopping stops here).
            self._start()

    async def _linger(self, scope: trio.CancelScope) -> None:
        """Close the connection once no reader has been there for :data:`LINGER` seconds."""
        while True:
            await trio.sleep(LINGER / 5)
            if self._readers == 0 and trio.current_time() - self._idle_since >= LINGER:
                log.info("%s: no readers; closing the station's connection", self.shown)
                self._lingered = True
                scope.cancel()
                return

    async def _receive(self) -> None:
        delay = RECONNECT_FIRST
        candidates: list[str] | None = None
        index = 0
        delivered = False  # any audio since the connection was started
        # Before any audio: which relays failed, and whether any failure may mend itself.
        failed: set[int] = set()
        transient = False
        while True:
            before = self.written
            try:
                if candidates is None:
                    candidates = await self._resolve()
                await self._listen(candidates[index % len(candidates)])
            except OriginError as exc:
                got = self.written - before
                delivered = delivered or got > 0
                if not delivered:
                    failed.add(index % len(candidates) if candidates else 0)
                    transient = transient or exc.transient
                self._note_gap(exc)
                if got >= WORKED_BYTES:
                    delay = RECONNECT_FIRST
                elif got == 0:
                    index += 1  # this relay gave nothing: the next one (if any) next time
                tried_all = len(failed) >= len(candidates or [self.url])
                if not delivered and tried_all and not transient:
                    self.fatal = exc
                    log.warning("%s: the station cannot be played: %s", self.shown, exc.reason)
                    return
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RECONNECT_MAX)

    async def _resolve(self) -> list[str]:
        """The URLs to try: a station playlist's entries, or the URL itself."""
        if not stations.is_playlist_url(self.url):
            return [self.url]
        fetched = await self.http.fetch(self.url, stations.MAX_PLAYLIST_BYTES)
        try:
            urls = stations.stream_urls(fetched.data, fetched.url)
        except ValueError as exc:
            raise OriginError(self.shown, str(exc)) from None
        log.info("%s: station playlist with %d stream(s)", self.shown, len(urls))
        return urls

    async def _listen(self, url: str) -> None:
        headers = {"Icy-MetaData": "1"}
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        async with self.http.listen(url, headers) as live:
            if (live.content_type or "").split(";")[0].strip().lower() == "text/html":
                # Shoutcast's page for "browsers" (a User-Agent with Mozilla), a login page,
                # an error page sent with 200: never audio.
                raise OriginError(redact_url(url), "answered with a web page, not audio (a "
                                  "server that refuses this User-Agent? see user_agent)")
            if stations.is_playlist_type(live.content_type):
                raise OriginError(redact_url(url), "answered with a station playlist; name "
                                  "the playlist's URL (ending in .pls, .m3u or .xspf) instead")
            demuxer = self._welcome(live, url)
            async for chunk in live.chunks():
                if demuxer is None:
                    self._audio(chunk)
                    continue
                start = demuxer.audio_bytes
                audio, blocks = demuxer.feed(chunk)
                done = 0
                for block in blocks:
                    cut = block.at - start
                    self._audio(audio[done:cut])
                    done = cut
                    self._metadata(block)
                self._audio(audio[done:])

    def _welcome(self, live: LiveBody, url: str) -> IcyDemuxer | None:
        """A new connection: what its headers say, and the splitter its bytes need."""
        headers = live.headers
        self.name = clean(headers.get("icy-name", "")) or self.name
        self.genre = clean(headers.get("icy-genre", "")) or self.genre
        self.bitrate = icy.bitrate(headers.get("icy-br")) or self.bitrate
        self.content_type = live.content_type or self.content_type
        self.tracks.content_type = self.content_type
        if self.written == 0 and is_ogg_type(self.content_type) and not isinstance(
                self.walker, PageWalker):  # fmt: skip
            self.walker = PageWalker()
        raw = headers.get("icy-metaint", "").strip()
        metaint = icy.metaint(raw)
        if raw and metaint is None:
            raise OriginError(redact_url(url), f"unusable icy-metaint {raw[:20]!r}")
        demuxer = None if metaint is None else IcyDemuxer(metaint)
        if self._gap is not None and not self.connected:
            log.info("%s: reconnected", self.shown)
        else:
            log.info("%s: connected (%s, %s kbit/s, %s)", self.shown, self.name or "no name",
                     self.bitrate or "?", f"metadata every {raw} bytes" if raw
                     else "no metadata")  # fmt: skip
        self.connected = True
        self._failed_attempts = 0
        # Whatever came before is not continued by this connection's audio.
        self.tracks.abandon()
        self._first_title = True
        return demuxer

    def _note_gap(self, exc: OriginError) -> None:
        was = self.connected
        self.connected = False
        self._gap = (time.time(), redact_text(exc.reason))
        now = trio.current_time()
        if was:
            log.warning("%s: station connection lost (%s); reconnecting", self.shown,
                        exc.reason)  # fmt: skip
            self._failed_attempts = 0
        elif self._failed_attempts == 0 or now - self._warned_at >= UNREACHABLE_LOG_EVERY:
            # An outage is one warning, then one a minute: not one per attempt.
            log.warning("%s: station not reachable (%s); trying again%s", self.shown,
                        exc.reason, f" ({self._failed_attempts} attempts so far)"
                        if self._failed_attempts else "")  # fmt: skip
            self._warned_at = now
        self._failed_attempts += 1

    def _audio(self, data: bytes) -> None:
        if not data:
            return
        ring = self.ring
        assert ring is not None
        now = trio.current_time()
        if not self._samples or now - self._samples[-1][0] >= SAMPLE_EVERY:
            # The latest frame start (in the ring already), so a rewind starts on a frame.
            mark = self.walker.last_start if self.walker.synced else None
            self._samples.append((now, ring.written if mark is None else mark))
        ring.append(data)
        walker = self.walker
        walker.feed(data)
        if isinstance(walker, PageWalker):
            self._headers.add(walker.take_headers(), ring.oldest)
        while self._samples and self._samples[0][1] < ring.oldest:
            self._samples.popleft()
        self.tracks.audio(ring)
        self.changed.notify()

    def _metadata(self, block: Metadata) -> None:
        title, changed = self.titles.read(block.raw)
        if title is None:
            return
        # A connection's first title names what was already playing when it connected: its
        # start was not received, so it is no track to keep.
        first, self._first_title = self._first_title, False
        if first:
            self.tracks.abandon()
            return
        if not changed:
            return
        ring = self.ring
        assert ring is not None
        boundary = self.walker.next_start if self.walker.synced else None
        self.tracks.kbps = self.bitrate or self.walker.kbps
        cuttable = self.walker.synced and self.walker.cuttable
        self.tracks.title_changed(ring.written if boundary is None else boundary, title,
                                  cuttable)  # fmt: skip
