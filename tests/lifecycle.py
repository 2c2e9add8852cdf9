"""Test helper: what the servers a test starts (Icecast, Squid, Shoutcast) have in common.

Owns one rule: a server is stopped on leaving the block, and also when starting it failed
halfway (a process already running, a folder already made). Each server says how it starts
(``_start``) and how it stops (``close``, which must cope with a half-started server). Also
a free loopback port, and the end of a server's log for a failure message.
"""

from __future__ import annotations

import socket
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, headed by its name (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: missing)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


class StartsAndStops:
    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
