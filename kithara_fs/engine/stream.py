"""kithara's read contract: ``Stream.try_read`` with typed outcomes, a Timeline, wait budgets.

Owns the semantics of one open handle: where its reader is (the :class:`Timeline` with its
seek epoch and flushing flag), what one read returns (:class:`Bytes`, :class:`Eof` or
:class:`Pending` with a :class:`PendingReason`), and waiting for missing bytes within the
deadline the caller fixed when the read arrived. The rules, from kithara-stream:

- a read strictly beyond a known length raises :class:`SeekPastEndError`; at the length, Eof;
- Eof is never early: in-range bytes that have not arrived are waited for;
- a read is answered whole (never short in the middle of the resource) or not at all;
- a read overtaken by a seek on the same handle, or by shutdown, is ``SEEK_PENDING``;
- a read whose deadline passes is ``NOT_READY``; the caller decides what that means.

It must never choose an errno or speak FUSE, and never hand out bytes of two versions to one
handle (a changed origin raises :class:`RemoteChangedError`; only a handle served nothing yet
may follow an origin whose versions vary to its new one).
"""

from __future__ import annotations

import abc
import enum
import math
from dataclasses import dataclass

import trio

from ..bitrate import TAIL_BYTES
from ..budget import Deadline
from ..errors import OriginError, RemoteChangedError, SeekPastEndError
from ..sources.base import ByteSource, Feed
from .scheduler import Reader, Scheduler

# What poll() promises is readable: one FUSE read (the kernel's default max_read), no spin.
POLL_READY_BYTES = 128 * 1024
# Versions one read may follow its source to (ad insertion); then it is pending, not a spin.
MAX_FOLLOWS = 2

# A read this far ahead of the handle's last position is still "sequential": players and the
# kernel split and reorder requests a little, and treating that as a seek would cancel the
# read-ahead that is about to serve them (DESIGN.md §2: a few MiB forward, ~1 MiB back).
FORWARD_TOLERANCE = 4 * 1024 * 1024
BACKWARD_TOLERANCE = 1024 * 1024


class PendingReason(enum.Enum):
    """Why a read made no progress (kithara's ``PendingReason``)."""

    NOT_READY = "bytes not downloaded before the wait budget ran out"
    SEEK_PENDING = "superseded by a seek on the same handle, or the mount is stopping"
    VARIANT_CHANGE = "the source switched to a format the reader cannot continue across"


@dataclass(frozen=True)
class Bytes:
    data: bytes


@dataclass(frozen=True)
class Eof:
    position: int


@dataclass(frozen=True)
class Pending:
    reason: PendingReason


ReadOutcome = Bytes | Eof | Pending


class Timeline:
    """Where a handle's reader is, and its seek epoch (kithara's ``Timeline``).

    Attributes:
        epoch: bumped by every seek; a read that started under an older epoch is superseded.
        flushing: set when the handle or the mount is shutting down; every wait ends.
        position: the offset just past the handle's latest read, None before the first.
        resume_at: where the reader will read next: past its last answered read, or at
            the start of the read that found no bytes (what poll() watches).
        superseded: offsets of reads answered SEEK_PENDING; their retry is not a new seek.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.flushing = False
        self.position: int | None = None
        self.resume_at = 0
        self.superseded: set[int] = set()

    def observe(self, offset: int, end: int, length: int) -> bool:
        """Record a read of ``[offset, end)``; return True if it is a seek (epoch bumped).

        Reads of the tail are what players look at before playing (ID3v1 and APE tags,
        an MP4 index at the end, the last Ogg page): they neither seek nor move the position.
        """
        if offset >= length - TAIL_BYTES:
            return False
        previous, self.position = self.position, end
        if offset in self.superseded:
            # The retry of a read a seek interrupted (EINTR is retried at once by ffmpeg and
            # CPython): superseding in turn the read that interrupted it would livelock two
            # threads reading one handle at distant offsets.
            self.superseded.discard(offset)
            return False
        if previous is None:
            return False
        if previous - BACKWARD_TOLERANCE <= offset <= previous + FORWARD_TOLERANCE:
            return False
        self.epoch += 1
        return True


class Handle(abc.ABC):
    """What the FUSE adapter may do with any open handle, seekable or pipe-like.

    Attributes:
        label: what log lines call it.
    """

    label: str

    @property
    def min_wait(self) -> float:
        """The shortest budget a blocking read should get (a live stream's pace); a seekable
        file needs no wait beyond the caller's budget."""
        return 0.0

    @abc.abstractmethod
    async def try_read(self, offset: int, size: int, deadline: Deadline) -> ReadOutcome:
        """Bytes at ``offset``, or Eof, or Pending once ``deadline`` passes."""

    def read_at_once(self, offset: int, size: int) -> Bytes | None:
        """Bytes that are there now, answered without the waiting machinery; None means
        "ask :meth:`try_read`" (and nothing was recorded)."""
        return None

    @abc.abstractmethod
    def answers_at_once(self, offset: int, size: int) -> bool:
        """Whether that read needs no wait, so the opener's blocking mode does not matter."""

    @abc.abstractmethod
    def readable(self) -> bool:
        """Whether a read at the handle's position would answer without waiting (poll)."""

    @abc.abstractmethod
    async def wait_readable(self) -> None:
        """Return once :meth:`readable` (fetching what it takes)."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """End every wait of this handle with SEEK_PENDING (close or shutdown)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Stream(Handle):
    """One open handle on a source.

    Attributes:
        source: the byte space being read.
        timeline: seek epoch and position of this handle.
        version: the source version this handle opened; a newer one means ESTALE.
        label: what log lines call it (the redacted URL).
    """

    def __init__(self, source: ByteSource, scheduler: Scheduler) -> None:
        self.source = source
        self.scheduler = scheduler
        self.timeline = Timeline()
        self.version = source.version
        self.reader = Reader(source)
        self.label = source.shown
        self._head_served = False
        # Until a byte went out it may follow a new version (blind: of a length not known).
        self._served_any = self._followed_blind = False

    async def try_read(self, offset: int, size: int, deadline: Deadline) -> ReadOutcome:
        """Read ``size`` bytes at ``offset``, waiting for downloads until ``deadline``.

        The deadline moves on by its original span whenever bytes of this read arrive, so
        only a stall that long ends a read that may wait.

        Raises:
            SeekPastEndError: ``offset`` is strictly beyond the known length.
            RemoteChangedError: the origin changed since this handle was opened.
            OriginError: the download serving this read failed after its retries.
        """
        for _ in range(MAX_FOLLOWS + 1):
            outcome = await self._read_version(offset, size, deadline)
            if outcome is not None:
                return outcome
        self.timeline.resume_at = offset  # versions change faster than it reads: ask later
        return Pending(PendingReason.NOT_READY)

    async def _read_version(self, offset: int, size: int, deadline: Deadline) -> ReadOutcome | None:
        """:meth:`try_read` in one version; None once the handle followed another."""
        source = self.source
        self._check_version(offset)
        version = source.version
        length = await source.length_by(deadline)
        if length is None and source.versions_vary and deadline.expired:
            return Pending(PendingReason.NOT_READY)
        if length is None:
            raise OriginError(source.shown, "length unknown")
        if offset > length:
            if self._followed_blind:  # the version followed is not the file that was shown
                raise RemoteChangedError(source.shown, "remote changed while open")
            raise SeekPastEndError(offset, length)
        self._followed_blind = False
        if offset == length or size <= 0:
            return Eof(offset)
        end = min(offset + size, length)
        self._arrive(offset, end, length)
        epoch = self.timeline.epoch
        # A read that may wait reports only failures of the downloads it waited for (an older
        # one gets a fresh try); one that may not wait (O_NONBLOCK) learns of any.
        failures_since = trio.current_time() if not deadline.expired else -math.inf
        # The budget is for a stall, not the whole transfer: while bytes of this read keep
        # arriving (a slow but live link), it starts again (DESIGN.md §2).
        span = deadline.at - trio.current_time()
        arrived = source.first_missing(offset)
        while True:
            if self.timeline.flushing:
                return Pending(PendingReason.SEEK_PENDING)
            if self.timeline.epoch != epoch:
                if len(self.timeline.superseded) >= 16:  # abandoned retries; keep it small
                    self.timeline.superseded.clear()
                self.timeline.superseded.add(offset)
                return Pending(PendingReason.SEEK_PENDING)
            if source.version != version:  # this read's end is of another version's length
                self._check_version(offset)  # raises, or follows: start over with its length
                return None
            data = source.read_cached(offset, end - offset)
            if data is not None:
                return self._served(offset, end, data)
            failure = self.reader.take_failure(since=failures_since)
            if failure is not None:
                raise failure
            self.scheduler.demand(self.reader, offset, end)
            if span > 0 and math.isfinite(span) and source.first_missing(offset) > arrived:
                arrived = source.first_missing(offset)
                deadline = Deadline.after(span)
            if deadline.expired:
                self.timeline.resume_at = offset
                return Pending(PendingReason.NOT_READY)
            await source.changed.wait(deadline)

    def read_at_once(self, offset: int, size: int) -> Bytes | None:
        """The answer to a read of cached bytes, without any of the waiting machinery; None
        (and nothing recorded) for any other read, which then goes to :meth:`try_read`.

        This is every read of a played-before file, so it is the daemon's per-request cost
        (issue: "every read through the daemon, fast").
        """
        source = self.source
        length = source.length
        if (self.version != source.version or self.timeline.flushing or length is None
                or not 0 <= offset < length or size <= 0):  # fmt: skip
            return None
        end = min(offset + size, length)
        data = source.read_cached(offset, end - offset)
        if data is None:
            return None
        self._arrive(offset, end, length)
        return self._served(offset, end, data)

    def _arrive(self, offset: int, end: int, length: int) -> None:
        """Record a read arriving: a seek, or a read on from where the reader was (which
        makes its downloads reach further, unless there is nothing left to download)."""
        previous = self.timeline.position
        if self.timeline.observe(offset, end, length):
            # Wake this handle's older reads so they return SEEK_PENDING, and stop the
            # download that was serving the old position.
            self.scheduler.seeked(self.reader)
            self.source.changed.notify()
        elif previous is not None and offset < length - TAIL_BYTES and not self.source.complete():
            self.scheduler.sequential(self.reader, end - offset)

    def _served(self, offset: int, end: int, data: bytes) -> Bytes:
        self._served_any = True
        self.timeline.resume_at = end
        if offset == 0 and not self._head_served:
            self._head_served = True
            self.scheduler.head_served(self.reader, data)
        self.scheduler.read_ahead(self.reader, end)
        return Bytes(data)

    def answers_at_once(self, offset: int, size: int) -> bool:
        """Whether a read of ``[offset, offset+size)`` needs no download (cached, or at/past
        the end), so the opener's blocking mode does not matter for it."""
        length = self.source.length
        if length is None or offset >= length or self.version != self.source.version:
            return True
        return self.source.covers(offset, min(length, offset + max(size, 1)))

    def readable(self) -> bool:
        """Whether a read at the handle's position would answer without waiting (for poll).

        End of file and a failed download count as readable: the read then reports them.
        """
        length = self.source.length
        if self.timeline.flushing or length is None or self.version != self.source.version:
            return True
        position = self.timeline.resume_at
        if position >= length:
            return True
        if self.reader.failure is not None:
            return True
        return self.source.covers(position, min(length, position + POLL_READY_BYTES))

    async def wait_readable(self) -> None:
        """Demand the bytes at the handle's position and return once :meth:`readable`."""
        while not self.readable():
            position = self.timeline.resume_at
            length = self.source.length or 0
            self.scheduler.demand(self.reader, position, min(length, position + POLL_READY_BYTES))
            await self.source.changed.wait(Deadline.never())

    def interrupt(self) -> None:
        """End every wait of this handle with SEEK_PENDING (close or shutdown)."""
        self.timeline.flushing = True
        self.source.changed.notify()

    def close(self) -> None:
        self.interrupt()
        self.scheduler.release(self.reader)

    def _check_version(self, offset: int = 0) -> None:
        """Raise unless the handle is on the source's version or may follow it: served
        nothing yet, versions vary, and ``offset`` inside the new version's length."""
        source = self.source
        if self.version == source.version:
            return
        length = source.length
        beyond = length is not None and offset > length
        if self._served_any or not source.versions_vary or beyond:
            raise RemoteChangedError(source.shown, "remote changed while open")
        self.version, self._followed_blind = source.version, length is None


class SequentialStream(Handle):
    """One open handle on a sequential feed (a live programme, a station), read like a pipe.

    The file is nonseekable, so reads arrive in order; a read returns what has arrived (at
    least one byte), waits while nothing has, and is Eof once the feed ended and drained.
    """

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.label = feed.label
        self.flushing = False
        self.position = 0
        self._scope = trio.CancelScope()

    @property
    def min_wait(self) -> float:
        return self.feed.min_wait

    async def run(self) -> None:
        """The feed's fetching task; ends when the handle closes."""
        with self._scope:
            await self.feed.run()

    async def try_read(self, offset: int, size: int, deadline: Deadline) -> ReadOutcome:
        """Bytes at ``offset`` as soon as any are there, waiting until ``deadline``.

        Raises:
            KitharaError: the feed failed after its retries.
        """
        while True:
            if self.flushing:
                return Pending(PendingReason.SEEK_PENDING)
            data = self.feed.read(offset, size)
            if data is not None:
                self.position = offset + len(data)
                return Bytes(data) if data else Eof(offset)
            if deadline.expired:
                return Pending(PendingReason.NOT_READY)
            await self.feed.changed.wait(deadline)

    def answers_at_once(self, offset: int, size: int) -> bool:
        return self.flushing or self.feed.has_data_at(offset)

    def readable(self) -> bool:
        return self.flushing or self.feed.has_data_at(self.position)

    async def wait_readable(self) -> None:
        while not self.readable():
            await self.feed.changed.wait(Deadline.never())

    def interrupt(self) -> None:
        self.flushing = True
        self.feed.changed.notify()

    def close(self) -> None:
        self.interrupt()
        self._scope.cancel()
        self.feed.discard()
