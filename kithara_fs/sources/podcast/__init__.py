"""The podcast kind: an RSS or Atom feed as a folder of episodes, refreshed by itself.

Owns what the kinds table needs of podcasts: the config keys (``refresh_seconds``,
``keep_latest``, ``download_latest``), and building a feed's
:class:`~.listing.PodcastListing`. The parts: ``channel`` reads a feed, ``names`` names
episodes, ``listing`` makes the folder's files.

It must never speak FUSE or choose errnos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..base import Context, Kind, Spec
from .listing import PodcastListing

# Hourly: new episodes appear within the hour, and a conditional request an hour per feed
# costs a host nothing.
DEFAULT_REFRESH_SECONDS = 3600.0
MIN_REFRESH_SECONDS = 10.0
MAX_SECONDS = 86400.0 * 7


def check(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The kind's own keys, validated (``where`` starts every error message)."""
    refresh = table.get("refresh_seconds", DEFAULT_REFRESH_SECONDS)
    if (isinstance(refresh, bool) or not isinstance(refresh, int | float)
            or not MIN_REFRESH_SECONDS <= refresh <= MAX_SECONDS):  # fmt: skip
        raise ConfigError(f"{where}refresh_seconds: must be a number of seconds from "
                          f"{MIN_REFRESH_SECONDS:.0f} to {MAX_SECONDS:.0f}, not {refresh!r}")
    options: dict[str, Any] = {"refresh_seconds": float(refresh)}
    if "keep_latest" in table:
        keep = table["keep_latest"]
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 100_000:
            raise ConfigError(f"{where}keep_latest: must be a whole number of at least 1, "
                              f"not {keep!r}")  # fmt: skip
        options["keep_latest"] = keep
    download = table.get("download_latest", 0)
    if isinstance(download, bool) or not isinstance(download, int) or not 0 <= download <= 10_000:
        raise ConfigError(f"{where}download_latest: must be a whole number from 0 to 10000, "
                          f"not {download!r}")  # fmt: skip
    options["download_latest"] = download
    return options


def build(spec: Spec, context: Context) -> PodcastListing:
    return PodcastListing(spec.url, spec.label, context, dict(spec.options))


KIND = Kind(
    name="podcast", build=build, check=check,
    keys=frozenset({"refresh_seconds", "keep_latest", "download_latest"}),
    pinnable=False, noun="podcast folder",
)  # fmt: skip
