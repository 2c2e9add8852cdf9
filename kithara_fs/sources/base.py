"""What a source kind hands the layers above: the shapes of files and folders, and the context.

Owns the interfaces between kinds and the rest of kithara_fs. A kind builds, for each
``[[stream]]``, one of three things:

- a :class:`~kithara_fs.sources.bytesource.ByteSource`: a seekable file of known length,
  cached on disk and downloaded on demand (a progressive file, an HLS VOD variant);
- a :class:`Sequential`: a file read like a pipe, where every open gets its own
  :class:`Feed` (a live programme, an endless station);
- a :class:`Listing`: a folder whose files are learnt from the origin in the background
  (an HLS programme, a podcast feed); each file it lists is one of the two above.

The tree turns these into nodes, the engine reads them, the FUSE adapter shows them; none of
those knows which kind built them. It must never speak FUSE, and never name a kind.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..budget import ChangeSignal
from ..cache import CacheStore
from ..errors import KitharaError
from ..net import HttpClient
from ..net.scoped import StreamHeaders
from .bytesource import FALLBACK_BYTE_RATE, OPENING_TAIL, ByteSource, DownloadCursor
from .status import Status

__all__ = [
    "FALLBACK_BYTE_RATE", "OPENING_TAIL", "Built", "ByteSource", "Companion", "Context",
    "DownloadCursor",
    "Feed", "Kind", "Listed", "Listing", "Sequential", "Spec", "Status",
]  # fmt: skip


class Feed(Protocol):
    """One reader's sequential bytes (what a :class:`Sequential` file gives each open).

    Offsets count from the open; bytes are read in order. ``run`` fetches until the end, a
    failure, or cancellation (the handle closed); ``read`` hands out what has arrived.

    Attributes:
        label: the file's path in the mount, for logs.
        changed: notified when bytes arrive, the feed ends or fails, or the reader consumed.
        min_wait: the shortest budget a blocking read should get (a live stream's pace).
        error: why the feed stopped, once it has failed.
        variant: what it is playing now, for status (None if the kind has no variants).
    """

    label: str
    changed: ChangeSignal
    error: KitharaError | None
    variant: str | None

    @property
    def min_wait(self) -> float: ...

    async def run(self) -> None: ...

    def read(self, offset: int, size: int) -> bytes | None:
        """Up to ``size`` bytes at ``offset``; b"" at the end; None while none arrived.

        Raises:
            KitharaError: the feed failed, or ``offset`` is no longer held.
        """

    def has_data_at(self, offset: int) -> bool:
        """Whether a read at ``offset`` answers at once (bytes, the end, or the failure)."""

    def discard(self) -> None:
        """The reader closed: free what is buffered."""


class Sequential(abc.ABC):
    """A file read like a pipe, of no known length; each open reads its own :class:`Feed`.

    Attributes:
        shown: the origin's URL, redacted (for status).
        live: whether it is endless (a live stream) rather than a sequence that ends.
        variant: what status shows before any open (None if the kind has no variants).
        readahead_seconds: how much audio a feed may fetch ahead of its reader.
    """

    shown: str
    live: bool = True
    variant: str | None = None
    readahead_seconds: float = 30.0

    @abc.abstractmethod
    def open_feed(self, label: str) -> Feed:
        """A new feed for one open handle, labelled with the file's path for logs."""

    def companions(self, name: str) -> Sequence[Companion]:
        """What goes beside the file when it is called ``name`` (a station's title log and
        its folder of finished tracks); nothing by default."""
        return ()

    def status_fields(self) -> Mapping[str, Any]:
        """What it can say of itself now beyond its URL, as :class:`Status` fields by name
        (a station's title, name and bitrate, the cause of a gap); nothing by default."""
        return {}


class Listing(abc.ABC):
    """A folder whose files come from the origin (loaded in the background, retried later).

    Attributes:
        shown: the origin's URL, redacted (for status).
        what: what log lines call it ("HLS programme").
    """

    shown: str
    what: str = "listing"

    @property
    def generation(self) -> int:
        """Bumped whenever its files change while mounted (a station's newly finished track):
        the folder is listed again at the next look. A listing learnt from the origin stays
        at 0 and is loaded once (or again after a failure)."""
        return 0

    def set_readahead(self, seconds: float) -> None:
        """A reload changed the stream's read-ahead: pass it on to the files listed."""
        return None

    @abc.abstractmethod
    async def load(self) -> Sequence[Listed]:
        """Fetch (or recall) what the folder holds.

        Raises:
            OriginError: the listing cannot be fetched or is unusable; the folder stays empty
                and the cause is shown in its status until a later load succeeds.
        """


Built = ByteSource | Sequential | Listing


@dataclass(frozen=True)
class Companion:
    """A file or folder that goes with a :class:`Sequential` file, beside it in its folder.

    Exactly one of ``render`` and ``listing`` is set.

    Attributes:
        name: its name in the folder.
        render: a generated file's bytes, made afresh at each open (a title log).
        listing: a folder's files (finished tracks).
    """

    name: str
    render: Callable[[], bytes] | None = None
    listing: Listing | None = None


@dataclass(frozen=True)
class Listed:
    """One file of a :class:`Listing`.

    Attributes:
        name: its name in the folder.
        content: a seekable source or a sequential file (None for a generated file).
        in_playlist: whether the folder's generated playlists list it (seekable files only:
            a folder of variants lists one of them, not every copy).
        render: a generated file's bytes, made afresh at each open (an episode's notes).
        keep_whole: download it whole in the background and never evict it, for as long as
            it is listed so (a feed's newest episodes).
    """

    name: str
    content: ByteSource | Sequential | None
    in_playlist: bool = True
    render: Callable[[], bytes] | None = None
    keep_whole: bool = False


@dataclass(frozen=True)
class Spec:
    """What a kind builds from: one validated ``[[stream]]``.

    Attributes:
        url: the stream's URL (may carry credentials: never log it unredacted).
        label: its path in the mount, for log lines.
        options: the kind's own keys, as the kind's check returned them.
        readahead_seconds: seconds of audio to keep downloaded ahead of a reader.
    """

    url: str
    label: str
    options: Mapping[str, Any]
    readahead_seconds: float


@dataclass(eq=False)
class Context:
    """What the mount lends every kind: the HTTP client, the cache, and shared objects.

    Attributes:
        http: the one HTTP client (connection pool, retries, offline memory).
        store: the disk cache; a kind takes one entry per resource it caches.
        sources: one source per cache key, shared by every path that names it, so paths
            that share a URL share its bytes, its version and its downloads.
        shared: anything else a kind keeps once per mount, under a key it chooses.
        spawn: starts a task in the mount's background nursery (guarded: a failure is
            logged, never the mount's end), for work that outlives any one open handle (a
            station's connection, shared by its readers). None until the mount runs.
    """

    http: HttpClient
    store: CacheStore
    sources: dict[str, ByteSource] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    spawn: Callable[[str, Callable[[], Awaitable[None]]], None] | None = None

    def for_requests(self, url: str, extra: StreamHeaders) -> Context:
        """This context for a stream whose requests carry ``extra`` (its headers go only to
        the origin of ``url``); the same cache, sources and shared objects."""
        return self if not extra else replace(self, http=self.http.for_stream(url, extra))


def no_options(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The check of a kind without keys of its own."""
    return {}


@dataclass(frozen=True)
class Kind:
    """One kind of stream: what the kinds table (``sources/kinds.py``) holds for it.

    Attributes:
        name: the value of ``kind`` in the config.
        build: makes the stream's file or folder from its validated spec.
        check: validates the kind's own config keys (only those in ``keys`` reach it) and
            returns them with their defaults; raises ConfigError with a message that
            starts with the ``where`` it is given.
        keys: config keys a stream of this kind may have beyond the common ones.
        suffixes: URL path suffixes (lower case, no dot) that choose this kind when a stream
            names none.
        pinnable: whether ``pin = true`` is allowed (a whole download makes sense).
        noun: what config errors call a stream of this kind ("file", "HLS folder").
    """

    name: str
    build: Callable[[Spec, Context], Built]
    check: Callable[[Mapping[str, Any], str], dict[str, Any]] = no_options
    keys: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    pinnable: bool = True
    noun: str = "file"
