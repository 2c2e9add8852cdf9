"""The cache directory: layout, the index, one entry per URL, and eviction.

Owns the on-disk layout (``<dir>/v2/index.sqlite3`` and ``<dir>/v2/data/<key[:2]>/<key>.data``,
the key being the SHA-256 of the URL, and ``<dir>/v2/rings/`` for stations' unlinked rings; the
layout version is part of the path, so a future layout never misreads this one), the exclusive
lock that keeps a second mount off the same directory, and the size bound: when the cached
bytes exceed ``max_size``, whole resources are evicted, least recently used first, skipping
pinned ones and any that a handle has open. Eviction runs in its own task
(:meth:`CacheStore.run_evictions`), woken whenever an entry saves its row, so a failure there
never surfaces inside a read or a download.

It must never fetch anything, and never evict bytes from under an open reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
from pathlib import Path

import trio

from ..errors import CacheError
from .entry import CacheEntry
from .files import open_private, private_folder
from .index import CacheIndex
from .ring import RingFile

log = logging.getLogger(__name__)

LAYOUT = "v2"


class CacheStore:
    """A directory of cache entries, one per URL.

    Attributes:
        root: the versioned directory holding the index and the data files.
        max_size: the bound on cached bytes (None: unbounded).
        index: the SQLite index.
    """

    def __init__(self, directory: Path, max_size: int | None = None) -> None:
        self.root = directory / LAYOUT
        self.max_size = max_size
        private_folder(directory, top=True)
        private_folder(self.root)
        self._lock_fd = _lock(self.root / "lock")
        try:
            self.index = _open_index(self.root / "index.sqlite3")
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._entries: dict[str, CacheEntry] = {}
        self._evicting = False
        self._grew = trio.Event()

    def entry(self, url: str) -> CacheEntry:
        """The entry for ``url``, loaded from the index on first use."""
        found = self._entries.get(url)
        if found is None:
            key = _key(url)
            found = CacheEntry(url, key, self._data_path(key), self.index, self._note_saved)
            found.load()
            self._entries[url] = found
        return found

    def ring(self, capacity: int) -> RingFile:
        """A new ring of ``capacity`` bytes for an endless stream (raises OSError)."""
        try:
            return RingFile(self.root / "rings", capacity)
        except CacheError as exc:
            raise OSError(str(exc)) from None

    def forget(self, url: str) -> None:
        """Drop a resource whole: its bytes, its data file and its index row."""
        entry = self._entries.pop(url, None)
        key = _key(url)
        if entry is not None:
            entry.evict()
            entry.retire()
            entry.close()
        with contextlib.suppress(FileNotFoundError):
            self._data_path(key).unlink()
        try:
            self.index.delete(url)
        except sqlite3.Error as exc:
            log.warning("cache index: row of %s not deleted: %s", key[:12], exc)

    def document(self, name: str) -> str | None:
        """A remembered document (playlist text, segment sizes), or None."""
        try:
            return self.index.document(name)
        except sqlite3.Error as exc:
            log.warning("cache index: document not read: %s", exc)
            return None

    def save_document(self, name: str, body: str) -> None:
        """Remember a document; a failure only costs a refetch after the next mount."""
        try:
            self.index.save_document(name, body)
        except sqlite3.Error as exc:
            log.warning("cache index: document not saved: %s", exc)

    def clear_pins(self) -> None:
        """Forget every pin (before the config's pins are applied again)."""
        try:
            self.index.clear_pins()
        except sqlite3.Error as exc:  # the index is best effort; pins are set again below
            log.warning("cache index: pins not cleared: %s", exc)
        for entry in self._entries.values():
            entry.pinned = False

    def total_cached(self) -> int:
        return self.index.total_cached()

    def _note_saved(self) -> None:
        self._grew.set()

    async def run_evictions(self) -> None:
        """Keep the cache under ``max_size`` for as long as the mount runs."""
        while True:
            await self._grew.wait()
            self._grew = trio.Event()
            try:
                self.evict_if_needed()
            except (sqlite3.Error, OSError) as exc:
                log.warning("cache: eviction failed: %s", exc)
            except Exception:  # a bug here must not stop eviction for the mount's lifetime
                log.exception("cache: internal error in eviction; trying again later")
            # Saves come in bursts while downloads run; one pass a second is plenty.
            await trio.sleep(1.0)

    def evict_if_needed(self) -> int:
        """Evict least-recently-used resources until under ``max_size``; returns bytes freed."""
        if self.max_size is None or self._evicting:
            return 0
        total = self.index.total_cached()
        if total <= self.max_size:
            return 0
        self._evicting = True  # evicting saves rows, which calls back here
        freed = 0
        try:
            for url, key, size in self.index.least_recently_used():
                if total - freed <= self.max_size:
                    break
                loaded = self._entries.get(url)
                if loaded is not None:
                    if loaded.readers > 0 or loaded.pinned:
                        continue
                    freed += loaded.evict()
                else:
                    with contextlib.suppress(FileNotFoundError):
                        self._data_path(key).unlink()
                    row = self.index.get(url)
                    if row is not None:
                        self.index.save(url, key, row.meta, type(row.ranges)(), pinned=False)
                    freed += size
                log.info("cache: evicted %s (%d bytes)", key[:12], size)
        finally:
            self._evicting = False
        if total - freed > self.max_size:
            log.info("cache: %d bytes over max_size, all held by open or pinned streams",
                     total - freed - self.max_size)  # fmt: skip
        return freed

    async def flush_all(self) -> None:
        for entry in list(self._entries.values()):
            await entry.flush()

    def close(self) -> None:
        for entry in self._entries.values():
            entry.close()
        self.index.close()
        os.close(self._lock_fd)

    def _data_path(self, key: str) -> Path:
        return self.root / "data" / key[:2] / f"{key}.data"


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _lock(path: Path) -> int:
    try:
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise CacheError(f"cache lock {path}: cannot open: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CacheError(f"cache folder {path.parent.parent} is in use by another mount") from None
    return fd


def _open_index(path: Path) -> CacheIndex:
    """Open the index; a damaged database is moved aside (logged) and a new one started.

    The database and its WAL files are created 0600 before SQLite opens them (SQLite gives
    its -wal and -shm files the database file's permissions), never through a symlink.
    """
    for suffix in ("", "-wal", "-shm"):
        name = Path(f"{path}{suffix}")
        if suffix and not name.exists():
            continue
        try:
            os.close(open_private(name, os.O_RDWR | os.O_CREAT))
        except OSError as exc:
            raise CacheError(f"cache index {name}: cannot open safely: {exc.strerror or exc}"
                             ) from None  # fmt: skip
    try:
        index = CacheIndex(path)
        index.total_cached()
        return index
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(path.name + ".damaged")
        log.warning("cache index %s is damaged (%s); moved to %s", path, exc, aside.name)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        return CacheIndex(path)
