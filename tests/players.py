"""Test helper: the audio players of the player matrix, each decoding a file to PCM.

Owns, per player: the command line that decodes one file to a deterministic PCM output
(raw samples or a WAV, never resampled or dithered), which of the test formats it reads,
what in its console output is harmless start-up noise, and how it is skipped where it is
missing. ``decode`` runs one and returns the sha256 and size of what it wrote, failing on a
non-zero exit, on any complaint in its console output, and on an output too short to be
the whole file.

VLC refuses to run as root, so as root it runs as ``nobody`` (``setpriv``); the mount it
reads then needs ``--allow-other`` (see ``mount_args``), and the files it reads, and
every folder above them, must be readable by nobody. It writes its WAV to stdout, so its
output lands where the test process (root) puts it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The media of the matrix, as conftest's media_files names them.
FORMATS = ["cbr.mp3", "vbr.mp3", "aac.m4a", "flac.flac", "vorbis.ogg", "opus.opus", "wav.wav"]
# An output shorter than this many bytes per second of audio is not a whole decode: 16-bit
# stereo at 44.1 kHz, the least any player here writes for the test signal.
MIN_BYTES_PER_SECOND = 44100 * 2 * 2
PLAYER_TIMEOUT = 180

# libsndfile through python-soundfile: frames as float32, in blocks, to the output file.
_SOUNDFILE_SCRIPT = (
    "import sys\n"
    "import soundfile\n"
    "with soundfile.SoundFile(sys.argv[1]) as f, open(sys.argv[2], 'wb') as out:\n"
    "    while len(block := f.buffer_read(65536, dtype='float32')):\n"
    "        out.write(block)\n"
)

# VLC at --verbose=0 prints its errors ("[0x…] module error: …") and info lines (the
# decoder it chose, a demuxer's remark on the content); only errors count. Its warnings,
# off at that level, are about the content (the original's too) and its missing home.
_VLC_COMPLAINT = r"^\[[0-9a-f]+\] .* error: "
_VLC_NOISE = (
    # No global-hotkeys module without X11: libvlc says so at every start.
    r"\] main interface error: no suitable interface module$",
    r'\] main libvlc error: interface "globalhotkeys,none" initialization failed$',
)


def runs_as_other_user() -> bool:
    """Whether VLC is run as nobody (we are root, which VLC refuses to be)."""
    return os.geteuid() == 0


def mount_args() -> list[str]:
    """The options of `kithara-fs mount` for a mount that VLC reads: --allow-other as root."""
    return ["--allow-other"] if runs_as_other_user() else []


def as_nobody() -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def nobody_env() -> dict[str, str]:
    home = pwd.getpwnam("nobody").pw_dir
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Decoded:
    """What a player wrote for one file: enough to tell two decodes apart."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Player:
    name: str
    # Programs that must be on PATH for it to run.
    programs: tuple[str, ...]
    # The media names it reads (FORMATS minus what it has no reader for).
    formats: frozenset[str]
    # (source, output) -> command; a player that writes to stdout leaves `output` out.
    command: Callable[[Path, Path], list[str]]
    to_stdout: bool = False
    # Runs as nobody when we are root (VLC).
    other_user: bool = False
    # A console line counts as a complaint if it matches this (every non-blank line when
    # None), unless it also matches one of `noise`.
    complaint: str | None = None
    noise: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # Python modules it needs in this interpreter
    _noise: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _complaint: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_noise", tuple(re.compile(p) for p in self.noise))
        object.__setattr__(self, "_complaint", re.compile(self.complaint or r"\S"))

    def missing(self) -> list[str]:
        what = [p for p in self.programs if shutil.which(p) is None]
        what += [m for m in self.modules if importlib.util.find_spec(m) is None]
        if self.other_user and runs_as_other_user():
            what += [] if shutil.which("setpriv") else ["setpriv"]
            try:
                pwd.getpwnam("nobody")
            except KeyError:
                what.append("a user named nobody")
        return what

    def skip_mark(self) -> pytest.MarkDecorator:
        missing = self.missing()
        return pytest.mark.skipif(bool(missing), reason=f"{self.name} needs {', '.join(missing)}")

    def errors(self, console: str) -> list[str]:
        """The complaints in a player's console output: each one fails the decode."""
        return [line for line in console.splitlines() if self._complaint.search(line)
                and not any(p.search(line) for p in self._noise)]  # fmt: skip

    def decode(self, source: Path, output: Path, *, seconds: float) -> Decoded:
        """Decode `source` into `output`; return its digest, then delete it.

        `seconds` is how long the audio is; an output shorter than nearly that fails.
        """
        command = self.command(source, output)
        env = None
        if self.other_user and runs_as_other_user():
            command, env = [*as_nobody(), *command], nobody_env()
        output.unlink(missing_ok=True)
        if self.to_stdout:
            with open(output, "wb") as out:
                done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, env=env,
                                      stdin=subprocess.DEVNULL, timeout=PLAYER_TIMEOUT)
            raw = done.stderr
        else:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=env, stdin=subprocess.DEVNULL, timeout=PLAYER_TIMEOUT)
            raw = done.stdout
        console = raw.decode(errors="replace")
        assert done.returncode == 0, f"{self.name} exited {done.returncode} on {source}:\n{console}"
        errors = self.errors(console)
        assert not errors, f"{self.name} complained about {source}:\n" + "\n".join(errors)
        assert output.exists(), f"{self.name} wrote nothing for {source}"
        digest = hashlib.sha256()
        size = 0
        with open(output, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                size += len(block)
        output.unlink()
        least = int((seconds - 1) * MIN_BYTES_PER_SECOND)
        assert size >= least, f"{self.name} decoded {size} bytes of {source}, want >= {least}"
        return Decoded(digest.hexdigest(), size)


def _ffmpeg(source: Path, output: Path) -> list[str]:
    return ["ffmpeg", "-nostdin", "-v", "error", "-i", str(source), "-map", "0:a",
            "-c:a", "pcm_f32le", "-f", "f32le", "-y", str(output)]  # fmt: skip


def _mpv(source: Path, output: Path) -> list[str]:
    # ao=pcm writes as fast as the decoder goes; the samples as decoded (float), no header.
    return ["mpv", "--no-config", "--msg-level=all=warn", "--vo=null", "--no-video",
            "--ao=pcm", f"--ao-pcm-file={output}", "--ao-pcm-waveheader=no",
            "--", str(source)]  # fmt: skip


def _sox(source: Path, output: Path) -> list[str]:
    # -R: repeatable, -D: no dither (both keep the output a pure function of the input);
    # -V2: failures and warnings only.
    return ["sox", "-R", "-D", "-V2", str(source), "-t", "wav", str(output)]


def _gstreamer(source: Path, output: Path) -> list[str]:
    # audioconvert dithers by default (randomly): off, so the output is deterministic.
    return ["gst-launch-1.0", "-q", "filesrc", f"location={source}", "!", "decodebin", "!",
            "audioconvert", "dithering=none", "noise-shaping=none", "!",
            "audio/x-raw,format=S16LE", "!", "filesink", f"location={output}"]  # fmt: skip


def _vlc(source: Path, output: Path) -> list[str]:
    # --verbose=0: errors and info, no warnings. The transcode to 16-bit PCM in WAV goes
    # to stdout (dst=-).
    return ["cvlc", "--verbose=0", "--no-dbus", "--aout=dummy", "--no-video", str(source),
            "--sout", "#transcode{acodec=s16l}:std{access=file,mux=wav,dst=-}",
            "vlc://quit"]  # fmt: skip


def _soundfile(source: Path, output: Path) -> list[str]:
    return [sys.executable, "-c", _SOUNDFILE_SCRIPT, str(source), str(output)]


_ALL = frozenset(FORMATS)

PLAYERS = [
    Player("ffmpeg", ("ffmpeg",), _ALL, _ffmpeg),
    Player("mpv", ("mpv",), _ALL, _mpv),
    # sox has no MP4 reader, and Debian's sox is built without Opus (libopusfile): it
    # answers "no handler for file extension `m4a'" / "no handler for detected file type
    # `opus'".
    Player("sox", ("sox",), _ALL - {"aac.m4a", "opus.opus"}, _sox),
    Player("gstreamer", ("gst-launch-1.0",), _ALL, _gstreamer),
    Player("vlc", ("cvlc",), _ALL, _vlc, to_stdout=True, other_user=True,
           complaint=_VLC_COMPLAINT, noise=_VLC_NOISE),
    # libsndfile has no MP4 reader ("Format not recognised"); its wheel reads MP3 and Opus.
    Player("soundfile", (), _ALL - {"aac.m4a"}, _soundfile, modules=("soundfile",)),
]
PLAYER = {p.name: p for p in PLAYERS}
