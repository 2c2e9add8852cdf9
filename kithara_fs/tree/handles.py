"""Open handles: opening a file's stream, closing it, and waking poll() waiters.

Owns every open handle of the mount: the :class:`~kithara_fs.engine.stream.Stream` of a
seekable file (after its size is known and its version checked; nothing is fetched until
its first read) or the :class:`~kithara_fs.engine.stream.SequentialStream` of a pipe-like file
(with its own feed, fetching in the background), which handles read each node (for status),
and interrupting them all when the mount stops.

It must never import pyfuse3 or choose errnos: failures reach the caller as exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..budget import Deadline
from ..config import Settings
from ..engine.scheduler import Scheduler
from ..engine.stream import Handle, SequentialStream, Stream
from ..errors import OriginError
from ..sources import Feed, Sequential
from .background import Background
from .nodes import FileNode, PipeNode, StreamNode
from .tree import Tree

log = logging.getLogger(__name__)


class Handles:
    """The open handles of one mount."""

    def __init__(self, tree: Tree, scheduler: Scheduler, background: Background) -> None:
        self.tree = tree
        self.scheduler = scheduler
        self.background = background
        self._streams: set[Handle] = set()
        self._by_node: dict[StreamNode, set[Handle]] = {}
        # The feed each pipe-like file's newest handle reads (for status).
        self._feeds: dict[PipeNode, Feed] = {}

    @property
    def settings(self) -> Settings:
        return self.tree.settings

    async def open(self, node: FileNode) -> Stream | SequentialStream:
        """A new handle; learns the size first if needed (an OriginError ends the open).

        A URL that turned out to be an endless station is opened like a pipe instead.
        """
        source = node.source
        try:
            with trio.move_on_after(self.settings.read_timeout):
                await source.ensure_info()
        except OriginError:
            if source.endless is None:
                raise
        if source.endless is not None:
            return self._open_feed(node, source.endless)
        await source.revalidate(Deadline.after(self.settings.metadata_timeout))
        if source.length is None:
            raise OriginError(source.shown, "size not known within the read budget")
        stream = Stream(source, self.scheduler)
        # Nothing is fetched yet: the first read fetches its own bytes (engine/scheduler.py).
        source.opened()
        self._track(node, stream)
        return stream

    def open_pipe(self, node: PipeNode) -> SequentialStream:
        """A new handle on a pipe-like file: its own feed, fetching from now on."""
        return self._open_feed(node, node.file)

    def _open_feed(self, node: StreamNode, file: Sequential) -> SequentialStream:
        feed = file.open_feed("/".join(self.tree.path_of(node)))
        stream = SequentialStream(feed)
        self.background.spawn(stream.label, stream.run)
        if isinstance(node, PipeNode):
            self._feeds[node] = feed
        self._track(node, stream)
        return stream

    def _track(self, node: StreamNode, stream: Handle) -> None:
        self._streams.add(stream)
        self._by_node.setdefault(node, set()).add(stream)
        self.tree.hold(node)

    def close(self, node: StreamNode, stream: Handle) -> None:
        stream.close()
        self._streams.discard(stream)
        if isinstance(node, FileNode) and isinstance(stream, Stream):
            node.source.closed()
        handles = self._by_node.get(node)
        if handles is not None and stream in handles:
            handles.discard(stream)
            if not handles:
                del self._by_node[node]
            self.tree.release(node)

    def of(self, node: StreamNode) -> set[Handle]:
        """The handles open on ``node`` now."""
        return self._by_node.get(node, set())

    def feed(self, node: PipeNode) -> Feed | None:
        """The feed of the newest handle opened on ``node``, if any was."""
        return self._feeds.get(node)

    def notify_when_readable(self, stream: Handle, notify: Callable[[], None]) -> None:
        """Call ``notify`` (a poll handle's) once ``stream`` can be read without waiting."""

        async def watch() -> None:
            await stream.wait_readable()
            try:
                notify()
            except OSError as exc:  # the poller went away; nothing to wake
                log.debug("poll notification not delivered: %s", exc)

        self.background.spawn(stream.label, watch)

    def interrupt_all(self) -> None:
        """The mount is stopping: every waiting read returns SEEK_PENDING (EINTR)."""
        for stream in self._streams:
            stream.interrupt()
