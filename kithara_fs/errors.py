"""Domain exceptions of kithara_fs.

Owns the one exception hierarchy every layer raises. The tree:

    KitharaError
    ├── ConfigError            the TOML file is invalid (CLI: exit code 2)
    ├── OriginError            the origin failed for real, after retries (EIO)
    │   ├── RemoteChangedError the remote object changed under an open handle (ESTALE)
    │   └── PlaylistError      an HLS playlist or key is malformed or unusable (EIO)
    ├── SeekPastEndError       a read starts strictly beyond a known length (EINVAL)
    └── CacheError             the disk cache could not be used (callers treat it as a miss)

This module must never import pyfuse3 or httpx, never hold an unredacted URL in an
OriginError, and never choose an errno: the single
exception-to-errno table lives next to the FUSE adapter (``fs.py``).
"""

from __future__ import annotations

from .redact import redact_text


class KitharaError(Exception):
    """Base of every error kithara_fs raises on purpose."""


class ConfigError(KitharaError):
    """The configuration is invalid; the message is one line naming file, stream and field."""


class OriginError(KitharaError):
    """The origin could not deliver the bytes after the retries were spent.

    Attributes:
        url: the resource that failed (already redacted for logs).
        transient: True when the failure was of a kind that is retried (network, 5xx);
            False for answers that retrying cannot change (404, 403, bad headers).
    """

    def __init__(self, url: str, reason: str, *, transient: bool = False) -> None:
        # Redacted here, once, for every path the message takes (logs, xattrs, status): the
        # reason may quote a URL from a library's message or a redirect.
        url, reason = redact_text(url), redact_text(reason)
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.transient = transient


class RemoteChangedError(OriginError):
    """The origin now serves a different version (ETag, Last-Modified or length changed)."""


class PlaylistError(OriginError):
    """An HLS playlist (or its key) cannot be used: malformed, hostile or unsupported."""


class SeekPastEndError(KitharaError):
    """A read at an offset strictly beyond the known length (kithara's StreamSeekPastEof)."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(f"read at offset {offset} is past the end ({length} bytes)")
        self.offset = offset
        self.length = length


class CacheError(KitharaError):
    """The cache on disk could not be read or written; the caller falls back to the network."""
