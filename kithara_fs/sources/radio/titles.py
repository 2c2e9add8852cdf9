"""What a station says it plays: its current title, the title's URL, and the log of changes.

Owns :class:`Titles`: reading each metadata block (``icy.parse_metadata``), noting a title
change with its wall-clock time (the newest :data:`MAX_TITLES` kept, for ``.titles``),
logging changes at most once a second (a hostile station could change it in every block),
and rendering the ``.titles`` file.

It must never touch the audio or do I/O beyond its log lines.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

import trio

from .icy import parse_metadata

log = logging.getLogger(__name__)

MAX_TITLES = 1000
TITLE_LOG_EVERY = 1.0


class Titles:
    """A station's titles.

    Attributes:
        title: the current title (None until the station sent one).
        stream_url: the ``StreamUrl`` of the latest block that had one.
        changes: (wall time, title) of each change, newest last.
    """

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.title: str | None = None
        self.stream_url: str | None = None
        self.changes: deque[tuple[float, str]] = deque(maxlen=MAX_TITLES)
        self._logged_at = -math.inf

    def read(self, raw: bytes) -> tuple[str | None, bool]:
        """A metadata block: the title it names (None if it names none), and whether that
        is a change."""
        pairs = parse_metadata(raw)
        if "StreamUrl" in pairs:
            self.stream_url = pairs["StreamUrl"] or None
        title = pairs.get("StreamTitle")
        if title is None or title == self.title:
            return title, False
        self.title = title
        self.changes.append((time.time(), title))
        now = trio.current_time()
        if now - self._logged_at >= TITLE_LOG_EVERY:
            log.info("%s: now playing %r", self.shown, title)
            self._logged_at = now
        return title, True

    def text(self) -> bytes:
        """The ``.titles`` file: one line per change, ISO local time, a tab, the title."""
        lines = [f"{time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(when))}\t{title}\n"
                 for when, title in self.changes]  # fmt: skip
        return "".join(lines).encode()
