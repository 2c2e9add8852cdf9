"""The bounded, persistent cache through a real mount: eviction, pins, revalidation."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse, sha256
from .mounting import wait_until
from .test_mount_faults import read_all

pytestmark = needs_fuse


def cached(path: Path) -> int:
    return int(os.getxattr(path, "user.kithara.cached_bytes"))


def index_total(cache: Path) -> int:
    db = sqlite3.connect(cache / "v2" / "index.sqlite3")
    try:
        return int(db.execute("SELECT COALESCE(SUM(cached_bytes), 0) FROM resources")
                   .fetchone()[0])  # fmt: skip
    finally:
        db.close()



def test_eviction_keeps_cache_bounded_and_spares_open_streams(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    names = ["cbr.mp3", "vbr.mp3", "aac.m4a", "opus.opus", "vorbis.ogg"]
    sizes = {n: media_files[n].stat().st_size for n in names}
    limit = sizes["cbr.mp3"] + max(sizes[n] for n in names[1:]) + 100_000
    cache = tmp_path / "cache"
    m = mount({n: origin.url(f"/{n}") for n in names}, cache={"max_size": limit},
              readahead_seconds=0.1)  # fmt: skip
    m.expect_log(r"over max_size")  # possible while the open stream alone fills the cache
    with open(m.path("cbr.mp3"), "rb") as held:
        assert sha256(held.read()) == sha256(media_files["cbr.mp3"].read_bytes())
        for name in names[1:]:
            assert sha256(read_all(m.path(name))) == sha256(media_files[name].read_bytes())
            # The open stream is never evicted underneath its reader.
            assert cached(m.path("cbr.mp3")) == sizes["cbr.mp3"]
        held.seek(0)
        assert sha256(held.read()) == sha256(media_files["cbr.mp3"].read_bytes())
    # Eviction runs in the background, woken by the downloads' index saves.
    wait_until(lambda: index_total(cache) <= limit, "cache back under max_size")
    # The earliest closed streams made room: at least one was evicted whole.
    assert any(cached(m.path(n)) == 0 for n in names[1:])


def test_pinned_stream_completes_in_background_and_stays(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    pinned_size = media_files["flac.flac"].stat().st_size
    others = ["cbr.mp3", "vbr.mp3", "aac.m4a"]
    limit = pinned_size + max(media_files[n].stat().st_size for n in others) + 100_000
    m = mount(
        {"keep.flac": {"url": origin.url("/flac.flac"), "pin": True},
         **{n: origin.url(f"/{n}") for n in others}},
        cache={"max_size": limit}, readahead_seconds=0.1,
    )  # fmt: skip
    # Nobody reads it: the pin alone downloads it.
    wait_until(lambda: cached(m.path("keep.flac")) == pinned_size, "pinned file complete")
    for name in others:
        read_all(m.path(name))
    assert cached(m.path("keep.flac")) == pinned_size
    assert "pinned and complete" in m.log_text()
    origin.stop()  # the pinned copy plays with the origin gone
    assert sha256(read_all(m.path("keep.flac"))) == sha256(media_files["flac.flac"].read_bytes())


def test_open_revalidates_and_serves_a_republished_file(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"ep.mp3": origin.url("/cbr.mp3")})
    old = media_files["cbr.mp3"].read_bytes()
    assert sha256(read_all(m.path("ep.mp3"))) == sha256(old)
    new = old[::-1] + b"republished"
    origin.replace("/cbr.mp3", new)
    # The check is rate-limited to once a minute per file; the first open after mount did
    # it, so this mount would serve the cached copy until then. A remount checks at open.
    assert m.stop() == 0
    again = mount({"ep.mp3": origin.url("/cbr.mp3")}, name="again")
    assert sha256(read_all(again.path("ep.mp3"))) == sha256(new)
    assert again.path("ep.mp3").stat().st_size == len(new)
