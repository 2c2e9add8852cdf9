"""Shared fixtures: generated media, a loopback origin, and real mounts that always unmount."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from kithara_fs.demo import media
from kithara_fs.demo.origin import Origin

from .mounting import Mount, write_config

# CI runs the fuzz tests derandomized, so a red run can be reproduced from the same commit;
# on a developer's machine each run explores new examples.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# 150 s of audio lets the acceptance checks seek to 120 s and decode 10 s past it.
MEDIA_SECONDS = 150.0

needs_fuse = pytest.mark.skipif(
    not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")),
    reason="needs /dev/fuse and fusermount3 (run ./dev test to install them)",
)
needs_ffmpeg = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("ffprobe")), reason="needs ffmpeg"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never be routed through a proxy from the environment."""
    for key in list(os.environ):
        if "proxy" in key.lower():
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test format, generated once per session with ffmpeg (WAV only without it)."""
    return media.generate(tmp_path_factory.mktemp("media"), duration=MEDIA_SECONDS)


@pytest.fixture
def origin(media_files: dict[str, Path]) -> Iterator[Origin]:
    """A fresh loopback origin serving every media file at /<name>."""
    with Origin() as server:
        for name, path in media_files.items():
            server.add(f"/{name}", path)
        yield server


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MountFactory]:
    """Start real mounts: ``mount({"dir/file.mp3": url}, read_timeout=5)``.

    At teardown every mount is unmounted, its daemon must have exited 0, and its log must
    hold no warning the test did not declare with ``Mount.expect_log``.
    """
    mounts: list[Mount] = []

    def start(
        streams: dict[str, Any],
        *,
        cache_dir: Path | None = None,
        cache: dict[str, Any] | None = None,
        network: dict[str, Any] | None = None,
        name: str = "mnt",
        env: dict[str, str] | None = None,
        mountpoint: Path | None = None,
        command: list[str] | None = None,
        mount_args: list[str] | None = None,
        **opts: object,
    ) -> Mount:
        folder = cache_dir or tmp_path / "cache"
        config = write_config(tmp_path / f"{name}.toml", streams, folder, cache, network,
                              **opts)  # fmt: skip
        m = Mount(config, mountpoint or tmp_path / name, tmp_path / f"{name}.log", env,
                  command, mount_args)  # fmt: skip
        mounts.append(m)
        return m.start()

    yield start
    problems = []
    for m in mounts:
        code = m.stop()
        if code != 0 and not m.killed:
            problems.append(f"{m.mountpoint.name}: daemon exit code {code}")
        problems += [f"{m.mountpoint.name}: unexpected log line: {line}"
                     for line in m.unexpected_log_lines()]  # fmt: skip
    if problems:
        for m in mounts:
            print(f"---- log of {m.mountpoint.name} ----\n{m.log_text()[-6000:]}")
        pytest.fail("\n".join(problems))
