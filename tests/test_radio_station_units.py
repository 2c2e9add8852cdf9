"""Unit tests of a station's connection, tracks and tree placement, on a fake HTTP client.

Each one is a regression test for a defect a hostile-input review found (a station task
that died and left its readers waiting, a reader count leaked by a failed open, one log
line per reconnect attempt, two tracks in one cache entry, a configured folder swallowed by
a station's tracks folder, a deleted track's index row brought back by a late flush).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from kithara_fs.cache import CacheStore, RingFile
from kithara_fs.config import parse_config
from kithara_fs.errors import OriginError
from kithara_fs.net import HttpClient
from kithara_fs.sources import Context
from kithara_fs.sources.radio import check, endless_file, stations
from kithara_fs.sources.radio.icy import parse_metadata
from kithara_fs.sources.radio.station import Station
from kithara_fs.sources.radio.tracks import Tracks, _file_name
from kithara_fs.tree.nodes import DirNode, ListingNode
from kithara_fs.tree.tree import Tree

from .fakes import streamed

URL = "http://station.test/live.mp3"
FRAME = bytes([0xFF, 0xFB, 0x90, 0x00]) + bytes(413)  # one MP3 frame, 417 bytes


class FakeLive:
    def __init__(self, headers: dict[str, str], chunks: list[bytes]) -> None:
        # As from the wire: raw bytes, which may be any text (httpx decodes them itself).
        self.headers = httpx.Headers([(k.encode(), v.encode()) for k, v in headers.items()])
        self.content_type = headers.get("content-type", "audio/mpeg")
        self.url = URL
        self._chunks = chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            await trio.sleep(0.01)
            yield chunk
        await trio.sleep_forever()


class FakeHttp:
    """``listen`` answers with what ``answer(attempt)`` returns, or raises it."""

    def __init__(self, answer: Callable[[int], FakeLive | OriginError]) -> None:
        self.answer = answer
        self.attempts = 0

    @asynccontextmanager
    async def listen(self, url: str, headers: dict[str, str]) -> AsyncIterator[FakeLive]:
        self.attempts += 1
        found = self.answer(self.attempts)
        if isinstance(found, OriginError):
            raise found
        yield found


def station(http: FakeHttp, store: CacheStore, nursery: trio.Nursery, **options: Any) -> Station:
    context = Context(http, store)  # type: ignore[arg-type]
    context.spawn = lambda name, function: nursery.start_soon(function)
    return Station(URL, context, {**check({}, ""), **options}, "mp3")


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    made = CacheStore(tmp_path / "cache")
    yield made
    made.close()


async def test_an_unusable_metaint_fails_the_readers_instead_of_hanging(
    store: CacheStore, autojump_clock: trio.testing.MockClock
) -> None:
    # "²" is a digit to str.isdigit() and not to int(): the task died, readers waited forever.
    http = FakeHttp(lambda attempt: FakeLive({"icy-metaint": "²"}, [b"x" * 100]))
    async with trio.open_nursery() as nursery:
        radio = station(http, store, nursery)
        radio.attach(0)
        with trio.fail_after(60):
            while radio.fatal is None:
                await trio.sleep(0.5)
        assert "icy-metaint" in radio.fatal.reason
        nursery.cancel_scope.cancel()


async def test_a_failed_start_counts_no_reader(
    store: CacheStore, autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    http = FakeHttp(lambda attempt: FakeLive({}, [FRAME * 4]))
    real_ring = store.ring
    monkeypatch.setattr(store, "ring", lambda size: (_ for _ in ()).throw(OSError("EMFILE")))
    async with trio.open_nursery() as nursery:
        radio = station(http, store, nursery)
        with pytest.raises(OSError):
            radio.attach(0)
        monkeypatch.setattr(store, "ring", real_ring)
        radio.attach(0)
        radio.detach()
        await trio.sleep(10)  # the linger passes: nobody reads, so the connection closes
        assert not radio.connected and radio.ring is None
        nursery.cancel_scope.cancel()


async def test_an_unreachable_station_warns_once_a_minute(
    store: CacheStore, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    refused = OriginError(URL, "connection refused", transient=True)
    http = FakeHttp(lambda attempt: refused)
    caplog.set_level(logging.WARNING, "kithara_fs.sources.radio.station")
    async with trio.open_nursery() as nursery:
        radio = station(http, store, nursery)
        radio.attach(0)
        await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if "not reachable" in r.getMessage()]
    assert http.attempts > 600  # it kept trying, about every 5 s
    assert 55 <= len(warnings) <= 62
    assert radio.fatal is None  # a transient failure is never final


def test_two_tracks_ending_in_one_chunk_keep_their_own_bytes(
    store: CacheStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.0)  # all in one millisecond
    context = Context(None, store)  # type: ignore[arg-type]
    tracks = Tracks(URL, context, 10, "mp3")
    ring = RingFile(tmp_path / "rings", 1 << 20)
    frames = [bytes([0xFF, 0xFB, 0x90, 0x00]) + bytes([i]) * 413 for i in range(12)]
    for index in range(0, 12, 2):  # a new title every two frames, all in one chunk
        tracks.title_changed(index * 417, f"T{index}", cuttable=True)
        ring.append(frames[index] + frames[index + 1])
        tracks.audio(ring)
    ring.append(frames[0])
    tracks.audio(ring)
    kept = {t.name: t.source for t in tracks._done}
    assert len(kept) == 5
    for index in range(0, 10, 2):
        source = next(s for name, s in kept.items() if f" T{index}." in name)
        assert source.read_cached(0, 834) == frames[index] + frames[index + 1]
    ring.close()


def test_a_deleted_track_stays_deleted(store: CacheStore) -> None:
    entry = store.entry(URL + "#track/1-0")
    entry.write(0, b"abc")
    store.forget(URL + "#track/1-0")
    trio.run(entry.flush)  # a flush spawned before the delete, running after it
    assert store.index.get(URL + "#track/1-0") is None


def test_recalled_tracks_are_this_stations_under_safe_names(store: CacheStore) -> None:
    other = store.entry("http://files.test/album/song.flac")
    rows = [{"url": "http://files.test/album/song.flac", "name": "song.mp3", "started": 1.0},
            {"url": URL + "#track/2-0", "name": "../../etc", "started": 2.0}]  # fmt: skip
    store.save_document(f"radio.tracks:{URL}", json.dumps(rows))
    tracks = Tracks(URL, Context(None, store), 10, "mp3")  # type: ignore[arg-type]
    assert tracks._done == [] and other.meta is None


def test_track_names_fit_in_255_bytes() -> None:
    for suffix in ("", " (2)", " (100)", " (12345)"):
        name = _file_name("10.11.12", "é" * 300, "mp3", suffix)
        assert len(name.encode()) <= 255 and name.endswith(f"{suffix}.mp3")
    assert _file_name("10.11.12", "../a/b", "aac", "") == "10.11.12 _a_b.aac"


def test_one_bad_entry_does_not_refuse_a_station_playlist() -> None:
    body = b"http://good.test/s\nhttp://[oops/\n"
    assert stations.stream_urls(body, "http://h/s.m3u") == ["http://good.test/s"]


@pytest.mark.timeout(20)  # a hang guard: the old pattern took 37 s on this line
def test_a_pls_line_of_spaces_is_read_at_once() -> None:
    body = b"[playlist]\nFile1=x" + b" " * 64_000 + b"a\nFile2=http://h/ok\n"
    assert stations.stream_urls(body, "http://h/s.pls") == ["http://h/ok"]


def test_a_block_may_start_with_padding() -> None:
    assert parse_metadata(b"\0\0StreamTitle='x';\0") == {"StreamTitle": "x"}


async def test_a_file_that_is_a_station_records_no_hidden_tracks(store: CacheStore) -> None:
    async with HttpClient() as http:
        file = endless_file("http://u:secret@station.test/a.aac?token=1", Context(http, store))
        assert file.station.tracks.keep == 0 and file.station.tracks.extension == "aac"


@pytest.mark.parametrize("reload", [False, True])
async def test_a_configured_folder_wins_over_a_stations_tracks_folder(
    store: CacheStore, reload: bool
) -> None:
    station_only = parse_config({"stream": [{"path": "radio/x.mp3", "url": URL, "kind": "radio"}]})
    settings = parse_config({"stream": [
        {"path": "radio/x.mp3", "url": URL, "kind": "radio"},
        {"path": "radio/x.tracks/foo.mp3", "url": "http://files.test/foo.mp3"},
    ]})  # fmt: skip
    async with HttpClient() as http:
        tree = Tree(settings, Context(http, store), store, lambda: b"")
        if reload:  # the tracks folder is there first; a reload adds the configured one
            tree.apply(station_only)
            assert isinstance(tree.root.children["radio"].children["x.tracks"], ListingNode)  # type: ignore[union-attr]
        tree.apply(settings)
        folder = tree.root.children["radio"]
        assert isinstance(folder, DirNode)
        tracks = folder.children["x.tracks"]
        assert type(tracks) is DirNode and "foo.mp3" in tracks.children
        assert not isinstance(tracks, ListingNode)
        assert "x.mp3.titles" in folder.children  # the other companion is still there


# -- a podcast episode behind an ad-stitching redirect (also from a hostile-input review) -----


class _Cursor:
    """Just enough of the scheduler's cursor for one download to a fixed target."""

    open_ended = False
    reach = 65536

    def __init__(self, pos: int, target: int) -> None:
        self.pos, self.target = pos, target

    async def wait_for_target(self, beyond: int, patience: float) -> bool:
        return False

    def beside(self, work: Callable[[], Any]) -> None:
        return None


async def test_two_downloads_that_start_together_keep_one_version(
    store: CacheStore, autojump_clock: trio.testing.MockClock
) -> None:
    # The tracker redirects to A or B by turns; both the same length, no validators at all:
    # only where the redirects led tells them apart.
    size = 120_000
    bodies = {"/v/A.mp3": b"A" * size, "/v/B.mp3": b"B" * size}
    turn = [0]

    async def answer(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.01)  # both downloads' requests are out before either answer
        if request.url.path == "/ep.mp3":
            turn[0] += 1
            target = "/v/A.mp3" if turn[0] % 2 else "/v/B.mp3"
            return httpx.Response(302, headers={"Location": f"https://cdn.test{target}"})
        data = bodies[request.url.path]
        first, last = (int(x) for x in request.headers["Range"][6:].split("-"))
        part = data[first : last + 1]
        return httpx.Response(206, content=streamed(part), headers={
            "Content-Range": f"bytes {first}-{first + len(part) - 1}/{size}",
            "Content-Length": str(len(part))})  # fmt: skip

    from kithara_fs.sources.progressive import ProgressiveSource

    async with HttpClient(transport=httpx.MockTransport(answer)) as http:
        url = "https://tracker.test/ep.mp3"
        source = ProgressiveSource(url, http, store.entry(url))
        source.versions_vary = True
        await source.ensure_info()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.download, _Cursor(0, 60_000))
            nursery.start_soon(source.download, _Cursor(60_000, size))
        whole = source.read_cached(0, size)
    assert whole is not None and whole in (bodies["/v/A.mp3"], bodies["/v/B.mp3"])


async def test_a_relisted_name_with_new_content_is_forgotten_and_unpinned(
    store: CacheStore,
) -> None:
    from kithara_fs.sources import Listed
    from kithara_fs.sources.progressive import ProgressiveSource

    settings = parse_config({"stream": [{"path": "cast", "url": URL, "kind": "podcast"}]})
    async with HttpClient() as http:
        tree = Tree(settings, Context(http, store), store, lambda: b"")
        tree.apply(settings)
        folder = tree.root.children["cast"]
        assert isinstance(folder, ListingNode)
        old = ProgressiveSource("http://c/old.mp3", http, store.entry("http://c/old.mp3"))
        new = ProgressiveSource("http://c/new.mp3", http, store.entry("http://c/new.mp3"))
        tree.add_listed(folder, [Listed("ep.mp3", old, keep_whole=True)])
        assert old.pinned
        relisted = tree.add_listed(folder, [Listed("ep.mp3", new)])
        # The same name, another file: the kernel must forget the name, the old pin goes.
        assert relisted.removed == [(folder.inode, "ep.mp3")]
        assert not old.pinned and not new.pinned
