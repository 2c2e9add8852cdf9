"""Episode file names: ``YYYY-MM-DD Title.ext``, safe, unique, and stable across refreshes.

Owns :class:`Namer`: the name of each episode by its guid, made once (from its UTC
publication date, its title with characters unsafe in names replaced, and an extension from
the enclosure URL or type) and then kept for as long as the guid is in the feed, so a
refresh never renames a file a player has open (only the extension follows a new
enclosure's format: that is another file anyway); a second episode with the same name gets
`` (2)``, in date order. Also the extensions of enclosures and of the cover.

It must never produce a name with a slash, a control character, a leading dot, or more
than 255 bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from .channel import AUDIO_SUFFIXES, Episode

MAX_NAME_BYTES = 255
_BY_TYPE = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mp4": "m4a", "audio/x-m4a": "m4a",
    "audio/m4a": "m4a", "audio/aac": "aac", "audio/aacp": "aac", "audio/ogg": "ogg",
    "audio/opus": "opus", "audio/flac": "flac", "audio/x-flac": "flac", "audio/wav": "wav",
    "audio/x-wav": "wav", "audio/wave": "wav", "video/mp4": "mp4",
}  # fmt: skip
_IMAGES = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}


def extension(url: str, mime: str | None) -> str:
    suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    if suffix in AUDIO_SUFFIXES:
        return suffix
    return _BY_TYPE.get(mime or "", "mp3")


_TRANSCRIPTS = {
    "text/vtt": "vtt", "application/srt": "srt", "application/x-subrip": "srt",
    "text/srt": "srt", "application/json": "json", "text/html": "html", "text/plain": "txt",
}  # fmt: skip


def transcript_extension(url: str, mime: str | None) -> str:
    found = _TRANSCRIPTS.get((mime or "").split(";")[0].strip().lower())
    if found is not None:
        return found
    suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    return suffix if suffix in ("vtt", "srt", "json", "html", "txt") else "txt"


def image_extension(url: str) -> str:
    return _IMAGES.get(urlsplit(url).path.rsplit(".", 1)[-1].lower(), "jpg")


def safe(text: str) -> str:
    """Text fit for a file name: separators and control characters replaced, no leading
    dot, no surrounding blanks."""
    text = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in text)
    return text.strip().lstrip(".").strip()


# Room kept for the longest sidecar suffix (".transcript-NN.html" is 20 bytes more than
# ".mp3"), so sidecar names fit in 255 bytes too.
SIDECAR_ROOM = 24


def _fit(stem: str, tail: str) -> str:
    while stem and len(f"{stem}{tail}".encode()) > MAX_NAME_BYTES - SIDECAR_ROOM:
        stem = stem[:-1].rstrip()
    return f"{stem}{tail}"


class Namer:
    """Names by guid, kept across refreshes (and across mounts, through :meth:`known`)."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.names: dict[str, str] = dict(known or {})

    def assign(self, episodes: Iterable[Episode]) -> dict[str, str]:
        """Every episode's name (guid -> name); new guids are named in date order."""
        current = list(episodes)
        guids = {e.guid for e in current}
        # Names of guids that left the feed are free again.
        self.names = {g: n for g, n in self.names.items() if g in guids}
        # Stems, not names: "Show.mp3" and "Show.m4a" would share their sidecars' names.
        taken = {name.rsplit(".", 1)[0] for name in self.names.values()}
        for episode in sorted(current, key=lambda e: (e.published or 0.0)):
            known = self.names.get(episode.guid)
            if known is not None:
                # The stem stays; the extension follows the enclosure (an episode that
                # moved from MP3 to AAC is not shown as .mp3).
                stem, _, old = known.rpartition(".")
                ext = extension(episode.url, episode.mime)
                if ext != old:
                    self.names[episode.guid] = f"{stem}.{ext}"
                continue
            day = (time.strftime("%Y-%m-%d", time.gmtime(episode.published))
                   if episode.published is not None else "undated")  # fmt: skip
            title = safe(episode.title) or "episode"
            ext = extension(episode.url, episode.mime)
            name, count = _fit(f"{day} {title}", f".{ext}"), 1
            while name.rsplit(".", 1)[0] in taken:
                count += 1
                name = _fit(f"{day} {title}", f" ({count}).{ext}")
            self.names[episode.guid] = name
            taken.add(name.rsplit(".", 1)[0])
        return dict(self.names)
