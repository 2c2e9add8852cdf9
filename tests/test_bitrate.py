"""Byte rates from container headers, checked against ffprobe's durations on real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kithara_fs.bitrate import HEAD_BYTES, TAIL_BYTES, bytes_per_second, reads_the_end

from .conftest import needs_ffmpeg
from .test_mount_playback import FORMATS


@needs_ffmpeg
@pytest.mark.parametrize("name", FORMATS)
def test_duration_from_headers_matches_ffprobe(name: str, media_files: dict[str, Path]) -> None:
    data = media_files[name].read_bytes()
    rate = bytes_per_second(data[:HEAD_BYTES], data[-TAIL_BYTES:], len(data))
    assert rate is not None
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(media_files[name])],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(data) / rate == pytest.approx(float(probe.stdout), abs=0.1)


@pytest.mark.parametrize(
    "head",
    [b"", b"RIFF\x00\x00\x00\x00WAVE", b"fLaC\x00", b"OggS" + b"\x00" * 50, b"\xff" * 64,
     b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", b"\x00\x00\x00\x18ftypmp42" + b"mvhd" + b"\x00" * 5,
     bytes(range(256)) * 40],
)  # fmt: skip
def test_hostile_or_unknown_headers_are_unknown_not_errors(head: bytes) -> None:
    assert bytes_per_second(head, head[-100:], 10_000_000) is None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x04\x00" + bytes(100), True),  # ID3v1/APE at the end
        (b"\xff\xfb\x90\x00" + bytes(100), True),  # a bare MPEG frame
        (b"OggS" + bytes(100), True),  # the last page holds the duration
        (b"\x00\x00\x00\x20ftypM4A " + bytes(24) + b"\x00\x00\x10\x00mdat", True),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(24) + b"\x00\x00\x10\x00moov", False),
        (b"RIFF\x00\x00\x00\x00WAVE", False),
        (b"fLaC" + bytes(100), False),
        (bytes(range(256)), False),  # unrecognised: nothing to look for at the end
        (b"", False),
    ],
)
def test_reads_the_end(head: bytes, expected: bool) -> None:
    assert reads_the_end(head) is expected
