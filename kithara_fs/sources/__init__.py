"""Sources: each kind of stream as byte spaces, feeds and listings. Bytes only, never FUSE.

Outside this package only three modules are imported: this one and ``sources.base`` (the
interfaces every kind implements) and ``sources.kinds`` (the table of kinds). Each kind is
one module or package here; nothing outside names one.
"""

from .base import (
    Built,
    ByteSource,
    Companion,
    Context,
    DownloadCursor,
    Feed,
    Listed,
    Listing,
    Sequential,
    Spec,
    Status,
)

__all__ = [
    "Built", "ByteSource", "Companion", "Context", "DownloadCursor", "Feed", "Listed", "Listing",
    "Sequential", "Spec", "Status",
]  # fmt: skip
