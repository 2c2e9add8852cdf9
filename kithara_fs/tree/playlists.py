"""Generated playlists: a folder's audio entries as a plain extended M3U a player can open.

Owns the text of the hidden ``.index.m3u8`` the mount shows in every folder: ``#EXTM3U``,
then one ``#EXTINF:<seconds>,<title>`` line and one relative path per entry, in UTF-8. It is
a list, not an HLS media playlist: players with an M3U reader (mpv, VLC) play the entries
one after another, whatever their formats. Paths are written as they are, not
percent-encoded: players open local playlist entries as file names.

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
    """The playlist text; -1 seconds stands for a duration not known yet (the extended M3U
    convention), as before the file's headers are cached."""
    lines = ["#EXTM3U"]
    for entry in entries:
        seconds = -1 if entry.seconds is None else max(0, round(entry.seconds))
        # One line whatever the title holds: a newline would start a path line.
        title = " ".join(entry.title.split())
        lines.append(f"#EXTINF:{seconds},{title}")
        path = "/".join(entry.path)
        # A line starting with '#' would read as a tag; './' keeps it a path.
        lines.append(f"./{path}" if path.startswith("#") else path)
    return ("\n".join(lines) + "\n").encode()
