"""The running mount: everything one ``kithara-fs mount`` owns while it serves, and its end.

Owns the mount's lifetime as one :class:`contextlib.AsyncExitStack`: the HTTP client, the
nursery, the scheduler and the tree's services, the kernel session (``fuse/session.py``);
then serving until unmounted or signalled (SIGINT/SIGTERM unmount, SIGHUP re-reads the
config), telling the caller and systemd once the mount answers (and a watchdog heartbeat
while it does), and an orderly end whatever ends it: waiting reads interrupted, the kernel
unmounted, the nursery cancelled, the cache index persisted.

It must never parse the command line or print for a person (the CLI does), never call
pyfuse3 itself, and never name a kind of stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable

import trio

from .cache import CacheStore
from .config import CONTROL_DIR, Settings, load_config
from .engine.scheduler import Scheduler
from .errors import CacheError, ConfigError
from .fuse.session import (
    SessionError,
    close_session,
    forget_entries,
    open_session,
    serve,
    terminate,
)
from .net import USER_AGENT, HttpClient
from .notify import notify, watchdog_interval
from .tasks import start_guarded
from .tree import STATUS_FILE, Registry

log = logging.getLogger("kithara_fs")


class MountError(Exception):
    """The mount cannot start: one line for the person who asked (exit code 1)."""


def run_mount(
    settings: Settings,
    mountpoint: str,
    *,
    on_ready: Callable[[], None] | None = None,
    allow_other: bool = False,
) -> int:
    """Mount and serve until unmounted or signalled; returns the exit code.

    Raises:
        MountError: the cache folder or the mount point cannot be used.
    """
    # Whatever the daemon creates is the user's alone, even where a path below forgets to
    # say so: the cache holds credentials, tokens and decrypted media.
    os.umask(0o077)
    try:
        trio.run(_serve, settings, mountpoint, on_ready, allow_other)
    except BaseExceptionGroup as group:
        # A nursery wraps what its body raised; a lone MountError is still a one-line error.
        failed, rest = group.split(MountError)
        if failed is None or rest is not None:
            raise
        raise _first(failed) from None
    log.info("unmounted %s", mountpoint)
    return 0


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _serve(
    settings: Settings,
    mountpoint: str,
    on_ready: Callable[[], None] | None,
    allow_other: bool,
) -> None:
    # Resolved here, before the mount exists: resolving it later would stat the mount root
    # from the thread that must answer that very request.
    mountpoint = os.path.realpath(mountpoint)
    try:
        store = CacheStore(settings.cache_dir, settings.max_size)
    except CacheError as exc:
        raise MountError(str(exc)) from None
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(store.close)
        http = await stack.enter_async_context(
            HttpClient(user_agent=settings.user_agent or USER_AGENT,
                       max_connections=settings.network.max_connections,
                       proxy=settings.network.proxy, ca_file=settings.network.ca_file)
        )
        # Unwound once the nursery is done: whatever ended the mount, the index records what
        # was downloaded.
        stack.push_async_callback(_flush_shielded, store)
        nursery = await stack.enter_async_context(trio.open_nursery())
        # Runs before the nursery waits for its tasks: everything in it ends now.
        stack.callback(nursery.cancel_scope.cancel)
        scheduler = Scheduler(nursery)
        registry = Registry(settings, http, store, scheduler, nursery, mountpoint)
        registry.background.forget = forget_entries
        stack.callback(registry.background.stop)
        try:
            open_session(registry, mountpoint, allow_other=allow_other)
        except SessionError as exc:
            raise MountError(f"cannot mount at {mountpoint}: {exc}") from None
        stack.callback(close_session)
        stack.callback(registry.interrupt_all)
        stack.callback(notify, "STOPPING=1")
        registry.start_background()
        start_guarded(nursery, "cache eviction", store.run_evictions)
        start_guarded(nursery, "signals", _handle_signals, registry, store)
        start_guarded(nursery, "readiness", _announce_ready, registry, on_ready)
        await serve()


async def _flush_shielded(store: CacheStore) -> None:
    with trio.CancelScope(shield=True):
        await store.flush_all()


async def _handle_signals(registry: Registry, store: CacheStore) -> None:
    """SIGINT/SIGTERM unmount; SIGHUP re-reads the config."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                reload_config(registry, store)
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            registry.interrupt_all()
            terminate()
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
    if settings.network != registry.settings.network:
        log.warning("reload: a new [network] table takes effect at the next mount")
    store.max_size = settings.max_size
    change = registry.reload(settings)
    forget_entries(change.removed)
    log.info("reloaded %s: %d added, %d removed", source, change.added, len(change.removed))
    notify(f"STATUS={registry.status()['summary']}")


async def _announce_ready(registry: Registry, on_ready: Callable[[], None] | None) -> None:
    """Tell the caller (pipe) and systemd (READY=1) once the mount answers; then heartbeat."""
    mountpoint = registry.mountpoint
    if not await _mount_answers(mountpoint, attempts=200):
        log.error("mount at %s never answered", mountpoint)
        terminate()
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


__all__ = ["MountError", "reload_config", "run_mount"]
