"""A station as a file: each open reads the shared ring from its own position.

Owns :class:`StationFile` (the :class:`~kithara_fs.sources.base.Sequential` a station's path
shows, with its title log and tracks folder beside it) and :class:`StationFeed` (one open
handle's view: it starts where its rewind says, reads on at its own pace, and is moved
forward with a log line if it falls out of the ring).

It must never make one reader wait for another, and never speak FUSE or choose errnos.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from ...errors import KitharaError, OriginError
from ..base import Companion, Feed, Sequential
from .station import Station

log = logging.getLogger(__name__)


class StationFeed:
    """One reader of a station. Offsets count from its open; reads come in order."""

    variant: str | None = None

    def __init__(self, station: Station, rewind_seconds: float, label: str) -> None:
        self.station = station
        self.label = label
        self.changed = station.changed
        self.error: KitharaError | None = None
        start, self._prefix = station.attach(rewind_seconds)
        # The ring position of this reader's offset 0 (moved on if it falls behind); the
        # first offsets are the prefix (an Ogg stream's header pages), then the ring's bytes.
        self._base = start - len(self._prefix)
        self._attached = True

    @property
    def min_wait(self) -> float:
        return 0.0

    async def run(self) -> None:
        # The station's connection is shared and runs on its own; a reader only waits.
        await trio.sleep_forever()

    def read(self, offset: int, size: int) -> bytes | None:
        if offset < len(self._prefix):
            return self._prefix[offset : offset + size]
        station = self.station
        position = self._base + offset
        ring = station.ring
        if ring is not None and position < ring.oldest:
            ahead = station.catch_up_position()
            log.warning("%s: fell behind the station by more than its ring holds (%d bytes "
                        "lost); going on from %.0f s behind live", self.label, ahead - position,
                        max(0.0, station.ring_seconds()))  # fmt: skip
            self._base += ahead - position
            position = ahead
        try:
            data = station.read(position, size)
        except (OSError, ValueError) as exc:
            self.error = OriginError(self.label, f"the station's ring failed: {exc}")
            raise self.error from None
        if data is not None:
            return data
        if station.fatal is not None:
            self.error = station.fatal
            raise station.fatal
        return None

    def has_data_at(self, offset: int) -> bool:
        return (offset < len(self._prefix) or self._base + offset < self.station.written
                or self.station.fatal is not None)  # fmt: skip

    def discard(self) -> None:
        if self._attached:
            self._attached = False
            self.station.detach()


class StationFile(Sequential):
    """A station's path: endless, with ``<name>.titles`` and ``<stem>.tracks/`` beside it."""

    live = True

    def __init__(self, station: Station, rewind_seconds: float) -> None:
        self.station = station
        self.rewind_seconds = rewind_seconds
        self.shown = station.shown

    def open_feed(self, label: str) -> Feed:
        return StationFeed(self.station, self.rewind_seconds, label)

    def companions(self, name: str) -> Sequence[Companion]:
        stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
        return (
            Companion(f"{name}.titles", render=self.station.titles.text),
            Companion(f"{stem}.tracks", listing=self.station.tracks),
        )

    def status_fields(self) -> Mapping[str, Any]:
        return self.station.status_fields()
