"""Units of the daily-use pieces: sd_notify, playlists, the status view, reserved names."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kithara_fs.config import parse_config
from kithara_fs.errors import ConfigError
from kithara_fs.notify import notify, watchdog_interval
from kithara_fs.statusview import kithara_mounts, plain
from kithara_fs.tree.playlists import PlaylistEntry, render


def test_notify_sends_to_a_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert notify("READY=1", "STATUS=ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() is None


def test_playlist_is_a_plain_extended_m3u() -> None:
    text = render([PlaylistEntry(("a", "1 ü.mp3"), "one,\ntwo", 61.6),
                   PlaylistEntry(("#2.mp3",), "x", None)]).decode("utf-8")  # fmt: skip
    assert text.splitlines() == [
        "#EXTM3U", "#EXTINF:62,one, two", "a/1 ü.mp3", "#EXTINF:-1,x", "./#2.mp3",
    ]  # fmt: skip
    assert text.endswith("\n")


def test_status_plain_text() -> None:
    status = {
        "pid": 7, "config": "c.toml", "summary": "1 streams, 1 downloading",
        "streams": [{"path": "a.mp3", "state": "downloading", "size": 2 * 1024 * 1024,
                     "cached_bytes": 1024 * 1024, "download_rate": 2048,
                     "buffered_seconds": 12.0, "error": None},
                    {"path": "fm.mp3", "state": "streaming", "size": None, "cached_bytes": 0,
                     "download_rate": 0, "buffered_seconds": None, "error": None,
                     "title": "Björk - Jóga"}],
    }  # fmt: skip
    lines = plain("/m", status).splitlines()
    assert lines[0] == "/m (pid 7, c.toml): 1 streams, 1 downloading"
    assert lines[1].split()[-2:] == ["PLAYING", "ERROR"]
    assert lines[2].split() == ["a.mp3", "downloading", "1.0", "MiB", "/", "2.0", "MiB",
                                "[#####.....]", "50%", "2.0", "KiB/s", "12", "s", "-",
                                "-"]  # fmt: skip
    assert lines[3].split()[-4:] == ["Björk", "-", "Jóga", "-"]


def test_kithara_mounts_reads_the_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        "kithara-fs /home/me/my\\040streams fuse.kithara ro,nosuid 0 0\n"
        "/dev/vda / ext4 rw 0 0\n"
    )
    assert kithara_mounts(str(table)) == ["/home/me/my streams"]


@pytest.mark.parametrize(
    ("path", "message"),
    [(".kithara/x.mp3", "reserved for the mount's status"),
     ("a/.index.m3u8", "reserved for generated playlists")],
)  # fmt: skip
def test_reserved_names(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"stream": [{"path": path, "url": "http://h/x"}]})


def test_mountpoint_from_config() -> None:
    settings = parse_config({"mount": {"mountpoint": "~/streams"}})
    assert settings.mountpoint == Path(os.path.expanduser("~/streams"))


def test_rich_table_shows_brackets_as_text() -> None:
    from rich.console import Console

    from kithara_fs.statusview import rich_table

    status = {
        "pid": 7, "config": "c.toml", "summary": "1 streams",
        "streams": [{"path": "[live]/a.mp3", "state": "cached", "size": 10, "cached_bytes": 10,
                     "download_rate": 0, "buffered_seconds": None, "error": None}],
    }  # fmt: skip
    console = Console(width=120, record=True, color_system=None)
    console.print(rich_table("/m", status))
    text = console.export_text()
    assert "[live]/a.mp3" in text and "[##########] 100%" in text, text


def test_mount_table_paths_are_unescaped_as_bytes(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_bytes("kithara-fs /home/me/Str\u00f6me\\040x fuse.kithara ro 0 0\n".encode())
    assert kithara_mounts(str(table)) == ["/home/me/Str\u00f6me x"]


def test_log_filter_survives_odd_urls_and_redacts(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from kithara_fs.cli import RedactingFormatter

    logger = logging.getLogger("kithara_fs.test_filter")
    caplog.handler.setFormatter(RedactingFormatter())
    with caplog.at_level(logging.INFO, logger="kithara_fs.test_filter"):
        logger.info("see http://h:8000), and http://u:pw@h/a?token=x.")
        logger.info("bad port http://h:99999999/x")
    assert "pw" not in caplog.text and "token" not in caplog.text
    assert "http://h/a?<redacted>." in caplog.text
