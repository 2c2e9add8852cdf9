"""The mount's tree and its services, behind one object the FUSE adapter talks to.

Owns putting together, for one mount, the :class:`~.tree.Tree`, its
:class:`~.background.Background` service, the open :class:`~.handles.Handles` and the
:class:`~.status.StatusBoard`, over the HTTP client, cache and scheduler it is given; and
the few calls that need more than one of them (reload, expand, size).

It must never import pyfuse3, and never make ``ls`` wait on the network for longer than the
metadata budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..cache import CacheStore
from ..config import Settings
from ..engine.scheduler import Scheduler
from ..engine.stream import Handle, SequentialStream, Stream
from ..net import HttpClient
from ..sources import Context, Status
from ..tasks import start_guarded
from .background import Background
from .board import StatusBoard
from .handles import Handles
from .nodes import FileNode, ListingNode, Node, PipeNode, StreamNode
from .tree import Change, Tree


class Registry:
    """All entries of one mount, addressed by inode, and what reads them.

    Attributes:
        tree: the nodes.
        background: loading, probes and pins (started in ``nursery``, stopped with it).
        handles: the open files.
        board: status records.
        scheduler: the download scheduler shared by every file.
        mountpoint: where it is mounted (for the status file).
    """

    def __init__(
        self,
        settings: Settings,
        http: HttpClient,
        store: CacheStore,
        scheduler: Scheduler,
        nursery: trio.Nursery,
        mountpoint: str = "",
    ) -> None:
        self.scheduler = scheduler
        self.mountpoint = mountpoint
        self.tree = Tree(settings, Context(http, store), store, self.status_json)
        self.background = Background(self.tree, scheduler)
        self.tree.context.spawn = self.background.spawn
        self.handles = Handles(self.tree, scheduler, self.background)
        self.board = StatusBoard(self.tree, self.handles, scheduler, mountpoint)
        start_guarded(nursery, "background", self.background.run)
        self.tree.apply(settings)

    @property
    def settings(self) -> Settings:
        return self.tree.settings

    def reload(self, settings: Settings) -> Change:
        """Switch to a new configuration without unmounting.

        Added streams appear; removed ones disappear from the tree while handles open on
        them keep working until closed. Pins and probes follow the new settings.
        """
        change = self.tree.apply(settings)
        self.background.start()
        return change

    def start_background(self) -> None:
        self.background.start()

    # -- what the FUSE adapter asks ------------------------------------------------------------

    def node(self, inode: int) -> Node | None:
        return self.tree.node(inode)

    def lookup(self, parent: int, name: str) -> Node | None:
        return self.tree.lookup(parent, name)

    def files(self) -> list[FileNode]:
        return self.tree.files()

    async def expand(self, inode: int) -> None:
        """Make sure a listing folder lists its files (waiting at most the metadata budget)."""
        folder = self.tree.node(inode)
        if isinstance(folder, ListingNode):
            await self.background.expand(folder, self.settings.metadata_timeout)

    async def size(self, node: FileNode) -> int:
        """The file's size for getattr: cached, or probed within the metadata budget, else 0."""
        return await self.background.size(node, self.settings.metadata_timeout)

    async def open(self, node: FileNode) -> Stream | SequentialStream:
        return await self.handles.open(node)

    async def open_pipe(self, node: PipeNode) -> SequentialStream:
        return self.handles.open_pipe(node)

    def close(self, node: StreamNode, stream: Handle) -> None:
        self.handles.close(node, stream)

    def notify_when_readable(self, stream: Handle,
                             notify: Callable[[], None]) -> None:  # fmt: skip
        """Call ``notify`` (a poll handle's) once ``stream`` can be read without waiting."""
        self.handles.notify_when_readable(stream, notify)

    def stream_status(self, node: StreamNode) -> Status:
        return self.board.of(node)

    def status(self) -> dict[str, Any]:
        return self.board.mount()

    def status_json(self) -> bytes:
        return self.board.json()

    def interrupt_all(self) -> None:
        self.handles.interrupt_all()
