"""The one errno table: every outcome and exception of a read, as the kernel's reply.

Owns the mapping from domain exceptions (``errors.py``) and pending outcomes
(``engine/stream.py``) to errnos and log levels, and :func:`boundary`, the wrapper every
FUSE handler passes through so nothing but ``FUSEError`` ever leaves one (any other
exception would end the whole mount).

It must never decide anything else: what to read or fetch is below it.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import pyfuse3

from ..engine.stream import PendingReason
from ..errors import (
    CacheError,
    ConfigError,
    KitharaError,
    OriginError,
    RemoteChangedError,
    SeekPastEndError,
)

log = logging.getLogger(__name__)

# The one exception → errno table, most specific class first. Why each errno:
ERRNO_TABLE: tuple[tuple[type[KitharaError], int, int], ...] = (
    # kithara's StreamSeekPastEof: the caller asked for an offset the resource cannot have.
    (SeekPastEndError, errno.EINVAL, logging.DEBUG),
    # The object changed remotely under an open handle (mountpoint-s3 uses ESTALE alike);
    # the handle must not continue on different bytes, a new open gets the new version.
    (RemoteChangedError, errno.ESTALE, logging.WARNING),
    # The origin failed for real after retries: an I/O error, as for a failing disk.
    (OriginError, errno.EIO, logging.WARNING),
    (CacheError, errno.EIO, logging.WARNING),
    (ConfigError, errno.EINVAL, logging.WARNING),
    (KitharaError, errno.EIO, logging.ERROR),
)

# Outcomes without progress → errno. NOT_READY is EAGAIN: for O_NONBLOCK readers that is
# exactly "try again", and blocking readers only see it after a real stall of read_timeout.
# SEEK_PENDING is EINTR: the read was superseded, as a signal interrupts a syscall.
PENDING_ERRNO = {
    PendingReason.NOT_READY: errno.EAGAIN,
    PendingReason.SEEK_PENDING: errno.EINTR,
    # Sources handle variant changes themselves; one reaching here is a bug, so EIO.
    PendingReason.VARIANT_CHANGE: errno.EIO,
}

def errno_for(exc: KitharaError) -> tuple[int, int]:
    """The errno and log level for a domain exception."""
    for cls, code, level in ERRNO_TABLE:
        if isinstance(exc, cls):
            return code, level
    return errno.EIO, logging.ERROR  # pragma: no cover - KitharaError is last in the table


P = ParamSpec("P")
R = TypeVar("R")
Ops = TypeVar("Ops")


def boundary(
    handler: Callable[Concatenate[Ops, P], Awaitable[R]],
) -> Callable[Concatenate[Ops, P], Awaitable[R]]:
    """Let only FUSEError out of a handler: domain errors by the table, bugs as EIO."""

    @functools.wraps(handler)
    async def wrapper(self: Ops, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except KitharaError as exc:
            code, level = errno_for(exc)
            log.log(level, "%s: %s (%s)", handler.__name__, exc, errno.errorcode[code])
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("internal error in %s; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


