"""Test helper: the ``with`` shape of the servers a test starts (Icecast, Squid, Shoutcast).

Owns one rule: a server is stopped on leaving the block, and also when starting it failed
halfway (a process already running, a folder already made). Each server says how it starts
(``_start``) and how it stops (``close``, which must cope with a half-started server).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


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
