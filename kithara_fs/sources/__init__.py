"""Sources: remote resources presented as byte spaces. Bytes only, never FUSE."""

from .progressive import DownloadCursor, ProgressiveSource

__all__ = ["DownloadCursor", "ProgressiveSource"]
