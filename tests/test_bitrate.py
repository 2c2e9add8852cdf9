"""Byte rates from container headers, checked against ffprobe's durations on real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kithara_fs.bitrate import HEAD_BYTES, TAIL_BYTES, bytes_per_second

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
