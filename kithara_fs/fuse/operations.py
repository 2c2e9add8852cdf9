"""The FUSE adapter: pyfuse3.Operations over the tree and its streams.

Owns the translation between the kernel's requests and the layers below: parse arguments,
call the registry or a stream, build attributes, and reply. Every handler passes through
:func:`~.errnos.boundary` (the one errno table), so nothing but ``FUSEError`` ever leaves it.

Every handle is opened with ``direct_io``: each read reaches the daemon, so the read contract
(EAGAIN, EINTR, EINVAL past the end, whole reads) holds per call on every file, wholly cached
ones included, and the kernel never zero-fills a short reply. The tree is read-only; every
write-type call is EROFS.

It must never download, cache or decide what to fetch, never touch a cache entry (sources
answer for their bytes), and never import httpx.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pyfuse3

from ..budget import Deadline
from ..engine.stream import Bytes, Eof, Handle, Pending, PendingReason, SequentialStream
from ..procfd import OpenerDescriptor, mount_id
from ..redact import redact_text
from ..tree import ROOT_INODE, DirNode, FileNode, Registry
from ..tree.nodes import ListingNode, Node, PipeNode, StreamNode, VirtualNode
from .errnos import PENDING_ERRNO, boundary, errno_for
from .openfiles import OpenFile, VirtualHandle

log = logging.getLogger(__name__)

# The tree only changes when the config does; let the kernel keep names for a minute.
ENTRY_TIMEOUT = 60.0
# A size changes only with a new version, which open() notices and pushes to the kernel
# (invalidate_inode), so a wholly cached file's attributes can be kept a minute. Every
# expiry costs a GETATTR on the next read of a cached page, which shows in warm reads.
ATTR_TIMEOUT = 60.0
# A file still downloading reports its progress in st_blocks (for du), and an unknown size
# (origin unreachable so far) should be asked for again: both are kept for a second only.
CHANGING_ATTR_TIMEOUT = 1.0

# Extended attributes of every stream file: name → field of its Status.
_XATTRS = {
    b"user.kithara.url": "url",
    b"user.kithara.state": "state",
    b"user.kithara.cached_bytes": "cached_bytes",
    b"user.kithara.etag": "etag",
    b"user.kithara.content_type": "content_type",
    b"user.kithara.error": "error",
    b"user.kithara.variant": "variant",
    b"user.kithara.title": "title",
    b"user.kithara.station": "station",
    b"user.kithara.genre": "genre",
    b"user.kithara.bitrate": "bitrate",
    b"user.kithara.guid": "guid",
    b"user.kithara.published": "published",
    b"user.kithara.duration": "duration",
}


def _erofs(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(self: KitharaOperations, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    handler.__name__ = name
    return handler


class KitharaOperations(pyfuse3.Operations):  # type: ignore[misc]
    """pyfuse3 handlers for one mount.

    Attributes:
        registry: the tree and its streams.
    """

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry
        self._handles: dict[int, OpenFile] = {}
        self._virtual: dict[int, VirtualHandle] = {}
        # The size each file last had in a reply: the kernel may cache it for ATTR_TIMEOUT.
        self._reported_size: dict[int, int] = {}
        self._next_fh = 1
        # Our mount's id in /proc (for the descriptors of readers), learnt at the first open.
        self._mount_id: int | None = None
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._mtime_ns = time.time_ns()

    # -- attributes ------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.registry.node(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_uid = self._uid
        attr.st_gid = self._gid
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self._mtime_ns
        attr.entry_timeout = ENTRY_TIMEOUT
        attr.attr_timeout = ATTR_TIMEOUT
        attr.st_blksize = 128 * 1024
        if isinstance(node, DirNode):
            attr.st_mode = stat.S_IFDIR | 0o555
            attr.st_nlink = 2 + sum(isinstance(c, DirNode) for c in node.children.values())
            attr.st_size = 0
        elif isinstance(node, PipeNode):
            # Sequential and of unknown length: size 0, read like a pipe until EOF.
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 1
            attr.st_size = 0
            attr.attr_timeout = CHANGING_ATTR_TIMEOUT
        elif isinstance(node, VirtualNode):
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 1
            attr.st_size = len(node.render())
            # Generated anew on every open: the kernel must not keep an old size.
            attr.attr_timeout = 0
        else:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 1
            attr.st_size = await self.registry.size(node)
            self._reported_size[node.inode] = attr.st_size
            if node.source.mtime is not None:  # an episode's publication date
                attr.st_mtime_ns = attr.st_ctime_ns = int(node.source.mtime * 1e9)
            # st_blocks counts cached bytes, so du shows how much is on disk.
            attr.st_blocks = (node.source.cached_bytes() + 511) // 512
            if not node.source.complete():
                attr.attr_timeout = CHANGING_ATTR_TIMEOUT
        return attr

    @boundary
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self._attributes(self._node(inode))

    @boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        await self.registry.expand(parent_inode)
        node = self.registry.lookup(parent_inode, os.fsdecode(name))
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._attributes(node)

    # -- folders ---------------------------------------------------------------------------

    @boundary
    async def opendir(self, inode: int, ctx: Any) -> int:
        if not isinstance(self._node(inode), DirNode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @boundary
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        await self.registry.expand(fh)
        folder = self._node(fh)
        assert isinstance(folder, DirNode)
        entries = sorted(folder.children.items())
        for index in range(start_id, len(entries)):
            name, child = entries[index]
            attr = await self._attributes(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, index + 1):
                break

    @boundary
    async def releasedir(self, fh: int) -> None:
        return None

    # -- files -----------------------------------------------------------------------------

    @boundary
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if isinstance(node, DirNode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if isinstance(node, VirtualNode):
            fh = self._next_fh
            self._next_fh += 1
            self._virtual[fh] = VirtualHandle(node.render())
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)
        stream: Handle
        if isinstance(node, PipeNode):
            stream = await self.registry.open_pipe(node)
        else:
            stream = await self.registry.open(node)
        if isinstance(stream, SequentialStream):  # a pipe-like file, or a URL that is a station
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = self._new_handle(node, stream, flags, ctx)
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=True)
        assert isinstance(node, FileNode)
        if self._reported_size.get(inode, node.source.length) != node.source.length:
            # The origin published a new version: the kernel's cached size is stale. Only
            # attributes are dropped (no page lock is taken), so this is safe inside open.
            try:
                pyfuse3.invalidate_inode(inode, attr_only=True)
            except OSError as exc:
                log.debug("attributes of inode %d not invalidated: %s", inode, exc)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = self._new_handle(node, stream, flags, ctx)
        # direct_io on every open, wholly cached files included: through the page cache the
        # kernel answers a read past the end from i_size (0 bytes) without asking us, and
        # the contract says EINVAL there, on every read of every file (DESIGN.md §2).
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=False)

    def _new_handle(self, node: StreamNode, stream: Handle, flags: int, ctx: Any) -> OpenFile:
        if self._mount_id is None and self.registry.mountpoint:
            self._mount_id = mount_id(self.registry.mountpoint)
        pid = int(getattr(ctx, "pid", 0) or 0)
        descriptor = OpenerDescriptor(pid, node.inode, self._mount_id)
        return OpenFile(node, stream, bool(flags & os.O_NONBLOCK), descriptor)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        virtual = self._virtual.get(fh)
        if virtual is not None:
            if off > len(virtual.data):
                raise pyfuse3.FUSEError(errno.EINVAL)  # the contract holds here too
            return virtual.data[off : off + size]
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        cached = handle.stream.read_at_once(off, size)
        if cached is not None:
            return cached.data
        # One deadline per read, fixed on arrival; O_NONBLOCK readers get no wait at all.
        # Whether the reader is O_NONBLOCK matters only when the bytes are not there, and
        # then it is what its descriptor says now (mpv clears O_NONBLOCK after opening).
        # Read from the settings each time: a reload may have changed it.
        looked = not handle.stream.answers_at_once(off, size)
        # A read of cached bytes needs no wait either way, so no /proc look-up.
        nonblocking = handle.nonblocking_now() if looked else handle.nonblocking
        full_budget = max(self.registry.settings.read_timeout, handle.stream.min_wait)
        budget = 0.0 if nonblocking else full_budget
        outcome = await handle.stream.try_read(off, size, Deadline.after(budget))
        if (isinstance(outcome, Pending) and outcome.reason is PendingReason.NOT_READY
                and not looked and not handle.nonblocking_now()):  # fmt: skip
            # The cached bytes turned out missing (damaged, say), and the reader is blocking
            # now: it waits like any blocking reader instead of taking EAGAIN for EOF.
            budget = full_budget
            outcome = await handle.stream.try_read(off, size, Deadline.after(budget))
        if isinstance(outcome, Bytes):
            return outcome.data
        if isinstance(outcome, Eof):
            return b""
        assert isinstance(outcome, Pending)
        code = PENDING_ERRNO[outcome.reason]
        if outcome.reason is PendingReason.NOT_READY and not handle.nonblocking:
            log.warning(
                "%s: no bytes at offset %d within %.0f s; answering EAGAIN",
                handle.stream.label,
                off,
                budget,
            )
        elif outcome.reason is PendingReason.VARIANT_CHANGE:
            log.error("%s: variant change reached the FUSE layer", handle.stream.label)
        raise pyfuse3.FUSEError(code)

    @boundary
    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: Any) -> int:
        """Readiness for O_NONBLOCK readers: POLLIN once the bytes at their position arrive."""
        if fh in self._virtual:
            return select.POLLIN | select.POLLRDNORM
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if handle.stream.readable():
            return select.POLLIN | select.POLLRDNORM
        if poll_handle is not None:
            # Only the newest handle needs waking; one watcher per open file is enough.
            handle.poll_handle = poll_handle
            if not handle.watching:
                handle.watching = True
                self.registry.notify_when_readable(handle.stream, handle.wake_poller)
        return 0

    @boundary
    async def flush(self, fh: int) -> None:
        return None

    @boundary
    async def release(self, fh: int) -> None:
        self._virtual.pop(fh, None)
        handle = self._handles.pop(fh, None)
        if handle is not None:
            self.registry.close(handle.node, handle.stream)

    # -- extended attributes -----------------------------------------------------------------

    @boundary
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        node = self._node(inode)
        if name not in _XATTRS:
            # `ls -l` asks every file for security.selinux and system.posix_acl_access: a name
            # we never serve is answered without building the file's status (a third of the
            # daemon's work in an `ls -lR`).
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self._xattrs(node).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @boundary
    async def listxattr(self, inode: int, ctx: Any) -> Sequence[bytes]:
        return list(self._xattrs(self._node(inode)))

    def _xattrs(self, node: Node) -> dict[bytes, bytes]:
        if isinstance(node, ListingNode):
            # A listing whose load failed shows why on its folder.
            return {b"user.kithara.error": redact_text(node.error).encode()} if node.error else {}
        if not isinstance(node, FileNode | PipeNode):
            return {}
        status = self.registry.stream_status(node).as_dict()
        return {name: str(status[key]).encode() for name, key in _XATTRS.items()
                if status.get(key) is not None}  # fmt: skip

    # -- the file system -------------------------------------------------------------------

    @boundary
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 512
        files = self.registry.files()
        data.f_blocks = sum((n.source.length or 0) + 511 for n in files) // 512
        data.f_bfree = data.f_bavail = 0
        data.f_files = len(files) + 1
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    @boundary
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        self._node(inode)
        return not mode & os.W_OK

    # Read-only: every call that would change the tree or a file is EROFS.
    setattr = _erofs("setattr")
    mknod = _erofs("mknod")
    mkdir = _erofs("mkdir")
    unlink = _erofs("unlink")
    rmdir = _erofs("rmdir")
    symlink = _erofs("symlink")
    rename = _erofs("rename")
    link = _erofs("link")
    write = _erofs("write")
    create = _erofs("create")
    setxattr = _erofs("setxattr")
    removexattr = _erofs("removexattr")


__all__ = ["KitharaOperations", "ROOT_INODE", "errno_for"]
