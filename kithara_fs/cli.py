"""The ``kithara-fs`` command: mount, status, reload, unmount, check, demo.

Owns the commands: argument parsing, logging set-up (every line redacted), and what each
command prints. Mounting is ``daemon.py`` (checks, the background daemon) and ``mount.py``
(the running mount).

Configuration and usage errors end with a one-line message: exit code 2 for a bad config,
1 for everything else. It must never let a traceback reach the user for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import StreamConfig, load_config, parse_config
from .daemon import UsageError, check_mountpoint, ready_writer, spawn_daemon
from .errors import ConfigError
from .mount import MountError, run_mount
from .redact import redact_text, redact_url

log = logging.getLogger("kithara_fs")

EXIT_CONFIG = 2
EXIT_FAILURE = 1

# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"kithara-fs: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (UsageError, MountError) as exc:
        print(f"kithara-fs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kithara-fs", description="Mount audio streams as ordinary files."
    )
    parser.add_argument("--version", action="version", version=f"kithara-fs {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount the streams of CONFIG at MOUNTPOINT")
    mount.add_argument("config", help="the streams file (TOML)")
    mount.add_argument(
        "mountpoint", nargs="?", help="an existing empty folder (default: [mount] mountpoint)"
    )
    mount.add_argument(
        "--foreground", action="store_true", help="stay attached instead of daemonising"
    )
    mount.add_argument(
        "--allow-other", action="store_true", help="let other users read the mount"
    )
    mount.add_argument(
        "--log-file",
        help="where the background daemon logs (default: under $XDG_STATE_HOME/kithara-fs)",
    )
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    mount.set_defaults(func=cmd_mount)

    status = sub.add_parser("status", help="what running mounts are doing, one row a stream")
    status.add_argument("mountpoint", nargs="?", help="default: every kithara-fs mount")
    status.add_argument("--watch", action="store_true", help="refresh every second")
    status.add_argument("--json", action="store_true", help="the raw status as JSON")
    status.set_defaults(func=cmd_status)

    reload = sub.add_parser("reload", help="make the mount at MOUNTPOINT re-read its config")
    reload.add_argument("mountpoint")
    reload.set_defaults(func=cmd_reload)

    unmount = sub.add_parser("unmount", help="unmount MOUNTPOINT")
    unmount.add_argument("mountpoint")
    unmount.set_defaults(func=cmd_unmount)

    check = sub.add_parser("check", help="validate CONFIG and print the tree it would mount")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser(
        "demo", help="serve generated audio on 127.0.0.1 and mount it (Ctrl-C ends)"
    )
    demo.add_argument("mountpoint", nargs="?", help="default: a new temporary folder")
    demo.set_defaults(func=cmd_demo)
    return parser


class RedactingFormatter(logging.Formatter):
    """No secrets in logs: every URL in a finished log line, traceback and stack included,
    loses its credentials and query string.

    Redacting the formatted text (not just the message) also covers tracebacks, which are
    rendered after any filter has run, and httpx's own request lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class AbortedReplies(logging.Filter):
    """pyfuse3 logs an ERROR whenever the kernel refuses a reply; with ENOENT that only means
    the request is gone (interrupted, or the mount is being unmounted: a file closed just
    before ``fusermount -u`` has its release answered after the unmount). Nothing is lost,
    so such a line is debugging detail, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "fuse_reply_* failed with" in message and message.endswith(os.strerror(errno.ENOENT)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT,
                        stream=sys.stderr)  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.getLogger("pyfuse3").addFilter(AbortedReplies())
    # httpx logs every request at INFO; that is debugging detail for a filesystem.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)


# -- check ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    print(
        f"{settings.source}: {len(settings.streams)} stream(s); cache in {settings.cache_dir}; "
        f"read timeout {settings.read_timeout:g} s"
    )
    for line in render_tree(settings.streams):
        print(line)
    return 0


def render_tree(streams: Sequence[StreamConfig]) -> list[str]:
    """An indented listing: folders end in '/', files show their (redacted) URL."""
    lines: list[str] = []
    listed: set[tuple[str, ...]] = set()
    for stream in sorted(streams, key=lambda s: s.path):
        for depth in range(1, len(stream.path)):
            folder = stream.path[:depth]
            if folder not in listed:
                listed.add(folder)
                lines.append(f"{'  ' * (depth - 1)}{folder[-1]}/")
        indent = "  " * (len(stream.path) - 1)
        lines.append(f"{indent}{stream.path[-1]}  <- {redact_url(stream.url)}")
    return lines


# -- mount ---------------------------------------------------------------------------------


def cmd_mount(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    target = args.mountpoint or settings.mountpoint
    if target is None:
        raise UsageError("no mount point: name one, or set [mount] mountpoint in the config")
    mountpoint = os.path.abspath(target)
    check_mountpoint(mountpoint)
    if args.foreground:
        ready = ready_writer(args.ready_fd)
        return run_mount(settings, mountpoint, on_ready=ready, allow_other=args.allow_other)
    return spawn_daemon(args, mountpoint)


# -- status and reload ---------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from .statusview import kithara_mounts, show

    mountpoints = [os.path.abspath(args.mountpoint)] if args.mountpoint else kithara_mounts()
    if not mountpoints:
        raise UsageError("no kithara-fs mount is running")
    try:
        return show(mountpoints, watch=args.watch, as_json=args.json)
    except OSError as exc:
        raise UsageError(f"cannot read the status of {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"a mount's status file is not valid JSON: {exc}") from None


def cmd_reload(args: argparse.Namespace) -> int:
    from .statusview import read_status

    mountpoint = os.path.abspath(args.mountpoint)
    try:
        pid = int(read_status(mountpoint)["pid"])
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise UsageError(f"{mountpoint} is not a running kithara-fs mount ({exc})") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise UsageError(f"cannot signal the mount's daemon (pid {pid}): {exc.strerror}") from None
    print(f"kithara-fs: asked the mount at {mountpoint} (pid {pid}) to re-read its config")
    return 0


# -- unmount -------------------------------------------------------------------------------


def cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise UsageError(f"unmount {mountpoint}: {message}")
    return 0


# -- demo ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve generated audio from a loopback origin and mount it until Ctrl-C."""
    from .demo import media
    from .demo.origin import Origin

    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    media_dir = Path(cache_home) / "kithara-fs" / "demo-media"
    print("kithara-fs demo: preparing audio (generated once, then reused) ...", flush=True)
    files = media.generate(media_dir)
    made_mountpoint = args.mountpoint is None
    mountpoint = os.path.abspath(args.mountpoint or tempfile.mkdtemp(prefix="kithara-fs-demo-"))
    check_mountpoint(mountpoint)
    cache_dir_context = tempfile.TemporaryDirectory(prefix="kithara-fs-demo-cache-")
    with cache_dir_context as cache_dir, Origin() as origin:
        streams = [
            {"path": f"demo/{name}", "url": origin.add(f"/{name}", path)}
            for name, path in sorted(files.items())
        ]
        settings = parse_config(
            {"cache": {"dir": cache_dir}, "stream": streams}, source="<demo>"
        )

        def announce() -> None:
            first = min(files)
            print(
                f"kithara-fs demo: origin {origin.url('/')} serving {len(files)} file(s)\n"
                f"mounted at {mountpoint}\n"
                "Try:\n"
                f"  ls -l {mountpoint}/demo\n"
                f"  ffprobe {mountpoint}/demo/{first}\n"
                f"  mpv {mountpoint}/demo/{first}\n"
                f"  ffmpeg -ss 60 -i {mountpoint}/demo/{first} -t 5 clip.wav\n"
                f"  getfattr -d {mountpoint}/demo/{first}\n"
                "Ctrl-C unmounts and exits.",
                flush=True,
            )

        try:
            return run_mount(settings, mountpoint, on_ready=announce)
        finally:
            if made_mountpoint:
                with contextlib.suppress(OSError):
                    # Give the kernel a moment to finish the unmount before removing the dir.
                    time.sleep(0.1)
                    os.rmdir(mountpoint)


__all__ = ["main", "render_tree", "run_mount"]
