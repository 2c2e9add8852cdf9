"""Station playlists: the stream URLs a ``.pls``, ``.m3u`` or ``.xspf`` file lists.

Owns recognising a station playlist (by its URL's suffix or its Content-Type) and reading
the http(s) URLs out of one, in order: PLS ``FileN=`` entries by N, M3U lines that are not
comments, XSPF ``<location>`` elements. Relative entries are resolved against the
playlist's own URL. XML is read with defusedxml (entity expansion and external entities
refused: the file comes from a server we do not control).

It must never fetch anything itself, and never return a URL of another scheme.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeXml
from defusedxml import DefusedXmlException

# A station playlist is a few lines; more than this is not one.
MAX_PLAYLIST_BYTES = 64 * 1024
# Relays beyond the first few are never reached in practice.
MAX_ENTRIES = 32
SUFFIXES = ("pls", "m3u", "m3u8", "xspf")
CONTENT_TYPES = (
    "audio/x-scpls", "audio/scpls", "audio/x-mpegurl", "audio/mpegurl",
    "application/x-mpegurl", "application/vnd.apple.mpegurl", "application/xspf+xml",
)  # fmt: skip
# No lazy repetition before a "\s*$": a line of spaces would make that quadratic.
_PLS_FILE = re.compile(r"^\s*file([0-9]{1,4})\s*=(.*)$", re.IGNORECASE)


def is_playlist_url(url: str) -> bool:
    return urlsplit(url).path.lower().rsplit(".", 1)[-1] in SUFFIXES


def is_playlist_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in CONTENT_TYPES


def stream_urls(body: bytes, base: str) -> list[str]:
    """The stream URLs of a station playlist, in the order to try them.

    Raises:
        ValueError: it lists no http(s) URL, or is not a playlist at all.
    """
    text = body.decode("utf-8", errors="replace").lstrip("\ufeff")
    head = text.lstrip()[:64].lower()
    if head.startswith("[playlist]"):
        found = _pls(text)
    elif head.startswith("<"):
        found = _xspf(text)
    else:
        found = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    urls: list[str] = []
    for entry in found:
        try:
            url = urljoin(base, entry.strip())
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            usable = False
        if usable and url not in urls and not any(ord(ch) < 33 for ch in url):
            urls.append(url)
        if len(urls) == MAX_ENTRIES:
            break
    if not urls:
        raise ValueError("the station playlist lists no http(s) stream")
    return urls


def _pls(text: str) -> list[str]:
    numbered = []
    for line in text.splitlines():
        match = _PLS_FILE.match(line)
        if match:
            numbered.append((int(match.group(1)), match.group(2).strip()))
    return [url for _, url in sorted(numbered, key=lambda pair: pair[0])]


def _xspf(text: str) -> list[str]:
    try:
        root = SafeXml.fromstring(text)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise ValueError(f"not a readable XSPF playlist: {exc}") from None
    return [element.text or "" for element in root.iter()
            if element.tag.rsplit("}", 1)[-1] == "location"]  # fmt: skip
