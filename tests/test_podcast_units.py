"""Unit tests of the podcast layers alone: reading feeds, durations, notes and names."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from kithara_fs.cache import CacheStore
from kithara_fs.config import parse_config
from kithara_fs.errors import ConfigError
from kithara_fs.net import Fetched
from kithara_fs.sources import Context
from kithara_fs.sources.podcast.channel import Episode, html_to_text, parse, parse_duration
from kithara_fs.sources.podcast.listing import EPISODE_KEY, PodcastListing
from kithara_fs.sources.podcast.names import Namer, extension
from kithara_fs.sources.podcast.worker import parse_apart

BASE = "http://feeds.test/show/feed.xml"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("3723", 3723.0), ("62:03", 3723.0), ("1:02:03", 3723.0), ("01:02:03", 3723.0),
     ("3723.5", 3723.5), ("0:00:07.25", 7.25), (" 90 ", 90.0), ("", None), ("1h", None),
     ("abc", None), (None, None), ("1:2:3:4", None)],
)  # fmt: skip
def test_itunes_durations_in_every_form(raw: Any, seconds: float | None) -> None:
    assert parse_duration(raw) == seconds


def test_notes_are_plain_text() -> None:
    markup = ("<p>Hello <b>world</b> &amp; more.</p><script>x()</script>"
              "<ul><li>one</li><li>two</li></ul><a href='http://a/'>link</a>")  # fmt: skip
    assert html_to_text(markup) == "Hello world & more.\n\none\n\ntwo\n\nlink <http://a/>"


def test_notes_keep_lone_angle_brackets_and_drop_comments() -> None:
    assert html_to_text("a < b and c > d<!-- hidden --> <i>ok</i>") == "a < b and c > d ok"
    assert html_to_text("<!DOCTYPE html>a <!-- never closed <b>x</b>") == (
        "a <!-- never closed x")
    assert html_to_text("<![x> and <!x") == "<![x> and <!x"  # HTMLParser asserted on these


# A hang guard, not a speed check: HTMLParser took minutes over notes like these, and the
# parse holds the GIL, so the whole mount slowed with it.
@pytest.mark.timeout(30)
def test_notes_made_to_be_slow_to_parse_are_read_in_linear_time() -> None:
    for markup in ("<a " * 40_000, "<x" * 40_000, '<a b="<' * 40_000, "<!--" * 40_000):
        assert len(html_to_text(markup)) <= len(markup)


def rss(items: str, extra: str = "") -> bytes:
    return (f'<?xml version="1.0"?><rss version="2.0" '
            f'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel>'
            f"<title>Show</title>{extra}{items}</channel></rss>").encode()  # fmt: skip


def test_a_feed_lists_its_audio_items_only() -> None:
    body = rss(
        "<item><guid>a</guid><title>One</title><pubDate>Mon, 05 Jan 2026 08:00:00 GMT</pubDate>"
        '<enclosure url="media/one.mp3" length="0" type="audio/mpeg"/></item>'
        "<item><guid>b</guid><title>Text only</title></item>"
        '<item><title>No guid</title><enclosure url="http://cdn.test/x?id=2" type="audio/mp4"/>'
        "</item>"
        '<item><guid>c</guid><enclosure url="file:///etc/passwd" type="audio/mpeg"/></item>'
        '<item><guid>d</guid><enclosure url="http://cdn.test/v.mp4" type="video/mp4"/></item>',
        '<image><url>http://img.test/c.png</url></image>')  # fmt: skip
    channel = parse(body, BASE)
    assert channel.title == "Show" and channel.image == "http://img.test/c.png"
    assert [(e.guid, e.url, e.mime) for e in channel.episodes] == [
        ("a", "http://feeds.test/show/media/one.mp3", "audio/mpeg"),
        ("sha256:310a0b9371150ecd2622edc41eb2d8e0", "http://cdn.test/x?id=2", "audio/mp4"),
        ("d", "http://cdn.test/v.mp4", "video/mp4"),
    ]
    assert channel.episodes[0].published == 1767600000.0


def test_a_malformed_feed_still_lists_what_it_can() -> None:
    body = rss('<item><guid>a</guid><title>Broken &amp unescaped < </title>'
               '<enclosure url="http://cdn.test/a.mp3" type="audio/mpeg"/></item>'
               "<item><guid>b</guid")  # fmt: skip
    episodes = parse(body, BASE).episodes
    assert [e.guid for e in episodes][:1] == ["a"]


def test_a_web_page_is_not_a_feed() -> None:
    with pytest.raises(ValueError, match="not an RSS or Atom feed"):
        parse(b"<!DOCTYPE html><html><body><h1>Hello</h1></body></html>", BASE)


def test_a_feed_of_thousands_of_items_parses() -> None:
    items = "".join(
        f'<item><guid>g{i}</guid><title>Episode {i}</title>'
        f"<pubDate>Mon, 05 Jan 2026 08:00:00 GMT</pubDate>"
        f'<enclosure url="http://cdn.test/{i}.mp3" type="audio/mpeg"/></item>'
        for i in range(5000)
    )
    assert len(parse(rss(items), BASE).episodes) == 5000


def episode(guid: str, title: str, day: str | None, url: str = "http://c/a.mp3") -> Episode:
    published = None if day is None else float(time.mktime(time.strptime(day, "%Y-%m-%d"))
                                                - time.timezone)  # fmt: skip
    return Episode(guid, title, published, url, None, None, "")


def test_names_are_dated_safe_unique_and_stable() -> None:
    namer = Namer()
    first = namer.assign([episode("a", "AC/DC: live", "2026-01-05"),
                          episode("b", "Same", "2026-02-10"),
                          episode("c", "Same", "2026-02-10"),
                          episode("d", "..hidden", None, "http://c/x")])  # fmt: skip
    assert first == {"a": "2026-01-05 AC_DC: live.mp3", "b": "2026-02-10 Same.mp3",
                     "c": "2026-02-10 Same (2).mp3", "d": "undated hidden.mp3"}  # fmt: skip
    # A refresh where b left the feed and a new one arrived: c keeps its name.
    again = namer.assign([episode("c", "Same", "2026-02-10"),
                          episode("e", "Same", "2026-02-10")])  # fmt: skip
    assert again == {"c": "2026-02-10 Same (2).mp3", "e": "2026-02-10 Same.mp3"}
    # An enclosure that moved to another format: the stem stays, the extension follows.
    moved = namer.assign([episode("c", "Same", "2026-02-10", "http://c/c.m4a")])
    assert moved == {"c": "2026-02-10 Same (2).m4a"}
    long = Namer().assign([episode("x", "é" * 400, "2026-01-01")])["x"]
    assert len(long.encode()) <= 255 and long.endswith(".mp3")


def test_extensions_come_from_the_url_then_the_type() -> None:
    assert extension("http://c/a.m4a?x=1", "audio/mpeg") == "m4a"
    assert extension("http://c/stream", "audio/ogg") == "ogg"
    assert extension("http://c/stream", None) == "mp3"


def test_podcast_keys_are_checked() -> None:
    stream = {"path": "cast", "url": "http://h/feed.xml", "kind": "podcast"}
    assert parse_config({"stream": [stream]}).streams[0].option_map == {
        "refresh_seconds": 3600.0, "download_latest": 0}  # fmt: skip
    for key, value in (("refresh_seconds", 1), ("keep_latest", 0), ("keep_latest", True),
                       ("download_latest", -1)):  # fmt: skip
        with pytest.raises(ConfigError, match=f"stream 1 \\(cast\\): {key}"):
            parse_config({"stream": [{**stream, key: value}]})


# -- found by a hostile-input review --------------------------------------------------------


def test_a_guidless_item_shows_no_secret_of_its_url() -> None:
    body = rss('<item><title>Bonus</title><enclosure type="audio/mpeg" '
               'url="https://listener:hunter2@cdn.test/b.mp3?token=SECRET"/></item>')  # fmt: skip
    (only,) = parse(body, BASE).episodes
    assert only.guid.startswith("sha256:") and "hunter2" not in only.guid
    assert "SECRET" not in only.guid


def test_repeated_and_huge_guids_stay_apart() -> None:
    items = "".join(f'<item><guid>{g}</guid><enclosure url="http://c/{i}.mp3" type="audio/mpeg"/>'
                    "</item>" for i, g in enumerate(["same", "same", "x" * 2000]))  # fmt: skip
    guids = [e.guid for e in parse(rss(items), BASE).episodes]
    assert len(set(guids)) == 3 and all(len(g) <= 1000 for g in guids)


def test_entity_declarations_are_refused() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">]>'
            b"<rss><channel><title>&a;</title></channel></rss>")  # fmt: skip
    with pytest.raises(ValueError, match="entities"):
        parse(bomb, BASE)


def test_a_feedparser_slip_is_a_one_line_error() -> None:
    body = rss('<item><guid>a</guid><enclosure url="http://c/a.mp3" type="audio/mpeg"/>'
               '<psc:chapters><psc:chapter title="no start"/></psc:chapters></item>'
               ).replace(b"<rss ", b'<rss xmlns:psc="http://podlove.org/simple-chapters" ')
    try:
        parse(body, BASE)
    except ValueError as exc:
        assert "\n" not in str(exc)


def test_sidecars_of_two_episodes_never_share_a_name() -> None:
    names = Namer().assign([episode("a", "Show", "2026-01-05", "http://c/a.mp3"),
                            episode("b", "Show", "2026-01-05", "http://c/b.m4a"),
                            episode("c", "ü" * 200, "2026-01-05")])  # fmt: skip
    stems = [n.rsplit(".", 1)[0] for n in names.values()]
    assert len(set(stems)) == 3
    assert all(len(f"{stem}.transcript-2.html".encode()) <= 255 for stem in stems)


class _TokenFeeds:
    """An HTTP client whose feed gives every episode a URL with a new token per fetch, as
    some hosts' tracking does."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self, url: str, limit: int, known: Any) -> Fetched:
        self.fetches += 1
        items = "".join(
            f"<item><guid>g{i}</guid><title>T{i}</title><description>notes {self.fetches}"
            f'</description><enclosure url="http://cdn.test/{i}.mp3?t={self.fetches}" '
            'type="audio/mpeg"/></item>' for i in range(3))  # fmt: skip
        return Fetched(rss(items), url)


async def test_refreshes_keep_no_sources_or_notes_of_what_left_the_feed(
    tmp_path: Path,
) -> None:
    store = CacheStore(tmp_path / "cache")
    try:
        context = Context(_TokenFeeds(), store)  # type: ignore[arg-type]
        listing = PodcastListing(BASE, "cast", context, {"refresh_seconds": 10.0})
        for _ in range(4):
            listed = await listing.load()
        assert sorted(f.name for f in listed if f.name.endswith(".mp3")) == [
            "undated T0.mp3", "undated T1.mp3", "undated T2.mp3"]  # fmt: skip
        del listed
        gc.collect()
        # The newest fetch's three episodes (their URLs carry its token) and nothing older.
        episodes = context.shared[EPISODE_KEY]
        assert sorted(s.url for s in episodes.values()) == [
            f"http://cdn.test/{i}.mp3?t=4" for i in range(3)]  # fmt: skip
        assert not any(url.startswith("http://cdn.test/") for url in context.sources)
        assert sorted(key for key in listing._notes) == [
            ("notes", "g0"), ("notes", "g1"), ("notes", "g2"), ("playlist", "")]  # fmt: skip
    finally:
        store.close()


async def test_a_feed_is_parsed_in_a_worker_that_is_stopped_when_it_runs_over() -> None:
    limiter = trio.CapacityLimiter(2)
    body = rss('<item><guid>a</guid><title>One</title><enclosure url="one.mp3" '
               'type="audio/mpeg"/></item>')  # fmt: skip
    assert await parse_apart(body, BASE, limiter) == parse(body, BASE)
    with pytest.raises(ValueError, match="not an RSS or Atom feed"):
        await parse_apart(b"<html><body>gone</body></html>", BASE, limiter)
    # One element with 40,000 attributes: feedparser spent 34 s of CPU on it here (the SAX
    # layer looks each up by a linear scan). Stopped after its 2 s, the mount unharmed.
    bomb = rss("<item><x " + " ".join(f"a{i}='1'" for i in range(40_000)) + "/></item>")
    with pytest.raises(ValueError, match="more than a feed may"):
        await parse_apart(bomb, BASE, limiter, cpu_seconds=2)


@pytest.mark.timeout(60)  # a hang guard: appending "#2" until unique took 118 s for 8,000
def test_repeated_guids_are_numbered_once_each() -> None:
    items = "".join(f'<item><guid>same</guid><title>T{i}</title><enclosure url="{i}.mp3" '
                    'type="audio/mpeg"/></item>' for i in range(8000))  # fmt: skip
    guids = [e.guid for e in parse(rss(items), BASE).episodes]
    assert guids[:3] == ["same", "same#2", "same#3"] and len(set(guids)) == 8000
