"""The radio kind: an Icecast or Shoutcast station as an endless file, titles and tracks.

Owns what the kinds table needs of radio: its config keys (``rewind_seconds``,
``ring_size``, ``tracks_kept``, ``user_agent``), the URL suffixes that choose it (station
playlists: ``.pls``, ``.xspf``), and building a station's file. Paths that name one URL
share one :class:`Station` (one connection, one ring), each with its own rewind. The parts:
``icy`` splits audio from metadata and reads titles, ``frames`` finds MP3/ADTS frame
boundaries, ``stations`` reads station playlists, ``station`` runs the connection,
``readers`` is the file and each open's view, ``tracks`` keeps finished tracks.

It must never speak FUSE or choose errnos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError
from ...units import parse_size, user_agent_value
from ..base import Context, Kind, Spec
from .readers import StationFile
from .station import Station

# The ring holds the newest audio of each station: 32 MiB is 35 minutes at 128 kbit/s and
# 14 at 320 kbit/s, enough for any rewind a person asks for and for tracks of that length.
DEFAULT_RING_SIZE = 32 * 1024 * 1024
MIN_RING_SIZE = 256 * 1024
MAX_RING_SIZE = 4 * 1024**3
DEFAULT_TRACKS_KEPT = 20
# As for every duration in the config: more than a day is a typo.
MAX_SECONDS = 86400.0
MAX_TRACKS_KEPT = 1000


def check(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The kind's own keys, validated (``where`` starts every error message)."""
    rewind = table.get("rewind_seconds", 0)
    if (isinstance(rewind, bool) or not isinstance(rewind, int | float)
            or not 0 <= rewind <= MAX_SECONDS):  # fmt: skip
        raise ConfigError(f"{where}rewind_seconds: must be a number of seconds from 0 to "
                          f"{MAX_SECONDS:.0f}, not {rewind!r}")  # fmt: skip
    ring = parse_size(table.get("ring_size", DEFAULT_RING_SIZE), f"{where}ring_size",
                      MAX_RING_SIZE, MIN_RING_SIZE)  # fmt: skip
    kept = table.get("tracks_kept", DEFAULT_TRACKS_KEPT)
    if isinstance(kept, bool) or not isinstance(kept, int) or not 0 <= kept <= MAX_TRACKS_KEPT:
        raise ConfigError(f"{where}tracks_kept: must be a whole number from 0 to "
                          f"{MAX_TRACKS_KEPT}, not {kept!r}")  # fmt: skip
    options: dict[str, Any] = {"rewind_seconds": float(rewind), "ring_size": ring,
                               "tracks_kept": kept}  # fmt: skip
    if "user_agent" in table:
        options["user_agent"] = user_agent_value(table["user_agent"], where)
    return options


def build(spec: Spec, context: Context) -> StationFile:
    key = f"radio:{spec.url}"
    station = context.shared.get(key)
    if isinstance(station, Station):
        station.configure(spec.options)  # the path built last (a reload's) says
        station.http = station.tracks.http = context.http  # and its headers, from now on
    else:
        name = spec.label.rsplit("/", 1)[-1]
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else "mp3"
        station = context.shared[key] = Station(spec.url, context, spec.options, extension)
    return StationFile(station, spec.options["rewind_seconds"])


KIND = Kind(
    name="radio", build=build, check=check,
    keys=frozenset({"rewind_seconds", "ring_size", "tracks_kept", "user_agent"}),
    suffixes=("pls", "xspf"), pinnable=False, noun="station",
)  # fmt: skip


def endless_file(url: str, context: Context) -> StationFile:
    """A station for a URL that turned out to be one (a ``file`` stream whose answer had no
    length and ICY headers): defaults, but no tracks, since no folder would show them."""
    key = f"radio:{url}"
    station = context.shared.get(key)
    if not isinstance(station, Station):  # else a radio path names it and configured it
        options = {**check({}, ""), "tracks_kept": 0}
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else "mp3"
        station = context.shared[key] = Station(url, context, options, extension)
    return StationFile(station, 0.0)
