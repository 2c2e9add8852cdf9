"""The disk cache: sparse data + SQLite index; persistence, versions, damage, eviction."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kithara_fs.cache import CacheEntry, CacheStore, EntryMeta
from kithara_fs.errors import CacheError

URL = "http://origin.test/a.flac"
META = EntryMeta(length=1000, etag='"v1"', content_type="audio/flac")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[CacheStore]]:
    """Opened stores, closed at the end (each holds the directory's lock)."""
    opened: list[CacheStore] = []
    yield opened
    for store in opened:
        store.close()


def open_store(stores: list[CacheStore], path: Path, max_size: int | None = None) -> CacheStore:
    store = CacheStore(path, max_size)
    stores.append(store)
    return store


def reopen(stores: list[CacheStore], path: Path, max_size: int | None = None) -> CacheStore:
    stores.pop().close()
    return open_store(stores, path, max_size)


async def entry_with_bytes(store: CacheStore, data: bytes = b"x" * 10) -> CacheEntry:
    """The test URL's entry at version META, holding ``data`` at offset 0, flushed."""
    entry = store.entry(URL)
    entry.set_meta(META)
    entry.write(0, data)
    await entry.flush()
    return entry


async def test_bytes_and_ranges_survive_a_reload(stores: list[CacheStore], tmp_path: Path) -> None:
    entry = open_store(stores, tmp_path).entry(URL)
    assert entry.meta is None and entry.cached_bytes() == 0
    entry.set_meta(META)
    assert entry.write(100, b"a" * 50) and entry.write(150, b"b" * 50)
    assert entry.read(100, 100) == b"a" * 50 + b"b" * 50
    assert entry.read(90, 20) is None  # partly missing is a miss
    await entry.flush()

    again = reopen(stores, tmp_path).entry(URL)
    assert again.meta == META
    assert again.ranges.spans() == [(100, 200)]
    assert again.read(120, 60) == b"a" * 30 + b"b" * 30


async def test_unflushed_ranges_are_not_on_disk(stores: list[CacheStore], tmp_path: Path) -> None:
    entry = open_store(stores, tmp_path).entry(URL)
    entry.set_meta(META)
    await entry.flush()
    entry.write(0, b"x" * 10)  # written, but not synced and recorded afterwards
    assert reopen(stores, tmp_path).entry(URL).ranges.spans() == []


async def test_layout_is_versioned(stores: list[CacheStore], tmp_path: Path) -> None:
    entry = await entry_with_bytes(open_store(stores, tmp_path))
    assert (tmp_path / "v2" / "index.sqlite3").exists()
    assert entry.data_path.is_relative_to(tmp_path / "v2" / "data")
    db = sqlite3.connect(tmp_path / "v2" / "index.sqlite3")
    assert db.execute("SELECT url, ranges, cached_bytes FROM resources").fetchall() == [
        (URL, "[[0,10]]", 10)
    ]
    db.close()


async def test_new_version_drops_old_bytes_at_once(
    stores: list[CacheStore], tmp_path: Path
) -> None:
    store = open_store(stores, tmp_path)
    entry = await entry_with_bytes(store)
    entry.set_meta(EntryMeta(length=1000, etag='"v2"'))
    assert entry.read(0, 10) is None and entry.cached_bytes() == 0
    row = store.index.get(URL)
    assert row is not None and row.cached_bytes == 0, "the old row must stop vouching at once"
    # Same version, other flags (Range support learned later): bytes stay.
    entry.write(0, b"y" * 10)
    entry.set_meta(EntryMeta(length=1000, etag='"v2"', accepts_ranges=False))
    assert entry.read(0, 10) == b"y" * 10


async def test_damaged_row_is_a_logged_miss(
    stores: list[CacheStore], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await entry_with_bytes(open_store(stores, tmp_path))
    db = sqlite3.connect(tmp_path / "v2" / "index.sqlite3")
    db.execute("UPDATE resources SET ranges = '[[0, 5000]]'")  # beyond the length
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING):
        again = reopen(stores, tmp_path).entry(URL)
    assert again.meta is None and again.cached_bytes() == 0
    assert "damaged" in caplog.text


async def test_damaged_database_is_moved_aside(
    stores: list[CacheStore], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = open_store(stores, tmp_path)
    assert store.entry(URL).meta is None
    assert (tmp_path / "v2" / "index.sqlite3.damaged").exists()


async def test_truncated_data_file_is_a_miss(
    stores: list[CacheStore], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = await entry_with_bytes(open_store(stores, tmp_path), b"x" * 100)
    entry.close()
    entry.data_path.write_bytes(b"x" * 10)
    again = reopen(stores, tmp_path).entry(URL)
    with caplog.at_level(logging.WARNING):
        assert again.read(0, 100) is None
    assert "shorter than its index" in caplog.text
    assert again.cached_bytes() == 0


def test_one_mount_per_cache_folder(stores: list[CacheStore], tmp_path: Path) -> None:
    open_store(stores, tmp_path)
    with pytest.raises(CacheError, match="in use by another mount"):
        CacheStore(tmp_path)


async def fill(store: CacheStore, url: str, size: int) -> None:
    entry = store.entry(url)
    entry.set_meta(EntryMeta(length=size, etag='"e"'))
    entry.write(0, b"z" * size)
    entry.touch()
    await entry.flush()
    store.evict_if_needed()  # what run_evictions does after each save


async def test_eviction_keeps_under_max_size_least_recently_used_first(
    stores: list[CacheStore], tmp_path: Path
) -> None:
    store = open_store(stores, tmp_path, max_size=25_000)
    for name in ("a", "b", "c"):
        await fill(store, f"http://o/{name}", 10_000)
    # Adding c pushed the total to 30 000: a, the least recently used, went.
    assert store.total_cached() <= 25_000
    assert store.entry("http://o/a").cached_bytes() == 0
    assert store.entry("http://o/b").cached_bytes() == 10_000
    assert store.entry("http://o/a").meta is not None, "sizes stay known after eviction"
    time.sleep(0.01)  # last_access has clock resolution
    store.entry("http://o/b").touch()  # b is now newer than c
    await fill(store, "http://o/d", 10_000)
    assert store.entry("http://o/c").cached_bytes() == 0
    assert store.entry("http://o/b").cached_bytes() == 10_000
    assert store.total_cached() <= 25_000


async def test_eviction_never_takes_open_or_pinned_entries(
    stores: list[CacheStore], tmp_path: Path
) -> None:
    store = open_store(stores, tmp_path, max_size=15_000)
    await fill(store, "http://o/open", 10_000)
    store.entry("http://o/open").readers = 1
    store.entry("http://o/pinned").set_pinned(True)
    await fill(store, "http://o/pinned", 10_000)
    await fill(store, "http://o/new", 10_000)
    assert store.entry("http://o/open").read(0, 10_000) == b"z" * 10_000
    assert store.entry("http://o/pinned").read(0, 10_000) == b"z" * 10_000
    # Nothing else could go: new itself is the least recently used unprotected entry.
    assert store.entry("http://o/new").cached_bytes() == 0
    store.entry("http://o/open").readers = 0
    store.evict_if_needed()
    assert store.entry("http://o/open").cached_bytes() == 0
    assert store.entry("http://o/pinned").cached_bytes() == 10_000


async def test_a_size_alone_is_saved_without_a_sync_of_its_own(
    stores: list[CacheStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 probed sizes must not cost 10,000 fsyncs; rows that vouch for bytes still sync."""
    store = open_store(stores, tmp_path)
    modes: list[int] = []
    save = store.index.save

    def recording(*args: object, **kwargs: object) -> None:
        save(*args, **kwargs)  # type: ignore[arg-type]
        modes.append(int(kwargs.get("durable", True)))

    monkeypatch.setattr(store.index, "save", recording)
    sized = store.entry(URL)
    sized.set_meta(META)
    await sized.flush()
    other = store.entry("http://origin.test/b.flac")
    other.set_meta(META)
    other.write(0, b"y" * 10)
    await other.flush()
    assert modes == [0, 1], "the size alone unsynced, the row with bytes synced"
    synchronous = store.index._db.execute("PRAGMA synchronous").fetchone()[0]
    assert synchronous == 2, "FULL again after the unsynced commit"
    again = reopen(stores, tmp_path)
    assert again.entry(URL).meta == META and again.entry("http://origin.test/b.flac").read(0, 10)
