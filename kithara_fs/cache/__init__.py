"""Persistent disk cache: sparse data files plus an SQLite index of the ranges they hold.

Owns everything under the cache directory. It must never fetch from the network.
"""

from .entry import CacheEntry
from .index import CacheIndex, EntryMeta
from .ring import RingFile
from .store import CacheStore

__all__ = ["CacheEntry", "CacheIndex", "CacheStore", "EntryMeta", "RingFile"]
