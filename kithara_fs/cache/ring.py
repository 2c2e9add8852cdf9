"""A station's newest audio on disk: one file of fixed size, written round and round.

Owns :class:`RingFile`: bytes appended at an ever-growing position (counted from the
ring's start), of which the newest ``capacity`` are kept, and read back by position. The
file is made private in the cache folder and unlinked at once: only its descriptor keeps
it, so a crash leaves nothing behind and no other process can open it. The ring is not an
archive: it starts empty at every mount.

It must never hand out a byte it no longer holds (overwritten by newer audio), and never
grow beyond ``capacity`` bytes on disk.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .files import open_private, private_folder


class RingFile:
    """The newest ``capacity`` bytes of an endless stream.

    Attributes:
        capacity: how many bytes it holds at most.
        written: how many bytes were appended since it was made (the next byte's position).
    """

    def __init__(self, folder: Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ring holds at least one byte")
        private_folder(folder)
        path = folder / f"{secrets.token_hex(8)}.ring"
        self._fd: int | None = open_private(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        os.unlink(path)
        self.capacity = capacity
        self.written = 0

    @property
    def oldest(self) -> int:
        """The position of the oldest byte still held."""
        return max(0, self.written - self.capacity)

    def append(self, data: bytes) -> None:
        """Add bytes at the end (raises OSError if the disk refuses them)."""
        view = memoryview(data)
        if len(view) > self.capacity:  # only the newest part of a huge chunk can be kept
            skip = len(view) - self.capacity
            self.written += skip
            view = view[skip:]
        while view:
            at = self.written % self.capacity
            piece = view[: self.capacity - at]
            done = os.pwrite(self._descriptor(), piece, at)
            if done <= 0:
                raise OSError("short write to the station ring")
            self.written += done
            view = view[done:]

    def read(self, position: int, size: int) -> bytes | None:
        """Up to ``size`` bytes from ``position``; None when nothing is there yet.

        Raises:
            ValueError: ``position`` is older than :attr:`oldest` (overwritten).
            OSError: the disk failed.
        """
        if position < self.oldest:
            raise ValueError(f"position {position} was overwritten")
        if position >= self.written:
            return None
        size = min(size, self.written - position)
        at = position % self.capacity
        first = min(size, self.capacity - at)
        data = os.pread(self._descriptor(), first, at)
        if first < size and len(data) == first:
            data += os.pread(self._descriptor(), size - first, 0)
        if len(data) != size:
            raise OSError("short read from the station ring")
        return data

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _descriptor(self) -> int:
        if self._fd is None:
            raise OSError("the station ring is closed")
        return self._fd
