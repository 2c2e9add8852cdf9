"""The FUSE ceiling: a minimal read-only pyfuse3 passthrough of one flat folder.

Usage: ``python bench/passthrough.py SOURCE_DIR MOUNTPOINT`` (foreground; unmount to end).

Owns nothing but answering lookup, getattr, readdir, open (``direct_io``, as kithara_fs opens
every file) and read with ``os.pread`` on the source files, with the same pyfuse3 options as
kithara_fs. What it costs per request is what any Python FUSE daemon pays before doing any
work of its own, so kithara_fs's cached reads are measured against it.

Must never write, follow anything outside SOURCE_DIR, or cache data itself.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pyfuse3
import trio


class Passthrough(pyfuse3.Operations):  # type: ignore[misc]
    def __init__(self, source: Path) -> None:
        super().__init__()
        self.names = sorted(p.name for p in source.iterdir() if p.is_file())
        self.paths = {i + 2: source / n for i, n in enumerate(self.names)}  # inode -> path
        self.inodes = {n.encode(): i + 2 for i, n in enumerate(self.names)}
        self.fds: dict[int, int] = {}

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode, attr.st_nlink = stat.S_IFDIR | 0o555, 2
        elif inode in self.paths:
            attr.st_mode, attr.st_nlink = stat.S_IFREG | 0o444, 1
            attr.st_size = self.paths[inode].stat().st_size
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr.attr_timeout = attr.entry_timeout = 300
        return attr

    async def lookup(
        self, parent: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE or name not in self.inodes:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(self.inodes[name], ctx)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for index, name in enumerate(self.names[start_id:], start_id):
            attr = await self.getattr(index + 2, None)  # type: ignore[arg-type]
            if not pyfuse3.readdir_reply(token, name.encode(), attr, index + 1):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fd = os.open(self.paths[inode], os.O_RDONLY)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(self.fds.pop(fh))


def main() -> None:
    source, mountpoint = Path(sys.argv[1]), sys.argv[2]
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "ro"}
    pyfuse3.init(Passthrough(source), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
