"""The kernel session: mounting, serving, unmounting, and telling the kernel to forget names.

Owns every pyfuse3 call outside the request handlers: ``init`` with the mount's options,
the main loop, the orderly ``close`` (unmount), ``terminate`` on a signal, and invalidating
kernel entries a reload removed.

It must never decide when to do these (``mount.py`` does) or what the tree holds.
"""

from __future__ import annotations

import logging
import os

import pyfuse3

from ..tree import Registry
from .operations import KitharaOperations

log = logging.getLogger(__name__)


class SessionError(Exception):
    """The kernel refused the mount (the message says why)."""


def open_session(registry: Registry, mountpoint: str, *, allow_other: bool) -> None:
    """Mount read-only at ``mountpoint``, answering from ``registry``.

    Raises:
        SessionError: the kernel or fusermount refused.
    """
    options = set(pyfuse3.default_options)
    options |= {"fsname=kithara-fs", "subtype=kithara", "ro"}
    if allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(KitharaOperations(registry), mountpoint, options)
    except RuntimeError as exc:
        raise SessionError(str(exc)) from None


async def serve() -> None:
    """Answer the kernel until unmounted or :func:`terminate`."""
    await pyfuse3.main()


def close_session() -> None:
    pyfuse3.close(unmount=True)


def terminate() -> None:
    pyfuse3.terminate()


def forget_entries(removed: list[tuple[int, str]]) -> None:
    """The kernel keeps names for a while; names a reload removed must go at once."""
    for parent, name in removed:
        try:
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        except OSError as exc:
            log.debug("kernel entry %s not invalidated: %s", name, exc)
