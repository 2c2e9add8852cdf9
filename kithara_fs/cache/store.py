"""The cache directory: where each resource's entry lives.

Owns the on-disk layout (``<dir>/v<format>/<key[:2]>/<key>.{data,json}``, the key being
the SHA-256 of the URL) and hands out one :class:`CacheEntry` per URL. The format version
is part of the path, so a future layout never misreads this one.

It must never fetch anything or decide what to keep; eviction policy belongs elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .entry import INDEX_FORMAT, CacheEntry

log = logging.getLogger(__name__)


class CacheStore:
    """A directory of cache entries, one per URL.

    Attributes:
        root: the versioned directory holding the entries.
    """

    def __init__(self, directory: Path) -> None:
        self.root = directory / f"v{INDEX_FORMAT}"
        self._entries: dict[str, CacheEntry] = {}

    def entry(self, url: str) -> CacheEntry:
        """The entry for ``url``, loaded from disk on first use."""
        found = self._entries.get(url)
        if found is None:
            key = hashlib.sha256(url.encode()).hexdigest()
            folder = self.root / key[:2]
            found = CacheEntry(url, folder / f"{key}.data", folder / f"{key}.json")
            found.load()
            self._entries[url] = found
        return found

    async def flush_all(self) -> None:
        for entry in list(self._entries.values()):
            await entry.flush()

    def close(self) -> None:
        for entry in self._entries.values():
            entry.close()
