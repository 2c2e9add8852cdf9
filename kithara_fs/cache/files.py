"""Private files and folders of the cache: created 0700/0600, never through a symlink.

Owns the rules every path under the cache folder follows. The cache holds URLs with their
credentials and tokens, signed playlist URIs and decrypted media, so:

- folders are created 0700 and files 0600, whatever the process umask;
- a cache folder that is not a real folder, is owned by another user, or is writable by
  group or others is refused (another user could swap a data file for a symlink and have
  the daemon write downloads over the link's target);
- files are opened with ``O_NOFOLLOW``, so a symlink planted in place of one fails the
  open instead of being followed.

It must never loosen a permission, and never follow a symlink inside the cache.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import CacheError

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path, *, top: bool = False) -> Path:
    """Create ``path`` (and missing parents) as 0700 folders, and check it is safe to use.

    ``top`` marks the cache folder the user named: one that group or others may write is
    refused. Folders below it (reachable only through it once it is 0700) are tightened to
    0700 instead, so a cache made by an older version with a looser umask keeps working.

    Raises:
        CacheError: it is a symlink or not a folder, belongs to another user, or (``top``)
            is writable by group or others.
    """
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            pass  # made meanwhile (another process); checked below like any existing one
        except OSError as exc:
            raise CacheError(f"cache folder {folder}: cannot create: {exc.strerror}") from None
    check_folder(path, top=top)
    return path


def check_folder(path: Path, *, top: bool = False) -> None:
    """Refuse a cache folder another user could tamper with; tighten one of ours to 0700.

    The folder is opened (never through a symlink) and checked and changed through that
    descriptor, so it cannot be swapped between the check and the change.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        # With O_DIRECTORY, Linux reports a symlink as ENOTDIR or ELOOP: lstat tells which.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise CacheError(f"cache folder {path} is a symlink; refusing to use it") from None
        if exc.errno == errno.ENOTDIR:
            raise CacheError(f"cache folder {path} is not a folder") from None
        raise CacheError(f"cache folder {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise CacheError(f"cache folder {path} belongs to uid {info.st_uid}, not to this "
                             f"user (uid {os.geteuid()}); refusing to use it")  # fmt: skip
        if top and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheError(f"cache folder {path} is writable by group or others (mode "
                             f"{stat.S_IMODE(info.st_mode):o}); refusing to use it (make it "
                             "private: chmod 700)")  # fmt: skip
        if stat.S_IMODE(info.st_mode) != FOLDER_MODE:
            os.fchmod(fd, FOLDER_MODE)
    except OSError as exc:
        raise CacheError(f"cache folder {path}: cannot make it private: {exc.strerror}"
                         ) from None  # fmt: skip
    finally:
        os.close(fd)


def open_private(path: Path, flags: int) -> int:
    """Open (creating 0600) a file in a checked cache folder, never following a symlink.

    An existing file of ours with looser permissions is tightened to 0600.

    Raises:
        OSError: as ``os.open`` (ELOOP when ``path`` is a symlink).
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
