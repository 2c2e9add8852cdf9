"""Daily use: systemd units and notifications, status, du, xattrs, playlists, reload."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse, sha256
from .mounting import FUSERMOUNT, clean_env, wait_until, write_config

REPO = Path(__file__).resolve().parent.parent



@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("unit", "instance"),
    [("systemd/kithara-fs@.service", "music"), ("systemd/system/kithara-fs@.service", "radio")],
)
def test_systemd_units_verify_clean(unit: str, instance: str, tmp_path: Path) -> None:
    # A template is verified through an instance of it.
    target = tmp_path / f"kithara-fs@{instance}.service"
    shutil.copy(REPO / unit, target)
    done = subprocess.run(["systemd-analyze", "verify", str(target)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done


@needs_fuse
def test_notify_ready_only_once_mounted_then_watchdog_and_status(
    origin: Origin, mount: MountFactory, tmp_path: Path
) -> None:
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(30)
    try:
        m = mount({"a.mp3": origin.url("/cbr.mp3")},
                  env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})  # fmt: skip
        first = server.recv(4096).decode()
        # The daemon sends READY only after it saw the mount answer.
        assert first.startswith("READY=1\n"), first
        assert os.path.ismount(m.mountpoint)
        assert re.search(r"^STATUS=1 streams, 0 downloading$", first, re.M), first
        beats = [server.recv(4096).decode() for _ in range(2)]
        for beat in beats:
            assert beat.startswith("WATCHDOG=1\nSTATUS=1 streams"), beat
        assert m.process is not None
        m.process.send_signal(signal.SIGTERM)
        messages = []
        while "STOPPING=1" not in messages:
            messages.append(server.recv(4096).decode())
        assert m.process.wait(timeout=30) == 0
    finally:
        server.close()


@needs_fuse
def test_status_du_and_xattrs_after_a_partial_read(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    size = media_files["wav.wav"].stat().st_size
    m = mount({"lib/part.wav": origin.url("/wav.wav"), "lib/none.mp3": origin.url("/cbr.mp3")},
              readahead_seconds=1)  # fmt: skip
    with open(m.path("lib/part.wav"), "rb") as f:
        f.read(1_000_000)
    cached = int(os.getxattr(m.path("lib/part.wav"), "user.kithara.cached_bytes"))
    assert 1_000_000 <= cached < size
    # Plain text when not on a terminal; one row a stream with cached of total.
    done = subprocess.run(
        [sys.executable, "-m", "kithara_fs", "status", str(m.mountpoint)],
        capture_output=True, text=True, env=clean_env(), timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout, "no colour codes off a terminal"
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{m.mountpoint} (pid ") and "2 streams" in lines[0]
    row = next(line for line in lines if line.startswith("lib/part.wav"))
    mib = 1024 * 1024
    assert f"{cached / mib:.1f} MiB / {size / mib:.1f} MiB" in row, row
    none_row = next(line for line in lines if line.startswith("lib/none.mp3"))
    assert re.search(r"idle\s+0 B / 2\.3 MiB", none_row), none_row
    # du counts cached bytes (st_blocks), not the size; attributes of a file that is still
    # downloading are refreshed every second.
    def du_matches() -> bool:
        du = subprocess.run(["du", "-B1", str(m.path("lib/part.wav"))], capture_output=True,
                            text=True, check=True)  # fmt: skip
        now = int(os.getxattr(m.path("lib/part.wav"), "user.kithara.cached_bytes"))
        return int(du.stdout.split()[0]) == (now + 511) // 512 * 512 > 0

    wait_until(du_matches, "du to report the cached bytes")
    getfattr = subprocess.run(["getfattr", "-d", str(m.path("lib/part.wav"))],
                              capture_output=True, text=True, check=True)  # fmt: skip
    for name in ("url", "state", "cached_bytes", "etag", "content_type"):
        assert f"user.kithara.{name}=" in getfattr.stdout, getfattr.stdout
    assert f'user.kithara.url="{origin.url("/wav.wav")}"' in getfattr.stdout


@needs_fuse
def test_reload_adds_and_removes_while_a_reader_continues(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    streams = {"keep.flac": origin.url("/flac.flac"), "gone.mp3": origin.url("/cbr.mp3")}
    m = mount(streams, readahead_seconds=1)
    m.expect_log(r"reload rejected")
    expected = media_files["flac.flac"].read_bytes()
    with open(m.path("keep.flac"), "rb") as kept:
        head = kept.read(1_000_000)
        write_config(m.config, {"keep.flac": streams["keep.flac"],
                                "new/added.mp3": origin.url("/vbr.mp3")},
                     tmp_path / "cache", readahead_seconds=1)  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "kithara_fs", "reload", str(m.mountpoint)],
                              capture_output=True, text=True, env=clean_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_until(lambda: sorted(os.listdir(m.mountpoint)) ==
                   [".index.m3u8", ".kithara", "keep.flac", "new"], "the new tree")  # fmt: skip
        assert not m.path("gone.mp3").exists()
        assert m.path("new/added.mp3").read_bytes() == media_files["vbr.mp3"].read_bytes()
        # A bad config is rejected and the tree stays.
        m.config.write_text('[[stream]]\npath = "x.mp3"\nurl = "ftp://nope/x"\n')
        os.kill(int(m.process.pid), signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "reload rejected" in m.log_text(), "the rejection in the log")
        assert m.path("new/added.mp3").exists()
        # The reader on the kept stream never noticed any of it.
        assert sha256(head + kept.read()) == sha256(expected)
    assert "1 added, 1 removed" in m.log_text()


@needs_fuse
def test_dead_mount_of_a_crashed_daemon_is_cleared_at_start(
    origin: Origin, mount: MountFactory, tmp_path: Path, media_files: dict[str, Path]
) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    config = write_config(tmp_path / "crash.toml", {"a.mp3": origin.url("/cbr.mp3")},
                          tmp_path / "crash-cache")  # fmt: skip
    crashed = subprocess.Popen(
        [sys.executable, "-m", "kithara_fs", "mount", "--foreground", str(config), str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        wait_until(lambda: os.path.ismount(target), "the first mount")
        crashed.kill()
        crashed.wait()
        with pytest.raises(OSError) as dead:
            os.listdir(target)
        assert dead.value.errno == errno.ENOTCONN
        m = mount({"a.mp3": origin.url("/cbr.mp3")})  # same mount point
        m.expect_log(r"left by a crashed kithara-fs")

        def answers() -> bool:  # the dead mount also counts as "mounted" until cleared
            try:
                return "a.mp3" in os.listdir(target)
            except OSError:
                return False

        wait_until(answers, "the new mount to replace the dead one")
        assert m.path("a.mp3").read_bytes() == media_files["cbr.mp3"].read_bytes()
    finally:
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait()
        # If the new mount never replaced the dead one, do not leave the dead one behind.
        try:
            os.listdir(target)
        except OSError:
            subprocess.run([FUSERMOUNT, "-uz", str(target)], capture_output=True)


@needs_fuse
def test_no_secrets_in_logs_or_attributes(origin: Origin, mount: MountFactory) -> None:
    secret_url = origin.url("/cbr.mp3").replace("http://", "http://me:s3cret@") + "?token=hunter2"
    m = mount({"a.mp3": secret_url})  # the daemon logs at debug level here
    m.path("a.mp3").read_bytes()
    url = os.getxattr(m.path("a.mp3"), "user.kithara.url").decode()
    assert url == origin.url("/cbr.mp3") + "?<redacted>"
    status = m.path(".kithara/status.json").read_text()
    text = m.log_text() + status
    assert "GET" in m.log_text(), "httpx's request lines are in the debug log"
    assert "s3cret" not in text and "hunter2" not in text
