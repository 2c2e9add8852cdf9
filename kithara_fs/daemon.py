"""Starting a mount: the mount point's checks, and the background daemon.

Owns what happens before a mount serves: checking the mount point (an existing, empty,
unmounted folder; a crashed kithara-fs's dead mount is cleared, any other file system's is
left alone), and ``mount`` without ``--foreground``: re-running ourselves as a detached
``mount --foreground`` that logs to a private file and reports readiness over a pipe.

It must never serve the mount itself (``mount.py`` does), and never leave a traceback for
bad input: problems are one-line :class:`UsageError`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .statusview import kithara_mounts

log = logging.getLogger("kithara_fs")

# How long `mount` waits for the daemon to answer before giving up; mounting itself takes
# milliseconds, so this only matters on a wedged /dev/fuse or a very slow cache disk.
READY_TIMEOUT = 30.0


class UsageError(Exception):
    """A one-line problem with the command line or the machine (exit code 1)."""


def check_mountpoint(mountpoint: str) -> None:
    """Raise UsageError unless ``mountpoint`` is an existing, empty, unmounted folder."""
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise UsageError(f"mount point {mountpoint} does not exist") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise UsageError(f"mount point {mountpoint}: {exc.strerror}") from None
        _clear_dead_mount(mountpoint)
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a folder")
    if os.path.ismount(mountpoint):
        try:
            os.listdir(mountpoint)  # the kernel may answer stat from cache; listing asks
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise UsageError(f"mount point {mountpoint}: {exc.strerror}") from None
            _clear_dead_mount(mountpoint)
        else:
            raise UsageError(f"mount point {mountpoint} is already mounted")
    if os.listdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not empty")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise UsageError("/dev/fuse is missing or not accessible (install fuse3)")


def _clear_dead_mount(mountpoint: str) -> None:
    """A kithara-fs that crashed leaves its mount point answering ENOTCONN: unmount it.

    Only our own dead mounts are cleared; any other file system's is the user's to handle.
    """
    if os.path.realpath(mountpoint) not in {os.path.realpath(m) for m in kithara_mounts()}:
        raise UsageError(f"mount point {mountpoint} is a dead mount of another file system")
    log.warning("mount point %s was left by a crashed kithara-fs; unmounting it", mountpoint)
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-uz", mountpoint] if tool else ["umount", "-l", mountpoint]
    if subprocess.run(command, capture_output=True).returncode != 0:
        raise UsageError(f"mount point {mountpoint} is a dead mount that cannot be unmounted")


def ready_writer(fd: int | None) -> Callable[[], None] | None:
    if fd is None:
        return None

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"ready\n")
            os.close(fd)

    return ready


def _default_log_file(mountpoint: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    slug = mountpoint.strip("/").replace("/", "_") or "root"
    return Path(base) / "kithara-fs" / f"{slug}.log"


def spawn_daemon(args: argparse.Namespace, mountpoint: str) -> int:
    """Re-run ourselves with --foreground, detached, and return once the mount answers."""
    log_file = Path(args.log_file) if args.log_file else _default_log_file(mountpoint)
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    command = [
        sys.executable, "-m", "kithara_fs", "--log-level", args.log_level,
        "mount", "--foreground", "--ready-fd", str(write_end),
        os.path.abspath(args.config), mountpoint,
    ]  # fmt: skip
    if args.allow_other:
        command.append("--allow-other")
    # The log is the user's alone (0600), like everything else the daemon writes.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        log_fd = os.open(log_file, flags, 0o600)
        os.fchmod(log_fd, 0o600)
    except OSError as exc:
        raise UsageError(f"log file {log_file}: {exc.strerror}") from None
    with open(log_fd, "ab") as log_stream:
        child = subprocess.Popen(
            command,
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=log_stream,
            stderr=log_stream,
            start_new_session=True,
        )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
        answer = os.read(read_end, 64) if ready else b""
    finally:
        os.close(read_end)
    if answer.startswith(b"ready"):
        print(f"kithara-fs: mounted at {mountpoint} (pid {child.pid}, log {log_file})")
        return 0
    if child.poll() is None:
        child.terminate()
    reason = _last_error_line(log_file) or "the daemon exited without mounting"
    raise UsageError(f"mount failed: {reason} (log: {log_file})")


def _last_error_line(log_file: Path) -> str | None:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[-50:]):
        if " ERROR " in line or " CRITICAL " in line or line.startswith("kithara-fs:"):
            return line.split(": ", 1)[-1]
    return lines[-1] if lines else None
