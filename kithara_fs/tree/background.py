"""The mount's background work: loading listings, learning sizes, keeping pinned files whole.

Owns one nursery (:meth:`Background.run` until :meth:`Background.stop`) and every task the
tree starts in it: a listing folder's load (retried after a failure, on the next look), the
one size probe per file that ``ls`` may trigger, the whole download of each pinned file, a
feed's fetching for an open pipe-like file, and the watchers that wake poll() waiters.
Tasks asked for before :meth:`run` started wait for it.

It must never import pyfuse3, and never make ``ls`` wait on the network for longer than the
metadata budget: sizes come from the cache index first.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..budget import Deadline
from ..engine.scheduler import Reader, Scheduler
from ..errors import KitharaError, OriginError
from ..sources import ByteSource
from ..tasks import start_guarded
from .nodes import FileNode, ListingNode
from .tree import Tree

log = logging.getLogger(__name__)

# A pinned download that failed is tried again after this long: soon enough to finish while
# the machine is online, rare enough not to hammer an origin that is down.
PIN_RETRY_DELAY = 30.0
# A listing that failed to load is tried again on the next look after this long (as a
# failed size probe is).
LISTING_RETRY_AFTER = 30.0
# Size probes run at most this many at a time. A config of 10,000 streams must not put 10,000
# requests in the HTTP client's pool at once: httpcore walks every queued request on every
# event, so a deep queue starves the event loop and not even `ls` is answered. 16 leaves half
# of the pool's 32 connections to reads; on a LAN 16 probes in flight learn ~5,000 sizes a
# second.
PROBE_WORKERS = 16


class Background:
    """Background tasks of one mount, in one nursery of their own."""

    def __init__(self, tree: Tree, scheduler: Scheduler) -> None:
        self.tree = tree
        self.scheduler = scheduler
        self._nursery: trio.Nursery | None = None
        self._waiting: list[tuple[str, Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []
        self._pinned: set[ByteSource] = set()
        self._stopped = False
        # Claimed size probes waiting for a worker; a file someone stats goes first.
        self._queued: deque[FileNode] = deque()
        self._urgent: deque[FileNode] = deque()
        self._probe_workers = 0
        # Tells the kernel to forget names a listing no longer has (set by the mount).
        self.forget: Callable[[list[tuple[int, str]]], None] = lambda removed: None

    async def run(self) -> None:
        """Run the tasks until :meth:`stop` (or cancellation)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            waiting, self._waiting = self._waiting, []
            for name, function, args in waiting:
                start_guarded(nursery, name, function, *args)
            await trio.sleep_forever()

    def stop(self) -> None:
        self._stopped = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def spawn(self, name: str, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a task (guarded: its failure is logged, never the mount's end)."""
        if self._stopped:
            log.debug("%s: not started, the mount is stopping", name)
        elif self._nursery is None:
            self._waiting.append((name, function, args))
        else:
            start_guarded(self._nursery, name, function, *args)

    # -- what starts with the mount and each reload ------------------------------------------

    def start(self) -> None:
        """Load every listing, learn the size of every file the cache does not know yet,
        and download pinned files whole."""
        for folder in self.tree.listings():
            self._start_loading(folder)
        for node in self.tree.files():
            if (node.config.pin and not node.listed) or node.keep_whole:
                self._keep_whole(node)
            else:
                self.probe(node)

    def _keep_whole(self, node: FileNode) -> None:
        if node.source not in self._pinned:
            self._pinned.add(node.source)
            self.spawn(node.config.display_path, self._keep_complete, node)

    # -- listings ----------------------------------------------------------------------------

    async def expand(self, folder: ListingNode, budget: float) -> None:
        """Make sure a listing folder shows its files (waiting at most ``budget``).

        A folder already listed is listed again when its listing says so (a station's new
        track, a feed due for a refresh), waited for as a first load is.
        """
        self._start_loading(folder)
        with trio.move_on_after(budget):
            # A failed load is not waited for again until its retry is due.
            await folder.attempt.wait()

    def _start_loading(self, folder: ListingNode) -> None:
        if folder.loading or folder.removed:
            return
        if folder.loaded:
            assert folder.listing is not None
            if folder.listing.generation == folder.generation:
                return
        if trio.current_time() - folder.failed_at < LISTING_RETRY_AFTER:
            return
        folder.loading = True
        folder.attempt = trio.Event()
        self.spawn(folder.config.display_path if folder.config else "listing", self._load, folder)

    async def _load(self, folder: ListingNode) -> None:
        try:
            await self._load_files(folder)
        finally:
            folder.loading = False
            folder.attempt.set()

    async def _load_files(self, folder: ListingNode) -> None:
        assert folder.listing is not None and folder.config is not None
        label = folder.config.display_path
        generation = folder.listing.generation
        try:
            files = list(await folder.listing.load())
        except KitharaError as exc:
            folder.error = exc.reason if isinstance(exc, OriginError) else str(exc)
            folder.failed_at = trio.current_time()
            log.warning("%s: %s not available: %s", label, folder.listing.what, exc)
            return
        except Exception:
            folder.error = "internal error"
            folder.failed_at = trio.current_time()
            log.exception("%s: internal error loading the folder", label)
            return
        if folder.removed:
            return
        folder.error = None
        relisted = self.tree.add_listed(folder, files)
        for node in relisted.seekable:
            self.probe(node)
        for child in folder.children.values():
            if isinstance(child, FileNode) and child.keep_whole:
                self._keep_whole(child)
        if relisted.removed:
            self.forget(relisted.removed)
        if not folder.loaded:
            log.info("%s: %s with %d file(s)", label, folder.listing.what, len(files))
        folder.generation = generation
        folder.loaded = True

    # -- sizes -------------------------------------------------------------------------------

    def probe(self, node: FileNode, *, urgent: bool = False) -> None:
        """Learn the file's size in the background, unless known or being learnt.

        ``urgent``: a reader waits for it (getattr), so it goes before the queued ones.
        """
        if node.source.claim_probe():
            (self._urgent if urgent else self._queued).append(node)
        elif urgent and node.source.probing and not node.source.probe_running:
            self._urgent.append(node)  # queued already: now it goes first (once)
        else:
            return
        if self._probe_workers < PROBE_WORKERS:
            self._probe_workers += 1
            self.spawn("size probes", self._probe_worker)

    async def _probe_worker(self) -> None:
        try:
            while self._urgent or self._queued:
                node = (self._urgent or self._queued).popleft()
                source = node.source
                if source.length is None and source.probing and not source.probe_running:
                    await source.probe_in_background()
        finally:
            self._probe_workers -= 1

    async def size(self, node: FileNode, budget: float) -> int:
        """The file's size for getattr: cached, or probed within ``budget``, else 0."""
        length = node.source.length
        if length is None:
            self.probe(node, urgent=True)
            # Counted from the probe's start, not from this call: a listing of many files,
            # or repeated stats, wait at most one budget in all for an origin that stalls.
            started = node.source.probe_started
            if started is None:
                started = trio.current_time()
            length = await node.source.wait_length(Deadline(started + budget))
        return length or 0

    # -- pins --------------------------------------------------------------------------------

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
                if source.complete() or not source.pinned:
                    if source.pinned:
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
