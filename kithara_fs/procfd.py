"""Whether a reader's open file is non-blocking *now*, learnt from ``/proc/<pid>/fdinfo``.

The kernel tells a FUSE daemon the file's flags at open, and again with every read
(``fuse_read_in.flags``), but pyfuse3's ``read`` handler drops the latter. Players change
them in between: mpv opens with ``O_NONBLOCK`` and clears it with ``fcntl(F_SETFL)`` before it
reads, so the flags seen at open would make its first reads ``EAGAIN``, which mpv takes as
end of file. So when a read would have to wait, the FUSE adapter asks this module how the
opener's descriptor on that file is set now: it finds the process's descriptors on our mount
(``mnt_id``) and inode (``ino``) in ``/proc/<pid>/fdinfo`` and reads their ``flags``.

Only reads that find no bytes pay for it (a read of cached bytes answers at once either
way), and the descriptor found is remembered per handle, so a repeated check reads one
small proc file. When the opener is gone, belongs to another user, or holds no descriptor
on the file (it passed it on, or it sees the mount in another mount namespace, or the kernel
is older than 5.14 and fdinfo has no ``ino``), the answer is None and the caller keeps the
flags of open.

It must never raise, never block on our own mount (it reads only ``/proc``), and never
import pyfuse3.
"""

from __future__ import annotations

import os
import time

# fdinfo's "flags:" is octal; O_NONBLOCK's value on Linux.
_NONBLOCK = os.O_NONBLOCK
# After a scan of the opener's descriptors found none on the file, scan again no sooner than
# this: a process with thousands of descriptors must not pay a full scan on every read.
RESCAN_AFTER = 1.0


def mount_id(mountpoint: str, mountinfo: str = "/proc/self/mountinfo") -> int | None:
    """The kernel's id of the mount at ``mountpoint`` (the ``mnt_id`` fdinfo reports).

    ``mountpoint`` must already be resolved (no symlinks): resolving it here would stat our
    own mount from the daemon, which waits for itself.
    """
    target = mountpoint
    found = None
    try:
        with open(mountinfo, "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == os.fsencode(target):
                    found = int(fields[0])  # the last one listed is the one on top
    except (OSError, ValueError):
        return None
    return found


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
        field = field.replace(code, bytes([int(code[1:], 8)]))
    return field


class OpenerDescriptor:
    """The current flags of one opener's descriptor on one file of our mount."""

    __slots__ = ("pid", "inode", "mnt_id", "_fd", "_missed_at")

    def __init__(self, pid: int, inode: int, mnt_id: int | None) -> None:
        self.pid = pid
        self.inode = inode
        self.mnt_id = mnt_id
        self._fd: str | None = None  # the descriptor found last time, tried first
        self._missed_at = -RESCAN_AFTER  # when a full scan last found nothing (monotonic)

    def nonblocking(self) -> bool | None:
        """True/False when the opener's descriptor(s) on the file say so now; else None.

        With several descriptors on the file, one blocking descriptor makes it blocking:
        a read that waits in vain costs a blocking reader nothing it did not ask for,
        while a wrong EAGAIN ends its playback.
        """
        if self.pid <= 0 or self.mnt_id is None:
            return None
        if self._fd is not None:
            flags = self._flags(self._fd)
            if flags is not None:
                return bool(flags & _NONBLOCK)
            self._fd = None
        if time.monotonic() - self._missed_at < RESCAN_AFTER:
            return None
        try:
            names = os.listdir(f"/proc/{self.pid}/fdinfo")
        except OSError:
            self._missed_at = time.monotonic()
            return None
        answer: bool | None = None
        for name in names:
            flags = self._flags(name)
            if flags is None:
                continue
            self._fd = name
            if not flags & _NONBLOCK:
                return False
            answer = True
        if answer is None:
            self._missed_at = time.monotonic()
        return answer

    def _flags(self, fd: str) -> int | None:
        """The flags of ``fd`` if it is open on our file, else None."""
        try:
            with open(f"/proc/{self.pid}/fdinfo/{fd}", "rb") as f:
                text = f.read(4096)
        except OSError:
            return None
        fields: dict[bytes, bytes] = {}
        for line in text.splitlines()[:8]:
            key, _, value = line.partition(b":")
            fields[key] = value.strip()
        try:
            if int(fields[b"mnt_id"]) != self.mnt_id or int(fields[b"ino"]) != self.inode:
                return None
            return int(fields[b"flags"], 8)
        except (KeyError, ValueError):
            return None
