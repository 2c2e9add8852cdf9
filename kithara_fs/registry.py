"""The mounted tree: config → folders and files with inode numbers, sources and attributes.

Owns the directory tree built from the settings (folders created from path parts), inode
numbering, one source per file (sharing the HTTP client, cache and scheduler), background
size probes for files whose size is not cached yet, opening handles, and the attribute
values that the FUSE adapter turns into ``stat`` results and extended attributes.

It must never import pyfuse3, and never block ``ls`` on the network for longer than the
metadata budget: sizes come from the cache index first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .budget import Deadline
from .cache import CacheStore
from .config import CONTROL_DIR, Settings, StreamConfig
from .errors import KitharaError, OriginError
from .net import HttpClient
from .playlists import PLAYLIST_NAME, PlaylistEntry
from .playlists import render as render_playlist
from .redact import redact_text
from .scheduler import Reader, Scheduler
from .sources import ByteSource, ProgressiveSource
from .sources.feed import SegmentFeed, Throughput
from .sources.hls import Programme, ProgrammeFile
from .sources.segments import SegmentFetcher
from .stream import SequentialStream, Stream
from .tasks import start_guarded

log = logging.getLogger(__name__)

ROOT_INODE = 1
# A pinned download that failed is tried again after this long: soon enough to finish while
# the machine is online, rare enough not to hammer an origin that is down.
PIN_RETRY_DELAY = 30.0
# A programme whose playlists failed to load is tried again on the next listing after this
# long (as a failed size probe is).
PROGRAMME_RETRY_AFTER = 30.0


@dataclass(eq=False)
class DirNode:
    inode: int
    name: str
    parent: DirNode | None
    children: dict[str, Node] = field(default_factory=dict)


@dataclass(eq=False)
class ProgrammeNode(DirNode):
    """The folder of an HLS programme; its files appear once its playlists are loaded."""

    config: StreamConfig | None = None
    programme: Programme | None = None
    loaded: bool = False
    loading: bool = False
    # Set when the current (or latest) load attempt ends, however it ended.
    attempt: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    failed_at: float = -math.inf
    removed: bool = False
    # One estimate per programme: `auto` files opened later start from what earlier ones saw.
    throughput: Throughput = field(default_factory=Throughput)


@dataclass(eq=False)
class FileNode:
    inode: int
    name: str
    parent: DirNode
    config: StreamConfig
    source: ByteSource
    # Set when a reload dropped the stream: lookups no longer find it, open handles go on.
    removed: bool = False
    # For the files of an HLS programme: which entry of the folder it is.
    hls: ProgrammeFile | None = None


@dataclass(eq=False)
class FeedNode:
    """A sequential file of an HLS programme: a live variant, or `auto`."""

    inode: int
    name: str
    parent: ProgrammeNode
    config: StreamConfig
    hls: ProgrammeFile
    removed: bool = False


@dataclass(eq=False)
class VirtualNode:
    """A generated read-only file (status, playlists), rendered afresh for each open."""

    inode: int
    name: str
    parent: DirNode
    render: Callable[[], bytes]


Node = DirNode | FileNode | FeedNode | VirtualNode
StreamNode = FileNode | FeedNode
Handle = Stream | SequentialStream

STATUS_FILE = "status.json"


@dataclass(frozen=True)
class Change:
    """What a reload did: names removed (for the kernel to forget) and how many added."""

    removed: list[tuple[int, str]]
    added: int


class Registry:
    """All entries of one mount, addressed by inode.

    Attributes:
        settings: the validated configuration in force.
        root: the root folder (inode 1).
        scheduler: the download scheduler shared by every file.
        mountpoint: where it is mounted (for the status file).
    """

    def __init__(
        self,
        settings: Settings,
        http: HttpClient,
        store: CacheStore,
        scheduler: Scheduler,
        nursery: trio.Nursery,
        mountpoint: str = "",
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.mountpoint = mountpoint
        self.started = time.time()
        self._http = http
        self._store = store
        self._nursery = nursery
        self._last_inode = ROOT_INODE
        self.root = DirNode(ROOT_INODE, "", None)
        self._nodes: dict[int, Node] = {ROOT_INODE: self.root}
        self._streams: set[Handle] = set()
        self._open_by_node: dict[StreamNode, set[Handle]] = {}
        # One source per URL: paths that share a URL share its bytes, its version and its
        # downloads, so a version change is seen by every handle on it.
        self._sources: dict[str, ByteSource] = {}
        self._pinned: set[ByteSource] = set()
        self._fetcher = SegmentFetcher(http)
        # The feed each sequential file's newest handle reads (for status).
        self._feeds: dict[FeedNode, SegmentFeed] = {}
        self._apply(settings)

    def _new_inode(self) -> int:
        self._last_inode += 1
        return self._last_inode

    # -- building and reloading --------------------------------------------------------------

    def _apply(self, settings: Settings) -> Change:
        """Make the tree match ``settings``, keeping the nodes (inodes) of unchanged streams."""
        self.settings = settings
        wanted = {stream.path: stream for stream in settings.streams}
        current: dict[tuple[str, ...], FileNode | ProgrammeNode] = {
            self._path_of(node): node for node in self._configured()
        }
        removed: list[tuple[int, str]] = []
        for path, node in current.items():
            if wanted.get(path) != node.config:
                assert node.parent is not None
                node.removed = True
                del node.parent.children[node.name]
                removed.append((node.parent.inode, node.name))
                self._forget(node)
        # Empty folders go before new streams are placed, so a path that turns from a
        # folder into a file (or back) never meets the old node.
        removed += self._prune(self.root)
        added = 0
        self._store.clear_pins()
        for stream in settings.streams:
            readahead = stream.readahead_seconds or settings.readahead_seconds
            kept = current.get(stream.path)
            if isinstance(kept, ProgrammeNode) and not kept.removed:
                assert kept.programme is not None
                kept.programme.readahead_seconds = readahead
                continue
            if kept is not None and not kept.removed:
                assert isinstance(kept, FileNode)
                source = kept.source
                source.readahead_seconds = readahead
            elif stream.kind == "hls":
                folder = self._folder(stream.path[:-1])
                programme = Programme(stream.url, stream.display_path, self._fetcher,
                                      self._store, self._sources, readahead)  # fmt: skip
                folder.children[stream.path[-1]] = ProgrammeNode(
                    self._new_inode(), stream.path[-1], folder, config=stream, programme=programme
                )
                self._nodes[folder.children[stream.path[-1]].inode] = folder.children[
                    stream.path[-1]
                ]
                added += 1
                continue
            else:
                folder = self._folder(stream.path[:-1])
                source = self._source(stream)
                node = FileNode(self._new_inode(), stream.path[-1], folder, stream, source)
                folder.children[node.name] = node
                self._nodes[node.inode] = node
                added += 1
            if stream.pin:
                source.entry.set_pinned(True)
        self._add_virtual_files(self.root)
        return Change(removed, added)

    def reload(self, settings: Settings) -> Change:
        """Switch to a new configuration without unmounting.

        Added streams appear; removed ones disappear from the tree while handles open on
        them keep working until closed. Pins and probes follow the new settings.
        """
        change = self._apply(settings)
        self.start_probes()
        return change

    def _configured(self) -> list[FileNode | ProgrammeNode]:
        """The nodes the config names: plain files and programme folders (not their files)."""
        return [
            node for node in self._nodes.values()
            if (isinstance(node, ProgrammeNode) or isinstance(node, FileNode) and node.hls is None)
            and not node.removed
        ]  # fmt: skip

    def _forget(self, node: Node) -> None:
        """Drop a removed node (and a programme's files) unless a handle still reads it."""
        if isinstance(node, ProgrammeNode):
            for child in list(node.children.values()):
                if isinstance(child, FileNode | FeedNode):
                    child.removed = True
                self._forget(child)
        elif isinstance(node, FileNode | FeedNode) and self._open_by_node.get(node):
            return
        self._nodes.pop(node.inode, None)

    def _source(self, stream: StreamConfig) -> ByteSource:
        readahead = stream.readahead_seconds or self.settings.readahead_seconds
        source = self._sources.get(stream.url)
        if source is None:
            entry = self._store.entry(stream.url)
            source = ProgressiveSource(stream.url, self._http, entry, readahead)
            self._sources[stream.url] = source
        source.readahead_seconds = readahead
        return source

    def _folder(self, parts: tuple[str, ...]) -> DirNode:
        folder = self.root
        for part in parts:
            child = folder.children.get(part)
            if not isinstance(child, DirNode):
                # Config validation rejects file/folder clashes, and a reload removed any
                # file of the old tree that clashes before folders are made.
                child = DirNode(self._new_inode(), part, folder)
                folder.children[part] = child
                self._nodes[child.inode] = child
            folder = child
        return folder

    def _prune(self, folder: DirNode) -> list[tuple[int, str]]:
        """Drop folders left without streams (and their playlists); returns names removed."""
        removed: list[tuple[int, str]] = []
        for name, child in list(folder.children.items()):
            if isinstance(child, ProgrammeNode):
                continue
            if isinstance(child, DirNode) and not self._is_control(child):
                removed += self._prune(child)
                if not any(isinstance(c, FileNode | DirNode | FeedNode)
                           for c in child.children.values()):  # fmt: skip
                    del folder.children[name]
                    for gone in (child, *child.children.values()):
                        self._nodes.pop(gone.inode, None)
                    removed.append((folder.inode, name))
        return removed

    def _is_control(self, folder: DirNode) -> bool:
        return folder.parent is self.root and folder.name == CONTROL_DIR

    def _add_virtual_files(self, folder: DirNode) -> None:
        """An index.m3u8 in every folder, and .kithara/status.json at the root."""
        if isinstance(folder, ProgrammeNode):
            return  # its files come from the programme's playlists
        if PLAYLIST_NAME not in folder.children:
            playlist = VirtualNode(self._new_inode(), PLAYLIST_NAME, folder,
                                   lambda: self.playlist(folder))  # fmt: skip
            folder.children[PLAYLIST_NAME] = playlist
            self._nodes[playlist.inode] = playlist
        for child in folder.children.values():
            if isinstance(child, DirNode) and not self._is_control(child):
                self._add_virtual_files(child)
        if folder is self.root and CONTROL_DIR not in folder.children:
            control = DirNode(self._new_inode(), CONTROL_DIR, folder)
            status = VirtualNode(self._new_inode(), STATUS_FILE, control, self.status_json)
            control.children[STATUS_FILE] = status
            folder.children[CONTROL_DIR] = control
            self._nodes[control.inode] = control
            self._nodes[status.inode] = status

    def _path_of(self, node: FileNode | FeedNode | DirNode) -> tuple[str, ...]:
        parts: list[str] = []
        current: FileNode | FeedNode | DirNode | None = node
        while current is not None and current is not self.root:
            parts.append(current.name)
            current = current.parent
        return tuple(reversed(parts))

    # -- tree ------------------------------------------------------------------------------

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def lookup(self, parent: int, name: str) -> Node | None:
        folder = self._nodes.get(parent)
        if not isinstance(folder, DirNode):
            return None
        if name == ".":
            return folder
        if name == "..":
            return folder.parent or folder
        return folder.children.get(name)

    def files(self) -> list[FileNode]:
        return [n for n in self._nodes.values() if isinstance(n, FileNode) and not n.removed]

    def feeds(self) -> list[FeedNode]:
        return [n for n in self._nodes.values() if isinstance(n, FeedNode) and not n.removed]

    def playlist(self, folder: DirNode) -> bytes:
        """The folder's audio, and its subfolders', in path order, as an M3U8 playlist.

        An HLS programme contributes its `best` file (its only variant when it has one).
        """
        base = len(self._path_of(folder))
        entries = []
        for node in sorted(self.files(), key=self._path_of):
            path = self._path_of(node)
            listed = node.hls is None or node.hls.role == "best" or (
                node.hls.role == "variant" and "best" not in {
                    c.hls.role for c in node.parent.children.values()
                    if isinstance(c, FileNode | FeedNode) and c.hls is not None
                }
            )
            if listed and path[:base] == self._path_of(folder):
                rate = node.source.byte_rate()
                length = node.source.length
                seconds = length / rate if rate and length else None
                entries.append(PlaylistEntry(path[base:], node.name.rsplit(".", 1)[0], seconds))
        return render_playlist(entries)

    # -- programmes ------------------------------------------------------------------------

    async def expand(self, inode: int) -> None:
        """Make sure a programme folder lists its files (waiting at most the metadata budget)."""
        folder = self._nodes.get(inode)
        if not isinstance(folder, ProgrammeNode):
            return
        self._start_loading(folder)
        with trio.move_on_after(self.settings.metadata_timeout):
            # A failed load is not waited for again until its retry is due.
            await folder.attempt.wait()

    def _start_loading(self, folder: ProgrammeNode) -> None:
        if folder.loading or folder.loaded or folder.removed:
            return
        if trio.current_time() - folder.failed_at < PROGRAMME_RETRY_AFTER:
            return
        folder.loading = True
        folder.attempt = trio.Event()
        start_guarded(self._nursery, folder.config.display_path if folder.config else "programme",
                      self._load, folder)  # fmt: skip

    async def _load(self, folder: ProgrammeNode) -> None:
        try:
            await self._load_files(folder)
        finally:
            folder.loading = False
            folder.attempt.set()

    async def _load_files(self, folder: ProgrammeNode) -> None:
        assert folder.programme is not None and folder.config is not None
        try:
            files = await folder.programme.load()
        except KitharaError as exc:
            reason = exc.reason if isinstance(exc, OriginError) else str(exc)
            folder.error = reason
            folder.failed_at = trio.current_time()
            log.warning("%s: HLS programme not available: %s", folder.config.display_path,
                        exc)  # fmt: skip
            return
        except Exception:
            folder.error = "internal error"
            folder.failed_at = trio.current_time()
            log.exception("%s: internal error loading the programme", folder.config.display_path)
            return
        if folder.removed:
            return
        folder.error = None
        for file in files:
            node: FileNode | FeedNode
            if file.source is not None:
                node = FileNode(self._new_inode(), file.name, folder, folder.config, file.source,
                                hls=file)  # fmt: skip
                self._probe(node)
            else:
                node = FeedNode(self._new_inode(), file.name, folder, folder.config, file)
            folder.children[node.name] = node
            self._nodes[node.inode] = node
        log.info("%s: HLS programme with %d file(s)", folder.config.display_path, len(files))
        folder.loaded = True

    def programmes(self) -> list[ProgrammeNode]:
        return [n for n in self._nodes.values() if isinstance(n, ProgrammeNode) and not n.removed]

    # -- sizes -----------------------------------------------------------------------------

    def start_probes(self) -> None:
        """Learn, in the background, the size of every file the cache does not know yet,
        and download pinned files whole. HLS programmes load their playlists."""
        for folder in self.programmes():
            self._start_loading(folder)
        for node in self.files():
            if node.config.pin and node.source not in self._pinned:
                self._pinned.add(node.source)
                start_guarded(self._nursery, node.config.display_path, self._keep_complete, node)
            else:
                self._probe(node)

    async def _keep_complete(self, node: FileNode) -> None:
        """Download a pinned file whole; after a failure, try again later."""
        source = node.source
        reader = Reader(source)
        try:
            while True:
                try:
                    length = (await source.ensure_info()).length or 0
                except OriginError as exc:
                    log.warning("%s: pinned, but: %s", node.config.display_path, exc.reason)
                    await trio.sleep(PIN_RETRY_DELAY)
                    continue
                if source.entry.is_complete() or not source.entry.pinned:
                    if source.entry.pinned:
                        log.info("%s: pinned and complete", node.config.display_path)
                    return
                cursor = self.scheduler.demand(reader, 0, length)
                while not cursor.done:
                    await source.changed.wait(Deadline.never())
                if reader.take_failure(since=-math.inf) is not None:
                    await trio.sleep(PIN_RETRY_DELAY)
        finally:
            # However it ends (an internal error included), the next reload may pin it anew.
            self.scheduler.release(reader)
            self._pinned.discard(source)

    def _probe(self, node: FileNode) -> None:
        if node.source.claim_probe():
            start_guarded(self._nursery, node.config.display_path, node.source.probe_in_background)

    async def size(self, node: FileNode) -> int:
        """The file's size for getattr: cached, or probed within the metadata budget, else 0."""
        length = node.source.length
        if length is None:
            self._probe(node)
            # Counted from the probe's start, not from this call: a listing of many files,
            # or repeated stats, wait at most one budget in all for an origin that stalls.
            started = node.source.probe_started
            if started is None:
                started = trio.current_time()
            deadline = Deadline(started + self.settings.metadata_timeout)
            length = await node.source.wait_length(deadline)
        return length or 0

    # -- handles ---------------------------------------------------------------------------

    async def open(self, node: FileNode) -> Stream:
        """A new handle; learns the size first if needed (an OriginError ends the open)."""
        with trio.move_on_after(self.settings.read_timeout):
            await node.source.ensure_info()
        await node.source.revalidate(Deadline.after(self.settings.metadata_timeout))
        if node.source.length is None:
            raise OriginError(node.source.shown, "size not known within the read budget")
        stream = Stream(node.source, self.scheduler)
        # Players read the head and the tail before they play: fetch both at once.
        self.scheduler.prefetch(stream.reader, node.source.probe_ranges())
        node.source.entry.readers += 1
        node.source.entry.touch()
        self._streams.add(stream)
        self._open_by_node.setdefault(node, set()).add(stream)
        return stream

    async def open_feed(self, node: FeedNode) -> SequentialStream:
        """A new handle on a live or `auto` file: its own feed, fetching from now on."""
        folder = node.parent
        assert folder.programme is not None
        feed = SegmentFeed(
            folder.programme,
            node.hls.feed,
            live=node.hls.live,
            start_behind=node.config.live_start_segments,
            readahead_seconds=folder.programme.readahead_seconds,
            throughput=folder.throughput,
            label="/".join(self._path_of(node)),
        )
        stream = SequentialStream(feed)
        start_guarded(self._nursery, stream.shown, stream.run)
        self._feeds[node] = feed
        self._streams.add(stream)
        self._open_by_node.setdefault(node, set()).add(stream)
        return stream

    def close(self, node: StreamNode, stream: Handle) -> None:
        stream.close()
        self._streams.discard(stream)
        if isinstance(node, FileNode):
            node.source.entry.readers -= 1
        handles = self._open_by_node.get(node)
        if handles is not None:
            handles.discard(stream)
            if not handles:
                del self._open_by_node[node]
                if node.removed:  # a reload dropped it; the last handle is gone now
                    self._nodes.pop(node.inode, None)

    def notify_when_readable(self, stream: Handle, notify: Callable[[], None]) -> None:
        """Call ``notify`` (a poll handle's) once ``stream`` can be read without waiting."""

        async def watch() -> None:
            await stream.wait_readable()
            try:
                notify()
            except OSError as exc:  # the poller went away; nothing to wake
                log.debug("poll notification not delivered: %s", exc)

        start_guarded(self._nursery, stream.shown, watch)

    # -- status ----------------------------------------------------------------------------

    def stream_status(self, node: StreamNode) -> dict[str, Any]:
        """What a person wants to know about one stream (also its extended attributes)."""
        if isinstance(node, FeedNode):
            return self._feed_status(node)
        source = node.source
        entry = source.entry
        length = source.length
        rate = source.byte_rate()
        buffered = None
        streams = self._open_by_node.get(node, set())
        if streams and rate:
            ahead = max(source.first_missing(s.timeline.resume_at) - s.timeline.resume_at
                        for s in streams if isinstance(s, Stream))  # fmt: skip
            buffered = round(max(0, ahead) / rate, 1)
        if self.scheduler.active(source):
            state = "downloading"
        elif source.last_error is not None:
            state = "error"
        elif entry.is_complete():
            state = "cached"
        else:
            state = "idle"
        meta = entry.meta
        return {
            "path": "/".join(self._path_of(node)),
            "url": source.shown,
            "state": state,
            "size": length,
            "cached_bytes": entry.cached_bytes(),
            "download_rate": round(source.download_rate()),
            "buffered_seconds": buffered,
            "readers": len(streams),
            "pinned": entry.pinned,
            "etag": meta.etag if meta else None,
            "content_type": meta.content_type if meta else None,
            "error": None if source.last_error is None else redact_text(source.last_error.reason),
            "variant": node.hls.variant if node.hls else None,
            "live": False if node.hls else None,
        }

    def _programme_status(self, folder: ProgrammeNode) -> dict[str, Any]:
        """A programme whose playlists could not be loaded: one line saying why."""
        return {
            "path": "/".join(self._path_of(folder)),
            "url": folder.programme.shown if folder.programme else None,
            "state": "error", "size": None, "cached_bytes": 0, "download_rate": 0,
            "buffered_seconds": None, "readers": 0, "pinned": False, "etag": None,
            "content_type": None, "error": redact_text(folder.error or "") or None,
            "variant": None, "live": None,
        }  # fmt: skip

    def _feed_status(self, node: FeedNode) -> dict[str, Any]:
        feed = self._feeds.get(node)
        streams = self._open_by_node.get(node, set())
        if feed is not None and feed.error is not None:
            state = "error"
        elif streams:
            state = "streaming"
        else:
            state = "idle"
        return {
            "path": "/".join(self._path_of(node)),
            "url": node.parent.programme.shown if node.parent.programme else None,
            "state": state,
            "size": None,
            "cached_bytes": 0,
            "download_rate": 0,
            "buffered_seconds": None,
            "readers": len(streams),
            "pinned": False,
            "etag": None,
            "content_type": None,
            "error": None if feed is None or feed.error is None else redact_text(str(feed.error)),
            "variant": feed.variant if feed is not None else node.hls.feed[-1].stem,
            "live": node.hls.live,
        }

    def status(self) -> dict[str, Any]:
        nodes: list[StreamNode] = [*self.files(), *self.feeds()]
        streams = [self.stream_status(node) for node in sorted(nodes, key=self._path_of)]
        streams += [self._programme_status(p) for p in self.programmes() if p.error is not None]
        states = [s["state"] for s in streams]
        summary = f"{len(streams)} streams, {states.count('downloading')} downloading"
        if states.count("error"):
            summary += f", {states.count('error')} error"
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "config": self.settings.source,
            "started": round(self.started),
            "summary": summary,
            "streams": streams,
        }

    def status_json(self) -> bytes:
        return (json.dumps(self.status(), indent=2) + "\n").encode()

    def interrupt_all(self) -> None:
        """The mount is stopping: every waiting read returns SEEK_PENDING (EINTR)."""
        for stream in self._streams:
            stream.interrupt()
