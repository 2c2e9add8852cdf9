"""A podcast feed as a folder: one seekable file per episode, its notes, the channel's cover.

Owns :class:`PodcastListing`: fetching the feed (at most :data:`MAX_FEED_BYTES`, again every
``refresh_seconds`` with a conditional request), parsing it in a worker process
(``worker.py``: a feed of thousands of items takes seconds of CPU), and turning its
episodes into the folder's files: each episode a progressive file of the enclosure URL
(sizes from the origin, never from the feed) with its publication date as mtime and its
guid, date, duration and title as status fields; its notes as ``<name>.txt``; the channel
image as ``cover.<ext>``. The newest ``keep_latest`` only, when set. What was listed is
remembered in the cache index, so a remount without network lists the folder from there.

It must never list an episode under a new name while its guid stays in the feed, and never
fetch an episode's audio itself (its source does, when read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import trio

from ...errors import OriginError, PlaylistError
from ...net import Fetched
from ...redact import redact_url
from ..base import Context, Listed, Listing
from ..progressive import ProgressiveSource
from .channel import Channel, Episode, from_json, to_json
from .names import Namer, image_extension, safe, transcript_extension
from .worker import PARALLEL, parse_apart

log = logging.getLogger(__name__)

# Feeds of thousands of episodes with long notes run to a few MiB; more is not a feed.
MAX_FEED_BYTES = 32 * 1024 * 1024
# The longest a feed's fetch may take, however slowly its bytes come.
FEED_SECONDS = 60.0
# An episode's key among the mount's cache entries: its URL, marked.
EPISODE_KEY = "episode "
# The generated files of a listing: (what, guid) -> (their text, the function making them).
_Generated = dict[tuple[str, str], tuple[str, Callable[[], bytes]]]
# What the mount's feed parsers share (context.shared): how many run at once.
PARSERS = "podcast feed parsers"
# Episodes listed between two looks at the event loop.
LIST_BATCH = 500
# The folder's playlist, under the name every folder's has.
# The same name as config.PLAYLIST_NAME (a podcast folder is a listing, not a tree folder).
PLAYLIST = ".index.m3u8"


def _playlist(episodes: list[Episode], names: dict[str, str]) -> str:
    """The episodes in date order, oldest first, as an extended M3U (durations from the
    feed, -1 when it gives none; names relative to the folder)."""
    lines = ["#EXTM3U"]
    for episode in sorted(episodes, key=lambda e: (e.published or 0.0, names[e.guid])):
        seconds = -1 if episode.duration is None else round(episode.duration)
        title = " ".join((episode.title or names[episode.guid]).split())
        name = names[episode.guid]
        lines += [f"#EXTINF:{seconds},{title}", f"./{name}" if name.startswith("#") else name]
    return "\n".join(lines)


class PodcastListing(Listing):
    """One feed's folder."""

    what = "podcast feed"

    def __init__(self, url: str, label: str, context: Context, options: dict[str, Any]) -> None:
        self.url = url
        self.label = label
        self.shown = redact_url(url)
        self.context = context
        self.refresh_seconds: float = options["refresh_seconds"]
        self.keep_latest: int | None = options.get("keep_latest")
        self.download_latest: int = options.get("download_latest", 0)
        self._document = f"podcast:{url}"
        self._loads = 0
        self._next_refresh = -float("inf")
        self._known: Fetched | None = None
        # The digest of the last feed refused, and why.
        self._refused: tuple[bytes, str] | None = None
        self._files: list[Listed] = []
        # (what, guid) -> (text, render) of the generated files of the last listing
        self._notes: _Generated = {}
        recalled = self._recall()
        self._namer = Namer(recalled[1] if recalled else None)
        self._recalled = recalled[0] if recalled else None
        # The validators of the feed the remembered listing came from.
        self._recalled_known = recalled[2] if recalled else None

    @property
    def generation(self) -> int:
        # One more than the loads begun once a refresh is due: the folder is listed again.
        due = trio.current_time() >= self._next_refresh
        return self._loads + (1 if due else 0)

    async def load(self) -> list[Listed]:
        self._loads += 1
        if not self._files and self._recalled is not None:
            # After a remount: at once what the last mount listed (offline too), and the
            # feed fetched again at the next look.
            recalled, self._recalled = self._recalled, None
            try:
                self._files = await self._list(recalled)
            except Exception as exc:  # a garbled document: fetch instead
                log.warning("%s: the remembered listing is unusable (%s)", self.label, exc)
                self._files = []
            if self._files:
                # The next fetch is conditional too: an unchanged feed costs a 304.
                self._known = self._recalled_known
                self._next_refresh = trio.current_time()
                return self._files
        try:
            # A whole budget for the feed: a host that trickles a byte a second never
            # trips the stall timeout, and would hold the folder's load for ever.
            with trio.fail_after(FEED_SECONDS):
                fetched = await self.context.http.fetch(self.url, MAX_FEED_BYTES, self._known)
        except trio.TooSlowError:
            self._next_refresh = trio.current_time() + self.refresh_seconds
            if self._files:
                return self._files
            raise OriginError(self.shown, f"the feed took over {FEED_SECONDS:.0f} s") from None
        except OriginError as exc:
            self._next_refresh = trio.current_time() + self.refresh_seconds
            if self._files:
                log.info("%s: feed not refreshed (%s); the folder stays as it is", self.label,
                         exc.reason)  # fmt: skip
                return self._files
            raise
        if fetched.not_modified and self._known is not None:
            self._next_refresh = trio.current_time() + self.refresh_seconds
            return self._files
        # The same bytes as a feed refused before are refused again without a parse (which
        # may have cost its whole CPU limit, and holds one of the mount's parsers).
        digest = hashlib.sha256(fetched.data).digest()
        if self._refused is not None and self._refused[0] == digest:
            self._next_refresh = trio.current_time() + self.refresh_seconds
            raise PlaylistError(self.label, self._refused[1])
        try:
            limiter = self.context.shared.setdefault(PARSERS, trio.CapacityLimiter(PARALLEL))
            channel = await parse_apart(fetched.data, fetched.url, limiter)
        except ValueError as exc:
            self._refused = (digest, str(exc))
            raise PlaylistError(self.label, str(exc)) from None
        finally:
            # Counted from the end of the load: a parse slower than the interval must not
            # make the folder due again at once.
            self._next_refresh = trio.current_time() + self.refresh_seconds
        # Only the validators are kept, not the body (up to 32 MiB).
        self._known = Fetched(b"", fetched.url, fetched.etag, fetched.last_modified)
        self._files = await self._list(channel)
        await self._remember(channel)
        return self._files

    # -- the files ---------------------------------------------------------------------------

    async def _list(self, channel: Channel) -> list[Listed]:
        episodes = sorted(channel.episodes, key=lambda e: e.published or 0.0, reverse=True)
        if self.keep_latest is not None:
            episodes = episodes[: self.keep_latest]
        names = self._namer.assign(episodes)
        files: list[Listed] = []
        # Only this listing's generated files are kept: a guid that left keeps nothing.
        self._notes, known = {}, self._notes
        for rank, episode in enumerate(episodes):
            if rank % LIST_BATCH == LIST_BATCH - 1:
                # Each episode's source reads its cache row: 20,000 of them held every
                # other request of the mount up for 5 s in one go.
                await trio.sleep(0)
            name = names[episode.guid]
            stem = name.rsplit(".", 1)[0]
            files.append(Listed(name, self._source(episode),
                                keep_whole=rank < self.download_latest))  # fmt: skip
            if episode.notes:
                files.append(Listed(f"{stem}.txt", None, in_playlist=False,
                                    render=self._render(("notes", episode.guid),
                                                        episode.notes, known)))  # fmt: skip
            if episode.chapter_marks:
                files.append(Listed(f"{stem}.chapters.txt", None, in_playlist=False,
                                    render=self._render(("chapters", episode.guid),
                                                        episode.chapter_marks, known)))  # fmt: skip
            if episode.chapters is not None:
                files.append(Listed(f"{stem}.chapters.json", self._plain_source(episode.chapters),
                                    in_playlist=False))  # fmt: skip
            for index, (url, kind) in enumerate(episode.transcripts):
                number = "" if index == 0 else f"-{index + 1}"
                files.append(Listed(f"{stem}.transcript{number}.{transcript_extension(url, kind)}",
                                    self._plain_source(url), in_playlist=False))  # fmt: skip
        if channel.image is not None:
            cover = self._plain_source(channel.image)
            files.append(Listed(f"cover.{image_extension(channel.image)}", cover,
                                in_playlist=False))  # fmt: skip
        files.append(Listed(PLAYLIST, None, in_playlist=False,
                            render=self._render(("playlist", ""), _playlist(episodes, names),
                                                known)))  # fmt: skip
        # One file per name: a sidecar that an odd title would share with another file's
        # name is left out rather than hiding it.
        unique: dict[str, Listed] = {}
        for file in files:
            unique.setdefault(file.name, file)
        return list(unique.values())

    def _plain_source(self, url: str) -> ProgressiveSource:
        """The source of ``url``, shared with every path that names it (a configured file)."""
        source = self.context.sources.get(url)
        if not isinstance(source, ProgressiveSource):
            source = ProgressiveSource(url, self.context.http, self.context.store.entry(url))
            self.context.sources[url] = source
        source.http = self.context.http  # the feed's headers, as the config says now
        return source

    def _source(self, episode: Episode) -> ProgressiveSource:
        # An episode's source and cache entry are its own, not those of a configured file
        # stream of the same URL: it takes versions as they come (ad insertion), has its
        # own date and facts, and its pin (download_latest) is the listing's alone. Feeds
        # share it; it lives while a listing, a node or a handle has it, so episodes that
        # left every feed (or URLs with a token that changes per fetch) do not pile up.
        key = f"{EPISODE_KEY}{episode.url}"
        episodes = self.context.shared.setdefault(EPISODE_KEY, weakref.WeakValueDictionary())
        source = episodes.get(key)
        if not isinstance(source, ProgressiveSource):
            entry = self.context.store.entry(key)
            source = ProgressiveSource(episode.url, self.context.http, entry)
            episodes[key] = source
        source.http = self.context.http
        source.versions_vary = True  # hosts insert ads per request (versions.py)
        source.mtime = episode.published
        published = None
        if episode.published is not None:
            published = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(episode.published))
        source.facts = {"title": episode.title or None, "guid": episode.guid,
                        "published": published, "duration": episode.duration}  # fmt: skip
        return source

    def _render(self, key: tuple[str, str], text: str, known: _Generated) -> Callable[[], bytes]:
        """A generated file's bytes; the same function as in the last listing (``known``)
        for the same text, so a refresh keeps the file's inode."""
        before = known.get(key)
        if before is not None and before[0] == text:
            render = before[1]
        else:
            data = (text + "\n").encode()

            def render() -> bytes:
                return data

        self._notes[key] = (text, render)
        return render

    # -- across mounts -----------------------------------------------------------------------

    async def _remember(self, channel: Channel) -> None:
        known = self._known
        validators = None if known is None else [known.url, known.etag, known.last_modified]
        body = to_json(channel) | {"names": dict(self._namer.names), "validators": validators}
        # Off the event loop: 20,000 episodes took 1.3 s to write out.
        text = await trio.to_thread.run_sync(json.dumps, body)
        self.context.store.save_document(self._document, text)

    def _recall(self) -> tuple[Channel, dict[str, str], Fetched | None] | None:
        text = self.context.store.document(self._document)
        if not text:
            return None
        try:
            body = json.loads(text)
            channel = from_json(body)
            # Only names we would have made (the index is ours, but a name is a path).
            names = {str(k): v for k, v in body["names"].items()
                     if isinstance(v, str) and v == safe(v) and len(v.encode()) <= 255}
            known = None
            validators = body.get("validators")
            if (isinstance(validators, list) and len(validators) == 3
                    and all(v is None or isinstance(v, str) for v in validators)):  # fmt: skip
                url, etag, last_modified = validators
                known = Fetched(b"", str(url), etag, last_modified)
            return channel, names, known
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: the remembered listing is unreadable (%s)", self.label, exc)
            return None
