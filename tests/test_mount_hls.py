"""Acceptance for HLS programmes: real mounts, ffmpeg decodes, origin logs as witnesses."""

from __future__ import annotations

import os
import re
import subprocess
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
    done = subprocess.run(["getfattr", "-n", "user.kithara.variant", "--only-values",
                           str(m.path("prog/best.ts"))], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "141k"
