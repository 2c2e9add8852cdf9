"""Domain exceptions of kithara_fs.

Owns the one exception hierarchy every layer raises. The tree:

    KitharaError
    ├── ConfigError            the TOML file is invalid (CLI: exit code 2)
    ├── OriginError            the origin failed for real, after retries (EIO)
    │   ├── RemoteChangedError the remote object changed under an open handle (ESTALE)
    │   └── PlaylistError      an HLS playlist or key is malformed or unusable (EIO)
    ├── SeekPastEndError       a read starts strictly beyond a known length (EINVAL)
    └── CacheError             the disk cache could not be used (EIO, or exit code 1 at start)

A failed cache *read* is never an error: the entry reports a miss and the bytes are fetched
again. A CacheError is raised where the cache cannot go on: a cache folder that cannot be
used at start (the mount refuses, exit code 1), or downloaded bytes that cannot be stored
(that download ends, and the reads waiting for it get EIO).

This module must never import pyfuse3 or httpx, never hold an unredacted URL in an
OriginError, and never choose an errno: the single exception-to-errno table is
``fuse/errnos.py``.
"""

from __future__ import annotations

from .redact import redact_text

# Error texts are cut to this many characters: enough for any URL and cause a person reads.
MAX_TEXT = 1000


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


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
        # Cut first: a reason may quote a hostile value of megabytes (a playlist attribute).
        url, reason = redact_text(url[:MAX_TEXT]), redact_text(_cut(reason))
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.transient = transient
        # Set once a layer spent its retries on it: no outer layer retries it again (nested
        # retries would multiply: 6 attempts around 6 attempts is 36 requests, ~40 s).
        self.exhausted = False

    @property
    def retryable(self) -> bool:
        """Worth another try here: transient, and no inner layer gave up on it already."""
        return self.transient and not self.exhausted


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
    """The cache on disk cannot be used: a folder refused at start, or bytes not stored."""
