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

import os
import stat
from pathlib import Path

from ..errors import CacheError

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700 folders, and check it is safe to use.

    An existing folder of ours that others may only read or enter is tightened to 0700.

    Raises:
        CacheError: it is a symlink or not a folder, belongs to another user, or is
            writable by group or others.
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
    check_folder(path)
    return path


def check_folder(path: Path) -> None:
    """Refuse a cache folder another user could tamper with; tighten one of ours to 0700."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise CacheError(f"cache folder {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise CacheError(f"cache folder {path} is a symlink; refusing to use it")
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"cache folder {path} is not a folder")
    if info.st_uid != os.geteuid():
        raise CacheError(f"cache folder {path} belongs to uid {info.st_uid}, not to this user "
                         f"(uid {os.geteuid()}); refusing to use it")  # fmt: skip
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(f"cache folder {path} is writable by group or others "
                         f"(mode {stat.S_IMODE(info.st_mode):o}); refusing to use it")  # fmt: skip
    if stat.S_IMODE(info.st_mode) != FOLDER_MODE:
        try:
            os.chmod(path, FOLDER_MODE, follow_symlinks=False)
        except OSError as exc:
            raise CacheError(f"cache folder {path}: cannot make it private: {exc.strerror}"
                             ) from None  # fmt: skip


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
