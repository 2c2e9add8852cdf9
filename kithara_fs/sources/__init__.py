"""Sources: remote resources presented as byte spaces. Bytes only, never FUSE."""

from .base import ByteSource, DownloadCursor
from .progressive import ProgressiveSource

__all__ = ["ByteSource", "DownloadCursor", "ProgressiveSource"]
