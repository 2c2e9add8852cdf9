"""One cached resource on disk: a sparse data file and its index.

Owns the bytes of one URL at one version: ``<key>.data`` (sparse, written with pwrite at
the bytes' own offsets) and ``<key>.json`` (format version, URL, validators, length and the
list of present ranges). The index is replaced atomically (write a temporary file, fsync it,
rename) and only ever lists ranges whose bytes were fsynced first, so a crash can lose
recent bytes but can never make the cache claim bytes it does not hold.

It must never fetch anything, and never let an OS error reach a reader: a failed cache read
is logged and reported as a miss, and the caller downloads again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..ranges import RangeSet

log = logging.getLogger(__name__)

INDEX_FORMAT = 1


@dataclass(frozen=True)
class EntryMeta:
    """The version of a resource the cached bytes belong to."""

    length: int
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    accepts_ranges: bool = True

    def same_version(self, other: EntryMeta) -> bool:
        return (self.length, self.etag, self.last_modified) == (
            other.length,
            other.etag,
            other.last_modified,
        )


class CacheEntry:
    """Cached bytes of one URL.

    Attributes:
        url: the resource's URL (the key is derived from it).
        meta: length and validators of the cached version, or None before the first probe.
        ranges: the byte ranges that are present in the data file (in memory; newer than
            the index on disk until the next :meth:`flush`).
    """

    def __init__(self, url: str, data_path: Path, index_path: Path) -> None:
        self.url = url
        self.data_path = data_path
        self.index_path = index_path
        self.meta: EntryMeta | None = None
        self.ranges = RangeSet()
        self._fd: int | None = None
        self._dirty = False
        # Bumped whenever cached bytes are forgotten; an index snapshot taken under an older
        # generation must never be written, or it would vouch for bytes that are gone.
        self._generation = 0
        self._flush_lock = trio.Lock()

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the index from disk; a missing or unreadable index leaves the entry empty."""
        try:
            with open(self.index_path, encoding="utf-8") as f:
                raw = json.load(f)
            meta, ranges = _decode_index(raw, self.url)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cache index %s is unreadable, starting empty: %s", self.index_path, exc)
            self._discard_files()
            return
        if ranges.total() and not self.data_path.exists():
            log.warning("cache data %s is missing, starting empty", self.data_path)
            ranges = RangeSet()
        self.meta, self.ranges = meta, ranges

    # -- bytes -----------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes | None:
        """The bytes ``[offset, offset+size)`` if all are present, else None (a miss)."""
        if not self.ranges.covers(offset, offset + size):
            return None
        try:
            data = os.pread(self._data_fd(), size, offset)
        except OSError as exc:
            log.warning("cache read of %s failed, refetching: %s", self.data_path, exc)
            self._forget_all()
            return None
        if len(data) != size:
            log.warning("cache file %s is shorter than its index, refetching", self.data_path)
            self._forget_all()
            return None
        return data

    def write(self, offset: int, data: bytes) -> bool:
        """Store bytes at their offset; the range counts as present only once written.

        Returns False when the write failed (disk full, say): the caller keeps the bytes
        out of the cache but may still hand them to the reader that is waiting for them.
        """
        try:
            written = os.pwrite(self._data_fd(), data, offset)
        except OSError as exc:
            log.warning("cache write to %s failed: %s", self.data_path, exc)
            return False
        if written != len(data):
            log.warning("short cache write to %s (%d of %d)", self.data_path, written, len(data))
            return False
        self.ranges.add(offset, offset + len(data))
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
        """Make the index on disk match what is durably in the data file."""
        async with self._flush_lock:
            if not self._dirty:
                return
            self._dirty = False
            # Snapshot first: only ranges written before the fsync below may be recorded.
            snapshot = _encode_index(self.url, self.meta, self.ranges)
            generation = self._generation
            try:
                if self._fd is not None:
                    await trio.to_thread.run_sync(os.fdatasync, self._fd)
                if generation != self._generation:
                    self._dirty = True
                    return
                await trio.to_thread.run_sync(_atomic_write_json, self.index_path, snapshot)
            except OSError as exc:
                self._dirty = True
                log.warning("cache index %s not saved: %s", self.index_path, exc)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- internals -------------------------------------------------------------------------

    def _data_fd(self) -> int:
        if self._fd is None:
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _forget_all(self) -> None:
        self.ranges = RangeSet()
        self._dirty = True
        self._generation += 1
        # The old index must stop vouching for these offsets before new bytes land there.
        with contextlib.suppress(OSError):
            self.index_path.unlink()
        if self._fd is not None:
            # Truncating releases the old version's blocks without a new file name.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)

    def _discard_files(self) -> None:
        for path in (self.index_path, self.data_path):
            with contextlib.suppress(OSError):
                path.unlink()


def _encode_index(url: str, meta: EntryMeta | None, ranges: RangeSet) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "url": url,
        "meta": None
        if meta is None
        else {
            "length": meta.length,
            "etag": meta.etag,
            "last_modified": meta.last_modified,
            "content_type": meta.content_type,
            "accepts_ranges": meta.accepts_ranges,
        },
        "ranges": [[s, e] for s, e in ranges.spans()],
    }


def _decode_index(raw: Any, url: str) -> tuple[EntryMeta | None, RangeSet]:
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
        raise ValueError("unknown index format")
    if raw.get("url") != url:
        raise ValueError("index belongs to another URL")
    m = raw["meta"]
    meta = None
    if m is not None:
        length = m["length"]
        if not isinstance(length, int) or length < 0:
            raise ValueError("bad length")
        meta = EntryMeta(
            length=length,
            etag=m.get("etag"),
            last_modified=m.get("last_modified"),
            content_type=m.get("content_type"),
            accepts_ranges=bool(m.get("accepts_ranges", True)),
        )
    ranges = RangeSet()
    for start, end in raw["ranges"]:
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end:
            raise ValueError("bad range")
        if meta is None or end > meta.length:
            raise ValueError("range beyond the length")
        ranges.add(start, end)
    return meta, ranges


def _atomic_write_json(path: Path, content: dict[str, Any]) -> None:
    """tmp → fsync → rename: a reader sees the old index or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(content, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
