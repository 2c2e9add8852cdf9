"""A kind of stream defined outside kithara_fs, through the public kinds interface alone.

Two toy kinds live in this module and nowhere else: ``tone``, a generated WAV of known
length (a seekable :class:`ByteSource`, cached and read on demand like any file), and
``endless``, a WAV that never ends (a :class:`Sequential` file: each open reads its own
feed, like a radio station). They are registered with ``sources.kinds.register`` by a small
program that embeds kithara_fs (``python -m tests.test_kinds ARGS`` = ``kithara-fs ARGS``
with the toys added), mounted for real, and read with ffmpeg. The oracle is the generated
PCM: what ffmpeg decodes through the mount must equal it, sample for sample.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from kithara_fs.budget import ChangeSignal
from kithara_fs.cache import EntryMeta
from kithara_fs.errors import ConfigError, KitharaError
from kithara_fs.net import ResourceInfo
from kithara_fs.sources import kinds
from kithara_fs.sources.base import (
    ByteSource,
    Context,
    DownloadCursor,
    Feed,
    Kind,
    Sequential,
    Spec,
)

from .conftest import MountFactory, needs_ffmpeg, needs_fuse
from .mounting import clean_env

RATE = 44_100  # mono, 16-bit
ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = [sys.executable, "-m", "tests.test_kinds"]
ENV = clean_env() | {"PYTHONPATH": str(ROOT)}
UNKNOWN = 0xFFFF_FFFF  # a WAV size field meaning "it goes on" (as streaming encoders write)


def pcm(seconds: float, seed: int) -> bytes:
    """Noise, not a tone: a wrong offset or a dropped block cannot look right by accident."""
    return random.Random(seed).randbytes(int(seconds * RATE) * 2)


def wav_header(data_size: int) -> bytes:
    riff = UNKNOWN if data_size == UNKNOWN else 36 + data_size
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))  # fmt: skip


# -- the seekable kind -----------------------------------------------------------------------


class Tone(ByteSource):
    """A generated WAV: its length is known at once, its bytes are "downloaded" on demand."""

    def __init__(self, spec: Spec, context: Context) -> None:
        super().__init__(spec.url, context.http, context.store.entry(spec.url),
                         spec.readahead_seconds)  # fmt: skip
        samples = pcm(spec.options["seconds"], seed=spec.options["seed"])
        self.data = wav_header(len(samples)) + samples

    async def ensure_info(self) -> ResourceInfo:
        if self.length is None:
            self.entry.set_meta(EntryMeta(len(self.data), etag='"tone"',
                                          content_type="audio/wav"))  # fmt: skip
        return ResourceInfo(len(self.data), '"tone"', None, "audio/wav")

    def byte_rate(self) -> float | None:
        return RATE * 2.0

    async def download(self, cursor: DownloadCursor) -> None:
        end = len(self.data)
        while True:
            start = self.first_missing(cursor.pos)
            if start >= min(end, cursor.target):
                return
            self._keep(start, self.data[start : start + 16384], cursor)
            await trio.sleep(0)  # as a download would: let readers in between chunks


def check_tone(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    seconds = table.get("seconds", 6)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 600:
        raise ConfigError(f"{where}seconds: must be a whole number from 1 to 600, not "
                          f"{seconds!r}")  # fmt: skip
    return {"seconds": seconds, "seed": int(table.get("seed", 1))}


TONE = Kind(name="tone", build=Tone, check=check_tone, keys=frozenset({"seconds", "seed"}))


# -- the pipe-like kind ----------------------------------------------------------------------


class EndlessFeed:
    """One open's bytes: a WAV header of unknown size, then the same noise, forever."""

    def __init__(self, label: str, loop: bytes) -> None:
        self.label = label
        self.changed = ChangeSignal()
        self.error: KitharaError | None = None
        self.variant: str | None = None
        self._head = wav_header(UNKNOWN)
        self._loop = loop

    @property
    def min_wait(self) -> float:
        return 0.0

    async def run(self) -> None:
        await trio.sleep_forever()  # nothing to fetch: the bytes are computed on demand

    def read(self, offset: int, size: int) -> bytes | None:
        return endless_bytes(self._head, self._loop, offset, size)

    def has_data_at(self, offset: int) -> bool:
        return True

    def discard(self) -> None:
        return None


def endless_bytes(head: bytes, loop: bytes, offset: int, size: int) -> bytes:
    out = bytearray(head[offset : offset + size])
    position = max(0, offset - len(head))
    while len(out) < size:
        start = position % len(loop)
        piece = loop[start : start + size - len(out)]
        out += piece
        position += len(piece)
    return bytes(out)


class Endless(Sequential):
    def __init__(self, spec: Spec, context: Context) -> None:
        self.shown = spec.url
        self.live = True
        self.loop = pcm(1.5, seed=2)

    def open_feed(self, label: str) -> Feed:
        return EndlessFeed(label, self.loop)


ENDLESS = Kind(name="endless", build=Endless, pinnable=False, noun="endless file")


def register_toys() -> None:
    kinds.register(TONE)
    kinds.register(ENDLESS)


# -- the tests -------------------------------------------------------------------------------


def decode(path: Path, *args: str) -> bytes:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, "-i", str(path),
                           "-f", "s16le", "-acodec", "pcm_s16le", "-"],
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


STREAMS = {
    "toys/tone.wav": {"url": "http://generated.invalid/tone", "kind": "tone", "seconds": 6},
    "toys/radio.wav": {"url": "http://generated.invalid/radio", "kind": "endless"},
}


@needs_fuse
@needs_ffmpeg
def test_a_kind_from_outside_mounts_and_plays(mount: MountFactory) -> None:
    m = mount(STREAMS, command=LAUNCHER, env=ENV)
    tone = m.path("toys/tone.wav")
    samples = pcm(6, seed=1)
    assert tone.stat().st_size == len(samples) + 44
    assert decode(tone) == samples, "the whole file, decoded through the mount"
    seek = decode(tone, "-ss", "2.5", "-t", "1")
    start = int(2.5 * RATE) * 2
    assert len(seek) >= RATE * 2 and seek == samples[start : start + len(seek)], "a seek"
    assert os.getxattr(tone, "user.kithara.state") == b"cached"
    with open(tone, "rb") as f:  # the read contract holds for a toy's file too
        f.seek(len(samples) + 44)
        assert f.read(10) == b"", "EOF at the end"

    radio = m.path("toys/radio.wav")
    assert radio.stat().st_size == 0, "a pipe-like file has no size"
    heard = decode(radio, "-t", "2")
    loop = pcm(1.5, seed=2)
    expected = endless_bytes(b"", loop, 0, len(heard))
    assert len(heard) >= 2 * RATE * 2 and heard == expected, "two seconds of the endless file"
    playlist = m.path("toys/.index.m3u8").read_text()
    assert "tone.wav" in playlist and "radio.wav" not in playlist

    # The shared status schema covers a foreign kind: the status file and `kithara-fs status`.
    rows = {row["path"]: row for row in json.loads(m.path(".kithara/status.json").read_text())
            ["streams"]}  # fmt: skip
    tone_row, radio_row = rows["toys/tone.wav"], rows["toys/radio.wav"]
    assert tone_row["state"] == "cached"
    assert tone_row["size"] == tone_row["cached_bytes"] == len(samples) + 44
    assert radio_row["live"] is True and radio_row["size"] is None
    shown = subprocess.run([*LAUNCHER, "status", str(m.mountpoint)], capture_output=True,
                           text=True, cwd=ROOT, env=ENV, timeout=60)  # fmt: skip
    assert shown.returncode == 0 and "toys/tone.wav" in shown.stdout and "cached" in shown.stdout


def test_a_kind_checks_its_own_keys(tmp_path: Path) -> None:
    for body, cause in [
        ('kind = "tone"\nseconds = 0', "stream 1 (t.wav): seconds: must be a whole number"),
        ('kind = "endless"\nseconds = 5', "stream 1 (t.wav): seconds: not a key of 'endless'"),
        ('kind = "endless"\npin = true', "stream 1 (t.wav): pin: not supported for endless"),
        ('kind = "tone"\nwatts = 5', "stream 1 (t.wav): unknown key 'watts'"),
    ]:
        config = tmp_path / "toys.toml"
        config.write_text(f'[[stream]]\npath = "t.wav"\nurl = "http://generated.invalid/t"\n'
                          f"{body}\n")  # fmt: skip
        done = subprocess.run([*LAUNCHER, "check", str(config)], capture_output=True,
                              text=True, cwd=ROOT, env=ENV, timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and cause in done.stderr, done.stderr


@pytest.mark.parametrize("offset, size", [(0, 10), (40, 20), (44, 5), (10_000, 70_000)])
def test_endless_bytes_are_the_loop_after_the_header(offset: int, size: int) -> None:
    head, loop = b"H" * 44, bytes(range(256)) * 3
    whole = head + loop * 200
    assert endless_bytes(head, loop, offset, size) == whole[offset : offset + size]


if __name__ == "__main__":
    # `python -m tests.test_kinds ARGS`: the kithara-fs command, with the toy kinds added.
    from kithara_fs.cli import main

    register_toys()
    sys.exit(main(sys.argv[1:]))
