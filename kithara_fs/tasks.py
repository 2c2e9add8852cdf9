"""Background tasks that can never end the mount.

Owns the one way kithara_fs starts a long-lived or fire-and-forget task in the mount's
nursery: :func:`start_guarded`. A trio nursery re-raises any exception of any of its tasks
and cancels the rest, which for the mount's nursery means the whole file system goes away
(after ``kithara-fs mount`` already reported success). So every background task runs
inside a guard that logs an unexpected exception, with its traceback, and ends only that
task; cancellation (a ``BaseException``) passes through untouched.

It must never swallow cancellation, and never be bypassed: nothing in kithara_fs calls
``nursery.start_soon`` on the mount's nursery directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVarTuple, Unpack

import trio

log = logging.getLogger(__name__)

Ts = TypeVarTuple("Ts")


async def _guarded(
    what: str, function: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts
) -> None:
    try:
        await function(*args)
    except Exception:
        log.exception("%s: internal error in a background task; the task ends, the mount stays",
                      what)  # fmt: skip


def start_guarded(
    nursery: trio.Nursery,
    what: str,
    function: Callable[[Unpack[Ts]], Awaitable[object]],
    *args: *Ts,
) -> None:
    """Run ``function(*args)`` in ``nursery``; an exception it raises is logged, not spread.

    ``what`` names the task (and its stream) in the log line.
    """
    nursery.start_soon(_guarded, what, function, *args)
