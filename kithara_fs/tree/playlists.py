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

from ..config import PLAYLIST_NAME

__all__ = ["PLAYLIST_NAME", "PlaylistEntry", "render"]


@dataclass(frozen=True)
class PlaylistEntry:
    """One line pair: where the file is (relative to the playlist) and what to call it."""

    path: tuple[str, ...]
    title: str
    seconds: float | None


def render(entries: Iterable[PlaylistEntry]) -> bytes:
    """The playlist text.

    The ``EXT-X`` tags (target duration, VOD, end list) make it a complete HLS media
    playlist, which is what ffmpeg (and players built on it) need to play it as one
    continuous stream; players with their own M3U parser read the same file as a list.
    """
    items = list(entries)
    # HLS wants a non-negative duration; 0 stands for "not known yet" (headers not cached).
    seconds = [max(0, round(e.seconds)) if e.seconds is not None else 0 for e in items]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max([1, *seconds])}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for entry, duration in zip(items, seconds, strict=True):
        title = " ".join(entry.title.split())
        lines.append(f"#EXTINF:{duration},{title}")
        path = "/".join(entry.path)
        # A line starting with '#' would read as a tag; './' keeps it a path.
        lines.append(f"./{path}" if path.startswith("#") else path)
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()
