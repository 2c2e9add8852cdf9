"""Radio through a real mount against a real Icecast server (Debian's icecast2), fed by ffmpeg.

Players read the station file as they would any stream (ffmpeg decodes, mpv plays); the
server's own statistics count our listeners; titles are set through its admin interface,
both ways Icecast sends them (UTF-8 passed through, or Latin-1 with ``&#NNNN;`` entities).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MountFactory
from .icecast import Icecast, icecast_available
from .mounting import wait_until

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not icecast_available(), reason="icecast2 missing (./dev installs it)"),
]

MOUNT = "/radio.mp3"
# Icecast's metadata interval for MP3 mounts is 16000 bytes: one second at 128 kbit/s.
SECONDS_PER_INTERVAL = 16000 / 16000


@pytest.fixture
def ice(tmp_path: Path) -> Iterator[Icecast]:
    """A running Icecast (asked for before ``mount``, so mounts go first at teardown)."""
    with Icecast(tmp_path) as server:
        yield server


class Reader(threading.Thread):
    """A blocking reader of a station file in a thread, keeping what it read and when."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = bytearray()
        self.error: BaseException | None = None
        self.eof = False
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with open(self.path, "rb", buffering=0) as f:
                while not self.stop.is_set():
                    chunk = f.read(16384)
                    if not chunk:
                        self.eof = True
                        return
                    self.data += chunk
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> bytes:
        self.stop.set()
        self.join(60)
        assert not self.is_alive(), "a reader hung"
        assert self.error is None and not self.eof, (self.error, self.eof)
        return bytes(self.data)


def title_of(path: Path) -> str | None:
    try:
        return os.getxattr(path, "user.kithara.title").decode()
    except OSError:
        return None


def test_an_icecast_station_plays_and_makes_one_listener(
    ice: Icecast, mount: MountFactory
) -> None:
    ice.start_source(MOUNT)
    m = mount({"fm/test.mp3": {"url": ice.url(MOUNT), "kind": "radio"}})
    station = m.path("fm/test.mp3")
    ffmpeg = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-t", "15", "-i", str(station),
                               "-f", "null", "-"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    mpv = subprocess.Popen(["mpv", "--no-config", "--ao=null", "--vo=null", "--length=5",
                            str(station)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    reader = Reader(station)
    reader.start()
    try:
        wait_until(lambda: len(reader.data) > 16000, "the third reader's first bytes")
        # Three readers (ffmpeg, mpv and this one), one listener at the server. Icecast
        # counts a listener in its source loop and posts the count through its stats queue,
        # so the count can lag the first bytes: wait for it, then check it stays at one.
        wait_until(lambda: ice.listeners(MOUNT) > 0, "icecast to count its listener")
        for _ in range(10):
            assert ice.listeners(MOUNT) == 1
            time.sleep(0.1)
        for title, charset in (("Björk – It's \"Oh\"; So Quiet", "UTF-8"),
                               ("It';s <a&b> ü", None)):  # fmt: skip
            ice.set_title(MOUNT, title, charset=charset)
            asked = time.monotonic()
            # Within one metadata interval; the bound is three, as a hang guard.
            wait_until(lambda t=title: title_of(station) == t, f"title {title!r}",
                       seconds=3 * SECONDS_PER_INTERVAL)  # fmt: skip
            print(f"title shown {time.monotonic() - asked:.2f} s after it was set")
        assert mpv.wait(60) == 0, mpv.stderr.read() if mpv.stderr else ""
        assert ffmpeg.wait(60) == 0
        assert ffmpeg.stderr is not None and ffmpeg.stderr.read() == ""  # no decoder error
    finally:
        for process in (ffmpeg, mpv):
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.finish()
    lines = m.path("fm/test.mp3.titles").read_text().splitlines()
    assert [line.split("\t", 1)[1] for line in lines][-2:] == [
        "Björk – It's \"Oh\"; So Quiet", "It';s <a&b> ü"]  # fmt: skip
    status = subprocess.run([sys.executable, "-m", "kithara_fs", "status", str(m.mountpoint)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert "It';s <a&b> ü" in status.stdout, status.stdout


def test_a_source_restart_gives_a_blocking_reader_more_audio_and_no_eof(
    ice: Icecast, mount: MountFactory
) -> None:
    source = ice.start_source(MOUNT)
    m = mount({"fm/test.mp3": {"url": ice.url(MOUNT), "kind": "radio"}})
    m.expect_log("station connection lost|station not reachable")
    reader = Reader(m.path("fm/test.mp3"))
    reader.start()
    wait_until(lambda: len(reader.data) > 32000, "bytes before the restart")
    ice.stop_source(source)
    stopped_at = len(reader.data)
    ice.start_source(MOUNT, frequency=880)
    wait_until(lambda: len(reader.data) > stopped_at + 48000, "bytes after the restart")
    data = reader.finish()  # no EOF, no error on the way
    assert len(data) > stopped_at + 48000
    error = os.getxattr(m.path("fm/test.mp3"), "user.kithara.error").decode()
    assert error.startswith("gap at ") and "reconnected" in error


def test_rewind_starts_behind_live_and_a_finished_track_is_a_file(
    ice: Icecast, mount: MountFactory
) -> None:
    ice.start_source(MOUNT)
    m = mount({"fm/live.mp3": {"url": ice.url(MOUNT), "kind": "radio"},
               "fm/ago.mp3": {"url": ice.url(MOUNT), "kind": "radio", "rewind_seconds": 10}})
    live = Reader(m.path("fm/live.mp3"))
    live.start()
    try:
        ice.set_title(MOUNT, "Opening")
        wait_until(lambda: title_of(m.path("fm/live.mp3")) == "Opening", "the first title")
        ice.set_title(MOUNT, "The Track")
        started = time.monotonic()
        wait_until(lambda: title_of(m.path("fm/live.mp3")) == "The Track", "the track's title")
        time.sleep(6)
        ice.set_title(MOUNT, "Next One")
        took = time.monotonic() - started
        wait_until(lambda: title_of(m.path("fm/live.mp3")) == "Next One", "the next title")
        time.sleep(max(0.0, 11 - (time.monotonic() - started)))
        edge = len(live.data)
        with open(m.path("fm/ago.mp3"), "rb", buffering=0) as f:
            first = f.read(4096)
    finally:
        data = live.finish()
    # Where the rewound reader starts, in what the live reader got: at least 8 s back.
    at = data.find(first)
    assert at >= 0, "the rewound reader's bytes are not the station's"
    behind = (edge - at) / 16000
    print(f"rewound reader started {behind:.1f} s behind live")
    assert behind >= 8
    # Stored once the audio after the title change's frame arrived (at once, as a rule).
    wait_until(lambda: os.listdir(m.path("fm/live.tracks")), "the finished track")
    tracks = os.listdir(m.path("fm/live.tracks"))
    assert [name.split(" ", 1)[1] for name in tracks] == ["The Track.mp3"], tracks
    track = m.path("fm/live.tracks") / tracks[0]
    assert track.read_bytes() in data
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(track), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert decoded.returncode == 0 and decoded.stderr == ""
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                            "csv=p=0", str(track)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    duration = float(probe.stdout)
    print(f"track of {duration:.2f} s for titles {took:.2f} s apart")
    # Title changes land on metadata intervals (1 s here), at both ends.
    assert abs(duration - took) <= 2 * SECONDS_PER_INTERVAL


def test_an_ogg_station_decodes_for_a_reader_that_joins_late(
    ice: Icecast, mount: MountFactory
) -> None:
    # Icecast gives every new listener an Ogg mount's header pages first; a reader that
    # joins our shared connection later must get them too, or its player cannot decode.
    ice.start_source("/radio.opus", codec="opus")
    m = mount({"fm/opus.ogg": {"url": ice.url("/radio.opus"), "kind": "radio"}})
    station = m.path("fm/opus.ogg")
    first = Reader(station)
    first.start()
    try:
        wait_until(lambda: len(first.data) > 40000, "three seconds of the station")
        for _ in range(2):  # joining late, twice (the second finds the connection lingering)
            decoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-t", "3", "-i",
                                      str(station), "-f", "null", "-"], capture_output=True,
                                     text=True, timeout=60)  # fmt: skip
            assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
        with open(station, "rb") as late:
            head = late.read(4096)
        assert head.startswith(b"OggS") and b"OpusHead" in head[:200]
    finally:
        data = first.finish()
    assert data.startswith(b"OggS") and ice.listeners("/radio.opus") <= 1
