"""Acceptance: real players read a real mount bit-identically to the original files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_ffmpeg, needs_fuse, sha256

pytestmark = [needs_fuse, needs_ffmpeg]

FORMATS = ["cbr.mp3", "vbr.mp3", "aac.m4a", "flac.flac", "vorbis.ogg", "opus.opus", "wav.wav"]


def decode_md5(path: Path, *seek: str) -> str:
    """ffmpeg's md5 of the decoded audio: the oracle for "plays identically"."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *seek, "-i", str(path), "-f", "md5", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"ffmpeg complained: {done.stderr}"
    assert done.stdout.startswith("MD5="), done.stdout
    return done.stdout.strip()


@pytest.mark.parametrize("name", FORMATS)
def test_decode_through_mount_equals_original(
    name: str, origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({f"music/{name}": origin.url(f"/{name}")})
    mounted = m.path(f"music/{name}")
    assert mounted.stat().st_size == media_files[name].stat().st_size
    # Cold: the seek is the first thing that touches the file, so it lands on missing bytes.
    window = ("-ss", "120", "-t", "10")
    assert decode_md5(mounted, *window) == decode_md5(media_files[name], *window)
    assert decode_md5(mounted) == decode_md5(media_files[name])


def test_cat_and_python_read_give_origin_sha256(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"a/flac.flac": origin.url("/flac.flac"), "b/wav.wav": origin.url("/wav.wav")})
    want_flac = sha256(media_files["flac.flac"].read_bytes())
    cat = subprocess.run(["cat", str(m.path("a/flac.flac"))], capture_output=True, timeout=120)
    assert cat.returncode == 0, cat.stderr
    assert sha256(cat.stdout) == want_flac
    with open(m.path("b/wav.wav"), "rb") as f:
        data = f.read()
    assert sha256(data) == sha256(media_files["wav.wav"].read_bytes())


@pytest.mark.skipif(not shutil.which("mpv"), reason="needs mpv")
def test_mpv_plays_whole_file(origin: Origin, mount: MountFactory) -> None:
    m = mount({"cbr.mp3": origin.url("/cbr.mp3")})
    output = mpv_plays_to_the_end(m.path("cbr.mp3"))
    assert "Header missing" not in output, output


def mpv_plays_to_the_end(path: Path) -> str:
    """Play with null outputs as fast as it can; assert it reached the end without an
    error, and return what it printed."""
    done = subprocess.run(
        ["mpv", "--no-config", "--ao=null", "--ao-null-untimed", "--vo=null", "--no-video",
         "--msg-level=all=info", str(path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "(End of file)" in output, output
    assert "error" not in output.lower(), output
    return output
