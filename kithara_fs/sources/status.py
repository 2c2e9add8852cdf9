"""The one status schema: what a person is told about a stream.

Owns :class:`Status`, the frozen record that feeds a file's extended attributes
(``user.kithara.*``), each row of ``.kithara/status.json`` and so ``kithara-fs status``. A kind
fills the fields it knows (through its sources); the tree adds where the file is, how many
handles read it and what it is doing now.

It must never compute anything: it is the shape, and the one place that names the fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# The states a stream can be in, as status shows them.
STATES = ("idle", "downloading", "streaming", "cached", "error")


@dataclass(frozen=True)
class Status:
    """One stream, as every status view shows it.

    Attributes:
        path: where it is in the mount ("album/one.flac").
        url: the origin's URL, redacted.
        state: one of :data:`STATES`.
        size: bytes, once known (None for sequential files and unknown sizes).
        cached_bytes: how many of its bytes are on disk.
        download_rate: bytes per second received lately.
        buffered_seconds: audio downloaded ahead of its furthest reader, if it has one.
        readers: open handles on it.
        pinned: kept whole and never evicted.
        etag, content_type: the origin's, for the cached version.
        error: the latest failure, redacted, if the stream is failing.
        variant: the HLS variant (or similar) it plays, if its kind has variants.
        live: whether it is a live (endless) stream, if its kind can be.
        title: what it plays now, as the origin names it (a station's current title).
        station: the origin's name for the stream (a station's ``icy-name``).
        genre: the origin's genre for it (``icy-genre``).
        bitrate: kbit/s, as the origin states it (``icy-br``).
        guid, published, duration: a feed's word on a file: its guid, its publication date
            (ISO 8601, UTC) and its duration in seconds.
    """

    path: str
    url: str | None
    state: str
    size: int | None = None
    cached_bytes: int = 0
    download_rate: int = 0
    buffered_seconds: float | None = None
    readers: int = 0
    pinned: bool = False
    etag: str | None = None
    content_type: str | None = None
    error: str | None = None
    variant: str | None = None
    live: bool | None = None
    title: str | None = None
    station: str | None = None
    genre: str | None = None
    bitrate: int | None = None
    guid: str | None = None
    published: str | None = None
    duration: float | None = None

    def replace(self, **changes: Any) -> Status:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The JSON row of status.json (field names are the schema)."""
        return dataclasses.asdict(self)
