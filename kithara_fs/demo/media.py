"""Deterministic audio files for the demo and the tests.

Owns: the fixed test signal, the list of demo formats with their ffmpeg encoder settings, the
extension -> MIME type table, and writing those files into a directory.

Must never: touch the network, depend on anything outside the standard library (ffmpeg is an
optional external program), or leave a half-written file under a final name.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Iterable
from pathlib import Path

SAMPLE_RATE = 44100

# Strip metadata and encoder version strings so the same ffmpeg build gives the same bytes.
_BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]

# Every entry names its muxer with -f because encoding goes to a temporary name whose
# extension ffmpeg could not guess from.
FORMATS: dict[str, list[str]] = {
    "wav.wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "cbr.mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"],
    "vbr.mp3": ["-c:a", "libmp3lame", "-q:a", "2", "-f", "mp3"],
    # No +faststart on purpose: the moov atom at the end forces readers to seek to the tail
    # before they can play, which is the access pattern worth testing.
    "aac.m4a": ["-c:a", "aac", "-b:a", "128k", "-f", "mp4"],
    "flac.flac": ["-c:a", "flac", "-f", "flac"],
    "vorbis.ogg": ["-c:a", "libvorbis", "-q:a", "4", "-f", "ogg"],
    "opus.opus": ["-c:a", "libopus", "-b:a", "96k", "-f", "opus"],
}

CONTENT_TYPES: dict[str, str] = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
}

# Two channels that differ, each with a slowly wobbling frequency (written as phase
# modulation so the wobble stays bounded) and a second partial, so that a decoder bug that
# swaps channels, drops a block or loops a buffer shows up as a different waveform.
# No commas: ffmpeg would read them as filter separators.
_LEFT = "0.4*sin(2*PI*330*t-60*cos(PI*t/2))+0.1*sin(2*PI*1250*t)"
_RIGHT = "0.3*sin(2*PI*495*t+40*sin(PI*t/3))+0.15*sin(2*PI*70*t)*(0.6+0.4*sin(PI*t/7))"

_FALLBACK_RATE = 22050
# (low, high) partials in Hz, and a level, for each one-second block of the pure-Python signal.
_FALLBACK_BLOCKS = [
    (220, 1320, 0.5),
    (247, 990, 0.4),
    (262, 1572, 0.55),
    (294, 882, 0.35),
    (330, 1980, 0.45),
    (349, 1047, 0.5),
    (392, 1176, 0.4),
]


def lavfi_signal(duration: float) -> str:
    """The test signal as an ffmpeg ``-f lavfi`` input (for callers that encode it themselves)."""
    return f"aevalsrc=exprs={_LEFT}|{_RIGHT}:c=stereo:s={SAMPLE_RATE}:d={duration:g}"


def ffmpeg_available() -> bool:
    """Whether an ffmpeg executable is on PATH."""
    return shutil.which("ffmpeg") is not None


def content_type_for(name: str) -> str:
    """MIME type for a file name, by extension; generic binary when unknown."""
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def generate(
    directory: Path, duration: float = 150.0, names: Iterable[str] | None = None
) -> dict[str, Path]:
    """Write the demo files into `directory` and return name -> path.

    Files that already exist with a nonzero size are kept as they are, so repeated runs are
    cheap. Without ffmpeg only ``wav.wav`` can be made; other requested names are left out of
    the result rather than failing, so callers can check what they got.
    """
    wanted = list(FORMATS) if names is None else list(names)
    unknown = [name for name in wanted if name not in FORMATS]
    if unknown:
        raise ValueError(f"unknown demo format(s): {', '.join(unknown)}")
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    directory.mkdir(parents=True, exist_ok=True)
    have_ffmpeg = ffmpeg_available()

    result: dict[str, Path] = {}
    for name in wanted:
        target = directory / name
        if target.exists() and target.stat().st_size > 0:
            result[name] = target
            continue
        if not have_ffmpeg and name != "wav.wav":
            continue
        tmp = directory / f".{name}.tmp"
        try:
            if have_ffmpeg:
                _encode(name, tmp, duration)
            else:
                _write_fallback_wav(tmp, duration)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        result[name] = target
    return result


def _encode(name: str, out: Path, duration: float) -> None:
    source = lavfi_signal(duration)
    quiet = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    cmd = ["ffmpeg", *quiet, "-f", "lavfi", "-i", source, *_BITEXACT, *FORMATS[name], str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        tail = proc.stderr.strip()[-2000:] or "(no output)"
        raise RuntimeError(f"ffmpeg failed to encode {name} (exit {proc.returncode}): {tail}")


def _write_fallback_wav(out: Path, duration: float) -> None:
    # Integer frequencies make every one-second block start and end at phase zero, so a few
    # precomputed blocks can be tiled without clicks and without a per-sample Python loop over
    # the whole duration.
    rate = _FALLBACK_RATE
    blocks = [_fallback_block(low, high, level, rate) for low, high, level in _FALLBACK_BLOCKS]
    total_frames = round(duration * rate)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        second = 0
        remaining = total_frames
        while remaining > 0:
            # A stride of 3 through 7 blocks gives a sequence that does not simply ramp up.
            block = blocks[(second * 3) % len(blocks)]
            frames = min(remaining, rate)
            w.writeframes(block[: frames * 2])
            remaining -= frames
            second += 1


def _fallback_block(low: int, high: int, level: float, rate: int) -> bytes:
    """One second of two partials as 16-bit little-endian mono samples."""
    step = 2 * math.pi / rate
    samples = array.array(
        "h",
        (
            int(
                32767 * level * (0.75 * math.sin(low * n * step) + 0.25 * math.sin(high * n * step))
            )
            for n in range(rate)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
