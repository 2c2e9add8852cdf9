"""The persistent cache: after a remount with the origin gone, cached files still work."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse, sha256
from .test_mount_faults import range_start, read_all
from .test_mount_playback import decode_md5

pytestmark = needs_fuse


def test_remount_with_origin_stopped_serves_cached_file(
    mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "persistent-cache"
    expected = media_files["vorbis.ogg"].read_bytes()
    with Origin() as origin:
        origin.add("/v.ogg", media_files["vorbis.ogg"])
        url = origin.url("/v.ogg")
        first = mount({"radio/v.ogg": url}, cache_dir=cache, name="first")
        assert sha256(read_all(first.path("radio/v.ogg"))) == sha256(expected)
        assert first.stop() == 0
    # The origin is gone now: connections to its port are refused.
    second = mount({"radio/v.ogg": url}, cache_dir=cache, name="second")
    listing = second.path("radio/v.ogg").stat()
    assert listing.st_size == len(expected)
    assert sha256(read_all(second.path("radio/v.ogg"))) == sha256(expected)
    if shutil.which("ffmpeg"):  # and it plays: decoded bit-identically, with a seek
        window = ("-ss", "100", "-t", "20")
        assert decode_md5(second.path("radio/v.ogg"), *window) == decode_md5(
            media_files["vorbis.ogg"], *window
        )
    # The index on disk is what made this possible: one entry, complete, for this URL.
    db = sqlite3.connect(cache / "v2" / "index.sqlite3")
    rows = db.execute("SELECT url, ranges, length FROM resources").fetchall()
    db.close()
    assert rows == [(url, f"[[0,{len(expected)}]]", len(expected))]


def test_partial_cache_survives_restart_and_is_not_refetched(
    mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "persistent-cache"
    expected = media_files["wav.wav"].read_bytes()
    with Origin() as origin:
        origin.add("/w.wav", media_files["wav.wav"])
        url = origin.url("/w.wav")
        first = mount({"w.wav": url}, cache_dir=cache, name="first", readahead_seconds=0.1)
        with open(first.path("w.wav"), "rb") as f:
            assert f.read(1_000_000) == expected[:1_000_000]
        assert first.stop() == 0
        origin.clear_log()
        second = mount({"w.wav": url}, cache_dir=cache, name="second", readahead_seconds=0.1)
        assert sha256(read_all(second.path("w.wav"))) == sha256(expected)
        fetched = [r for r in origin.requests_for("/w.wav") if r.method == "GET"]
        # One conditional check of the cached version at open (a 1-byte request), and no
        # request for the first megabyte again.
        checks = [r for r in fetched if r.range == "bytes=0-0"]
        downloads = [r for r in fetched if r.range != "bytes=0-0"]
        assert len(checks) == 1 and checks[0].body_bytes <= 1
        assert downloads, "the rest of the file had to be downloaded"
        starts = [range_start(r.range) for r in downloads]
        assert min(starts) >= 1_000_000, starts
