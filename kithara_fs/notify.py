"""The systemd notification protocol (sd_notify), for ``Type=notify`` services.

Owns sending ``READY=1``, ``WATCHDOG=1``, ``STATUS=…`` and ``STOPPING=1`` datagrams to the
socket systemd names in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace),
and reading the watchdog interval from ``$WATCHDOG_USEC``. The protocol is a dozen lines of
socket code (sd_notify(3)); a library for it would be a dependency for nothing.

It must never fail the caller: without a socket, or when sending fails, it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to systemd; False when not running under it (or on error)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.warning("systemd notification failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between the heartbeats systemd expects, or None when it expects none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    # Half the timeout, as sd_watchdog_enabled(3) advises, so one late beat is not fatal.
    return int(usec) / 1e6 / 2
