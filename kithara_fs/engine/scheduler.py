"""Downloads: which bytes to fetch, for whom, and when to stop.

Owns the running downloads ("cursors"), one trio task each in the mount's nursery. A read
that misses the cache *demands* its bytes: it joins a cursor already heading there, or
starts a new ranged GET at the read point at once (kithara waits for the sequential download;
we do not). A read that hits tops up *read-ahead*: when less than half of the read-ahead
window is buffered, a cursor is pointed at the end of the window. A seek releases the
reader's cursors first, and a cursor nobody needs any more is cancelled, before the read at
the new position starts its own.

It also owns how much to fetch: the read-ahead window (seconds of audio, in bytes), how a
handle's requests grow towards it, and the tail that players of some formats read right
after the head, so sources only say how bytes are fetched. Requests start small and grow
(mountpoint-s3's prefetcher is the model): after an open or a seek a read fetches just its
own bytes, and each further sequential read makes the downloads reach GROWTH times as far, up
to the whole window; from OPEN_ENDED_REACH on, one open-ended request, paced by the reader,
serves the rest. Random access stays cheap; a player reading on reaches its full window
within a few reads.

It must never serve bytes or decide errnos, and never run a download without an owner: each
cursor belongs to the readers that asked for it and dies with the last of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..bitrate import reads_the_end
from ..errors import KitharaError
from ..sources.base import FALLBACK_BYTE_RATE, OPENING_TAIL, ByteSource
from ..tasks import start_guarded

log = logging.getLogger(__name__)

# A read this close ahead of a running cursor waits for it instead of opening a new request:
# 512 KiB arrives in ~0.4 s even at 10 Mbit/s, cheaper than a new connection's round trips
# and slow start, and far below any player's patience.
JOIN_DISTANCE = 512 * 1024
# Read-ahead is never smaller than one kernel read request plus a little, nor so large that
# one stream could fill the cache: 64 KiB .. 256 MiB.
MIN_WINDOW = 64 * 1024
MAX_WINDOW = 256 * 1024 * 1024
# Each read on from the last multiplies the reach by this, and once it is this far (or the
# whole window) the reader's requests are open-ended. Every bounded request costs a round
# trip when it ends: with a doubling reach up to the whole window a cold read over a 20 ms
# link made five of them and ran at 58 MB/s of 62.5; two keep a seek's first reads cheap.
GROWTH = 4
OPEN_ENDED_REACH = 1024 * 1024
# How long a version downloaded whole goes on after its last reader left (see _linger).
WHOLE_LINGER = 30.0


def window_bytes(source: ByteSource) -> int:
    """The read-ahead window: the source's ``readahead_seconds`` of audio, in bytes."""
    rate = source.byte_rate() or FALLBACK_BYTE_RATE
    return int(min(MAX_WINDOW, max(MIN_WINDOW, rate * source.readahead_seconds)))


def tail_span(source: ByteSource) -> tuple[int, int] | None:
    """The end of the file that players of some formats read before they play (OPENING_TAIL,
    64 KiB: ID3v1/APE tags, the last Ogg page, a short file's MP4 index)."""
    length = source.length or 0
    start = max(0, length - OPENING_TAIL)
    return (start, length) if start < length else None


@dataclass(eq=False)
class Cursor:
    """One running download on one source.

    Attributes:
        source: what it downloads.
        pos: the next byte it will store.
        target: it stops once ``pos`` reaches this.
        version: the source version it downloads; never joined once that is outdated.
        owners: the readers that rely on it; it is cancelled when none is left.
        error: why it failed, once it has.
        done: it has finished, failed or been cancelled.
    """

    source: ByteSource
    pos: int
    _target: int
    version: int
    owners: set[Reader] = field(default_factory=set)
    # A bounded prefetch (the tail): it outlives a seek of its readers, who jump there next.
    prefetch: bool = False
    error: KitharaError | None = None
    done: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    # Set whenever the target moves on; a download waiting at its target watches it.
    _moved: trio.Event = field(default_factory=trio.Event)
    # It is waiting for that (so fetches nothing now).
    waiting: bool = False
    # Its reader reads on with its whole window: requests need no end of their own.
    open_ended: bool = False
    # Where work beside the download runs (the mount's nursery).
    nursery: trio.Nursery | None = None
    # How far past its readers' reads it fetches (the largest reach among them), in bytes.
    reach: int = 0

    @property
    def target(self) -> int:
        return self._target

    @target.setter
    def target(self, value: int) -> None:
        if value > self._target:
            self._moved.set()
            self._moved = trio.Event()
        self._target = value

    async def wait_for_target(self, beyond: int, patience: float) -> bool:
        """Wait up to ``patience`` s for a reader to move the target past ``beyond``."""
        self.waiting = True
        try:
            with trio.move_on_after(patience):
                while self._target <= beyond:
                    await self._moved.wait()
        finally:
            self.waiting = False
        # Woken by a reader and then released by it (a seek) before this task ran: stop here,
        # before the next request goes out.
        await trio.lowlevel.checkpoint_if_cancelled()
        return self._target > beyond

    def beside(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` next to the download (an index save): not cancelled with it, and its
        failure is logged, not spread."""
        assert self.nursery is not None, "a cursor runs in the scheduler's nursery"
        start_guarded(self.nursery, self.source.shown, work)


@dataclass(eq=False)
class Reader:
    """The scheduler's view of one open handle: its source and the downloads serving it.

    A handle can have several reads in flight (threads, kernel splitting), so it can own
    several cursors; they are all released together when the handle seeks or closes.
    """

    source: ByteSource
    cursors: list[Cursor] = field(default_factory=list)
    # How far past a read its downloads reach now (bytes): 0 after an open or a seek, then
    # GROWTH times more with each sequential read, up to the read-ahead window.
    reach: int = 0
    # The latest download failure of one of its cursors, for the next read that needs bytes,
    # and when it happened (trio clock).
    failure: KitharaError | None = None
    failed_at: float = 0.0

    def take_failure(self, since: float) -> KitharaError | None:
        """The failure if it happened at or after ``since``; an older one is dropped."""
        failure, self.failure = self.failure, None
        return failure if failure is not None and self.failed_at >= since else None

    def running(self) -> list[Cursor]:
        self.cursors = [c for c in self.cursors if not c.done]
        return self.cursors


class Scheduler:
    """Starts, joins, retargets and cancels downloads for all readers of a mount."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._cursors: dict[ByteSource, list[Cursor]] = {}

    def demand(self, reader: Reader, offset: int, end: int) -> Cursor:
        """Make sure some download is heading for the missing bytes of ``[offset, end)``
        (and for the reader's reach past them)."""
        need = reader.source.first_missing(offset)
        target = end + self.reach(reader)
        cursor = self._joinable(reader.source, need) or self._start(reader.source, need, target)
        self._aim(reader, cursor, target)
        return cursor

    def read_ahead(self, reader: Reader, position: int) -> None:
        """After a read that ended at ``position``, keep the window ahead of it filled."""
        source = reader.source
        length = source.length
        if length is None:
            return
        gap = source.first_missing(position)
        if gap >= length:
            return  # all there (a cached file: the cheap answer comes first)
        window = self.reach(reader)
        if window <= 0:
            return  # not reading sequentially (yet): fetch what is read, nothing more
        window_end = min(length, position + window)
        if gap >= window_end:
            return
        for cursor in reader.running():
            if cursor.pos <= gap <= cursor.pos + JOIN_DISTANCE:
                self._aim(reader, cursor, window_end)
                return
        # Hysteresis: start a new request only once half the window has drained, so a
        # reader that keeps pace with the download does not cause a request per read.
        if gap - position > window // 2:
            return
        cursor = self._joinable(source, gap) or self._start(source, gap, window_end)
        self._aim(reader, cursor, window_end)

    def reach(self, reader: Reader) -> int:
        """How far past a read the reader's downloads go now: its reach, at most the window."""
        return min(reader.reach, window_bytes(reader.source))

    def sequential(self, reader: Reader, size: int) -> None:
        """The reader read on from where it was: its downloads reach GROWTH times as far."""
        reader.reach = min(window_bytes(reader.source),
                           max(GROWTH * reader.reach, GROWTH * size))  # fmt: skip

    def seeked(self, reader: Reader) -> None:
        """The reader jumped: its downloads stop (a bounded prefetch finishes: the jump is
        often to it), and its reach starts again from nothing."""
        self.release(reader, keep_prefetch=True)
        reader.reach = 0

    def head_served(self, reader: Reader, head: bytes) -> None:
        """The reader's read at byte 0 was answered with ``head``: if its format is one whose
        players read the end next (:func:`~kithara_fs.bitrate.reads_the_end`), fetch the tail
        now, beside the reader's next reads, so that seek costs no round trip. Nothing is
        fetched at open: a player's first read fetches its own bytes and waits for nothing
        else."""
        span = tail_span(reader.source)
        if span is not None and reads_the_end(head):
            self.prefetch(reader, [span])

    def prefetch(self, reader: Reader, spans: list[tuple[int, int]]) -> None:
        """Fetch these spans now, on the reader's behalf, without moving its window."""
        for start, end in spans:
            need = reader.source.first_missing(start)
            if need >= end:
                continue
            cursor = self._joinable(reader.source, need)
            if cursor is None:
                cursor = self._start(reader.source, need, end)
                cursor.prefetch = True
            self._attach(reader, cursor)

    def release(self, reader: Reader, keep_prefetch: bool = False) -> None:
        """The reader seeked away or closed: its downloads stop unless others need them."""
        cursors, reader.cursors = reader.cursors, []
        for cursor in cursors:
            if keep_prefetch and cursor.prefetch and not cursor.done:
                reader.cursors.append(cursor)
                continue
            cursor.owners.discard(reader)
            if not cursor.owners and not cursor.done:
                if cursor.source.spools_whole:
                    self._linger(cursor)
                else:
                    cursor.scope.cancel()

    def _linger(self, cursor: Cursor) -> None:
        """A version downloaded whole (ad insertion) outlives its last reader a while, since
        a request for the rest could bring another version and players open a file again
        within seconds; for good while the file is pinned (download_latest)."""

        async def later() -> None:
            await trio.sleep(WHOLE_LINGER)
            if not cursor.owners and not cursor.done and not cursor.source.pinned:
                cursor.scope.cancel()

        start_guarded(self._nursery, cursor.source.shown, later)

    def active(self, source: ByteSource) -> int:
        """Number of downloads fetching for ``source`` now (for status and tests): one that
        waits at its target for its reader to read on does not count."""
        return sum(1 for c in self._cursors.get(source, ()) if not c.done and not c.waiting)

    # -- internals -------------------------------------------------------------------------

    def _joinable(self, source: ByteSource, need: int) -> Cursor | None:
        for cursor in self._cursors.get(source, ()):
            if cursor.done or cursor.version != source.version:
                continue
            # Without Range support every download streams from byte 0: share the one running.
            if not source.accepts_ranges or cursor.pos <= need <= cursor.pos + JOIN_DISTANCE:
                return cursor
        return None

    def _aim(self, reader: Reader, cursor: Cursor, target: int) -> None:
        """Point ``cursor`` at least at ``target`` on the reader's behalf; once the reader's
        reach is its whole window, the cursor's requests are open-ended."""
        cursor.target = max(cursor.target, target)
        cursor.reach = max(cursor.reach, self.reach(reader))
        if reader.reach >= min(OPEN_ENDED_REACH, window_bytes(reader.source)):
            cursor.open_ended = True
        self._attach(reader, cursor)

    def _attach(self, reader: Reader, cursor: Cursor) -> None:
        if cursor not in reader.running():
            reader.cursors.append(cursor)
            cursor.owners.add(reader)

    def _start(self, source: ByteSource, start: int, target: int) -> Cursor:
        cursor = Cursor(source=source, pos=start, _target=target, version=source.version,
                        nursery=self._nursery)  # fmt: skip
        self._cursors.setdefault(source, []).append(cursor)
        start_guarded(self._nursery, source.shown, self._run, cursor)
        return cursor

    @staticmethod
    def _failed(cursor: Cursor, exc: KitharaError) -> None:
        cursor.error = exc
        now = trio.current_time()
        for reader in cursor.owners:
            reader.failure, reader.failed_at = exc, now

    async def _run(self, cursor: Cursor) -> None:
        source = cursor.source
        log.debug("%s: download from %d", source.shown, cursor.pos)
        try:
            with cursor.scope:
                await source.download(cursor)
        except KitharaError as exc:
            self._failed(cursor, exc)
            log.warning("%s: download failed at byte %d: %s", source.shown, cursor.pos, exc)
        except Exception as exc:
            # A bug must not take the whole mount down: readers get EIO, the log the trace.
            self._failed(cursor, KitharaError(f"internal error: {exc!r}"))
            log.exception("%s: internal error in a download", source.shown)
        finally:
            cursor.done = True
            running = self._cursors.get(source, [])
            if cursor in running:
                running.remove(cursor)
            if not running:
                self._cursors.pop(source, None)
            source.changed.notify()
            with trio.CancelScope(shield=True):
                await source.flush()
