"""The persistent cache index: one SQLite database (stdlib ``sqlite3``) per cache directory.

Owns the record of every cached resource: URL, data-file key, version (length, ETag,
Last-Modified), the byte ranges present, their total, when it was last used and whether it
is pinned. One row per URL; each save is one transaction, so the index on disk is always a
whole, consistent state. Commits are durable (WAL with ``synchronous=FULL``): a row emptied
before a new version's bytes are written must stay empty after a power loss, or the old row
would vouch for the new bytes.

It must never touch data files, and never be written ahead of the bytes it describes (the
cache entry fsyncs its data file before it calls :meth:`CacheIndex.save`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..ranges import RangeSet

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    url            TEXT PRIMARY KEY,
    key            TEXT NOT NULL,
    length         INTEGER,
    etag           TEXT,
    last_modified  TEXT,
    content_type   TEXT,
    accepts_ranges INTEGER NOT NULL DEFAULT 1,
    ranges         TEXT NOT NULL DEFAULT '[]',
    cached_bytes   INTEGER NOT NULL DEFAULT 0,
    last_access    REAL NOT NULL DEFAULT 0,
    pinned         INTEGER NOT NULL DEFAULT 0,
    sums           TEXT
)
"""
# The CRC-32 pieces of the present bytes (cache/checksums.py), as a flat JSON list of
# start, end, crc triples. Added to older indexes in place; their rows have NULL here, and
# bytes without a checksum are not served (they are downloaded again).
_ADD_SUMS = "ALTER TABLE resources ADD COLUMN sums TEXT"
# Small documents remembered for offline use: HLS playlists and measured segment sizes,
# keyed by what they describe. Added without a version bump: older indexes just lack rows.
_DOCUMENTS = """
CREATE TABLE IF NOT EXISTS documents (
    name  TEXT PRIMARY KEY,
    body  TEXT NOT NULL
)
"""


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


@dataclass(frozen=True)
class IndexRow:
    """One resource as recorded."""

    url: str
    key: str
    meta: EntryMeta | None
    ranges: RangeSet
    cached_bytes: int
    last_access: float
    pinned: bool
    sums: tuple[tuple[int, int, int], ...] = ()


class CacheIndex:
    """The SQLite index of one cache directory (synchronous: every call is short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"index schema {version} is not {SCHEMA_VERSION}")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(resources)")}
        if "sums" not in columns:
            self._db.execute(_ADD_SUMS)
        self._db.execute(_DOCUMENTS)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def get(self, url: str) -> IndexRow | None:
        """The row for ``url``; a row that does not decode is dropped and logged (a miss)."""
        row = self._db.execute(
            "SELECT url, key, length, etag, last_modified, content_type, accepts_ranges,"
            " ranges, cached_bytes, last_access, pinned, sums FROM resources WHERE url = ?",
            (url,),
        ).fetchone()
        if row is None:
            return None
        try:
            return _decode(row)
        except (ValueError, TypeError) as exc:
            log.warning("cache index row for %s is damaged, dropping it: %s", row[1], exc)
            self.delete(url)
            return None

    def save(
        self,
        url: str,
        key: str,
        meta: EntryMeta | None,
        ranges: RangeSet,
        *,
        pinned: bool,
        touch: bool = False,
        sums: list[tuple[int, int, int]] | None = None,
        durable: bool = True,
    ) -> None:
        """Record the state of one resource (one transaction); ``sums`` are the checksum
        pieces of exactly the bytes in ``ranges``. ``durable=False`` skips this commit's
        sync: for a row that vouches for no bytes (a size just learnt), whose loss in a
        power cut costs one more size probe; a later synced commit makes it durable too
        (WAL commits reach the disk in order)."""
        spans = json.dumps(ranges.spans(), separators=(",", ":"))
        flat = json.dumps([n for piece in sums or () for n in piece], separators=(",", ":"))
        access = time.time() if touch else None
        if not durable:
            self._db.execute("PRAGMA synchronous=OFF")
        try:
            self._db.execute(
                "INSERT INTO resources (url, key, length, etag, last_modified, content_type,"
                " accepts_ranges, ranges, cached_bytes, last_access, pinned, sums)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, 0), ?, ?)"
                " ON CONFLICT(url) DO UPDATE SET key=excluded.key, length=excluded.length,"
                " etag=excluded.etag, last_modified=excluded.last_modified,"
                " content_type=excluded.content_type, accepts_ranges=excluded.accepts_ranges,"
                " ranges=excluded.ranges, cached_bytes=excluded.cached_bytes,"
                " last_access=COALESCE(?, last_access), pinned=excluded.pinned, sums=excluded.sums",
                (
                    url,
                    key,
                    None if meta is None else meta.length,
                    None if meta is None else meta.etag,
                    None if meta is None else meta.last_modified,
                    None if meta is None else meta.content_type,
                    1 if meta is None or meta.accepts_ranges else 0,
                    spans,
                    ranges.total(),
                    access,
                    int(pinned),
                    flat,
                    access,
                ),
            )
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")

    def document(self, name: str) -> str | None:
        row = self._db.execute("SELECT body FROM documents WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def save_document(self, name: str, body: str) -> None:
        """Remember a document (one durable transaction); failures raise sqlite3.Error."""
        self._db.execute(
            "INSERT INTO documents (name, body) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET body = excluded.body",
            (name, body),
        )

    def touch(self, url: str) -> None:
        """Record a use. Not worth an fsync: after a power loss an older time only makes
        eviction slightly less exact, so this commit alone skips the sync."""
        self._db.execute("PRAGMA synchronous=OFF")
        try:
            self._db.execute(
                "UPDATE resources SET last_access = ? WHERE url = ?", (time.time(), url)
            )
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def delete(self, url: str) -> None:
        self._db.execute("DELETE FROM resources WHERE url = ?", (url,))

    def total_cached(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(cached_bytes), 0) FROM resources")
                   .fetchone()[0])  # fmt: skip

    def least_recently_used(self) -> list[tuple[str, str, int]]:
        """(url, key, cached_bytes) of unpinned rows holding bytes, oldest use first."""
        return [
            (url, key, size)
            for url, key, size in self._db.execute(
                "SELECT url, key, cached_bytes FROM resources"
                " WHERE pinned = 0 AND cached_bytes > 0 ORDER BY last_access, url"
            )
        ]

    def clear_pins(self) -> None:
        self._db.execute("UPDATE resources SET pinned = 0 WHERE pinned = 1")


def _decode(row: tuple[object, ...]) -> IndexRow:
    url, key, length, etag, last_modified, content_type, accepts, spans, cached, access, pinned, \
        flat = row
    meta = None
    if length is not None:
        if not isinstance(length, int) or length < 0:
            raise ValueError("bad length")
        meta = EntryMeta(
            length=length,
            etag=_optional_str(etag),
            last_modified=_optional_str(last_modified),
            content_type=_optional_str(content_type),
            accepts_ranges=bool(accepts),
        )
    ranges = RangeSet()
    for start, end in json.loads(str(spans)):
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end:
            raise ValueError("bad range")
        if meta is None or end > meta.length:
            raise ValueError("range beyond the length")
        ranges.add(start, end)
    if not isinstance(key, str) or not isinstance(url, str):
        raise ValueError("bad key")
    sums = _decode_sums(flat, meta)
    covered = RangeSet((start, end) for start, end, _ in sums)
    if covered != ranges:
        # Bytes without a checksum (a row from before checksums, or a damaged row) are not
        # vouched for: only what the checksums cover counts as present.
        log.info("cache index row for %s: %d bytes without a checksum are dropped",
                 key[:12], ranges.total() - covered.total())  # fmt: skip
        sums = tuple(p for p in sums if ranges.covers(p[0], p[1]))
        ranges = RangeSet((start, end) for start, end, _ in sums)
    return IndexRow(
        url=url,
        key=key,
        meta=meta,
        ranges=ranges,
        cached_bytes=ranges.total(),
        last_access=float(access),  # type: ignore[arg-type]
        pinned=bool(pinned),
        sums=sums,
    )


def _decode_sums(flat: object, meta: EntryMeta | None) -> tuple[tuple[int, int, int], ...]:
    """Checksum pieces from their flat JSON list: in order, disjoint, inside the length."""
    if flat is None or flat == "":
        return ()
    numbers = json.loads(str(flat))
    if not isinstance(numbers, list) or len(numbers) % 3:
        raise ValueError("bad checksums")
    pieces = []
    previous_end = 0
    for i in range(0, len(numbers), 3):
        start, end, crc = numbers[i : i + 3]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (start, end, crc)):
            raise ValueError("bad checksum piece")
        if not previous_end <= start < end or not 0 <= crc < 2**32:
            raise ValueError("checksum pieces out of order")
        if meta is None or end > meta.length:
            raise ValueError("checksum piece beyond the length")
        pieces.append((start, end, crc))
        previous_end = end
    return tuple(pieces)


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError("expected text")
