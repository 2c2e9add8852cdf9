"""The ``kithara-fs`` command: mount, unmount, check, demo.

Owns process-level concerns: argument parsing, logging set-up, mount-point checks, the
background daemon (a re-executed ``mount --foreground`` that reports readiness over a pipe),
signals, and the trio run that owns the mount — the HTTP client, the nursery, pyfuse3's main
loop and the orderly shutdown (interrupt waiting reads, unmount, persist the cache index).

Configuration and usage errors end with a one-line message: exit code 2 for a bad config,
1 for everything else. It must never let a traceback reach the user for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyfuse3
import trio

from . import __version__
from .cache import CacheStore
from .config import (
    CONTROL_DIR,
    Settings,
    StreamConfig,
    load_config,
    parse_config,
)
from .errors import CacheError, ConfigError
from .fs import KitharaOperations
from .net import HttpClient
from .notify import notify, watchdog_interval
from .redact import redact_text, redact_url
from .registry import STATUS_FILE, Registry
from .scheduler import Scheduler
from .statusview import kithara_mounts, read_status, show
from .tasks import start_guarded

log = logging.getLogger("kithara_fs")

EXIT_CONFIG = 2
EXIT_FAILURE = 1
# How long `mount` waits for the daemon to answer before giving up; mounting itself takes
# milliseconds, so this only matters on a wedged /dev/fuse or a very slow cache disk.
READY_TIMEOUT = 30.0


class UsageError(Exception):
    """A one-line problem with the command line or the machine (exit code 1)."""


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
    except UsageError as exc:
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


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT,
                        stream=sys.stderr)  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
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
    shown: set[tuple[str, ...]] = set()
    for stream in sorted(streams, key=lambda s: s.path):
        for depth in range(1, len(stream.path)):
            folder = stream.path[:depth]
            if folder not in shown:
                shown.add(folder)
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
        ready = _ready_writer(args.ready_fd)
        return run_mount(settings, mountpoint, on_ready=ready, allow_other=args.allow_other)
    return _spawn_daemon(args, mountpoint)


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


def _ready_writer(fd: int | None) -> Callable[[], None] | None:
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


def _spawn_daemon(args: argparse.Namespace, mountpoint: str) -> int:
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


def run_mount(
    settings: Settings,
    mountpoint: str,
    *,
    on_ready: Callable[[], None] | None = None,
    allow_other: bool = False,
) -> int:
    """Mount and serve until unmounted or signalled; returns the exit code."""
    # Whatever the daemon creates is the user's alone, even where a path below forgets to
    # say so: the cache holds credentials, tokens and decrypted media.
    os.umask(0o077)
    try:
        store = CacheStore(settings.cache_dir, settings.max_size)
    except CacheError as exc:
        raise UsageError(str(exc)) from None
    try:
        trio.run(_serve, settings, mountpoint, store, on_ready, allow_other)
    except BaseExceptionGroup as group:
        # A nursery wraps what its body raised; a lone UsageError is still a one-line error.
        usage, rest = group.split(UsageError)
        if usage is None or rest is not None:
            raise
        raise _first(usage) from None
    finally:
        store.close()
    log.info("unmounted %s", mountpoint)
    return 0


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _serve(
    settings: Settings,
    mountpoint: str,
    store: CacheStore,
    on_ready: Callable[[], None] | None,
    allow_other: bool,
) -> None:
    async with HttpClient() as http:
        try:
            await _serve_in_nursery(settings, mountpoint, store, http, on_ready, allow_other)
        finally:
            # Whatever ended the mount, the index records what was downloaded.
            with trio.CancelScope(shield=True):
                await store.flush_all()


async def _serve_in_nursery(
    settings: Settings,
    mountpoint: str,
    store: CacheStore,
    http: HttpClient,
    on_ready: Callable[[], None] | None,
    allow_other: bool,
) -> None:
    async with trio.open_nursery() as nursery:
        scheduler = Scheduler(nursery)
        # Resolved here, before the mount exists: resolving it later would stat the mount
        # root from the thread that must answer that very request.
        mountpoint = os.path.realpath(mountpoint)
        registry = Registry(settings, http, store, scheduler, nursery, mountpoint)
        options = set(pyfuse3.default_options)
        options |= {"fsname=kithara-fs", "subtype=kithara", "ro"}
        if allow_other:
            options.add("allow_other")
        try:
            pyfuse3.init(KitharaOperations(registry), mountpoint, options)
        except RuntimeError as exc:
            raise UsageError(f"cannot mount at {mountpoint}: {exc}") from None
        try:
            registry.start_probes()
            start_guarded(nursery, "cache eviction", store.run_evictions)
            start_guarded(nursery, "signals", _handle_signals, registry, store)
            start_guarded(nursery, "readiness", _announce_ready, registry, on_ready)
            await pyfuse3.main()
        finally:
            notify("STOPPING=1")
            registry.interrupt_all()
            pyfuse3.close(unmount=True)
            nursery.cancel_scope.cancel()


async def _handle_signals(registry: Registry, store: CacheStore) -> None:
    """SIGINT/SIGTERM unmount; SIGHUP re-reads the config."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                reload_config(registry, store)
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            registry.interrupt_all()
            pyfuse3.terminate()
            return


def reload_config(registry: Registry, store: CacheStore) -> None:
    """Apply the config file again; a bad one is logged and the current tree stays."""
    try:
        _reload(registry, store)
    except Exception:  # a failed reload must not end the mount
        log.exception("reload failed")


def _reload(registry: Registry, store: CacheStore) -> None:
    source = registry.settings.source
    try:
        settings = load_config(source)
    except ConfigError as exc:
        log.error("reload rejected, keeping the current tree: %s", exc)
        return
    if settings.cache_dir != registry.settings.cache_dir:
        log.warning("reload: a new cache folder takes effect at the next mount")
    store.max_size = settings.max_size
    change = registry.reload(settings)
    for parent, name in change.removed:
        # The kernel keeps names for ENTRY_TIMEOUT; removed ones must go at once.
        try:
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        except OSError as exc:
            log.debug("kernel entry %s not invalidated: %s", name, exc)
    log.info("reloaded %s: %d added, %d removed", source, change.added, len(change.removed))
    notify(f"STATUS={registry.status()['summary']}")


async def _announce_ready(registry: Registry, on_ready: Callable[[], None] | None) -> None:
    """Tell the caller (pipe) and systemd (READY=1) once the mount answers; then heartbeat."""
    mountpoint = registry.mountpoint
    if not await _mount_answers(mountpoint, attempts=200):
        log.error("mount at %s never answered", mountpoint)
        pyfuse3.terminate()
        return
    log.info("mounted %d stream(s) at %s", len(registry.files()), mountpoint)
    if on_ready is not None:
        on_ready()
    notify("READY=1", f"STATUS={registry.status()['summary']}")
    interval = watchdog_interval()
    while interval is not None:
        await trio.sleep(interval)
        # A heartbeat only while the mount really answers, so a wedged loop gets restarted:
        # the status file's attributes are never cached, so this stat reaches the daemon.
        status_file = os.path.join(mountpoint, CONTROL_DIR, STATUS_FILE)
        if await trio.to_thread.run_sync(_answers, status_file):
            notify("WATCHDOG=1", f"STATUS={registry.status()['summary']}")


def _answers(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


async def _mount_answers(mountpoint: str, attempts: int) -> bool:
    for attempt in range(attempts):
        # Ask from a worker thread: the trio thread must stay free to answer the kernel.
        if await trio.to_thread.run_sync(os.path.ismount, mountpoint):
            return True
        if attempt + 1 < attempts:
            await trio.sleep(0.05)
    return False


# -- status and reload ---------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
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
