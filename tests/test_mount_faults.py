"""Hostile and flaky origins: readers get correct bytes or a clean error, never wrong ones."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_ffmpeg, needs_fuse, sha256
from .test_mount_errno import raw_pread
from .test_mount_playback import decode_md5

pytestmark = needs_fuse


def range_start(header: str | None) -> int:
    return int(str(header).split("=")[1].split("-")[0])


def read_all(path: Path) -> bytes:
    done = subprocess.run(["cat", str(path)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_connection_dropped_mid_body_resumes(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"x.flac": origin.url("/flac.flac")})
    m.expect_log(r"INFO|retrying")  # retries are logged at INFO; nothing louder is expected
    expected = media_files["flac.flac"].read_bytes()
    assert m.path("x.flac").stat().st_size == len(expected)
    faults = origin.faults("/flac.flac")
    faults.drop_after, faults.drop_count = 100_000, 3
    assert sha256(read_all(m.path("x.flac"))) == sha256(expected)
    gets = [r for r in origin.requests_for("/flac.flac") if r.method == "GET" and r.range]
    # Responses shorter than 100 000 bytes use up a drop without being cut.
    dropped = [r for r in gets if r.body_bytes == 100_000 and r.status == 206]
    assert len(dropped) >= 2, gets
    # Each cut body was followed by a request that resumed inside what it had delivered (at
    # its end, or at the first byte the reader still needed when the client had already
    # stopped reading it), never by one that started over.
    for i, r in enumerate(gets):
        if r not in dropped:
            continue
        start = range_start(r.range)
        later = [range_start(g.range) for g in gets[i + 1 :]]
        assert any(start < s <= start + 100_000 for s in later), (r, later)


def test_503_twice_then_success(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    origin.faults("/vbr.mp3").fail_statuses = [503, 503]
    m = mount({"x.mp3": origin.url("/vbr.mp3")})
    expected = media_files["vbr.mp3"].read_bytes()
    assert sha256(read_all(m.path("x.mp3"))) == sha256(expected)
    statuses = [r.status for r in origin.requests_for("/vbr.mp3")]
    assert statuses[:2] == [503, 503], statuses


def test_503_during_download_then_success(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"x.mp3": origin.url("/vbr.mp3")})
    expected = media_files["vbr.mp3"].read_bytes()
    assert m.path("x.mp3").stat().st_size == len(expected)
    origin.faults("/vbr.mp3").fail_statuses = [503, 503]
    assert sha256(read_all(m.path("x.mp3"))) == sha256(expected)


def test_origin_ignoring_range_still_serves_correct_bytes(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    origin.faults("/wav.wav").ignore_range = True
    m = mount({"x.wav": origin.url("/wav.wav")})
    expected = media_files["wav.wav"].read_bytes()
    fd = os.open(m.path("x.wav"), os.O_RDONLY)
    try:
        # A read far into the file first: the answer must still be the bytes at that offset.
        far = len(expected) - 1_000_000
        assert os.pread(fd, 65536, far) == expected[far : far + 65536]
    finally:
        os.close(fd)
    assert sha256(read_all(m.path("x.wav"))) == sha256(expected)
    assert all(r.status == 200 for r in origin.requests_for("/wav.wav"))


@needs_ffmpeg
def test_origin_ignoring_range_decodes_moov_at_end(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    origin.faults("/aac.m4a").ignore_range = True
    m = mount({"x.m4a": origin.url("/aac.m4a")})
    assert decode_md5(m.path("x.m4a")) == decode_md5(media_files["aac.m4a"])


def test_remote_change_between_reads_is_estale_never_mixed(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    m = mount({"x.flac": origin.url("/flac.flac")}, readahead_seconds=0.1)
    m.expect_log(r"remote changed")
    old = media_files["flac.flac"].read_bytes()
    new = bytes(b ^ 0x5A for b in old)  # same length: only the validator tells them apart
    fd = os.open(m.path("x.flac"), os.O_RDONLY)
    try:
        assert os.pread(fd, 65536, 0) == old[:65536]
        origin.replace("/flac.flac", new)
        far = len(old) // 2
        got = raw_pread(fd, 65536, far)
        assert got in (errno.EIO, errno.ESTALE), got
        # The old handle never continues on the new version, not even for cached bytes.
        assert raw_pread(fd, 65536, 0) in (errno.EIO, errno.ESTALE)
    finally:
        os.close(fd)
    # A new open sees the new version whole.
    assert sha256(read_all(m.path("x.flac"))) == sha256(new)
    ranged = [r for r in origin.requests_for("/flac.flac") if r.range and r.range != "bytes=0-0"]
    assert ranged and all(r.if_range for r in ranged), "ranged reads must carry If-Range"


@pytest.mark.parametrize("status", [404, 403])
def test_permanent_error_is_eio_and_mount_stays_up(
    status: int, origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"bad.mp3": origin.url("/cbr.mp3"), "good.mp3": origin.url("/vbr.mp3")})
    m.expect_log(rf"HTTP {status}")
    assert m.path("bad.mp3").stat().st_size > 0
    origin.faults("/cbr.mp3").fail_statuses = [status] * 10
    with pytest.raises(OSError) as info, open(m.path("bad.mp3"), "rb") as f:
        f.read(4096)
    assert info.value.errno == errno.EIO
    assert read_all(m.path("good.mp3")) == media_files["vbr.mp3"].read_bytes()
