"""The HLS kind: a programme's playlists as a folder of seekable variants, `auto` and live files.

Owns what the kinds table needs of HLS: its config key (``live_start_segments``), how a
stream's URL is recognised (``.m3u8``/``.m3u``), and building a :class:`ProgrammeListing`
for a stream. The parts: ``playlist`` parses and names, ``segments`` fetches and decrypts,
``variant`` is a VOD part as a byte space, ``programme`` decides the folder's files,
``feed`` and ``throughput`` read live and `auto` files.

It must never speak FUSE or choose errnos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..base import Context, Kind, Listed, Listing, Spec
from .feed import FeedFile
from .programme import Programme
from .segments import SegmentFetcher

# A live HLS file starts this many segments behind the live edge: the distance players use
# (RFC 8216 §6.3.3 says no closer than three target durations), so a segment being written
# at the origin is never the one asked for first.
DEFAULT_LIVE_START_SEGMENTS = 3


class ProgrammeListing(Listing):
    """The folder of one programme: its files, as the tree shows them."""

    what = "HLS programme"

    def __init__(self, programme: Programme) -> None:
        self.programme = programme
        self.shown = programme.shown

    def set_readahead(self, seconds: float) -> None:
        self.programme.readahead_seconds = seconds

    async def load(self) -> list[Listed]:
        files = await self.programme.load()
        best = any(f.role == "best" for f in files)
        listed: list[Listed] = []
        for file in files:
            if file.source is not None:
                # A folder's playlists list the `best` copy, or else each variant's file.
                shown = file.role == "best" or (file.role == "variant" and not best)
                listed.append(Listed(file.name, file.source, in_playlist=shown))
            else:
                feed = FeedFile(self.programme, file, self.programme.start_behind)
                listed.append(Listed(file.name, feed, in_playlist=False))
        return listed


def check(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The kind's own keys, validated (``where`` starts every error message)."""
    live_start = table.get("live_start_segments", DEFAULT_LIVE_START_SEGMENTS)
    if isinstance(live_start, bool) or not isinstance(live_start, int) or live_start < 1:
        raise ConfigError(f"{where}live_start_segments: must be a whole number of at least 1, "
                          f"not {live_start!r}")  # fmt: skip
    return {"live_start_segments": live_start}


def build(spec: Spec, context: Context) -> ProgrammeListing:
    # One fetcher per client view: a stream with headers of its own has its own view.
    key = f"hls.fetcher {id(context.http)}"
    fetcher = context.shared.get(key)
    if not isinstance(fetcher, SegmentFetcher):
        fetcher = context.shared[key] = SegmentFetcher(context.http)
    programme = Programme(
        spec.url, spec.label, fetcher, context.store, context.sources, spec.readahead_seconds,
        start_behind=spec.options["live_start_segments"],
    )  # fmt: skip
    return ProgrammeListing(programme)


KIND = Kind(
    name="hls", build=build, check=check, keys=frozenset({"live_start_segments"}),
    suffixes=("m3u8", "m3u"), pinnable=False, noun="HLS folder",
)  # fmt: skip
