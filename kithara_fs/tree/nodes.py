"""The nodes of the mounted tree: folders, seekable files, pipe-like files, generated files.

Owns the node types and what each holds: its inode, its name and parent, and for a stream's
node the config it came from and what its kind built. The same types serve every kind: a
kind's folder is a :class:`ListingNode`, its files are :class:`FileNode` (seekable) or
:class:`PipeNode` (read like a pipe).

It must never do anything: nodes are records, changed only by the tree and its services.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..config import StreamConfig
from ..sources import ByteSource, Listing, Sequential

ROOT_INODE = 1


@dataclass(eq=False)
class DirNode:
    inode: int
    name: str
    parent: DirNode | None
    children: dict[str, Node] = field(default_factory=dict)


@dataclass(eq=False)
class ListingNode(DirNode):
    """A folder whose files come from the origin; they appear once a load succeeded.

    Attributes:
        loaded: its files are in ``children``.
        loading: a load is running.
        attempt: set when the current (or latest) load attempt ends, however it ended.
        error: why the latest load failed (shown in status and its xattr).
        failed_at: when it failed (trio clock), for the retry delay.
        removed: a reload dropped the stream.
        generation: the listing's generation its files were listed at.
        beside: it goes with a stream's file (a companion), kept and removed with that file.
    """

    config: StreamConfig | None = None
    listing: Listing | None = None
    loaded: bool = False
    loading: bool = False
    attempt: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    failed_at: float = -math.inf
    removed: bool = False
    generation: int = 0
    beside: bool = False


@dataclass(eq=False)
class StreamLeaf:
    """What every file of a stream has: where it is, the config it came from, its fate.

    Attributes:
        removed: a reload dropped the stream; lookups no longer find it, open handles go on.
        listed: it is a file of a listing (not a stream of the config itself).
    """

    inode: int
    name: str
    parent: DirNode
    config: StreamConfig
    removed: bool = field(default=False, kw_only=True)
    listed: bool = field(default=False, kw_only=True)


@dataclass(eq=False)
class FileNode(StreamLeaf):
    """A seekable file of known length; ``in_playlist``: the folder's playlists list it;
    ``keep_whole``: its listing wants it downloaded whole and kept (pinned)."""

    source: ByteSource
    in_playlist: bool = field(default=True, kw_only=True)
    keep_whole: bool = field(default=False, kw_only=True)


@dataclass(eq=False)
class PipeNode(StreamLeaf):
    """A file read like a pipe (size 0, nonseekable): each open reads its own feed.

    ``companions``: the files and folders its kind put beside it, removed with it.
    """

    file: Sequential
    companions: list[VirtualNode | ListingNode] = field(default_factory=list, kw_only=True)


@dataclass(eq=False)
class VirtualNode:
    """A generated read-only file (status, playlists), rendered afresh for each open."""

    inode: int
    name: str
    parent: DirNode
    render: Callable[[], bytes]


Node = DirNode | FileNode | PipeNode | VirtualNode
StreamNode = FileNode | PipeNode
