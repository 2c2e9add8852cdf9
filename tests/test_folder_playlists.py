"""Acceptance: the hidden ``.index.m3u8`` of every folder, as players use it.

Owns the folder-playlist promises: a player that opens a folder plays each file once (the
playlist is hidden, so it is not played as one more entry), and the playlist itself plays
every entry, mixed formats included, in mpv (and in VLC in ``test_mount_players.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse

pytestmark = [needs_fuse, pytest.mark.skipif(not shutil.which("mpv"), reason="needs mpv")]

# Mixed formats on purpose: ffmpeg's HLS reader refused .opus segments and could not go on
# across formats, which is what the old visible index.m3u8 (an HLS playlist) ran into.
ALBUM = {
    "album/1 first.mp3": "/cbr.mp3",
    "album/2 second.flac": "/flac.flac",
    "album/3 third.opus": "/opus.opus",
    "album/4 fourth.m4a": "/aac.m4a",
    "album/more/5 fifth.ogg": "/vorbis.ogg",
}


def mpv(target: Path) -> tuple[int, str]:
    """Play as fast as null outputs allow; the exit code and everything mpv printed."""
    done = subprocess.run(
        ["mpv", "--no-config", "--ao=null", "--ao-null-untimed", "--vo=null", "--no-video",
         "--length=2", "--msg-level=all=info", str(target)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def played(output: str) -> list[str]:
    """The entries mpv started, in order (its ``Playing: ...`` lines)."""
    return re.findall(r"^Playing: (.*)$", output, re.MULTILINE)


def test_the_playlist_is_hidden_and_lists_every_entry(origin: Origin, mount: MountFactory) -> None:
    m = mount({path: origin.url(url) for path, url in ALBUM.items()})
    folder = m.path("album")
    listing = subprocess.run(["ls", str(folder)], capture_output=True, text=True, check=True)
    assert listing.stdout.split("\n")[:-1] == ["1 first.mp3", "2 second.flac", "3 third.opus",
                                               "4 fourth.m4a", "more"]  # fmt: skip
    assert ".index.m3u8" in os.listdir(folder) and "index.m3u8" not in os.listdir(folder)
    lines = (folder / ".index.m3u8").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    assert not [line for line in lines if line.startswith("#EXT-X")], "a list, not HLS"
    paths = [line for line in lines[1:] if not line.startswith("#")]
    assert paths == ["1 first.mp3", "2 second.flac", "3 third.opus", "4 fourth.m4a",
                     "more/5 fifth.ogg"]  # fmt: skip
    infos = [line for line in lines if line.startswith("#EXTINF:")]
    assert len(infos) == len(paths)
    for info in infos:
        seconds, title = info[len("#EXTINF:"):].split(",", 1)
        assert int(seconds) == -1 or int(seconds) >= 0, info
        assert title
    for path in paths:
        assert (folder / path).is_file(), path
    root = m.path(".index.m3u8").read_text(encoding="utf-8")
    assert "album/more/5 fifth.ogg" in root


def test_mpv_on_a_folder_plays_each_file_once(origin: Origin, mount: MountFactory) -> None:
    m = mount({path: origin.url(url) for path, url in ALBUM.items()})
    code, output = mpv(m.path("album"))
    assert code == 0, output
    names = [os.path.basename(entry) for entry in played(output)]
    audio = [name for name in names if name not in ("album", "more")]
    assert sorted(audio) == sorted(os.path.basename(path) for path in ALBUM), output
    assert not [name for name in names if "m3u8" in name], output


def test_mpv_plays_every_entry_of_a_mixed_playlist(origin: Origin, mount: MountFactory) -> None:
    m = mount({path: origin.url(url) for path, url in ALBUM.items()})
    code, output = mpv(m.path("album/.index.m3u8"))
    # mpv exits 2 when an entry failed to play; every one must have played.
    assert code == 0, output
    entries = [entry for entry in played(output) if not entry.endswith(".index.m3u8")]
    assert [os.path.basename(entry) for entry in entries] == [
        os.path.basename(path) for path in ALBUM], output  # fmt: skip
    assert "error" not in output.lower(), output
