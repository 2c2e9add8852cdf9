"""Radio through a real mount, against a hostile Shoutcast-style origin on loopback.

The oracle is what the origin sent: the bytes a reader gets must be the station's audio
exactly (metadata removed, nothing added or lost, across a drop in the middle of a
metadata block), and the titles must read as the station meant them (Latin-1 bytes, a
quote and a semicolon inside a title, the largest metadata block).
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MountFactory
from .mounting import wait_until
from .shoutcast_origin import DEFAULT_TITLES, ShoutcastOrigin

pytestmark = pytest.mark.timeout(180)

TITLES = [raw.decode("latin-1") for raw in DEFAULT_TITLES]


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """60 s of 128 kbit/s CBR MP3 noise (no tags), the audio the stations loop: no two
    stretches of it are alike, so where a reader's bytes sit in what was sent is certain."""
    path = tmp_path_factory.mktemp("radio") / "noise.mp3"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "anoisesrc=d=60:c=pink:a=0.2:seed=7", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
         "-write_xing", "0", "-id3v2_version", "0", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


Stations = Callable[..., ShoutcastOrigin]


@pytest.fixture
def stations(mp3: bytes) -> Iterator[Stations]:
    """Start hostile origins: ``stations(drop_after=3)``; closed after the mounts.

    Tests ask for this fixture before ``mount``, so their mounts are unmounted first and
    the station never drops under a running mount at the end of a test.
    """
    started: list[ShoutcastOrigin] = []

    def start(**options: Any) -> ShoutcastOrigin:
        origin = ShoutcastOrigin(mp3, **options)
        origin.start()
        started.append(origin)
        return origin

    try:
        yield start
    finally:
        for origin in started:
            origin.close()


def read_for(path: Path, count: int) -> bytes:
    """The first ``count`` bytes of a station file, read as a player does (blocking)."""
    got = bytearray()
    with open(path, "rb", buffering=0) as f:
        while len(got) < count:
            chunk = f.read(min(65536, count - len(got)))
            assert chunk, f"EOF after {len(got)} bytes of an endless station"
            got += chunk
    return bytes(got)


def xattr(path: Path, name: str) -> str | None:
    try:
        return os.getxattr(path, f"user.kithara.{name}").decode()
    except OSError:
        return None


def titles_logged(path: Path) -> list[str]:
    return [line.split("\t", 1)[1] for line in path.read_text().splitlines()]


def distinct(values: list[str]) -> list[str]:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def test_a_shoutcast_station_reads_as_its_audio_byte_for_byte(
    stations: Stations, mount: MountFactory
) -> None:
    origin = stations(drop_after=3)
    m = mount({"fm/hostile.mp3": {"url": origin.url(), "kind": "radio"}})
    m.expect_log("station connection lost")
    station = m.path("fm/hostile.mp3")
    assert os.stat(station).st_size == 0
    # 3 blocks, then a block cut mid-way: the first connection carries 4 x 8192 audio
    # bytes (and its 32 KiB burst); reading 128 KiB reads well into the second.
    got = read_for(station, 128 * 1024)
    assert origin.connections >= 2
    sent = b"".join(origin.sent_audio)
    assert got == sent[: len(got)]
    assert any(len(block) == 4080 for block in origin.sent_metadata[0])
    request = origin.requests[0]
    assert request["icy-metadata"] == "1" and request["user-agent"] == "KitharaFS/0.1"
    # Titles: as sent (Latin-1 bytes decoded), in order, in the xattr and the log.
    sent_titles = distinct([t.decode("latin-1") for t in origin.sent_titles])
    wait_until(lambda: len(titles_logged(m.path("fm/hostile.mp3.titles"))) >= 3,
               "three titles logged")  # fmt: skip
    logged = titles_logged(m.path("fm/hostile.mp3.titles"))
    assert logged == sent_titles[: len(logged)]
    assert set(logged) <= set(TITLES) and len(set(logged)) == 3
    assert xattr(station, "title") in TITLES
    assert xattr(station, "station") == "Hostile FM"
    assert xattr(station, "genre") == "Test" and xattr(station, "bitrate") == "128"
    assert "gap" in (xattr(station, "error") or "")


def test_three_readers_share_one_connection_that_closes_after_the_last(
    stations: Stations, mount: MountFactory
) -> None:
    origin = stations()
    m = mount({"a/one.mp3": {"url": origin.url(), "kind": "radio"},
               "b/two.mp3": {"url": origin.url(), "kind": "radio", "rewind_seconds": 5}})
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(m.path(p), "rb", buffering=0))
                 for p in ("a/one.mp3", "a/one.mp3", "b/two.mp3")]  # fmt: skip
        got = [f.read(20000) for f in files]
        assert all(got)
        assert origin.connections == 1 and origin.open_connections() == 1
        sent = b"".join(origin.sent_audio)
        for data in got:
            assert data in sent  # each reader: the station's audio, from some frame on
            assert data[0] == 0xFF  # starting on a frame
    # The connection lingers a few seconds for a player that opens again, then closes.
    wait_until(lambda: origin.open_connections() == 0, "the station's connection closed")
    assert origin.connections == 1


def test_a_nonblocking_poll_reader_gets_every_byte(stations: Stations, mount: MountFactory) -> None:
    origin = stations(burst=0)
    m = mount({"fm/s.mp3": {"url": origin.url(), "kind": "radio"}})
    fd = os.open(m.path("fm/s.mp3"), os.O_RDONLY | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got = bytearray()
    eagain = 0
    try:
        while len(got) < 48000:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                eagain += 1
                assert poller.poll(30_000), "poll never said readable"
                continue
            assert chunk, "EOF on an endless station"
            got += chunk
    finally:
        os.close(fd)
    assert eagain > 0  # it did have to wait (16 kB/s, no burst)
    assert bytes(got) == b"".join(origin.sent_audio)[: len(got)]


def test_a_reader_that_falls_out_of_the_ring_is_moved_forward(
    stations: Stations, mount: MountFactory
) -> None:
    # 256 KiB of ring at 96 kB/s: four seconds of audio.
    origin = stations(rate=96000)
    m = mount({"fm/s.mp3": {"url": origin.url(), "kind": "radio", "ring_size": "256K"}})
    m.expect_log("fell behind the station")
    with open(m.path("fm/s.mp3"), "rb", buffering=0) as slow, \
            open(m.path("fm/s.mp3"), "rb", buffering=0) as steady:  # fmt: skip
        first = slow.read(4096)
        steady_bytes = bytearray()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # the other reader is never held back
            steady_bytes += steady.read(65536)
        later = slow.read(4096)
    sent = b"".join(origin.sent_audio)
    assert first and later and first in sent and later in sent
    assert sent.index(later) > sent.index(first) + 256 * 1024
    assert len(steady_bytes) > 400_000 and bytes(steady_bytes) in sent
    assert "fell behind the station" in m.log_text()


def test_finished_tracks_are_files_cut_on_frames(stations: Stations, mount: MountFactory) -> None:
    # A title every three blocks: tracks of 3 x 8192 bytes, give or take a frame.
    origin = stations(title_every=3)
    m = mount({"fm/s.mp3": {"url": origin.url(), "kind": "radio", "tracks_kept": 2}})
    tracks = m.path("fm/s.tracks")
    with open(m.path("fm/s.mp3"), "rb"):
        wait_until(lambda: len(os.listdir(tracks)) == 2 and time.sleep(4) is None
                   and len(os.listdir(tracks)) == 2, "two tracks kept")  # fmt: skip
        names = sorted(os.listdir(tracks))
    sent = b"".join(origin.sent_audio)
    for name in names:
        stamp, title = name.removesuffix(".mp3").split(" ", 1)
        assert title in TITLES and len(stamp) == 8
        data = (tracks / name).read_bytes()
        assert os.stat(tracks / name).st_size == len(data)
        assert abs(len(data) - 3 * 8192) <= 418 and data[0] == 0xFF and data in sent
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tracks / name), "-f",
                                  "null", "-"], capture_output=True, text=True, timeout=60)
        assert decoded.returncode == 0 and decoded.stderr == ""
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "format=duration", "-of", "csv=p=0", str(tracks / name)],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert abs(float(probe.stdout) - 3 * 8192 / 16000) < 0.06


def test_a_web_page_is_never_taken_for_audio(stations: Stations, mount: MountFactory) -> None:
    origin = stations(reject_ua="Mozilla")
    m = mount({"browser.mp3": {"url": origin.url(), "kind": "radio",
                               "user_agent": "Mozilla/5.0 (X11; Linux)"},
               "plain.mp3": {"url": origin.url("/other"), "kind": "radio"}})
    m.expect_log("answered with a web page")
    with open(m.path("browser.mp3"), "rb", buffering=0) as f:
        with pytest.raises(OSError) as caught:
            f.read(4096)
        assert caught.value.errno == errno.EIO
    assert "web page" in (xattr(m.path("browser.mp3"), "error") or "")
    assert origin.requests[0]["user-agent"] == "Mozilla/5.0 (X11; Linux)"
    # Our own User-Agent gets the audio from the same server.
    assert read_for(m.path("plain.mp3"), 8192)[0] == 0xFF


class _Playlist(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-scpls")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def playlist_server() -> Iterator[tuple[http.server.ThreadingHTTPServer, type[_Playlist]]]:
    handler = type("Handler", (_Playlist,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_pls_whose_first_entry_is_dead_plays_from_its_second(
    stations: Stations, mount: MountFactory,
    playlist_server: tuple[http.server.ThreadingHTTPServer, type[_Playlist]],
) -> None:  # fmt: skip
    server, handler = playlist_server
    origin = stations()
    dead = f"http://127.0.0.1:{free_port()}/stream"
    handler.body = (f"[playlist]\nNumberOfEntries=2\nFile1={dead}\nTitle1=dead relay\n"
                    f"File2={origin.url()}\nTitle2=live relay\nVersion=2\n").encode()
    url = f"http://127.0.0.1:{server.server_address[1]}/station.pls"
    m = mount({"fm/relayed.mp3": url})  # a .pls URL is a station without saying so
    m.expect_log("station not reachable")
    got = read_for(m.path("fm/relayed.mp3"), 32768)
    assert got == b"".join(origin.sent_audio)[: len(got)]
    assert origin.connections == 1


def test_a_file_stream_that_is_a_station_plays_as_an_endless_file(
    stations: Stations, mount: MountFactory
) -> None:
    origin = stations()
    m = mount({"fm/plain.mp3": origin.url("/live.mp3")})  # no kind: a file, until probed
    path = m.path("fm/plain.mp3")
    assert os.stat(path).st_size == 0
    got = read_for(path, 40000)
    # The size probe had a connection of its own; the station's asked for metadata.
    listening = [i for i, r in enumerate(origin.requests) if r.get("icy-metadata") == "1"]
    assert len(listening) == 1
    assert got == origin.sent_audio[listening[0]][: len(got)]
    assert "internet radio station" in m.log_text()


def test_a_stations_headers_reach_its_server_and_nowhere_visible(
    stations: Stations, mount: MountFactory, tmp_path: Path
) -> None:
    origin = stations()
    (tmp_path / "token").write_text("radio-token-5e1c\n")
    m = mount({"a.mp3": {"url": origin.url("/a"), "kind": "radio",
                         "headers": {"Authorization": f"@file:{tmp_path / 'token'}"}}})  # fmt: skip
    read_for(m.path("a.mp3"), 1000)
    asked = [r for r in origin.requests if r]
    assert asked and {r.get("authorization") for r in asked} == {"radio-token-5e1c"}
    assert [r for r in asked if r.get("icy-metadata") == "1"], "the station's own connection"
    shown = [m.log_text()] + [f"{n}={os.getxattr(m.path('a.mp3'), n)!r}"
                              for n in os.listxattr(m.path("a.mp3"))]  # fmt: skip
    assert "radio-token-5e1c" not in "\n".join(shown)


def test_the_network_user_agent_goes_to_every_station(
    stations: Stations, mount: MountFactory
) -> None:
    origin = stations()
    m = mount({"a.mp3": {"url": origin.url("/a"), "kind": "radio"},
               "b.mp3": {"url": origin.url("/b"), "kind": "radio", "user_agent": "Own/2"}},
              network={"user_agent": "TestPlayer/1.0"})  # fmt: skip
    read_for(m.path("a.mp3"), 1000)
    read_for(m.path("b.mp3"), 1000)
    agents = {line.split()[1]: r["user-agent"]
              for line, r in zip(origin.request_lines, origin.requests, strict=True)}
    assert agents == {"/a": "TestPlayer/1.0", "/b": "Own/2"}
