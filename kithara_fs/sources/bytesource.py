"""The seekable byte source most kinds build on: a length, cached bytes and downloads.

Owns the machinery all seekable sources share: the cache entry holding the bytes (and every
use of it the layers above need, through methods: open counts that protect it from eviction,
pinning, what is cached), the change signal readers wait on, the version counter, the one
background size probe that ``ls`` may trigger, and the measured download rate. Subclasses
say how the length is learnt (:meth:`ByteSource.ensure_info`) and how bytes are fetched
(:meth:`ByteSource.download`).

It must never speak FUSE or choose errnos, and never decide *when* or how much to download:
the scheduler (``engine/scheduler.py``) owns the read-ahead window and how requests grow.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..budget import ChangeSignal, Deadline
from ..cache import CacheEntry
from ..errors import CacheError, OriginError
from ..net import HttpClient, ResourceInfo
from ..redact import redact_text, redact_url
from .status import Status

if TYPE_CHECKING:
    from .base import Sequential

log = logging.getLogger(__name__)

# A file whose headers give no byte rate is taken to be CD audio (1411 kbit/s), the highest
# rate common in the wild, so an unknown format still gets its full seconds of read-ahead.
FALLBACK_BYTE_RATE = 176_400
# On open the scheduler fetches the head and the tail that players read before they play;
# 64 KiB of tail covers ID3v1/APE tags, the last Ogg page and a short file's MP4 index, so a
# source may count on that much of the tail being cached early (the byte-rate parser does).
OPENING_TAIL = 64 * 1024
# After a failed size probe, getattr answers "size 0" at once for this long instead of
# probing (and making `ls` wait) again: an origin that is down stays down for a while.
PROBE_RETRY_AFTER = 30.0
# The download rate shown in status is averaged over this many seconds.
RATE_WINDOW = 3.0


class DownloadCursor(Protocol):
    """The scheduler's handle on one running download.

    ``pos`` is advanced by the download as bytes land; ``target`` is moved by the scheduler
    as readers advance. The download stops once ``pos`` reaches ``target`` — or, holding its
    connection, first waits a while (:meth:`wait_for_target`) for a reader to move it on.
    """

    pos: int
    target: int
    # The source version it downloads (moved on by a download that takes a new one).
    version: int
    # The reader reads on with its whole read-ahead window: requests may be open-ended.
    open_ended: bool
    # How far past its readers' reads the download fetches (their read-ahead now), in bytes.
    reach: int

    async def wait_for_target(self, beyond: int, patience: float) -> bool:
        """Wait up to ``patience`` seconds for ``target`` to pass ``beyond``; True if it did."""

    def beside(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in a task of its own next to the download, which does not wait for it."""
        ...


class ByteSource(abc.ABC):
    """A remote resource presented as one byte space, its cached bytes and its downloads.

    Attributes:
        url: the resource URL (may carry credentials: log ``shown`` instead).
        shown: the redacted URL.
        entry: the cache entry holding its bytes.
        changed: notified whenever bytes land, metadata arrives or a download ends.
        version: counts the origin's versions seen; bumped when it changes, and handles
            opened on an older one must fail with ESTALE rather than see the new bytes.
        last_error: the most recent failure, for status displays.
        variant, live: what the status shows for them (set by kinds that have them).
        endless: set when the URL turned out to serve an endless stream (an internet radio
            station): opens read it like a pipe through this, and the size stays 0.
        mtime: the file's modification time to show (seconds since the epoch), if its kind
            knows one (an episode's publication date).
        facts: Status fields its kind knows of it (an episode's title, guid, date).
        versions_vary: the origin may answer each request with another version (dynamic ad
            insertion on podcast hosts): a version it switches to is downloaded whole
            (``spools_whole``), and a handle that was served nothing yet follows it.
    """

    def __init__(
        self, url: str, http: HttpClient, entry: CacheEntry, readahead_seconds: float = 30.0
    ) -> None:
        self.url = url
        self.readahead_seconds = readahead_seconds
        self._byte_rate: float | None = None
        self.shown = redact_url(url)
        self.entry = entry
        self.http = http
        self.changed = ChangeSignal()
        self.version = 0
        self.variant: str | None = None
        self.live: bool | None = None
        self.endless: Sequential | None = None
        self.mtime: float | None = None
        self.facts: dict[str, Any] = {}
        self.versions_vary = False
        self.last_error: OriginError | None = None
        self._probe_claimed = False
        self._info_lock = trio.Lock()
        # When the current or latest background size probe was claimed (trio clock), if ever.
        self.probe_started: float | None = None
        self._probe_failed_at: float | None = None
        self._received: deque[tuple[float, int]] = deque()
        self._flushing_behind = False

    # -- what subclasses provide ---------------------------------------------------------

    @abc.abstractmethod
    async def ensure_info(self) -> ResourceInfo:
        """Length and version, learnt from the origin once if the cache does not know them.

        Raises:
            OriginError: the origin cannot be reached, or the length cannot be learnt.
        """

    async def revalidate(self, deadline: Deadline) -> None:
        """On open: check the cached version is still current (no-op by default)."""
        return None

    def byte_rate(self) -> float | None:
        """Bytes per second of audio, once known."""
        return self._byte_rate

    @abc.abstractmethod
    async def download(self, cursor: DownloadCursor) -> None:
        """Fill the cache from ``cursor.pos`` until ``cursor.target``, the end, or failure."""

    # -- metadata ----------------------------------------------------------------------------

    @property
    def length(self) -> int | None:
        meta = self.entry.meta
        return None if meta is None else meta.length

    @property
    def probing(self) -> bool:
        """A size probe is running, or claimed and about to run."""
        return self._probe_claimed or self._info_lock.locked()

    @property
    def probe_running(self) -> bool:
        """The size is being learnt right now (not just claimed)."""
        return self._info_lock.locked()

    def claim_probe(self) -> bool:
        """Reserve the one background probe; False if the size is known or a probe is on."""
        if self.length is not None or self.probing:
            return False
        failed = self._probe_failed_at
        if failed is not None and trio.current_time() - failed < PROBE_RETRY_AFTER:
            return False
        self._probe_claimed = True
        self.probe_started = trio.current_time()
        return True

    async def probe_in_background(self) -> None:
        """Learn the size for getattr (after :meth:`claim_probe`); failures are logged."""
        try:
            await self.ensure_info()
        except OriginError as exc:
            self._probe_failed_at = trio.current_time()
            if self.endless is None:
                log.warning("%s: size unknown: %s", self.shown, exc.reason)
        except Exception:
            # Not ours to end the mount over: the size stays unknown, the probe is retried.
            self._probe_failed_at = trio.current_time()
            log.exception("%s: internal error while learning the size", self.shown)
        finally:
            self._probe_claimed = False
            self.changed.notify()

    async def wait_length(self, deadline: Deadline) -> int | None:
        """The length, waiting until ``deadline`` for a probe in flight; None if unknown."""
        while self.length is None and self.probing:
            if not await self.changed.wait(deadline):
                break
        return self.length

    # -- bytes -------------------------------------------------------------------------------

    def read_cached(self, offset: int, size: int) -> bytes | None:
        return self.entry.read(offset, size)

    def first_missing(self, offset: int) -> int:
        return self.entry.ranges.first_missing(offset)

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` is cached (verified when read)."""
        return self.entry.ranges.covers(start, end)

    def cached_bytes(self) -> int:
        return self.entry.cached_bytes()

    def complete(self) -> bool:
        return self.entry.is_complete()

    async def flush(self) -> None:
        """Persist what the cache holds of this source (the index row)."""
        await self.entry.flush()

    def flush_behind(self, cursor: DownloadCursor) -> None:
        """Persist the index row beside the running download (unless a flush is at it).

        A download must not wait for it: the fdatasync before the row is written took
        ~0.3 s after a second of a LAN download here, and a reader waiting on the download
        waited as long (cold reads ran at 150 MB/s with the flush inline, 180 without).
        """
        if not self._flushing_behind:
            self._flushing_behind = True
            cursor.beside(self._flush_behind)

    async def _flush_behind(self) -> None:
        try:
            await self.entry.flush()
        finally:
            self._flushing_behind = False

    # -- use: open handles and pins ------------------------------------------------------

    def opened(self) -> None:
        """A handle opened on it: its bytes are not evicted until :meth:`closed`."""
        self.entry.readers += 1
        self.entry.touch()

    def closed(self) -> None:
        self.entry.readers -= 1

    @property
    def pinned(self) -> bool:
        return self.entry.pinned

    def set_pinned(self, pinned: bool) -> None:
        """Keep it whole in the cache (never evicted) or let it go."""
        self.entry.set_pinned(pinned)

    def status(self) -> Status:
        """What this source can say of itself; the tree adds path, state and readers."""
        meta = self.entry.meta
        error = self.last_error
        return Status(
            path="", url=self.shown, state="idle", size=self.length,
            cached_bytes=self.cached_bytes(), download_rate=round(self.download_rate()),
            pinned=self.entry.pinned, etag=meta.etag if meta else None,
            content_type=meta.content_type if meta else None,
            error=None if error is None else redact_text(error.reason),
            variant=self.variant, live=self.live,
        ).replace(**self.facts)  # fmt: skip

    @property
    def accepts_ranges(self) -> bool:
        meta = self.entry.meta
        return meta is None or meta.accepts_ranges

    async def length_by(self, deadline: Deadline) -> int | None:
        """The length; for a source that moved to a version of a length not learnt yet,
        learnt by ``deadline`` (None if not by then)."""
        if self.length is None and self.versions_vary:
            with trio.move_on_at(deadline.at):
                await self.ensure_info()
        return self.length

    @property
    def spools_whole(self) -> bool:
        """Every download runs from the first missing byte to the end, and is not stopped
        when its readers seek or close: another request might bring another version."""
        return self.versions_vary and not self.accepts_ranges

    def _keep(self, offset: int, chunk: bytes, cursor: DownloadCursor) -> int:
        """Cache downloaded bytes at their offset, advance the cursor, wake readers.

        Returns the offset just past the chunk. Raises CacheError when it cannot be stored.
        """
        length = self.length
        if length is not None and offset + len(chunk) > length:
            # A body longer than the resource (a 200 without Content-Length, say): the bytes
            # past the end belong to no version we know.
            chunk = chunk[: max(0, length - offset)]
        if not self.entry.write(offset, chunk):
            raise CacheError(f"{self.shown}: cannot store downloaded bytes")
        end = offset + len(chunk)
        cursor.pos = max(cursor.pos, end)
        self._note_received(len(chunk))
        self.changed.notify()
        return end

    def _note_received(self, size: int) -> None:
        self.last_error = None
        now = trio.current_time()
        self._received.append((now, size))
        while self._received and self._received[0][0] < now - RATE_WINDOW:
            self._received.popleft()

    def download_rate(self) -> float:
        """Bytes per second received over the last few seconds."""
        now = trio.current_time()
        recent = sum(size for when, size in self._received if when >= now - RATE_WINDOW)
        return recent / RATE_WINDOW
