"""A podcast feed, read: the channel's cover and every episode that has audio.

Owns turning an RSS or Atom document into a :class:`Channel` with feedparser (maintained,
and tolerant of the malformed XML feeds often are): for each item with an audio enclosure
its guid, title, publication date (UTC), enclosure URL and type, duration (every form
``itunes:duration`` takes: seconds, ``MM:SS``, ``HH:MM:SS``, fractions) and show notes as
plain text. ``<enclosure length>`` is never read: hosts get it wrong (0, seconds, 8x), and
sizes come from the origin.

It must never fetch anything, and never keep a URL that is not http(s).
"""

from __future__ import annotations

import calendar
import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeXml
import feedparser
from defusedxml import DefusedXmlException

# Enclosure types and URL suffixes that are audio.
AUDIO_SUFFIXES = ("mp3", "m4a", "m4b", "aac", "ogg", "oga", "opus", "flac", "wav", "mp4")
_DURATION = re.compile(r"^(?:(\d{1,3}):)?(?:(\d{1,3}):)?(\d{1,7}(?:\.\d{1,6})?)$")
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
# Notes longer than this are cut (they end up in a sidecar file and in memory).
MAX_NOTES = 64 * 1024
MAX_TITLE = 300


@dataclass(frozen=True)
class Episode:
    """One item with audio.

    Attributes:
        guid: its identity across refreshes (the guid, else the enclosure URL).
        title: its title, one line.
        published: seconds since the epoch (UTC), if the feed dates it.
        url: the enclosure's URL.
        mime: the enclosure's type, if given.
        duration: seconds, if ``itunes:duration`` says.
        notes: the show notes as plain text ("" when none).
        chapters: the URL of its ``podcast:chapters`` file, if any.
        chapter_marks: its ``psc:chapters`` as text, one ``HH:MM:SS title`` line each.
        transcripts: (URL, type) of each ``podcast:transcript``.
    """

    guid: str
    title: str
    published: float | None
    url: str
    mime: str | None
    duration: float | None
    notes: str
    chapters: str | None = None
    chapter_marks: str = ""
    transcripts: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Channel:
    title: str
    image: str | None
    episodes: tuple[Episode, ...]


def parse_duration(value: Any) -> float | None:
    """``itunes:duration`` in seconds: "3723", "62:03", "1:02:03", "3723.5"; None if junk."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value.strip())
    if match is None:
        return None
    first, second, last = match.groups()
    parts = [int(p) for p in (first, second) if p is not None]
    seconds = float(last)
    for index, part in enumerate(reversed(parts)):
        seconds += part * 60 ** (index + 1)
    return seconds


class _Text(HTMLParser):
    """HTML as plain text: block elements end lines, links keep their address."""

    BLOCKS = frozenset({"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "tr",
                        "blockquote", "pre", "hr"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self._href:
            text = "".join(self.parts[-1:])
            if self._href not in text:
                self.parts.append(f" <{self._href}>")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


# A "<" that no ">" closes before the next "<": text, not the start of a tag.
_LONE_LT = re.compile(r"<(?![^<>]*>)")
_DECLARATION = re.compile(r"<![A-Za-z][^<>]*>")


def _defused(markup: str) -> str:
    """``markup`` that HTMLParser reads in linear time and without tripping on it.

    Comments are removed (an unclosed one, and all after it, stays text), declarations
    (``<!DOCTYPE html>``) too, and every other ``<!`` (``<![`` sections: HTMLParser
    asserts on odd ones) is written as text, as is every "<" that no ">" closes before
    the next "<". HTMLParser takes an unclosed tag for one that may still end, and at the
    end reads on one character at a time from each such "<": quadratic, so that 15 KB of
    ``<a <a <a`` cost 4 s of CPU and 60 KB over a minute (measured here).
    """
    kept: list[str] = []
    pos = 0
    while (start := markup.find("<!--", pos)) != -1:
        kept.append(markup[pos:start])
        end = markup.find("-->", start + 4)
        if end == -1:  # no comment closes from here on: the rest is text
            pos = start
            break
        pos = end + 3
    kept.append(markup[pos:])
    text = _DECLARATION.sub("", "".join(kept)).replace("<!", "&lt;!")
    return _LONE_LT.sub("&lt;", text)


def html_to_text(markup: str) -> str:
    """Show notes as text: tags gone, entities resolved, blank runs folded."""
    parser = _Text()
    try:
        parser.feed(_defused(markup[: MAX_NOTES * 4]))
        parser.close()
    except Exception:  # HTMLParser's own slips on markup it did not expect
        return plain_text(re.sub(r"<[^<>]*>", " ", markup[: MAX_NOTES * 4]))
    return plain_text("".join(parser.parts))


def plain_text(text: str) -> str:
    """Notes that are text already: blank runs folded, cut at :data:`MAX_NOTES`."""
    lines = [" ".join(line.split()) for line in text[: MAX_NOTES * 4].splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()[:MAX_NOTES]


def _one_line(text: str) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _http(url: str | None, base: str) -> str | None:
    if not url:
        return None
    try:
        absolute = urljoin(base, url.strip())
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if any(ord(ch) < 33 for ch in absolute):
        return None
    return absolute


def _enclosure(entry: Any, base: str) -> tuple[str, str | None] | None:
    for link in entry.get("links", []):
        if link.get("rel") != "enclosure":
            continue
        url = _http(link.get("href"), base)
        if url is None:
            continue
        mime = (link.get("type") or "").split(";")[0].strip().lower() or None
        suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
        if (mime or "").startswith("audio/") or suffix in AUDIO_SUFFIXES:
            return url, mime
    return None


def _published(entry: Any) -> float | None:
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if stamp is None:
        return None
    try:
        return float(calendar.timegm(stamp))
    except (TypeError, ValueError, OverflowError):
        return None


def _notes(entry: Any) -> str:
    for content in entry.get("content", []):
        if content.get("value"):
            return _as_text(content["value"], content.get("type"))
    detail = entry.get("summary_detail")
    kind = detail.get("type") if isinstance(detail, dict) else None
    return _as_text(entry.get("summary", "") or "", kind)


def _as_text(value: str, kind: Any) -> str:
    # Text that says it is plain (Atom type="text") is not read as HTML: "a <!-- b" stays.
    return plain_text(value) if kind == "text/plain" else html_to_text(value)


def _chapter_marks(entry: Any) -> str:
    """``psc:chapters`` (Podlove simple chapters) as lines of start time and title."""
    found = entry.get("psc_chapters")
    chapters = found.get("chapters") if isinstance(found, dict) else None
    lines = []
    for chapter in chapters if isinstance(chapters, list) else []:
        start = _one_line(str(chapter.get("start") or ""))[:20]
        title = _one_line(str(chapter.get("title") or ""))[:MAX_TITLE]
        if start:
            lines.append(f"{start} {title}".rstrip())
    return "\n".join(lines)


def _transcripts(body: bytes, base: str) -> dict[str, list[tuple[str, str | None]]]:
    """Every ``podcast:transcript`` of each item, by guid (feedparser keeps only the last
    one). Read again with defusedxml, so only from a well-formed feed."""
    try:
        root = SafeXml.fromstring(body)
    except (ParseError, DefusedXmlException, ValueError):
        return {}
    found: dict[str, list[tuple[str, str | None]]] = {}
    for item in root.iter("item"):
        guid = (item.findtext("guid") or "").strip()
        if not guid:
            enclosure = item.find("enclosure")
            guid = _http(enclosure.get("url") if enclosure is not None else None, base) or ""
        for element in item.iter(f"{{{PODCAST_NS}}}transcript"):
            url = _http(element.get("url"), base)
            if url is not None and guid:
                found.setdefault(guid, []).append((url, element.get("type")))
    return found


def parse(body: bytes, base: str) -> Channel:
    """The channel and its audio episodes, in feed order.

    Raises:
        ValueError: it is not a feed at all (an HTML page, a broken download), with why.
    """
    if b"<!ENTITY" in body[:65536]:
        # Entity declarations: feeds need none, and expansion is a CPU and memory bomb.
        raise ValueError("the feed declares XML entities (refused)")
    # No base for feedparser: it would resolve guids against it too (a guid is a name, not
    # a link); enclosure and image URLs are resolved here instead.
    try:
        parsed = feedparser.parse(body, sanitize_html=True, resolve_relative_uris=False)
    except Exception as exc:  # feedparser's own slips (a chapter without start: TypeError)
        raise ValueError(f"unreadable feed ({type(exc).__name__}: {exc})"[:300]) from None
    version = parsed.get("version") or ""
    if not version and not parsed.entries:
        reason = parsed.get("bozo_exception")
        raise ValueError(f"not an RSS or Atom feed{f' ({reason})' if reason else ''}"[:300])
    episodes = []
    namespaces = parsed.get("namespaces", {}).values()
    transcripts = _transcripts(body, base) if PODCAST_NS in namespaces else {}
    seen: set[str] = set()
    repeats: dict[str, int] = {}
    for entry in parsed.entries:
        found = _enclosure(entry, base)
        if found is None:
            continue
        url, mime = found
        # Without a guid, the URL identifies it, hashed: it may carry credentials or a token,
        # and the guid is shown. A long or repeated guid is made unique the same way.
        raw_guid = str(entry.get("id") or "")
        guid = raw_guid if raw_guid and len(raw_guid) <= 1000 else (
            "sha256:" + hashlib.sha256((raw_guid or url).encode()).hexdigest()[:32])
        if guid in seen:  # numbered: appending "#2" until unique was cubic in repeats
            repeats[guid] = number = repeats.get(guid, 1) + 1
            while f"{guid}#{number}" in seen:
                number += 1
            guid = f"{guid}#{number}"
        seen.add(guid)
        title = _one_line(str(entry.get("title") or ""))[:MAX_TITLE]
        chapters = entry.get("podcast_chapters")
        chapters_url = _http(chapters.get("url"), base) if isinstance(chapters, dict) else None
        episodes.append(Episode(
            guid, title, _published(entry), url, mime,
            parse_duration(entry.get("itunes_duration")), _notes(entry), chapters_url,
            _chapter_marks(entry), tuple(transcripts.get(guid, ())),
        ))  # fmt: skip
    feed = parsed.get("feed", {})
    image = feed.get("image", {}).get("href") if isinstance(feed.get("image"), dict) else None
    return Channel(_one_line(str(feed.get("title") or ""))[:MAX_TITLE], _http(image, base),
                   tuple(episodes))  # fmt: skip


def to_json(channel: Channel) -> dict[str, Any]:
    """The channel as JSON-ready data (:func:`from_json` reads it back)."""
    return {"title": channel.title, "image": channel.image,
            "episodes": [e.__dict__ for e in channel.episodes]}  # fmt: skip


def from_json(body: dict[str, Any]) -> Channel:
    """A channel from :func:`to_json`'s data.

    Raises:
        ValueError, KeyError, TypeError: it is not such data.
    """
    episodes = tuple(
        Episode(**{**row, "transcripts": tuple(tuple(t) for t in row["transcripts"])})
        for row in body["episodes"]
    )
    image = body.get("image")
    return Channel(str(body["title"]), image if isinstance(image, str) else None, episodes)
