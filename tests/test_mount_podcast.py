"""Podcast feeds through a real mount: a generated feed with the quirks real feeds have.

The feed lies about enclosure lengths, sends an episode through a redirect chain, has
titles with a slash and non-ASCII, two episodes with one title on one date, an item
without an enclosure, several ``itunes:duration`` forms, HTML notes and a channel image.
The oracles: the names the folder must list, the origin's file sizes, the feed's dates,
and ffmpeg's decode of the original files.
"""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory
from .mounting import wait_until
from .test_mount_playback import decode_md5

pytestmark = pytest.mark.timeout(240)

CHAPTERS = b'{"version": "1.2.0", "chapters": [{"startTime": 0, "title": "Intro"}]}'
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")  # fmt: skip


def rfc822(day: str) -> str:
    stamp = calendar.timegm(time.strptime(day, "%Y-%m-%d %H:%M"))
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(stamp))


def item(guid: str, title: str, day: str, url: str | None, mime: str, length: str,
         duration: str, notes: str = "", extra: str = "") -> str:  # fmt: skip
    enclosure = f'<enclosure url="{url}" type="{mime}" length="{length}"/>' if url else ""
    return (f"<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title>"
            f"<pubDate>{rfc822(day)}</pubDate>{enclosure}"
            f"<itunes:duration>{duration}</itunes:duration>"
            f"<description><![CDATA[{notes}]]></description>{extra}</item>")


def feed(origin: Origin, items: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" '
            'xmlns:podcast="https://podcastindex.org/namespace/1.0" '
            'xmlns:psc="http://podlove.org/simple-chapters"><channel>'
            "<title>Test Cast</title><link>http://example.org/</link>"
            f'<itunes:image href="{origin.url("/cover.png")}"/>'
            f"<image><url>{origin.url('/cover.png')}</url><title>Test Cast</title></image>"
            + "".join(items) + "</channel></rss>").encode()  # fmt: skip


@pytest.fixture
def cast(origin: Origin, media_files: dict[str, Path]) -> Origin:
    origin.add("/cover.png", PNG, "image/png")
    origin.add("/again.m4a", media_files["aac.m4a"])
    origin.add("/ep1.json", CHAPTERS, "application/json+chapters")
    origin.add("/ep1.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\nHello\n", "text/vtt")
    origin.add("/ep1.srt", b"1\n00:00:00,000 --> 00:00:01,000\nHello\n", "application/srt")
    sidecars = (
        '<psc:chapters version="1.2"><psc:chapter start="00:00:00.000" title="Intro"/>'
        '<psc:chapter start="00:01:30.500" title="Main &amp; more"/></psc:chapters>'
        f'<podcast:chapters url="{origin.url("/ep1.json")}" type="application/json+chapters"/>'
        f'<podcast:transcript url="{origin.url("/ep1.vtt")}" type="text/vtt"/>'
        f'<podcast:transcript url="{origin.url("/ep1.srt")}" type="application/srt"/>'
    )
    # A tracking redirect chain in front of one episode.
    origin.faults("/track/1").redirect_to = origin.url("/track/2")
    origin.faults("/track/2").redirect_to = origin.url("/aac.m4a")
    items = [
        item("ep-1", "AC/DC – Live ünd laut", "2026-01-05 08:00", origin.url("/cbr.mp3"),
             "audio/mpeg", "0", "1:02:03",
             "<p>First <b>episode</b>.</p><p>Links: <a href='http://example.org/x'>x</a></p>",
             sidecars),
        item("ep-2", "Same Title", "2026-02-10 09:30", origin.url("/track/1"), "audio/mp4",
             "12", "62:03"),
        item("ep-3", "Same Title", "2026-02-10 18:00", origin.url("/again.m4a"), "audio/mp4",
             "999999999", "3723"),
        item("ep-4", "No Audio Here", "2026-03-01 10:00", None, "", "", "5:00"),
        item("ep-5", "Short one", "2026-03-02 10:00", origin.url("/opus.opus"), "audio/opus",
             "1", "3723.5"),
    ]
    origin.add("/feed.xml", feed(origin, items), "application/rss+xml")
    return origin


EXPECTED = {
    "2026-01-05 AC_DC – Live ünd laut.mp3": ("cbr.mp3", "2026-01-05 08:00", 3723.0),
    "2026-02-10 Same Title.m4a": ("aac.m4a", "2026-02-10 09:30", 3723.0),
    "2026-02-10 Same Title (2).m4a": ("aac.m4a", "2026-02-10 18:00", 3723.0),
    "2026-03-02 Short one.opus": ("opus.opus", "2026-03-02 10:00", 3723.5),
}


def test_a_feed_is_a_folder_of_its_episodes(
    cast: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"casts/test": {"url": cast.url("/feed.xml"), "kind": "podcast"}})
    folder = m.path("casts/test")
    names = sorted(os.listdir(folder))
    first = "2026-01-05 AC_DC – Live ünd laut"
    sidecars = [f"{first}.txt", f"{first}.chapters.txt", f"{first}.chapters.json",
                f"{first}.transcript.vtt", f"{first}.transcript-2.srt"]  # fmt: skip
    assert names == sorted([*EXPECTED, *sidecars, "cover.png", ".index.m3u8"])
    assert (folder / ".index.m3u8").read_text().splitlines() == [
        "#EXTM3U", "#EXTINF:3723,AC/DC – Live ünd laut", f"{first}.mp3",
        "#EXTINF:3723,Same Title", "2026-02-10 Same Title.m4a",
        "#EXTINF:3723,Same Title", "2026-02-10 Same Title (2).m4a",
        "#EXTINF:3724,Short one", "2026-03-02 Short one.opus",
    ]  # fmt: skip
    assert (folder / f"{first}.chapters.txt").read_text() == (
        "00:00:00.000 Intro\n00:01:30.500 Main & more\n")
    assert (folder / f"{first}.chapters.json").read_bytes() == CHAPTERS
    assert (folder / f"{first}.transcript.vtt").read_bytes().startswith(b"WEBVTT")
    assert (folder / f"{first}.transcript-2.srt").read_bytes().startswith(b"1\n")
    for name, (original, day, duration) in EXPECTED.items():
        path = folder / name
        info = path.stat()
        assert info.st_size == media_files[original].stat().st_size, name
        assert info.st_mtime == calendar.timegm(time.strptime(day, "%Y-%m-%d %H:%M"))
        assert os.getxattr(path, "user.kithara.duration").decode() == str(duration)
        assert os.getxattr(path, "user.kithara.published").decode() == time.strftime(
            "%Y-%m-%dT%H:%M:00Z", time.strptime(day, "%Y-%m-%d %H:%M"))
    episode = folder / "2026-01-05 AC_DC – Live ünd laut.mp3"
    assert os.getxattr(episode, "user.kithara.guid") == b"ep-1"
    assert os.getxattr(episode, "user.kithara.title").decode() == "AC/DC – Live ünd laut"
    notes = (folder / "2026-01-05 AC_DC – Live ünd laut.txt").read_text()
    assert notes == "First episode.\n\nLinks: x <http://example.org/x>\n"
    assert (folder / "cover.png").read_bytes() == PNG
    window = ("-ss", "100", "-t", "5")
    for name, (original, _, _) in EXPECTED.items():
        assert decode_md5(folder / name, *window) == decode_md5(media_files[original], *window)
        through_chain = len(cast.requests_for("/track/1"))
        assert decode_md5(folder / name) == decode_md5(media_files[original])
        # The redirect chain was followed once; later requests went where it led.
        assert len(cast.requests_for("/track/1")) == through_chain


def test_a_refresh_adds_new_episodes_and_asks_conditionally(
    cast: Origin, mount: MountFactory
) -> None:
    m = mount({"cast": {"url": cast.url("/feed.xml"), "kind": "podcast",
                        "refresh_seconds": 10}})  # fmt: skip
    before = set(os.listdir(m.path("cast")))
    inode = os.stat(m.path("cast/2026-03-02 Short one.opus")).st_ino
    fetches = len(cast.requests_for("/feed.xml"))
    time.sleep(11)
    assert set(os.listdir(m.path("cast"))) == before  # due: refreshed, and nothing changed
    wait_until(lambda: len(cast.requests_for("/feed.xml")) > fetches, "a refresh")
    # Nothing changed: a conditional request, answered 304, and the same files.
    assert [r.status for r in cast.requests_for("/feed.xml")][fetches:] == [304]
    assert os.stat(m.path("cast/2026-03-02 Short one.opus")).st_ino == inode
    new = item("ep-6", "Brand New", "2026-04-01 07:00", cast.url("/cbr.mp3"), "audio/mpeg",
               "0", "10")  # fmt: skip
    cast.replace("/feed.xml", feed(cast, [new]))
    time.sleep(11)
    os.listdir(m.path("cast"))  # a look after the refresh is due
    wait_until(lambda: "2026-04-01 Brand New.mp3" in os.listdir(m.path("cast")),
               "the new episode", seconds=30)  # fmt: skip
    # The episodes that left the feed are gone, for the kernel's name cache too (they were
    # looked up above, and the kernel keeps names for a minute unless told).
    assert not (m.path("cast") / "2026-03-02 Short one.opus").exists()


def test_an_ad_inserting_host_never_mixes_two_versions(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    # Every request gets the other version (other ads: other bytes, another length).
    origin.add("/cover.png", PNG, "image/png")
    origin.add("/ep.mp3", media_files["cbr.mp3"])
    origin.alternate("/ep.mp3", media_files["vbr.mp3"])
    items = [item("ep", "Ads", "2026-05-01 10:00", origin.url("/ep.mp3"), "audio/mpeg", "0", "1")]
    origin.add("/feed.xml", feed(origin, items), "application/rss+xml")
    m = mount({"cast": {"url": origin.url("/feed.xml"), "kind": "podcast"}})
    m.expect_log("retrying in")
    path = m.path("cast/2026-05-01 Ads.mp3")
    versions = {media_files[n].read_bytes() for n in ("cbr.mp3", "vbr.mp3")}
    size = path.stat().st_size
    # A seek first (a new ranged request), then the whole file in order: each request may
    # meet the other version, and the reader must still get one version's bytes only.
    with open(path, "rb", buffering=0) as f:
        f.seek(size // 2)
        middle = f.read(65536)
        f.seek(0)
        whole = bytearray()
        while chunk := f.read(131072):
            whole += chunk
    assert bytes(whole) in versions and len(whole) == size
    assert middle == bytes(whole)[size // 2 : size // 2 + 65536]
    assert len(origin.requests_for("/ep.mp3")) >= 3


def test_a_host_that_never_sends_one_version_twice_plays_and_downloads_whole(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    # Three ad cuts of one episode by turns, each answer under validators never seen before:
    # no ranged request can ever continue a version. The policy (progressive.py): the first
    # version that answers a download is taken, whole from byte 0 on that one request.
    # (Three files stand for three cuts: other bytes, other lengths, each decodable.)
    files = {media_files[name].read_bytes(): media_files[name]
             for name in ("cbr.mp3", "vbr.mp3", "aac.m4a")}  # fmt: skip
    cuts = list(files)
    origin.add("/cover.png", PNG, "image/png")
    # Two episodes, each through a tracking redirect to an ad-stitching address.
    for number in (1, 2):
        origin.add(f"/ep{number}.mp3", cuts[0], "audio/mpeg")
        origin.alternate(f"/ep{number}.mp3", *cuts[1:])
        origin.faults(f"/ep{number}.mp3").fresh_etag = True
        origin.faults(f"/go/{number}.mp3").redirect_to = origin.url(f"/ep{number}.mp3")
    items = [item("ep", "Ads", "2026-05-01 10:00", origin.url("/go/1.mp3"), "audio/mpeg",
                  "0", "1"),
             item("old", "Older", "2026-04-01 10:00", origin.url("/go/2.mp3"), "audio/mpeg",
                  "0", "1")]  # fmt: skip
    origin.add("/feed.xml", feed(origin, items), "application/rss+xml")
    m = mount({"cast": {"url": origin.url("/feed.xml"), "kind": "podcast", "download_latest": 1}})
    m.expect_log("another version")
    path, older = m.path("cast/2026-05-01 Ads.mp3"), m.path("cast/2026-04-01 Older.mp3")
    # Like a player: the middle first, then the whole file in order, on one handle. The
    # newest episode's background download races this reader for the first version.
    with open(older, "rb", buffering=0) as f:
        mid = min(map(len, cuts)) // 2  # inside whichever cut is taken
        f.seek(mid)
        middle = f.read(65536)
        f.seek(0)
        whole = bytearray()
        while chunk := f.read(131072):
            whole += chunk
    assert bytes(whole) in cuts
    assert middle and middle == bytes(whole)[mid : mid + len(middle)]
    # The size shown follows the version taken (an incomplete file's attributes are kept
    # for a second only).
    wait_until(lambda: older.stat().st_size == len(whole), "the size of the version taken")
    # It is cached whole: ffmpeg decodes it like the cut it is, with no request of its own.
    asked = len(origin.requests_for("/ep2.mp3"))
    assert decode_md5(older) == decode_md5(files[bytes(whole)])
    assert len(origin.requests_for("/ep2.mp3")) == asked
    # download_latest converges too: the newest episode ends up cached, as one cut.
    wait_until(lambda: os.getxattr(path, "user.kithara.state") == b"cached",
               "the newest episode downloaded whole")  # fmt: skip
    assert path.read_bytes() in cuts


def test_bad_feeds_leave_an_empty_folder_that_says_why(
    origin: Origin, mount: MountFactory
) -> None:
    origin.add("/page.xml", b"<!DOCTYPE html><html><body>Not found</body></html>", "text/html")
    m = mount({"page": {"url": origin.url("/page.xml"), "kind": "podcast"},
               "gone": {"url": origin.url("/missing.xml"), "kind": "podcast"}})
    m.expect_log("podcast feed not available")
    for name, cause in (("page", "not an RSS or Atom feed"), ("gone", "HTTP 404")):
        assert os.listdir(m.path(name)) == []
        assert cause in os.getxattr(m.path(name), "user.kithara.error").decode()


def test_a_feed_of_5000_episodes_lists(origin: Origin, mount: MountFactory) -> None:
    items = [item(f"g{i}", f"Episode {i}", f"2026-01-{1 + i % 28:02d} 10:00",
                  origin.url("/cbr.mp3"), "audio/mpeg", "0", "60") for i in range(5000)]
    origin.add("/cover.png", PNG, "image/png")
    origin.add("/big.xml", feed(origin, items), "application/rss+xml")
    m = mount({"big": {"url": origin.url("/big.xml"), "kind": "podcast"}})
    names = os.listdir(m.path("big"))
    assert len(names) == 5002 and "2026-01-16 Episode 4999.mp3" in names  # cover, playlist


def test_a_remount_lists_at_once_and_asks_for_the_feed_conditionally(
    cast: Origin, mount: MountFactory, tmp_path: Path
) -> None:
    streams = {"cast": {"url": cast.url("/feed.xml"), "kind": "podcast"}}
    first = mount(streams, cache_dir=tmp_path / "cache", name="first")
    listed = sorted(os.listdir(first.path("cast")))
    first.stop()
    fetches = len(cast.requests_for("/feed.xml"))
    again = mount(streams, cache_dir=tmp_path / "cache", name="again")
    assert sorted(os.listdir(again.path("cast"))) == listed  # from the cache index
    # The feed is fetched again (at once, or at the next look) with the validators the
    # last mount had: unchanged, it costs a 304.
    wait_until(lambda: os.listdir(again.path("cast")) is not None
               and len(cast.requests_for("/feed.xml")) > fetches, "the feed fetched again")
    assert [r.status for r in cast.requests_for("/feed.xml")][fetches:] == [304]
    assert sorted(os.listdir(again.path("cast"))) == listed


def test_an_offline_remount_lists_and_plays_what_was_cached(
    cast: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    streams = {"cast": {"url": cast.url("/feed.xml"), "kind": "podcast"}}
    first = mount(streams, cache_dir=tmp_path / "cache", name="online")
    listed = sorted(os.listdir(first.path("cast")))
    episode = "2026-03-02 Short one.opus"
    assert (first.path("cast") / episode).read_bytes() == media_files["opus.opus"].read_bytes()
    first.stop()
    cast.stop()  # the network is gone
    again = mount(streams, cache_dir=tmp_path / "cache", name="offline")
    again.expect_log("not reachable|size unknown|retrying")
    assert sorted(os.listdir(again.path("cast"))) == listed
    assert (again.path("cast") / episode).read_bytes() == media_files["opus.opus"].read_bytes()
    assert (again.path("cast") / episode).stat().st_size == media_files["opus.opus"].stat().st_size


def test_the_newest_episodes_are_downloaded_whole(cast: Origin, mount: MountFactory) -> None:
    m = mount({"cast": {"url": cast.url("/feed.xml"), "kind": "podcast", "download_latest": 1}})
    folder = m.path("cast")
    names = os.listdir(folder)  # the first look lists the feed
    newest = folder / "2026-03-02 Short one.opus"
    wait_until(lambda: os.getxattr(newest, "user.kithara.state") == b"cached",
               "the newest episode downloaded without a reader")  # fmt: skip
    older = folder / "2026-02-10 Same Title.m4a"
    assert "2026-02-10 Same Title.m4a" in names
    assert int(os.getxattr(older, "user.kithara.cached_bytes")) < older.stat().st_size


def test_a_malformed_feed_lists_what_it_can(origin: Origin, mount: MountFactory) -> None:
    good = item("ok", "Readable", "2026-01-02 10:00", origin.url("/cbr.mp3"), "audio/mpeg",
                "0", "60")  # fmt: skip
    broken = (feed(origin, [good]).replace(b"</channel></rss>", b"")
              + b"<item><title>Cut & <b>unclosed</title><enclosure url=")  # fmt: skip
    origin.add("/cover.png", PNG, "image/png")
    origin.add("/broken.xml", broken, "application/rss+xml")
    m = mount({"cast": {"url": origin.url("/broken.xml"), "kind": "podcast"}})
    assert "2026-01-02 Readable.mp3" in os.listdir(m.path("cast"))


def test_a_private_feeds_token_goes_to_its_host_only(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    token = "feed-token-0b5e2d"
    elsewhere = f"http://localhost:{origin.port}/flac.flac"  # the same server, another origin
    items = [item("a", "At home", "2026-01-05 08:00", origin.url("/cbr.mp3"), "audio/mpeg",
                  "0", "60"),
             item("b", "On the CDN", "2026-01-06 08:00", elsewhere, "audio/flac", "0", "60")]
    origin.add("/private.xml", feed(origin, items), "application/rss+xml")
    origin.add("/cover.png", PNG, "image/png")
    m = mount({"cast": {"url": origin.url("/private.xml"), "kind": "podcast",
                        "headers": {"Authorization": f"Bearer {token}"}}})  # fmt: skip
    folder = m.path("cast")
    home, cdn = folder / "2026-01-05 At home.mp3", folder / "2026-01-06 On the CDN.flac"
    assert home.read_bytes() == media_files["cbr.mp3"].read_bytes()
    assert cdn.read_bytes() == media_files["flac.flac"].read_bytes()
    origin.wait_idle()
    for path in ("/private.xml", "/cbr.mp3"):
        sent = {r.header("Authorization") for r in origin.requests_for(path)}
        assert sent == {f"Bearer {token}"}, path
    assert {r.header("Authorization") for r in origin.requests_for("/flac.flac")} == {None}
    assert token not in m.log_text()
