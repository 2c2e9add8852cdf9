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
from .errors import OriginError
from .net import HttpClient
from .playlists import PLAYLIST_NAME, PlaylistEntry
from .playlists import render as render_playlist
from .scheduler import Reader, Scheduler
from .sources import ProgressiveSource
from .stream import Stream

log = logging.getLogger(__name__)

ROOT_INODE = 1
# A pinned download that failed is tried again after this long: soon enough to finish while
# the machine is online, rare enough not to hammer an origin that is down.
PIN_RETRY_DELAY = 30.0


@dataclass(eq=False)
class DirNode:
    inode: int
    name: str
    parent: DirNode | None
    children: dict[str, Node] = field(default_factory=dict)


@dataclass(eq=False)
class FileNode:
    inode: int
    name: str
    parent: DirNode
    config: StreamConfig
    source: ProgressiveSource
    # Set when a reload dropped the stream: lookups no longer find it, open handles go on.
    removed: bool = False


@dataclass(eq=False)
class VirtualNode:
    """A generated read-only file (status, playlists), rendered afresh for each open."""

    inode: int
    name: str
    parent: DirNode
    render: Callable[[], bytes]


Node = DirNode | FileNode | VirtualNode

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
        self._streams: set[Stream] = set()
        self._open_by_node: dict[FileNode, set[Stream]] = {}
        # One source per URL: paths that share a URL share its bytes, its version and its
        # downloads, so a version change is seen by every handle on it.
        self._sources: dict[str, ProgressiveSource] = {}
        self._pinned: set[ProgressiveSource] = set()
        self._apply(settings)

    def _new_inode(self) -> int:
        self._last_inode += 1
        return self._last_inode

    # -- building and reloading --------------------------------------------------------------

    def _apply(self, settings: Settings) -> Change:
        """Make the tree match ``settings``, keeping the nodes (inodes) of unchanged streams."""
        self.settings = settings
        wanted = {stream.path: stream for stream in settings.streams}
        current = {self._path_of(node): node for node in self.files()}
        removed: list[tuple[int, str]] = []
        for path, node in current.items():
            if wanted.get(path) != node.config:
                node.removed = True
                del node.parent.children[node.name]
                removed.append((node.parent.inode, node.name))
                if not self._open_by_node.get(node):
                    self._nodes.pop(node.inode, None)
        # Empty folders go before new streams are placed, so a path that turns from a
        # folder into a file (or back) never meets the old node.
        removed += self._prune(self.root)
        added = 0
        self._store.clear_pins()
        for stream in settings.streams:
            kept = current.get(stream.path)
            if kept is not None and not kept.removed:
                source = kept.source
                source.readahead_seconds = stream.readahead_seconds or settings.readahead_seconds
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

    def _source(self, stream: StreamConfig) -> ProgressiveSource:
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
            if isinstance(child, DirNode) and not self._is_control(child):
                removed += self._prune(child)
                if not any(isinstance(c, FileNode | DirNode) for c in child.children.values()):
                    del folder.children[name]
                    for gone in (child, *child.children.values()):
                        self._nodes.pop(gone.inode, None)
                    removed.append((folder.inode, name))
        return removed

    def _is_control(self, folder: DirNode) -> bool:
        return folder.parent is self.root and folder.name == CONTROL_DIR

    def _add_virtual_files(self, folder: DirNode) -> None:
        """An index.m3u8 in every folder, and .kithara/status.json at the root."""
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

    def _path_of(self, node: FileNode | DirNode) -> tuple[str, ...]:
        parts: list[str] = []
        current: FileNode | DirNode | None = node
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

    def playlist(self, folder: DirNode) -> bytes:
        """The folder's audio, and its subfolders', in path order, as an M3U8 playlist."""
        base = len(self._path_of(folder))
        entries = []
        for node in sorted(self.files(), key=self._path_of):
            path = self._path_of(node)
            if path[:base] == self._path_of(folder):
                rate = node.source.byte_rate()
                length = node.source.length
                seconds = length / rate if rate and length else None
                entries.append(PlaylistEntry(path[base:], node.name.rsplit(".", 1)[0], seconds))
        return render_playlist(entries)

    # -- sizes -----------------------------------------------------------------------------

    def start_probes(self) -> None:
        """Learn, in the background, the size of every file the cache does not know yet,
        and download pinned files whole."""
        for node in self.files():
            if node.config.pin and node.source not in self._pinned:
                self._pinned.add(node.source)
                self._nursery.start_soon(self._keep_complete, node)
            else:
                self._probe(node)

    async def _keep_complete(self, node: FileNode) -> None:
        """Download a pinned file whole; after a failure, try again later."""
        source = node.source
        reader = Reader(source)
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
                self.scheduler.release(reader)
                self._pinned.discard(source)
                return
            cursor = self.scheduler.demand(reader, 0, length)
            while not cursor.done:
                await source.changed.wait(Deadline.never())
            if reader.take_failure(since=-math.inf) is not None:
                await trio.sleep(PIN_RETRY_DELAY)

    def _probe(self, node: FileNode) -> None:
        if node.source.claim_probe():
            self._nursery.start_soon(node.source.probe_in_background)

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

    def close(self, node: FileNode, stream: Stream) -> None:
        stream.close()
        self._streams.discard(stream)
        node.source.entry.readers -= 1
        handles = self._open_by_node.get(node)
        if handles is not None:
            handles.discard(stream)
            if not handles:
                del self._open_by_node[node]
                if node.removed:  # a reload dropped it; the last handle is gone now
                    self._nodes.pop(node.inode, None)

    def notify_when_readable(self, stream: Stream, notify: Callable[[], None]) -> None:
        """Call ``notify`` (a poll handle's) once ``stream`` can be read without waiting."""

        async def watch() -> None:
            await stream.wait_readable()
            try:
                notify()
            except OSError as exc:  # the poller went away; nothing to wake
                log.debug("poll notification not delivered: %s", exc)

        self._nursery.start_soon(watch)

    # -- status ----------------------------------------------------------------------------

    def stream_status(self, node: FileNode) -> dict[str, Any]:
        """What a person wants to know about one stream (also its extended attributes)."""
        source = node.source
        entry = source.entry
        length = source.length
        rate = source.byte_rate()
        buffered = None
        streams = self._open_by_node.get(node, set())
        if streams and rate:
            ahead = max(source.first_missing(s.timeline.resume_at) - s.timeline.resume_at
                        for s in streams)  # fmt: skip
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
            "error": None if source.last_error is None else source.last_error.reason,
        }

    def status(self) -> dict[str, Any]:
        streams = [self.stream_status(node) for node in sorted(self.files(), key=self._path_of)]
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
