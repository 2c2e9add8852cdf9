"""The tree of one mount: folders and files with stable inode numbers, built from the config.

Owns the directory tree (folders created from path parts), inode numbering, building each
stream's node through its kind (``sources.kinds``), reloading (unchanged streams keep their
nodes and inodes; removed ones vanish for lookups while open handles go on), the generated
files (a hidden ``.index.m3u8`` in every folder, ``.kithara/status.json``), and lookups.

It must never import pyfuse3, never touch the network itself, and never name a kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..cache import CacheStore
from ..config import CONTROL_DIR, PLAYLIST_NAME, Settings, StreamConfig
from ..sources import ByteSource, Context, Listed, Listing, Sequential, Spec, kinds
from .nodes import ROOT_INODE, DirNode, FileNode, ListingNode, PipeNode, VirtualNode
from .playlists import PlaylistEntry
from .playlists import render as render_playlist

if TYPE_CHECKING:
    from .nodes import Node, StreamNode

STATUS_FILE = "status.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """What a reload did: names removed (for the kernel to forget) and how many added."""

    removed: list[tuple[int, str]]
    added: int


@dataclass(frozen=True)
class Relisted:
    """What listing a folder did: its new seekable files, and the names it removed."""

    seekable: list[FileNode]
    removed: list[tuple[int, str]]


class Tree:
    """Every node of one mount, addressed by inode.

    Attributes:
        settings: the validated configuration in force.
        root: the root folder (inode 1).
    """

    def __init__(
        self, settings: Settings, context: Context, store: CacheStore,
        status_json: Callable[[], bytes],
    ) -> None:  # fmt: skip
        self.settings = settings
        self.context = context
        self._store = store
        self._status_json = status_json
        self._last_inode = ROOT_INODE
        self.root = DirNode(ROOT_INODE, "", None)
        self._nodes: dict[int, Node] = {ROOT_INODE: self.root}
        # Open handles per node: a removed node stays addressable until its last one closes.
        self._held: dict[StreamNode, int] = {}

    def _new_inode(self) -> int:
        self._last_inode += 1
        return self._last_inode

    def _add(self, folder: DirNode, node: Node) -> None:
        folder.children[node.name] = node
        self._nodes[node.inode] = node

    # -- building and reloading --------------------------------------------------------------

    def apply(self, settings: Settings) -> Change:
        """Make the tree match ``settings``, keeping the nodes (inodes) of unchanged streams."""
        self.settings = settings
        wanted = {stream.path: stream for stream in settings.streams}
        current = {self.path_of(node): node for node in self._configured()}
        removed: list[tuple[int, str]] = []
        for path, node in current.items():
            if wanted.get(path) != node.config:
                assert node.parent is not None
                node.removed = True
                del node.parent.children[node.name]
                removed.append((node.parent.inode, node.name))
                self._forget(node)
                if isinstance(node, PipeNode):
                    removed += self._drop_companions(node)
        # Empty folders go before new streams are placed, so a path that turns from a
        # folder into a file (or back) never meets the old node.
        removed += self._prune(self.root)
        added = 0
        self._store.clear_pins()
        built: list[PipeNode] = []
        for stream in settings.streams:
            readahead = stream.readahead_seconds or settings.readahead_seconds
            kept = current.get(stream.path)
            if kept is not None and not kept.removed:
                self._retune(kept, readahead)
            else:
                kept = self._build(stream, readahead)
                added += 1
                if isinstance(kept, PipeNode):
                    built.append(kept)
            if isinstance(kept, FileNode) and stream.pin:
                kept.source.set_pinned(True)
        for node in self.files():  # what listings keep whole stays pinned
            if node.keep_whole:
                node.source.set_pinned(True)
        # Companions go last, so a configured stream or folder always wins their name.
        for node in built:
            self._place_companions(node, node.file)
        self._add_virtual_files(self.root)
        return Change(removed, added)

    def _build(self, stream: StreamConfig, readahead: float) -> FileNode | PipeNode | ListingNode:
        kind = kinds.find(stream.kind)
        assert kind is not None, stream.kind  # the config only holds known kinds
        spec = Spec(stream.url, stream.display_path, stream.option_map, readahead)
        built = kind.build(spec, self.context.for_requests(stream.url, stream.requests))
        folder = self._folder(stream.path[:-1])
        name = stream.path[-1]
        self._yield_companion(folder, name)
        node: FileNode | PipeNode | ListingNode
        if isinstance(built, Listing):
            node = ListingNode(self._new_inode(), name, folder, config=stream, listing=built)
        elif isinstance(built, Sequential):
            node = PipeNode(self._new_inode(), name, folder, stream, built)
        else:
            node = FileNode(self._new_inode(), name, folder, stream, built)
        self._add(folder, node)
        return node

    def _yield_companion(self, folder: DirNode, name: str) -> None:
        """A configured stream (or folder) takes a companion's name: the companion goes."""
        child = folder.children.get(name)
        beside = isinstance(child, ListingNode) and child.beside
        if beside or (isinstance(child, VirtualNode) and name != PLAYLIST_NAME):
            assert child is not None
            log.warning("%s: a configured stream takes the name of a stream's %r",
                        "/".join(self.path_of(folder)) or "/", name)  # fmt: skip
            del folder.children[name]
            if isinstance(child, ListingNode):
                child.removed = True
            self._forget(child)
    def _place_companions(self, node: PipeNode, built: Sequential) -> None:
        """Put what the kind puts beside a file (a title log, a folder of tracks) beside it."""
        folder = node.parent
        for companion in built.companions(node.name):
            if companion.name in folder.children:
                log.warning("%s: %r is taken by another stream; not shown",
                            node.config.display_path, companion.name)  # fmt: skip
                continue
            placed: VirtualNode | ListingNode
            if companion.listing is not None:
                placed = ListingNode(self._new_inode(), companion.name, folder,
                                     config=node.config, listing=companion.listing,
                                     beside=True)  # fmt: skip
            elif companion.render is not None:
                placed = VirtualNode(self._new_inode(), companion.name, folder, companion.render)
            else:
                continue
            self._add(folder, placed)
            node.companions.append(placed)

    def _drop_companions(self, node: PipeNode) -> list[tuple[int, str]]:
        removed = []
        for companion in node.companions:
            folder = companion.parent
            assert folder is not None
            if folder.children.get(companion.name) is companion:
                del folder.children[companion.name]
                removed.append((folder.inode, companion.name))
            if isinstance(companion, ListingNode):
                companion.removed = True
            self._forget(companion)
        node.companions = []
        return removed

    @staticmethod
    def _retune(node: FileNode | PipeNode | ListingNode, readahead: float) -> None:
        if isinstance(node, ListingNode):
            assert node.listing is not None
            node.listing.set_readahead(readahead)
        elif isinstance(node, FileNode):
            node.source.readahead_seconds = readahead
        else:
            node.file.readahead_seconds = readahead

    def add_listed(self, folder: ListingNode, files: list[Listed]) -> Relisted:
        """Put a listing's files in its folder: the new seekable ones (to be sized), and the
        names removed (for the kernel to forget).

        Listed again (its generation moved on), a file of the same name and content keeps
        its node; files no longer listed go as a reload's removed streams do.
        """
        assert folder.config is not None
        seekable: list[FileNode] = []
        removed: list[tuple[int, str]] = []
        listed = {file.name for file in files}
        for name, child in list(folder.children.items()):
            if name not in listed and isinstance(child, FileNode | PipeNode | VirtualNode):
                removed.append((folder.inode, name))
                del folder.children[name]
                self._drop_listed(child)
        for file in files:
            kept = folder.children.get(file.name)
            if isinstance(kept, FileNode) and kept.source is file.content:
                if kept.keep_whole != file.keep_whole:
                    kept.keep_whole = file.keep_whole
                    kept.source.set_pinned(file.keep_whole)
                continue
            if isinstance(kept, PipeNode) and kept.file is file.content:
                continue
            if isinstance(kept, VirtualNode) and kept.render is file.render:
                continue
            if isinstance(kept, FileNode | PipeNode | VirtualNode):
                # The name stays, with other content: the kernel must forget the old inode.
                removed.append((folder.inode, file.name))
                self._drop_listed(kept)
            if file.render is not None:
                self._add(folder, VirtualNode(self._new_inode(), file.name, folder, file.render))
                continue
            node: FileNode | PipeNode
            if isinstance(file.content, ByteSource):
                node = FileNode(self._new_inode(), file.name, folder, folder.config, file.content,
                                listed=True, in_playlist=file.in_playlist,
                                keep_whole=file.keep_whole)  # fmt: skip
                if file.keep_whole:
                    file.content.set_pinned(True)
                seekable.append(node)
            elif file.content is not None:
                node = PipeNode(self._new_inode(), file.name, folder, folder.config,
                                file.content, listed=True)  # fmt: skip
            else:
                continue
            self._add(folder, node)
        return Relisted(seekable, removed)

    def _drop_listed(self, child: FileNode | PipeNode | VirtualNode) -> None:
        """A listed file goes: no longer pinned for its listing, forgotten once unread."""
        if isinstance(child, FileNode) and child.keep_whole:
            child.keep_whole = False
            child.source.set_pinned(False)
        if isinstance(child, FileNode | PipeNode):
            child.removed = True
        self._forget(child)

    def _configured(self) -> list[FileNode | PipeNode | ListingNode]:
        """The nodes the config names: streams and listing folders (not a listing's files)."""
        return [
            node for node in self._nodes.values()
            if (isinstance(node, ListingNode) and not node.beside
                or isinstance(node, FileNode | PipeNode) and not node.listed)
            and not node.removed
        ]  # fmt: skip

    def _forget(self, node: Node) -> None:
        """Drop a removed node (and a listing's files) unless a handle still reads it."""
        if isinstance(node, ListingNode):
            for child in list(node.children.values()):
                if isinstance(child, FileNode | PipeNode):
                    child.removed = True
                self._forget(child)
        elif isinstance(node, FileNode | PipeNode) and self._held.get(node):
            return
        self._nodes.pop(node.inode, None)

    def _folder(self, parts: tuple[str, ...]) -> DirNode:
        folder = self.root
        for part in parts:
            self._yield_companion(folder, part)
            child = folder.children.get(part)
            if not isinstance(child, DirNode):
                # Config validation rejects file/folder clashes, and a reload removed any
                # file of the old tree that clashes before folders are made.
                child = DirNode(self._new_inode(), part, folder)
                self._add(folder, child)
            folder = child
        return folder

    def _prune(self, folder: DirNode) -> list[tuple[int, str]]:
        """Drop folders left without streams (and their playlists); returns names removed."""
        removed: list[tuple[int, str]] = []
        for name, child in list(folder.children.items()):
            if isinstance(child, ListingNode):
                continue
            if isinstance(child, DirNode) and not self._is_control(child):
                removed += self._prune(child)
                if not any(isinstance(c, FileNode | DirNode | PipeNode)
                           for c in child.children.values()):  # fmt: skip
                    del folder.children[name]
                    for gone in (child, *child.children.values()):
                        self._nodes.pop(gone.inode, None)
                    removed.append((folder.inode, name))
        return removed

    def _is_control(self, folder: DirNode) -> bool:
        return folder.parent is self.root and folder.name == CONTROL_DIR

    def _add_virtual_files(self, folder: DirNode) -> None:
        """A hidden .index.m3u8 in every folder, and .kithara/status.json at the root."""
        if isinstance(folder, ListingNode):
            return  # its files come from the listing
        if PLAYLIST_NAME not in folder.children:
            self._add(folder, VirtualNode(self._new_inode(), PLAYLIST_NAME, folder,
                                          lambda: self.playlist(folder)))  # fmt: skip
        for child in folder.children.values():
            if isinstance(child, DirNode) and not self._is_control(child):
                self._add_virtual_files(child)
        if folder is self.root and CONTROL_DIR not in folder.children:
            control = DirNode(self._new_inode(), CONTROL_DIR, folder)
            self._add(folder, control)
            self._add(control, VirtualNode(self._new_inode(), STATUS_FILE, control,
                                           self._status_json))  # fmt: skip

    # -- handles keep removed nodes ----------------------------------------------------------

    def hold(self, node: StreamNode) -> None:
        self._held[node] = self._held.get(node, 0) + 1

    def release(self, node: StreamNode) -> None:
        count = self._held.get(node, 0) - 1
        if count > 0:
            self._held[node] = count
            return
        self._held.pop(node, None)
        if node.removed:  # a reload dropped it; the last handle is gone now
            self._nodes.pop(node.inode, None)

    # -- lookups -----------------------------------------------------------------------------

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def lookup(self, parent: int, name: str) -> Node | None:
        folder = self._nodes.get(parent)
        if not isinstance(folder, DirNode):
            return None
        if name == ".":
            return folder
        if name == "..":
            return folder.parent or folder
        return folder.children.get(name)

    def path_of(self, node: Node) -> tuple[str, ...]:
        parts: list[str] = []
        current: Node | None = node
        while current is not None and current is not self.root:
            parts.append(current.name)
            current = current.parent
        return tuple(reversed(parts))

    def files(self) -> list[FileNode]:
        return [n for n in self._nodes.values() if isinstance(n, FileNode) and not n.removed]

    def pipes(self) -> list[PipeNode]:
        return [n for n in self._nodes.values() if isinstance(n, PipeNode) and not n.removed]

    def listings(self) -> list[ListingNode]:
        return [n for n in self._nodes.values() if isinstance(n, ListingNode) and not n.removed]

    def playlist(self, folder: DirNode) -> bytes:
        """The folder's audio, and its subfolders', in path order, as an M3U8 playlist."""
        base = self.path_of(folder)
        entries = []
        for node in sorted(self.files(), key=self.path_of):
            path = self.path_of(node)
            if node.in_playlist and path[: len(base)] == base:
                rate = node.source.byte_rate()
                length = node.source.length
                seconds = length / rate if rate and length else None
                title = node.name.rsplit(".", 1)[0]
                entries.append(PlaylistEntry(path[len(base) :], title, seconds))
        return render_playlist(entries)
