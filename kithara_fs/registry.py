"""The mounted tree: config → folders and files with inode numbers, sources and attributes.

Owns the directory tree built from the settings (folders created from path parts), inode
numbering, one source per file (sharing the HTTP client, cache and scheduler), background
size probes for files whose size is not cached yet, opening handles, and the attribute
values that the FUSE adapter turns into ``stat`` results and extended attributes.

It must never import pyfuse3, and never block ``ls`` on the network for longer than the
metadata budget: sizes come from the cache index first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .budget import Deadline
from .cache import CacheStore
from .config import Settings, StreamConfig
from .errors import OriginError
from .net import HttpClient
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


Node = DirNode | FileNode


class Registry:
    """All entries of one mount, addressed by inode.

    Attributes:
        settings: the validated configuration.
        root: the root folder (inode 1).
        scheduler: the download scheduler shared by every file.
    """

    def __init__(
        self,
        settings: Settings,
        http: HttpClient,
        store: CacheStore,
        scheduler: Scheduler,
        nursery: trio.Nursery,
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self._nursery = nursery
        self.root = DirNode(ROOT_INODE, "", None)
        self._nodes: dict[int, Node] = {ROOT_INODE: self.root}
        self._streams: set[Stream] = set()
        # One source per URL: paths that share a URL share its bytes, its version and its
        # downloads, so a version change is seen by every handle on it.
        sources: dict[str, ProgressiveSource] = {}
        store.clear_pins()
        for stream in settings.streams:
            folder = self.root
            for part in stream.path[:-1]:
                child = folder.children.get(part)
                if child is None:
                    child = DirNode(self._next_inode(), part, folder)
                    folder.children[part] = child
                    self._nodes[child.inode] = child
                assert isinstance(child, DirNode), "config validation rejects file/folder clashes"
                folder = child
            entry = store.entry(stream.url)
            if stream.pin:
                entry.set_pinned(True)
            source = sources.get(stream.url)
            if source is None:
                readahead = stream.readahead_seconds or settings.readahead_seconds
                source = ProgressiveSource(stream.url, http, entry, readahead)
                sources[stream.url] = source
            node = FileNode(self._next_inode(), stream.path[-1], folder, stream, source)
            folder.children[node.name] = node
            self._nodes[node.inode] = node

    def _next_inode(self) -> int:
        return len(self._nodes) + 1

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
        return [n for n in self._nodes.values() if isinstance(n, FileNode)]

    # -- sizes -----------------------------------------------------------------------------

    def start_probes(self) -> None:
        """Learn, in the background, the size of every file the cache does not know yet,
        and download pinned files whole."""
        pinned: set[ProgressiveSource] = set()
        for node in self.files():
            if node.config.pin and node.source not in pinned:
                pinned.add(node.source)
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
            if source.entry.is_complete():
                log.info("%s: pinned and complete", node.config.display_path)
                self.scheduler.release(reader)
                return
            cursor = self.scheduler.demand(reader, 0, length)
            while not cursor.done:
                await source.changed.wait(Deadline.never())
            if reader.take_failure() is not None:
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
        return stream

    def close(self, node: FileNode, stream: Stream) -> None:
        stream.close()
        self._streams.discard(stream)
        node.source.entry.readers -= 1

    def notify_when_readable(self, stream: Stream, notify: Callable[[], None]) -> None:
        """Call ``notify`` (a poll handle's) once ``stream`` can be read without waiting."""

        async def watch() -> None:
            await stream.wait_readable()
            try:
                notify()
            except OSError as exc:  # the poller went away; nothing to wake
                log.debug("poll notification not delivered: %s", exc)

        self._nursery.start_soon(watch)

    def interrupt_all(self) -> None:
        """The mount is stopping: every waiting read returns SEEK_PENDING (EINTR)."""
        for stream in self._streams:
            stream.interrupt()
