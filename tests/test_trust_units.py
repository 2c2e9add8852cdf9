"""Unit regression tests for the trust issue: the pure layers behind the defects (numbers
follow the issue's list). Each failed on the code before its fix."""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import zlib
from pathlib import Path

import pytest

from kithara_fs.cache.checksums import BLOCK, Checksums
from kithara_fs.config import parse_config
from kithara_fs.errors import CacheError, ConfigError, OriginError
from kithara_fs.headers import content_length, content_range, retry_after
from kithara_fs.redact import redact_text
from kithara_fs.sources.hls.playlist import MediaPlaylist, parse

# -- 2: header values that are not numbers are "no value", never an exception -----------------


@pytest.mark.parametrize("junk", ["²", "٣", "1e400", "-5", " 5 5", "", "9" * 40, "inf", "NaN"])
def test_2_junk_retry_after_is_no_value(junk: str) -> None:
    assert retry_after(junk, now=0.0) is None


def test_2_retry_after_forms() -> None:
    assert retry_after("7", now=0.0) == 7.0
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=40.0) == 0.0


def test_content_range_and_length_are_strict() -> None:
    assert content_range("bytes 0-99/100") is not None
    for junk in ["bytes 5-4/100", "bytes 0-100/100", "bytes ²-9/10", "bytes 0-9/*x", None]:
        assert content_range(junk) is None
    assert content_length("12") == 12
    assert content_length("1²") is None and content_length("-1") is None


# -- 5: no secret survives redaction ----------------------------------------------------------


@pytest.mark.parametrize("text", [
    "GET http://[::1]:8080/a.mp3?token=SECRET failed",
    "HTTPS://user:SECRET@Example.ORG/x.mp3",
    "(see http://h/a.mp3?sig=SECRET)",
    "redirect to ftp://me:SECRET@h/",
    "segment /seg1.ts?token=SECRET failed",
    'http://user:pa"SECRET@host/p',
    "_https://u:SECRET@h/a",
])  # fmt: skip
def test_5_redaction_covers_odd_urls(text: str) -> None:
    redacted = redact_text(text)
    assert "SECRET" not in redacted


def test_5_tracebacks_in_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from kithara_fs.cli import RedactingFormatter

    caplog.handler.setFormatter(RedactingFormatter())
    logger = logging.getLogger("kithara_fs.test_trust")
    try:
        raise ValueError("cannot open http://u:SECRET@[fe80::1]:81/x?key=SECRET")
    except ValueError:
        logger.exception("failed")
    assert "Traceback" in caplog.text and "SECRET" not in caplog.text


def test_a_reply_the_kernel_discarded_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A release answered just after an unmount began: pyfuse3's ERROR is debugging detail."""
    from kithara_fs.cli import AbortedReplies

    logger = logging.getLogger("pyfuse3.test_replies")
    logger.addFilter(AbortedReplies())
    with caplog.at_level(logging.DEBUG):
        logger.error("fuse_release(): fuse_reply_* failed with %s", os.strerror(errno.ENOENT))
        logger.error("fuse_read(): fuse_reply_* failed with %s", os.strerror(errno.EIO))
    levels = [(r.levelname, r.getMessage().split("(")[0]) for r in caplog.records]
    assert levels == [("DEBUG", "fuse_release"), ("ERROR", "fuse_read")]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        logger.error("fuse_release(): fuse_reply_* failed with %s", os.strerror(errno.ENOENT))
    assert caplog.records == [], "dropped unless debug logging is on"


def test_5_origin_errors_never_hold_a_raw_url() -> None:
    error = OriginError("http://h/p.m3u8?token=SECRET", "bad: see https://h/k?SECRET")
    assert "SECRET" not in str(error) and "SECRET" not in error.url + error.reason


# -- 7: a hostile target duration cannot hold a reader --------------------------------------


def test_7_huge_target_duration_is_capped() -> None:
    text = b"#EXTM3U\n#EXT-X-TARGETDURATION:100000\n#EXTINF:5,\nhttp://h/s0.ts\n"
    playlist = parse(text, "http://h/live.m3u8")
    assert isinstance(playlist, MediaPlaylist)
    # A live read waits two target durations: at most 30 s, the default read budget.
    assert 2 * playlist.target_duration <= 30


# -- 11: config values that are not real numbers ----------------------------------------------


@pytest.mark.parametrize("mount", [
    {"read_timeout": math.nan}, {"read_timeout": math.inf}, {"metadata_timeout": math.inf},
    {"readahead_seconds": math.nan}, {"read_timeout": 1e300},
])  # fmt: skip
def test_11_non_finite_timeouts_are_config_errors(mount: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config({"mount": mount})
    assert "\n" not in str(failed.value)


@pytest.mark.parametrize("size", ["inf", "nan", "1e400", "-1G", "0.1", 2**70])
def test_11_bad_max_size_is_a_config_error(size: object) -> None:
    with pytest.raises(ConfigError):
        parse_config({"cache": {"max_size": size}})


# -- 14: checksums ------------------------------------------------------------------------------


def test_14_checksums_follow_appends_and_catch_damage() -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    sums = Checksums()
    for offset in range(0, len(data), 10_000):  # network-sized chunks, unaligned
        sums.add(offset, data[offset : offset + 10_000])
    assert len(sums) == len(data) // BLOCK  # one piece per block
    assert all(zlib.crc32(data[a:b]) == crc for a, b, crc in sums.pieces())
    span = sums.span_to_read(70_000, 80_000)
    assert span == (BLOCK, 2 * BLOCK)
    base, end = span
    assert sums.damaged(base, data[base:end], 70_000, 80_000) == []
    bad = bytearray(data[base:end])
    bad[100] ^= 1
    assert sums.damaged(base, bytes(bad), 70_000, 80_000) == [(BLOCK, 2 * BLOCK)]
    sums.drop([(BLOCK, 2 * BLOCK)])
    assert sums.span_to_read(70_000, 80_000) is None
    assert not sums.ranges().covers(BLOCK, 2 * BLOCK)


def test_14_unrecorded_bytes_are_not_vouched_for() -> None:
    sums = Checksums()
    sums.add(0, b"x" * 100)
    sums.add(200, b"y" * 100)
    assert sums.span_to_read(50, 250) is None
    assert sums.span_to_read(0, 100) == (0, 100)


# -- found by the hostile review of this change -------------------------------------------------


async def test_a_validator_we_cannot_send_back_is_not_used() -> None:
    import re

    import httpx

    from kithara_fs.net import HttpClient

    from .fakes import streamed

    data = b"x" * 1000

    async def answer(request: httpx.Request) -> httpx.Response:
        first, last = map(int, re.findall(r"\d+", request.headers["Range"]))
        headers = [(b"ETag", b'"\xe9tag"'),  # obs-text: allowed by RFC 9110, not sendable
                   (b"Content-Range", f"bytes {first}-{last}/1000".encode())]  # fmt: skip
        return httpx.Response(206, headers=headers, content=streamed(data[first : last + 1]))

    async with HttpClient(transport=httpx.MockTransport(answer)) as http:
        info = await http.probe("http://origin.test/a.mp3")
        assert info.length == 1000 and info.etag is None
        async with http.open_range("http://origin.test/a.mp3", 10, 19, expected=info) as body:
            assert b"".join([c async for c in body.chunks()]) == b"x" * 10


def test_redaction_of_a_hostile_run_of_brackets_is_right() -> None:
    text = "http://u:SECRET@h/?q=1" + ")" * 100_000
    redacted = redact_text(text)
    assert "SECRET" not in redacted and redacted.endswith(")" * 100_000)


def test_error_texts_are_bounded() -> None:
    error = OriginError("http://h/p", "invalid IV " + "A" * 1_000_000)
    assert len(error.reason) < 1100


def test_an_old_cache_with_loose_subfolders_is_tightened_not_refused(tmp_path: Path) -> None:
    from kithara_fs.cache import CacheStore

    top = tmp_path / "cache"
    (top / "v2" / "data" / "ab").mkdir(parents=True)
    for folder in (top / "v2", top / "v2" / "data", top / "v2" / "data" / "ab"):
        folder.chmod(0o775)  # what the first round made under umask 002
    top.chmod(0o700)
    store = CacheStore(top)
    entry = store.entry("http://h/a.mp3")
    assert entry.write(0, b"abc")
    store.close()
    assert stat.S_IMODE((top / "v2").stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.data_path.parent.stat().st_mode) == 0o700
    top.chmod(0o775)
    with pytest.raises(CacheError, match="writable by group or others"):
        CacheStore(top)
