"""Acceptance: the player matrix. Real players decode a cold mount behind a throttled link
exactly as they decode the local original.

Owns: for every player of tests/players.py (ffmpeg, mpv, sox, GStreamer, VLC as an
unprivileged user on an --allow-other mount, libsndfile through python-soundfile) and every
test format it reads, that its PCM of the mounted file has the same sha256 as its PCM of
the original; for VLC and GStreamer, the same for HLS variant files (MPEG-TS and fMP4)
against the concatenation of their plain segments, twice in a row; and that each player's
digest does change when one byte of its input does, so the oracle can fail.

Every mount is fresh (an empty cache), and the origin answers each request after DELAY
seconds at RATE body bytes per second, so players really wait on reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from kithara_fs.demo.origin import Origin

from . import hlsmedia
from .conftest import MEDIA_SECONDS, MountFactory, needs_ffmpeg, needs_fuse
from .mounting import Mount
from .players import (
    FORMATS,
    PLAYER,
    PLAYERS,
    Decoded,
    Player,
    as_nobody,
    mount_args,
    nobody_env,
    runs_as_other_user,
)
from .test_mount_hls import stems

pytestmark = [needs_fuse, needs_ffmpeg]

# A few MB/s and tens of ms per request: slow enough that reads wait on the network, fast
# enough that the matrix moves its ~300 MB through it in a few minutes.
RATE = 6_000_000
DELAY = 0.03
HLS_SECONDS = 30.0
HLS_PLAYERS = ["vlc", "gstreamer"]

LocalDecode = Callable[[Player, Path, float], Decoded]


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A folder the user nobody can traverse (tmp_path's parents are 0700): VLC's mount
    points and the originals it reads live here. Removed at the end of the module."""
    root = Path(tempfile.mkdtemp(prefix="kithara-players-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        with open("/proc/mounts") as mounts:
            left = [line for line in mounts if f" {root}/" in line]
        assert not left, f"mounts left under {root}: {left}"
        shutil.rmtree(root)


def open_folder(shared_dir: Path, rel: str) -> Path:
    """A folder under `shared_dir` that the user nobody can traverse, whatever the umask."""
    folder = shared_dir
    for part in Path(rel).parts:
        folder /= part
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
    return folder


def reachable(shared_dir: Path, source: Path, rel: str) -> Path:
    """`source` at a path the user nobody can read (a hard link: the same file), made once."""
    target = open_folder(shared_dir, str(Path(rel).parent)) / Path(rel).name
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        target.chmod(0o644)
    return target


@pytest.fixture(scope="module")
def local_decode(tmp_path_factory: pytest.TempPathFactory) -> LocalDecode:
    """A player's decode of a local file, once per player and file for the module."""
    out = tmp_path_factory.mktemp("players-local")
    done: dict[tuple[str, Path], Decoded] = {}

    def decode(player: Player, source: Path, seconds: float) -> Decoded:
        key = (player.name, source)
        if key not in done:
            done[key] = player.decode(source, out / f"{player.name}-{source.name}.pcm",
                                      seconds=seconds)  # fmt: skip
        return done[key]

    return decode


def throttle(origin: Origin, path: str) -> None:
    faults = origin.faults(path)
    faults.rate = RATE
    faults.delay = DELAY


def start_mount(
    player: Player,
    mount: MountFactory,
    shared_dir: Path,
    name: str,
    streams: dict[str, Any],
    **opts: object,
) -> Mount:
    """A fresh mount the player can read: as nobody, at a reachable folder, --allow-other."""
    if player.other_user and runs_as_other_user():
        return mount(streams, mountpoint=open_folder(shared_dir, "mounts") / name,
                     mount_args=mount_args(), **opts)  # fmt: skip
    return mount(streams, **opts)


def fetched(origin: Origin, paths: set[str]) -> int:
    """Body bytes the origin sent for `paths`, once the answers in progress are done."""
    origin.wait_idle(10)
    return sum(r.body_bytes for r in origin.requests if r.method == "GET" and r.path in paths)


def source_for(player: Player, shared_dir: Path, path: Path, rel: str) -> Path:
    """The local original as the player can open it."""
    return reachable(shared_dir, path, rel) if player.other_user else path


CASES = [pytest.param(player, name, marks=player.skip_mark(), id=f"{player.name}-{name}")
         for player in PLAYERS for name in FORMATS if name in player.formats]  # fmt: skip


@pytest.mark.parametrize(("player", "name"), CASES)
def test_player_decodes_the_mount_like_the_original(
    player: Player,
    name: str,
    origin: Origin,
    mount: MountFactory,
    media_files: dict[str, Path],
    shared_dir: Path,
    local_decode: LocalDecode,
    tmp_path: Path,
) -> None:
    throttle(origin, f"/{name}")
    m = start_mount(player, mount, shared_dir, f"{player.name}-{name}",
                    {f"music/{name}": origin.url(f"/{name}")})  # fmt: skip
    mounted = m.path(f"music/{name}")
    original = source_for(player, shared_dir, media_files[name], f"originals/{name}")
    # The original's decode runs while the mounted one waits on the link.
    with ThreadPoolExecutor(max_workers=1) as pool:
        want = pool.submit(local_decode, player, original, MEDIA_SECONDS)
        got = player.decode(mounted, tmp_path / f"mounted-{name}.pcm", seconds=MEDIA_SECONDS)
    assert got == want.result()
    # Cold: every byte the player decoded came over the throttled link during this test.
    assert fetched(origin, {f"/{name}"}) >= media_files[name].stat().st_size


@pytest.fixture(scope="module")
def programmes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, hlsmedia.Programme]:
    root = tmp_path_factory.mktemp("players-hls")
    # One variant each: a second would only repeat the same decode at another bitrate.
    return {kind: hlsmedia.variants(root / kind, seconds=HLS_SECONDS, bitrates=["128k"],
                                    fmp4=kind == "fmp4") for kind in ("ts", "fmp4")}  # fmt: skip


HLS_CASES = [pytest.param(PLAYER[p], kind, marks=PLAYER[p].skip_mark(), id=f"{p}-{kind}")
             for p in HLS_PLAYERS for kind in ("ts", "fmp4")]  # fmt: skip


@pytest.mark.parametrize(("player", "kind"), HLS_CASES)
def test_player_decodes_hls_variants_like_their_segments(
    player: Player,
    kind: str,
    programmes: dict[str, hlsmedia.Programme],
    mount: MountFactory,
    shared_dir: Path,
    local_decode: LocalDecode,
    tmp_path: Path,
) -> None:
    programme = programmes[kind]
    ext = "ts" if kind == "ts" else "m4a"
    with Origin() as server:
        programme.serve(server, f"/{kind}")
        for path in programme.files:
            throttle(server, f"/{kind}/{path}")
        m = start_mount(player, mount, shared_dir, f"{player.name}-hls-{kind}",
                        {"prog": server.url(f"/{kind}/master.m3u8")},
                        metadata_timeout=20)  # fmt: skip
        [stem] = stems(programme.files["master.m3u8"])
        # The local original of the variant: its init section and segments, concatenated,
        # under the mounted file's name (players choose their demuxer by it too).
        original = open_folder(shared_dir, f"hls/{kind}") / f"{stem}.{ext}"
        if not original.exists():
            original.write_bytes(b"".join(programme.plain["v0/index.m3u8"]))
            original.chmod(0o644)
        mounted = m.path(f"prog/{stem}.{ext}")
        output = tmp_path / f"mounted-{stem}.{ext}.pcm"
        with ThreadPoolExecutor(max_workers=1) as pool:
            want = pool.submit(local_decode, player, original, HLS_SECONDS)
            first = player.decode(mounted, output, seconds=HLS_SECONDS)
        # Again, now from the cache: a player's decode of a variant file is deterministic.
        second = player.decode(mounted, output, seconds=HLS_SECONDS)
        assert first == second == want.result()
        segments = {f"/{kind}/{p}" for p in programme.files if not p.endswith(".m3u8")}
        total = sum(len(b) for p, b in programme.files.items() if not p.endswith(".m3u8"))
        assert fetched(server, segments) >= total  # every segment crossed the link


def _short_wavs(wav: Path, folder: Path) -> tuple[Path, Path]:
    """Three seconds of the test WAV, and the same with one byte in the middle changed."""
    with wave.open(str(wav), "rb") as source:
        params = source.getparams()
        frames = source.readframes(3 * source.getframerate())
    changed = bytearray(frames)
    changed[len(changed) // 2] ^= 0x40
    paths = (folder / "plain.wav", folder / "changed.wav")
    for path, data in zip(paths, (frames, bytes(changed)), strict=True):
        with wave.open(str(path), "wb") as out:
            out.setparams(params)
            out.writeframes(data)
        path.chmod(0o644)
    return paths


@pytest.mark.parametrize("player", [pytest.param(p, marks=p.skip_mark(), id=p.name)
                                    for p in PLAYERS])  # fmt: skip
def test_one_changed_byte_changes_the_digest(
    player: Player, media_files: dict[str, Path], shared_dir: Path, tmp_path: Path
) -> None:
    """The oracle can fail: a single changed sample changes what each player writes."""
    folder = open_folder(shared_dir, f"changed/{player.name}")
    plain, changed = _short_wavs(media_files["wav.wav"], folder)
    a = player.decode(plain, tmp_path / "plain.pcm", seconds=3)
    b = player.decode(changed, tmp_path / "changed.pcm", seconds=3)
    assert a.size == b.size
    assert a.sha256 != b.sha256


# A folder of mixed formats, as test_folder_playlists.py mounts it for mpv.
ALBUM = {
    "album/1 first.mp3": "cbr.mp3",
    "album/2 second.flac": "flac.flac",
    "album/3 third.opus": "opus.opus",
    "album/4 fourth.m4a": "aac.m4a",
    "album/more/5 fifth.ogg": "vorbis.ogg",
}


@pytest.mark.parametrize("player", [pytest.param(PLAYER["vlc"], marks=PLAYER["vlc"].skip_mark(),
                                                 id="vlc")])  # fmt: skip
def test_vlc_plays_every_entry_of_a_mixed_folder_playlist(
    player: Player, origin: Origin, mount: MountFactory, shared_dir: Path
) -> None:
    m = start_mount(player, mount, shared_dir, "vlc-playlist",
                    {path: origin.url(f"/{name}") for path, name in ALBUM.items()})  # fmt: skip
    playlist = m.path("album/.index.m3u8")
    # Decoded and written to nowhere; -vv says which inputs opened and reached their end.
    # (To a file, each entry's WAV would start over at offset 0: VLC reopens its output.)
    command = ["cvlc", "-vv", "--no-dbus", "--aout=dummy", "--no-video", "--play-and-exit",
               str(playlist), "--sout",
               "#transcode{acodec=s16l}:std{access=file,mux=wav,dst=/dev/null}"]  # fmt: skip
    env = None
    if runs_as_other_user():
        command, env = [*as_nobody(), *command], nobody_env()
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600)  # fmt: skip
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    opened = [unquote(found) for found in re.findall(
        r"main input debug: `file://([^']*)' successfully opened", console)]  # fmt: skip
    # The playlist itself opens first, then each entry in order.
    assert opened == [str(playlist), *(str(m.path(path)) for path in ALBUM)], opened
    ended = re.findall(r"main input debug: EOF reached", console)
    assert len(ended) >= len(ALBUM) + 1, "each entry, and the playlist itself, to its end"
    assert not player.errors(console), player.errors(console)
