"""Persistent disk cache: sparse data files plus an index of the ranges they hold.

Owns everything under the cache directory. It must never fetch from the network.
"""

from .entry import CacheEntry, EntryMeta
from .store import CacheStore

__all__ = ["CacheEntry", "CacheStore", "EntryMeta"]
