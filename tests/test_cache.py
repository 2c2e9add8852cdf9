"""The disk cache: sparse data + atomic index; persistence, versions, damage as a miss."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kithara_fs.cache import CacheStore, EntryMeta

URL = "http://origin.test/a.flac"
META = EntryMeta(length=1000, etag='"v1"', content_type="audio/flac")


async def test_bytes_and_ranges_survive_a_reload(tmp_path: Path) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    assert entry.meta is None and entry.cached_bytes() == 0
    entry.set_meta(META)
    assert entry.write(100, b"a" * 50) and entry.write(150, b"b" * 50)
    assert entry.read(100, 100) == b"a" * 50 + b"b" * 50
    assert entry.read(90, 20) is None  # partly missing is a miss
    await entry.flush()
    entry.close()

    again = CacheStore(tmp_path).entry(URL)
    assert again.meta == META
    assert again.ranges.spans() == [(100, 200)]
    assert again.read(120, 60) == b"a" * 30 + b"b" * 30


async def test_unflushed_ranges_are_not_on_disk(tmp_path: Path) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    entry.set_meta(META)
    await entry.flush()
    entry.write(0, b"x" * 10)  # written but the index was not saved afterwards
    entry.close()
    assert CacheStore(tmp_path).entry(URL).ranges.spans() == []


async def test_index_is_replaced_atomically(tmp_path: Path) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    entry.set_meta(META)
    entry.write(0, b"x" * 10)
    await entry.flush()
    assert not list(tmp_path.rglob("*.tmp"))
    index = json.loads(entry.index_path.read_text())
    assert index["format"] == 1 and index["url"] == URL and index["ranges"] == [[0, 10]]
    assert entry.index_path.parent.parent.name == "v1"


async def test_new_version_drops_old_bytes(tmp_path: Path) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    entry.set_meta(META)
    entry.write(0, b"x" * 10)
    await entry.flush()
    entry.set_meta(EntryMeta(length=1000, etag='"v2"'))
    assert entry.read(0, 10) is None and entry.cached_bytes() == 0
    assert not entry.index_path.exists(), "the old index must stop vouching at once"
    # Same version, other flags (Range support learned later): bytes stay.
    entry.write(0, b"y" * 10)
    entry.set_meta(EntryMeta(length=1000, etag='"v2"', accepts_ranges=False))
    assert entry.read(0, 10) == b"y" * 10


DAMAGED_INDEXES = [
    "not json",
    '{"format": 99}',
    '{"format": 1, "url": "http://other/", "meta": null, "ranges": []}',
    '{"format": 1, "url": "URL", "meta": {"length": 5}, "ranges": [[0, 9]]}'.replace("URL", URL),
]


@pytest.mark.parametrize("damage", DAMAGED_INDEXES)
async def test_damaged_index_is_a_logged_miss(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    entry.set_meta(META)
    entry.write(0, b"x" * 10)
    await entry.flush()
    entry.close()
    entry.index_path.write_text(damage)
    with caplog.at_level(logging.WARNING):
        again = CacheStore(tmp_path).entry(URL)
    assert again.meta is None and again.cached_bytes() == 0
    assert "unreadable" in caplog.text


async def test_truncated_data_file_is_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = CacheStore(tmp_path).entry(URL)
    entry.set_meta(META)
    entry.write(0, b"x" * 100)
    await entry.flush()
    entry.close()
    entry.data_path.write_bytes(b"x" * 10)
    again = CacheStore(tmp_path).entry(URL)
    with caplog.at_level(logging.WARNING):
        assert again.read(0, 100) is None
    assert "shorter than its index" in caplog.text
    assert again.cached_bytes() == 0
