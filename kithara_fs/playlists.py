"""Generated M3U8 playlists: a folder's audio entries as a playlist a player can open.

Owns the text of the ``index.m3u8`` files the mount shows in every folder: ``#EXTM3U``, then
one ``#EXTINF:<seconds>,<title>`` line and one relative path per entry. Paths are written as
they are, not percent-encoded: players open local playlist entries as file names (ffmpeg's
file protocol does not decode ``%20``).

It must never look at the network or the cache: it renders what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import PLAYLIST_NAME

__all__ = ["PLAYLIST_NAME", "PlaylistEntry", "render"]


@dataclass(frozen=True)
class PlaylistEntry:
    """One line pair: where the file is (relative to the playlist) and what to call it."""

    path: tuple[str, ...]
    title: str
    seconds: float | None


def render(entries: Iterable[PlaylistEntry]) -> bytes:
    lines = ["#EXTM3U"]
    for entry in entries:
        # -1 is M3U's "unknown"; titles lose commas' meaning after the first, so newlines go.
        seconds = -1 if entry.seconds is None else round(entry.seconds)
        title = " ".join(entry.title.split())
        lines.append(f"#EXTINF:{seconds},{title}")
        path = "/".join(entry.path)
        # A line starting with '#' would read as a tag; './' keeps it a path.
        lines.append(f"./{path}" if path.startswith("#") else path)
    return ("\n".join(lines) + "\n").encode()
