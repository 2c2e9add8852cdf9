"""Acceptance for HLS programmes: real mounts, ffmpeg decodes, origin logs as witnesses."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from . import hlsmedia
from .conftest import MountFactory, needs_ffmpeg, needs_fuse
from .test_mount_playback import decode_md5

pytestmark = [needs_fuse, needs_ffmpeg]

SECONDS = 30.0
MIDDLE = ("-ss", "15", "-t", "6")


@pytest.fixture(scope="session")
def programmes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, hlsmedia.Programme]:
    root = tmp_path_factory.mktemp("hls")
    plain = hlsmedia.single(root / "plain", seconds=SECONDS)
    return {
        "ts": hlsmedia.variants(root / "ts", seconds=SECONDS, bitrates=["32k", "64k", "128k"],
                                fmp4=False),
        "fmp4": hlsmedia.variants(root / "fmp4", seconds=SECONDS, bitrates=["64k", "128k"],
                                  fmp4=True),
        "byterange": hlsmedia.single(root / "byterange", seconds=SECONDS, byterange=True),
        "aes-iv": hlsmedia.encrypt(root / "aes-iv", plain, iv_in_tag=True),
        "aes-seq": hlsmedia.encrypt(root / "aes-seq", plain, iv_in_tag=False),
    }  # fmt: skip


@pytest.fixture
def hls_origin(programmes: dict[str, hlsmedia.Programme]) -> Iterator[Origin]:
    with Origin() as server:
        for name, programme in programmes.items():
            programme.serve(server, f"/{name}")
        yield server


def stems(master: bytes) -> list[str]:
    """The file stems the mount should give a master's variants: BANDWIDTH in kbit/s."""
    return [f"{round(int(b) / 1000)}k" for b in re.findall(rb"BANDWIDTH=(\d+)", master)]


def segment_requests(origin: Origin) -> list[tuple[str, int]]:
    return [(r.path, r.body_bytes) for r in origin.requests
            if not r.path.endswith((".m3u8", ".bin"))]  # fmt: skip


def expected_md5(tmp_path: Path, pieces: list[bytes], *seek: str) -> str:
    source = tmp_path / f"concatenated-{len(pieces)}-{sum(map(len, pieces))}"
    source.write_bytes(b"".join(pieces))
    return decode_md5(source, *seek)


@pytest.mark.parametrize("name", ["ts", "fmp4"])
def test_variants_decode_like_their_segments(
    name: str,
    programmes: dict[str, hlsmedia.Programme],
    hls_origin: Origin,
    mount: MountFactory,
    tmp_path: Path,
) -> None:
    programme = programmes[name]
    m = mount({"prog": hls_origin.url(f"/{name}/master.m3u8")}, metadata_timeout=20)
    ext = "ts" if name == "ts" else "m4a"
    names = stems(programme.files["master.m3u8"])
    listing = sorted(os.listdir(m.path("prog")))
    assert listing == sorted([f"{s}.{ext}" for s in names]
                             + [f"best.{ext}", f"worst.{ext}", f"auto.{ext}"])  # fmt: skip
    # Exact sizes, known before any segment body was fetched: only 1-byte probes so far.
    for index, stem in enumerate(names):
        pieces = programme.plain[f"v{index}/index.m3u8"]
        assert m.path(f"prog/{stem}.{ext}").stat().st_size == sum(map(len, pieces))
    assert all(size <= 1 for _, size in segment_requests(hls_origin)), segment_requests(hls_origin)
    assert m.path(f"prog/best.{ext}").stat().st_size == sum(
        map(len, programme.plain[f"v{len(names) - 1}/index.m3u8"])
    )
    for index, stem in enumerate(names):
        pieces = programme.plain[f"v{index}/index.m3u8"]
        mounted = m.path(f"prog/{stem}.{ext}")
        assert decode_md5(mounted, *MIDDLE) == expected_md5(tmp_path, pieces, *MIDDLE)
        assert decode_md5(mounted) == expected_md5(tmp_path, pieces)
        assert mounted.read_bytes() == b"".join(pieces)


@pytest.mark.parametrize("name", ["byterange", "aes-iv", "aes-seq"])
def test_single_playlists_decode_like_their_segments(
    name: str,
    programmes: dict[str, hlsmedia.Programme],
    hls_origin: Origin,
    mount: MountFactory,
    tmp_path: Path,
) -> None:
    pieces = programmes[name].plain["index.m3u8"]
    m = mount({"prog": hls_origin.url(f"/{name}/index.m3u8")}, metadata_timeout=20)
    assert os.listdir(m.path("prog")) == ["stream.ts"]
    mounted = m.path("prog/stream.ts")
    assert mounted.stat().st_size == sum(map(len, pieces))
    # Encrypted segments are sized from their last two cipher blocks, nothing more.
    limit = 32 if name.startswith("aes") else 1
    assert all(size <= limit for _, size in segment_requests(hls_origin))
    assert decode_md5(mounted, *MIDDLE) == expected_md5(tmp_path, pieces, *MIDDLE)
    assert decode_md5(mounted) == expected_md5(tmp_path, pieces)
    assert mounted.read_bytes() == b"".join(pieces)


def test_getfattr_names_the_variant(hls_origin: Origin, mount: MountFactory) -> None:
    m = mount({"prog": hls_origin.url("/ts/master.m3u8")}, metadata_timeout=20)
    command = ["getfattr", "-n", "user.kithara.variant", "--only-values", m.path("prog/best.ts")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "141k"


def test_a_discontinuity_splits_into_part_files(
    tmp_path_factory: pytest.TempPathFactory, mount: MountFactory, tmp_path: Path
) -> None:
    """Segments across EXT-X-DISCONTINUITY (here a new sample rate and channel count) are
    never concatenated: each side is its own file, and each decodes like its segments."""
    root = tmp_path_factory.mktemp("spliced")
    first = hlsmedia.single(root / "a", seconds=6)
    second = hlsmedia.single(root / "b", seconds=6, audio=("-ar", "48000", "-ac", "1"))
    with Origin() as server:
        first.serve(server, "/a")
        second.serve(server, "/b")
        uris = [f"/a/seg{i}.ts" for i in range(len(first.plain["index.m3u8"]))]
        uris += [f"/b/seg{i}.ts" for i in range(len(second.plain["index.m3u8"]))]
        server.add("/spliced.m3u8", hlsmedia.media_playlist(
            uris, target=2, ended=True, discontinuity_before=len(first.plain["index.m3u8"])))
        m = mount({"prog": server.url("/spliced.m3u8")}, metadata_timeout=20)
        assert sorted(os.listdir(m.path("prog"))) == ["stream.part1.ts", "stream.part2.ts"]
        for part, programme in ((1, first), (2, second)):
            pieces = programme.plain["index.m3u8"]
            mounted = m.path(f"prog/stream.part{part}.ts")
            assert mounted.stat().st_size == sum(map(len, pieces))
            assert decode_md5(mounted) == expected_md5(tmp_path, pieces)


def test_auto_switches_down_when_bandwidth_drops(
    programmes: dict[str, hlsmedia.Programme],
    hls_origin: Origin,
    mount: MountFactory,
    tmp_path: Path,
) -> None:
    programme = programmes["ts"]
    count = len(programme.plain["v0/index.m3u8"])
    # From the fifth segment on, every variant crawls at 12 kB/s (96 kbit/s): below what the
    # best variant (141 kbit/s) needs, above what the middle one (70 kbit/s) does.
    for variant in range(3):
        for index in range(4, count):
            hls_origin.faults(f"/ts/v{variant}/seg{index}.ts").rate = 12_000
    m = mount({"prog": hls_origin.url("/ts/master.m3u8")}, metadata_timeout=20)
    hls_origin.clear_log()
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", m.path("prog/auto.ts"), "-f", "md5", "-"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    switches = re.findall(r"switching variant (\S+) -> (\S+)", m.log_text())
    assert ("35k", "141k") in switches  # up once the first segment showed a fast link
    assert any(old == "141k" and new != "141k" for old, new in switches), switches
    # Oracle: the segments the feed fetched (whole GETs, in order) decode to the same audio.
    fetched = [r.path for r in hls_origin.requests if r.range == "bytes=0-"
               and r.path.endswith(".ts")]  # fmt: skip
    variants = [p.split("/")[2] for p in fetched]
    indices = [int(p.rsplit("seg", 1)[1].removesuffix(".ts")) for p in fetched]
    assert indices == list(range(count)), fetched
    pieces = [programme.plain[f"{v}/index.m3u8"][i] for v, i in zip(variants, indices, strict=True)]
    assert done.stdout.strip() == expected_md5(tmp_path, pieces)


def test_live_playlist_is_a_growing_file_that_ends_at_endlist(
    tmp_path_factory: pytest.TempPathFactory, mount: MountFactory, tmp_path: Path
) -> None:
    """An origin that reveals a one-second segment every second, then EXT-X-ENDLIST."""
    programme = hlsmedia.single(tmp_path_factory.mktemp("live") / "src", seconds=12,
                                segment_seconds=1)  # fmt: skip
    pieces = programme.plain["index.m3u8"]
    uris = [f"/live/seg{i}.ts" for i in range(len(pieces))]
    with Origin() as server:
        programme.serve(server, "/live")
        server.add("/live.m3u8", hlsmedia.media_playlist(uris[:4], target=1, ended=False))
        stop = threading.Event()

        def publish() -> None:
            for shown in range(5, len(uris) + 1):
                if stop.wait(1.0):
                    return
                server.replace("/live.m3u8", hlsmedia.media_playlist(
                    uris[:shown], target=1, ended=shown == len(uris)))  # fmt: skip

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            # read_timeout 1 s: only the live budget (2 × target duration) keeps reads at the
            # live edge from EAGAIN.
            m = mount({"prog": server.url("/live.m3u8")}, read_timeout=1, metadata_timeout=20)
            live = m.path("prog/stream.ts")
            assert live.stat().st_size == 0
            command = ["ffmpeg", "-nostdin", "-v", "error", "-i", live, "-f", "null", "-"]
            player = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
            data = bytearray()
            fd = os.open(live, os.O_RDONLY)
            try:
                while chunk := os.read(fd, 65536):  # any EAGAIN would raise here
                    data += chunk
            finally:
                os.close(fd)
            _, errors = player.communicate(timeout=60)
            assert player.returncode == 0 and errors == "", errors
        finally:
            stop.set()
            publisher.join()
    starts = [s for s in range(len(pieces)) if bytes(data) == b"".join(pieces[s:])]
    assert starts and starts[0] >= 1, "not the tail of the segments from some start on"


BAD_PLAYLISTS = {
    "no-header": (b"#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n/ts/v0/seg0.ts\n#EXT-X-ENDLIST\n",
                  "missing #EXTM3U"),
    "negative": (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-2,\n/ts/v0/seg0.ts\n"
                 b"#EXT-X-ENDLIST\n", "invalid duration"),
    "huge-range": (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-BYTERANGE:99999999999@0\n"
                   b"#EXTINF:2,\n/ts/v0/seg0.ts\n#EXT-X-ENDLIST\n", "larger than 1 GiB"),
    "file-uri": (b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile:///etc/passwd\n"
                 b"#EXT-X-ENDLIST\n", "refusing file: URI"),
}  # fmt: skip


def test_malformed_playlists_are_clear_errors_on_their_entry(
    programmes: dict[str, hlsmedia.Programme], hls_origin: Origin, mount: MountFactory
) -> None:
    streams = {"good": hls_origin.url("/ts/master.m3u8")}
    for name, (text, _) in BAD_PLAYLISTS.items():
        hls_origin.add(f"/bad/{name}.m3u8", text)
        streams[name] = hls_origin.url(f"/bad/{name}.m3u8")
    missing_key = programmes["aes-iv"].files["index.m3u8"].replace(b"key.bin", b"/nokey.bin")
    hls_origin.add("/bad/key404.m3u8", missing_key.replace(b"seg", b"/aes-iv/seg"))
    streams["key404"] = hls_origin.url("/bad/key404.m3u8")
    m = mount(streams, metadata_timeout=20)
    for name, (_, cause) in BAD_PLAYLISTS.items():
        m.expect_log(rf"{name}: HLS programme not available: .*{re.escape(cause)}")
        assert os.listdir(m.path(name)) == []
        error = os.getxattr(m.path(name), "user.kithara.error").decode()
        assert cause in error, error
    m.expect_log(r"key not available: HTTP 404")
    m.expect_log(r"open: .*key not available")
    with pytest.raises(OSError) as failed:
        m.path("key404/stream.ts").open("rb")
    assert failed.value.errno == errno.EIO
    # The mount is up and the good programme plays on.
    assert len(m.path("good/best.ts").read_bytes()) == m.path("good/best.ts").stat().st_size
    status = subprocess.run([sys.executable, "-m", "kithara_fs", "status", str(m.mountpoint)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert status.returncode == 0 and "missing #EXTM3U" in status.stdout, status.stdout
