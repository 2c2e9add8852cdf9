"""One cached resource on disk: a sparse data file and its row in the index.

Owns the bytes of one URL at one version: ``<key>.data`` (sparse, written with pwrite at
the bytes' own offsets) and the resource's row in the SQLite index (version, present
ranges, pin). A row only ever lists ranges whose bytes were fsynced first, so a crash can
lose recent bytes but can never make the cache claim bytes it does not hold; when bytes are
forgotten (a new version, eviction) the row is emptied before anything else is written.

It must never fetch anything, and never let an OS error reach a reader: a failed cache read
is logged and reported as a miss, and the caller downloads again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import trio

from ..errors import CacheError
from ..ranges import RangeSet
from .checksums import Checksums
from .files import open_private, private_folder
from .index import CacheIndex, EntryMeta

log = logging.getLogger(__name__)


class CacheEntry:
    """Cached bytes of one URL.

    Attributes:
        url: the resource's URL (the key is derived from it).
        meta: length and validators of the cached version, or None before the first probe.
        ranges: the byte ranges that are present in the data file (in memory; newer than
            the index on disk until the next :meth:`flush`).
    """

    def __init__(
        self,
        url: str,
        key: str,
        data_path: Path,
        index: CacheIndex,
        on_saved: Callable[[], object] | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.data_path = data_path
        self.meta: EntryMeta | None = None
        self.ranges = RangeSet()
        # The CRC-32 of every present byte, taken as it arrived; ranges == sums.ranges().
        self.sums = Checksums()
        self.pinned = False
        # Open handles reading this entry; eviction never takes bytes from under them.
        self.readers = 0
        self._index = index
        self._on_saved = on_saved
        self._fd: int | None = None
        self._dirty = False
        # Set when an emptied row could not be saved: the old row may still vouch for these
        # offsets, so nothing new may be written here until the next mount.
        self._disabled = False
        # Bumped whenever cached bytes are forgotten; a row snapshot taken under an older
        # count must never be written, or it would vouch for bytes that are gone.
        self._forgets = 0
        self._flush_lock = trio.Lock()

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the entry's row; a missing row or data file leaves the entry empty."""
        row = self._index.get(self.url)
        if row is None:
            return
        sums = Checksums(row.sums)
        if len(sums) and not self.data_path.exists():
            log.warning("cache data %s is missing, starting empty", self.data_path)
            sums = Checksums()
        self.meta, self.sums, self.pinned = row.meta, sums, row.pinned
        self.ranges = sums.ranges()

    # -- bytes -----------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes | None:
        """The bytes ``[offset, offset+size)`` if all are present and verified, else None.

        Every byte handed out matched the checksum it had when it arrived. Damaged bytes
        are forgotten (logged), so the caller downloads them again; a failing data file is
        forgotten whole. Either way the answer is a miss, never the bad bytes.
        """
        end = offset + size
        if not self.ranges.covers(offset, end):
            return None
        pieces = self.sums.covering(offset, end)
        if pieces is None:  # cannot happen while ranges == sums.ranges(); never serve unverified
            log.warning("cache %s: bytes without a checksum; refetching", self.data_path.name)
            self._forget_all()
            return None
        base, stop = pieces[0][0], pieces[-1][1]
        try:
            data = os.pread(self._data_fd(), stop - base, base)
        except OSError as exc:
            log.warning("cache read of %s failed, refetching: %s", self.data_path, exc)
            self._forget_all()
            return None
        if len(data) != stop - base:
            log.warning("cache file %s is shorter than its index, refetching", self.data_path)
            self._forget_all()
            return None
        damaged = self.sums.damaged_among(pieces, base, data)
        if damaged:
            lost = sum(b - a for a, b in damaged)
            log.warning("cache data %s: %d bytes from offset %d failed their checksum; fetching "
                        "them again", self.data_path.name, lost, damaged[0][0])  # fmt: skip
            self.sums.drop(damaged)
            self.ranges = self.sums.ranges()
            self._forgets += 1  # a row snapshot from before must not vouch for them
            self._save(self.meta, self.ranges, self.sums)
            return None
        if base == offset and stop == end:
            return data  # the usual case (block-aligned reads): no copy
        return data[offset - base : end - base]

    def write(self, offset: int, data: bytes) -> bool:
        """Store bytes at their offset; the range counts as present only once written.

        Bytes already present are kept as they are (and not written again): they were
        checked when they arrived, and rewriting them would need their checksum again.
        Returns False when the write failed (disk full, say, or the index is failing).
        """
        if self._disabled:
            return False
        view = memoryview(data)
        for start, stop in self.ranges.missing(offset, offset + len(data)):
            part = view[start - offset : stop - offset]
            try:
                written = os.pwrite(self._data_fd(), part, start)
            except OSError as exc:
                log.warning("cache write to %s failed: %s", self.data_path, exc)
                return False
            if written != len(part):
                log.warning("short cache write to %s (%d of %d)", self.data_path, written,
                            len(part))  # fmt: skip
                return False
            self.sums.add(start, part)
            self.ranges.add(start, stop)
            self._dirty = True
        return True

    def cached_bytes(self) -> int:
        return self.ranges.total()

    def is_complete(self) -> bool:
        return self.meta is not None and self.ranges.covers(0, self.meta.length)

    # -- versions ------------------------------------------------------------------------

    def set_meta(self, meta: EntryMeta) -> None:
        """Adopt a version. A different version than the cached one drops every cached byte."""
        if self.meta is not None and not self.meta.same_version(meta):
            self._forget_all()
        self.meta = meta
        self._dirty = True

    def reset(self) -> None:
        """Forget the cached version entirely (the origin now serves another one)."""
        self._forget_all()
        self.meta = None
        self._dirty = True

    # -- persistence -----------------------------------------------------------------------

    async def flush(self) -> None:
        """Make the index row match what is durably in the data file."""
        async with self._flush_lock:
            if not self._dirty:
                return
            self._dirty = False
            # Snapshot first: only ranges written before the fsync below may be recorded.
            meta, forgets = self.meta, self._forgets
            ranges, sums = RangeSet(self.ranges.spans()), self.sums.copy()
            try:
                if self._fd is not None:
                    await trio.to_thread.run_sync(os.fdatasync, self._fd)
            except OSError as exc:
                self._dirty = True
                log.warning("cache data %s not synced: %s", self.data_path, exc)
                return
            except BaseException:
                self._dirty = True  # cancelled: the next flush records these ranges
                raise
            if forgets != self._forgets:
                self._dirty = True
                return
            # A row that vouches for no bytes (a size just learnt) needs no sync of its own.
            self._save(meta, ranges, sums, durable=ranges.total() > 0)

    def set_pinned(self, pinned: bool) -> None:
        if self.pinned != pinned:
            self.pinned = pinned
            if self._disabled:
                self._save(self.meta, RangeSet(), Checksums())  # its bytes are not vouched for
            elif self._dirty:
                self._save(self.meta, None, None)  # newer ranges are not synced yet
            else:
                self._save(self.meta, RangeSet(self.ranges.spans()), self.sums.copy())

    def touch(self) -> None:
        """Record a use, for least-recently-used eviction."""
        self._index.touch(self.url)

    def evict(self) -> int:
        """Forget every cached byte (the version is kept, so sizes stay known offline)."""
        freed = self.ranges.total()
        self._forget_all()
        return freed

    def retire(self) -> None:
        """The resource is being deleted: nothing may be written or saved for it any more
        (a flush already on its way must not bring the row back)."""
        self._disabled = True
        self._dirty = False
        self._forgets += 1

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- internals -------------------------------------------------------------------------

    def _data_fd(self) -> int:
        """The data file, opened once; raises OSError (a symlink in its place is ELOOP)."""
        if self._fd is None:
            try:
                private_folder(self.data_path.parent)
            except CacheError as exc:
                raise OSError(str(exc)) from None
            flags = os.O_RDWR | os.O_CREAT
            try:
                self._fd = open_private(self.data_path, flags)
            except OSError as exc:
                if not os.path.islink(self.data_path):
                    raise
                # Something put a symlink where our data file goes. Following it would write
                # downloads over its target; removing the link (not the target) is safe.
                log.warning("cache data %s was a symlink; replaced it with a new file (%s)",
                            self.data_path.name, exc.strerror or exc)  # fmt: skip
                os.unlink(self.data_path)
                self._fd = open_private(self.data_path, flags)
        return self._fd

    def _forget_all(self) -> None:
        self.ranges = RangeSet()
        self.sums = Checksums()
        self._forgets += 1
        # The row must stop vouching for these offsets before new bytes land there.
        if not self._save(self.meta, self.ranges, self.sums):
            log.warning("cache entry %s disabled until remount", self.data_path.name)
            self._disabled = True
            return
        if self._fd is not None:
            # Truncating releases the old version's blocks without a new file name.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)

    def _save(
        self,
        meta: EntryMeta | None,
        ranges: RangeSet | None,
        sums: Checksums | None,
        durable: bool = True,
    ) -> bool:
        """Write the row; ``ranges=None`` keeps what is on disk (newer ones are unsynced)."""
        try:
            if ranges is None or sums is None:
                row = self._index.get(self.url)
                ranges = row.ranges if row is not None else RangeSet()
                sums = Checksums(row.sums if row is not None else ())
            self._index.save(self.url, self.key, meta, ranges, pinned=self.pinned,
                             sums=sums.pieces(), durable=durable)  # fmt: skip
        except (sqlite3.Error, OSError) as exc:  # the cache is best effort
            self._dirty = True
            log.warning("cache index row for %s not saved: %s", self.data_path.name, exc)
            return False
        if self._on_saved is not None:
            self._on_saved()
        return True
