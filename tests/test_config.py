"""Config validation: every bad input is one line naming file, stream and field; exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kithara_fs.cli import main
from kithara_fs.config import DEFAULT_READ_TIMEOUT, load_config
from kithara_fs.errors import ConfigError

GOOD = """
[cache]
dir = "/var/tmp/kfs-cache"

[mount]
read_timeout = 45

[[stream]]
path = "podcasts/ep-101.mp3"
url = "http://127.0.0.1:8080/ep101.mp3"

[[stream]]
path = "podcasts/ep-102.mp3"
url = "https://user:secret@example.org/ep102.mp3?token=abc"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streams.toml"
    path.write_text(text)
    return path


def test_good_config_parses(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, GOOD))
    assert settings.cache_dir == Path("/var/tmp/kfs-cache")
    assert settings.read_timeout == 45.0
    assert [s.path for s in settings.streams] == [
        ("podcasts", "ep-101.mp3"),
        ("podcasts", "ep-102.mp3"),
    ]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings = load_config(write(tmp_path, '[[stream]]\npath = "a.mp3"\nurl = "http://h/a"\n'))
    assert settings.cache_dir == tmp_path / "xdg" / "kithara-fs"
    assert settings.read_timeout == DEFAULT_READ_TIMEOUT >= 30


def test_check_prints_tree_with_redacted_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "podcasts/\n  ep-101.mp3  <- http://127.0.0.1:8080/ep101.mp3" in out
    assert "secret" not in out and "token" not in out
    assert "ep-102.mp3  <- https://example.org/ep102.mp3?<redacted>" in out


BAD = {
    "unknown top-level key": ('colour = "red"\n', "unknown key 'colour'"),
    "unknown stream key": (
        '[[stream]]\npath = "a.mp3"\nurl = "http://h/a"\nvolume = 3\n',
        "stream 1 (a.mp3): unknown key 'volume'",
    ),
    "unknown cache key": ('[cache]\nsize = 3\n', "[cache] unknown key 'size'"),
    "missing url": ('[[stream]]\npath = "a.mp3"\n', "stream 1 (a.mp3): url: missing"),
    "missing path": ('[[stream]]\nurl = "http://h/a"\n', "stream 1: path: missing"),
    "ftp scheme": (
        '[[stream]]\npath = "a.mp3"\nurl = "ftp://h/a"\n',
        "stream 1 (a.mp3): url: scheme 'ftp' is not supported",
    ),
    "file scheme": (
        '[[stream]]\npath = "a.mp3"\nurl = "file:///etc/passwd"\n',
        "url: scheme 'file' is not supported",
    ),
    "no host": ('[[stream]]\npath = "a.mp3"\nurl = "http:///a"\n', "url: has no host"),
    "duplicate path": (
        '[[stream]]\npath = "a.mp3"\nurl = "http://h/a"\n'
        '[[stream]]\npath = "a.mp3"\nurl = "http://h/b"\n',
        "stream 2 (a.mp3): path: duplicate of stream 1",
    ),
    "file then folder": (
        '[[stream]]\npath = "a"\nurl = "http://h/a"\n'
        '[[stream]]\npath = "a/b.mp3"\nurl = "http://h/b"\n',
        "stream 2 (a/b.mp3): path: 'a' is the file of stream 1 and cannot hold other streams",
    ),
    "folder then file": (
        '[[stream]]\npath = "a/b.mp3"\nurl = "http://h/b"\n'
        '[[stream]]\npath = "a"\nurl = "http://h/a"\n',
        "stream 2 (a): path: is a folder of stream 1 and cannot also be a file",
    ),
    "dot dot": (
        '[[stream]]\npath = "a/../b.mp3"\nurl = "http://h/a"\n',
        "path: '..' is not allowed",
    ),
    "empty part": (
        '[[stream]]\npath = "a//b.mp3"\nurl = "http://h/a"\n',
        "path: empty path part",
    ),
    "trailing slash": (
        '[[stream]]\npath = "a/"\nurl = "http://h/a"\n',
        "path: empty path part",
    ),
    "absolute path": (
        '[[stream]]\npath = "/a.mp3"\nurl = "http://h/a"\n',
        "path: must be relative",
    ),
    "bad timeout": ("[mount]\nread_timeout = -1\n", "[mount] read_timeout: must be a positive"),
    "bad toml": ("[[stream]\n", "invalid TOML"),
    "stream not a table": ("stream = 3\n", "stream: use [[stream]] tables"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_exit_2_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD[case]
    path = write(tmp_path, text)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"kithara-fs: {path}: "), err
    assert message in err, err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: cannot read" in capsys.readouterr().err


def test_bad_config_from_the_real_command_has_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, '[[stream]]\npath = "../x.mp3"\nurl = "gopher://h/x"\n')
    for command in (["check", str(path)], ["mount", str(path), str(tmp_path)]):
        done = subprocess.run(
            [sys.executable, "-m", "kithara_fs", *command], capture_output=True, text=True
        )
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert "stream 1 (../x.mp3): path:" in done.stderr


def test_hls_streams_are_recognised_and_checked(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, (
        '[[stream]]\npath = "a"\nurl = "http://h/master.m3u8?token=1"\n'
        '[[stream]]\npath = "b"\nurl = "http://h/play"\nkind = "hls"\nlive_start_segments = 5\n'
        '[[stream]]\npath = "c.mp3"\nurl = "http://h/c.mp3"\n')))  # fmt: skip
    assert [s.kind for s in settings.streams] == ["hls", "hls", "file"]
    # A kind's own keys are the kind's: a file stream has no live_start_segments.
    assert [s.option_map.get("live_start_segments") for s in settings.streams] == [3, 5, None]
    for body, cause in [
        ('url = "http://h/x"\nkind = "dash"', "kind: must be one of file, hls"),
        ('url = "http://h/x.m3u8"\npin = true', "pin: not supported for HLS"),
        ('url = "http://h/x.m3u8"\nlive_start_segments = 0', "live_start_segments: must be"),
        # A kind's keys belong to it: on a file stream the key would do nothing, so it is named.
        ('url = "http://h/x"\nlive_start_segments = 5', "live_start_segments: not a key of 'file'"),
    ]:
        with pytest.raises(ConfigError, match=cause):
            load_config(write(tmp_path, f'[[stream]]\npath = "p"\n{body}\n'))
    with pytest.raises(ConfigError, match="'p' is the HLS folder of stream 1"):
        load_config(write(tmp_path, '[[stream]]\npath = "p"\nurl = "http://h/x.m3u8"\n'
                                    '[[stream]]\npath = "p/q.mp3"\nurl = "http://h/q.mp3"\n'))
