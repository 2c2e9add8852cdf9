"""The command line: mount-point checks, background mounts, signals, and the demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_ffmpeg, needs_fuse
from .mounting import FUSERMOUNT, clean_env, write_config

pytestmark = needs_fuse
REPO = Path(__file__).resolve().parent.parent


def kfs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kithara_fs", *args],
        capture_output=True, text=True, timeout=timeout, env=clean_env(),
    )  # fmt: skip


@pytest.fixture
def config(tmp_path: Path, origin: Origin) -> Path:
    return write_config(
        tmp_path / "streams.toml", {"a/x.mp3": origin.url("/cbr.mp3")}, tmp_path / "cache"
    )


def test_missing_mountpoint(config: Path, tmp_path: Path) -> None:
    done = kfs("mount", str(config), str(tmp_path / "absent"))
    assert done.returncode == 1
    assert done.stderr == f"kithara-fs: mount point {tmp_path / 'absent'} does not exist\n"


def test_nonempty_mountpoint(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "full"
    target.mkdir()
    (target / "file").write_text("x")
    done = kfs("mount", str(config), str(target))
    assert done.returncode == 1
    assert done.stderr == f"kithara-fs: mount point {target} is not empty\n"


def test_mountpoint_is_a_file(config: Path, tmp_path: Path) -> None:
    done = kfs("mount", str(config), str(config))
    assert done.returncode == 1
    assert "is not a folder" in done.stderr and done.stderr.count("\n") == 1


def test_already_mounted(config: Path, mount: MountFactory, origin: Origin) -> None:
    m = mount({"x.mp3": origin.url("/cbr.mp3")})
    done = kfs("mount", str(config), str(m.mountpoint))
    assert done.returncode == 1
    assert done.stderr == f"kithara-fs: mount point {m.mountpoint} is already mounted\n"


def test_background_mount_returns_once_mounted_and_unmounts(
    config: Path, tmp_path: Path, media_files: dict[str, Path]
) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    log = tmp_path / "daemon.log"
    try:
        done = kfs("mount", "--log-file", str(log), str(config), str(target))
        assert done.returncode == 0, done.stderr + log.read_text()
        # No polling: the command returned only once the mount answered.
        assert os.path.ismount(target)
        pid = int(re.search(r"pid (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
        with open(target / "a/x.mp3", "rb") as f:
            assert f.read() == media_files["cbr.mp3"].read_bytes()
        assert kfs("unmount", str(target)).returncode == 0
        for _ in range(200):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid), "the daemon should exit after unmount"
        assert not os.path.ismount(target)
        text = log.read_text()
        assert "mounted 1 stream(s)" in text and "unmounted" in text
        assert " WARNING " not in text and " ERROR " not in text, text
    finally:
        if os.path.ismount(target):
            subprocess.run([FUSERMOUNT, "-uz", str(target)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not yet reaped by its (exited) parent but has stopped serving.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(
    signum: int, config: Path, tmp_path: Path, mount: MountFactory, origin: Origin
) -> None:
    m = mount({"x.mp3": origin.url("/cbr.mp3")})
    assert m.process is not None
    with open(m.path("x.mp3"), "rb") as f:
        f.read(1000)
    m.process.send_signal(signum)
    assert m.process.wait(timeout=30) == 0
    assert not os.path.ismount(m.mountpoint)
    assert "unmounted" in m.log_text()


def test_ls_lists_tree(mount: MountFactory, origin: Origin, media_files: dict[str, Path]) -> None:
    m = mount({
        "podcasts/ep-101.mp3": origin.url("/cbr.mp3"),
        "podcasts/old/ep-001.mp3": origin.url("/vbr.mp3"),
        "top.flac": origin.url("/flac.flac"),
    })  # fmt: skip
    assert sorted(os.listdir(m.mountpoint)) == [".index.m3u8", ".kithara", "podcasts", "top.flac"]
    assert sorted(os.listdir(m.path("podcasts"))) == [".index.m3u8", "ep-101.mp3", "old"]
    done = subprocess.run(["ls", "-l", str(m.path("podcasts"))], capture_output=True, text=True)
    size = media_files["cbr.mp3"].stat().st_size
    assert re.search(rf"-r--r--r-- .* {size} .* ep-101\.mp3", done.stdout), done.stdout
    assert re.search(r"dr-xr-xr-x .* old", done.stdout), done.stdout
    assert os.getxattr(m.path("top.flac"), "user.kithara.url") == origin.url("/flac.flac").encode()
    assert os.getxattr(m.path("top.flac"), "user.kithara.cached_bytes") == b"0"
    with open(m.path("top.flac"), "rb") as f:
        f.read()
    cached = int(os.getxattr(m.path("top.flac"), "user.kithara.cached_bytes"))
    assert cached == media_files["flac.flac"].stat().st_size
    assert sorted(os.listxattr(m.path("top.flac"))) == [
        "user.kithara.cached_bytes",
        "user.kithara.content_type",
        "user.kithara.etag",
        "user.kithara.state",
        "user.kithara.url",
    ]
    assert os.getxattr(m.path("top.flac"), "user.kithara.state") == b"cached"


def readme_command(task: str) -> str:
    """The command the README gives for a task, so the test runs exactly what users run."""
    text = (REPO / "README.md").read_text()
    found = re.findall(rf"^\s*(\./dev {task}\b[^\n#]*)", text, re.MULTILINE)
    assert found, f"README.md shows no './dev {task}' command"
    return found[0].strip()


def test_readme_test_command_is_what_ci_runs() -> None:
    assert readme_command("test") in (REPO / ".ci/run").read_text()


@needs_ffmpeg
def test_readme_demo_command_mounts_and_plays(tmp_path: Path) -> None:
    command = readme_command("demo")
    env = clean_env() | {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    demo = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    mountpoint = None
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("mounted at "):
                mountpoint = Path(line.removeprefix("mounted at ").strip())
            if line.startswith("Ctrl-C"):
                break
        assert mountpoint is not None, "".join(lines)
        names = sorted(os.listdir(mountpoint / "demo"))
        assert "wav.wav" in names and "cbr.mp3" in names, names
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
             str(mountpoint / "demo" / "cbr.mp3")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0 and float(probe.stdout) > 60, probe.stderr
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0, "".join(lines)
        assert not mountpoint.exists(), "the demo removes the mount point it created"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        if mountpoint is not None and os.path.ismount(mountpoint):
            subprocess.run([FUSERMOUNT, "-uz", str(mountpoint)])
