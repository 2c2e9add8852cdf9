"""The kinds table: every kind of stream kithara_fs knows, by the name the config uses.

Owns the one table from ``kind = "..."`` to the :class:`~kithara_fs.sources.base.Kind` that
validates and builds such streams, the choice of kind for a stream that names none (by its
URL's suffix, else ``file``), and :func:`register`, through which a program that embeds
kithara_fs adds kinds of its own before it mounts.

Adding a kind: write its module under ``sources/`` (a ``KIND = Kind(...)`` at the end), then
add it to ``_BUILT_IN`` below. Nothing else in kithara_fs changes.

It must never build anything itself, and never import FUSE or the tree.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from . import hls, podcast, progressive, radio
from .base import Kind

DEFAULT = "file"

_BUILT_IN = (
    progressive.KIND,
    hls.KIND,
    radio.KIND,
    podcast.KIND,
)
_KINDS: dict[str, Kind] = {kind.name: kind for kind in _BUILT_IN}


def register(kind: Kind) -> None:
    """Add a kind (or replace one of the same name) for every config parsed from now on."""
    _KINDS[kind.name] = kind


def find(name: str) -> Kind | None:
    return _KINDS.get(name)


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


def for_url(url: str) -> Kind:
    """The kind a stream without ``kind`` gets: by its URL path's suffix, else a file."""
    suffix = urlsplit(url).path.lower().rsplit(".", 1)[-1]
    for kind in _KINDS.values():
        if suffix in kind.suffixes:
            return kind
    return _KINDS[DEFAULT]
