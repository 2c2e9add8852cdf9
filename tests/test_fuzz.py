"""Property-based fuzzing of every parser and of the FUSE handlers: only documented errors escape.

Each test is bounded (``max_examples``) so the file stays well under a minute on a small CI
machine. The invariant everywhere: a hostile or broken input ends in the module's documented
exception (or a value that satisfies the module's promises), never in any other exception.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import tempfile
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pyfuse3
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kithara_fs import headers
from kithara_fs.cache import CacheStore
from kithara_fs.config import Settings, load_config, parse_config
from kithara_fs.engine.scheduler import Scheduler
from kithara_fs.errors import ConfigError, PlaylistError
from kithara_fs.fuse import KitharaOperations
from kithara_fs.net import HttpClient
from kithara_fs.ranges import RangeSet
from kithara_fs.sources.hls import playlist as hls_module
from kithara_fs.sources.hls.playlist import (
    AES_BLOCK,
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    MasterPlaylist,
    MediaPlaylist,
    Resource,
    container_extension,
    parse,
    variant_stem,
)
from kithara_fs.tree import Registry

from .fakes import FakeOrigin

# -- shared junk ------------------------------------------------------------------------------

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-300, 1e308, 0.5, 86401.0]
HUGE_INTS = [2**31, 2**63 - 1, 2**63, 2**64, 2**128, 10**400, -(10**400), -1, 0, 1]
JUNK_STRINGS = [
    "inf", "-inf", "+inf", "nan", "NaN", "1e400", "-1e400", "1e-400", "1e308G", "2G", "2GiB",
    "500M", " 1.5T ", "0", "-1", "-2G", "0x10", "1_000", "²", "٣", "٣G", "１G", "G", "", "  ",
    "B", "KiB", "9" * 5000, "\x00", "\x1f", "\u2028", "ü/ß", "file", "hls", "HLS", "~",
    "~nobody/x", "true", "30", "0.0", "-0.0", "1e-320",
]  # fmt: skip
CONTROL_CHARS = ["\x00", "\t", "\n", "\r", "\x01", "\x1f", "\x7f", " ", "\u00a0", "\u2028"]


def _insert(text: str, index: int, extra: str) -> str:
    index %= len(text) + 1
    return text[:index] + extra + text[index:]


urls = st.builds(
    lambda scheme, sep, host, path: scheme + sep + host + path,
    st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "file", "", "ht\ttp", "data",
                     "javascript", "ｈｔｔｐ", "h"]),  # fmt: skip
    st.sampled_from(["://", ":", ":/", ":///", "//", ":\\\\", "://user:pw@"]),
    st.sampled_from(["origin.test", "ORIGIN.test", "[::1]", "[::1", "[", "h:99999", "h:abc",
                     "h:0", "", "例え.jp", "1.2.3.4", "h:-1", "[v1.x]"]),  # fmt: skip
    st.sampled_from(["", "/", "/a.mp3", "/x/index.m3u8", "/a.M3U", "?q=1", "#f", "/a b.ts"]),
)
junk_urls = st.one_of(
    urls,
    st.tuples(urls, st.integers(0, 40), st.sampled_from(CONTROL_CHARS)).map(
        lambda t: _insert(*t)
    ),
    st.text(max_size=30),
)

# -- 1. config ----------------------------------------------------------------------------------

SCHEMA_KEYS = ["cache", "mount", "stream", "dir", "max_size", "read_timeout", "metadata_timeout",
               "readahead_seconds", "mountpoint", "path", "url", "pin", "kind",
               "live_start_segments"]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(),
    st.sampled_from(SPECIAL_FLOATS),
    st.sampled_from(JUNK_STRINGS),
    st.text(max_size=20),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=5)), inner,
                        max_size=3),  # fmt: skip
    ),
    max_leaves=8,
)
numberish = st.one_of(
    st.integers(-5, 100),
    st.floats(),
    st.sampled_from(SPECIAL_FLOATS),
    st.sampled_from(HUGE_INTS),
    st.booleans(),
    st.sampled_from(JUNK_STRINGS),
)
path_parts = st.sampled_from(["a", "b", "x.mp3", "..", ".", "", ".index.m3u8", ".kithara", "ü",
                              "a b", "\x01", "a\\b", "x" * 256, "é" * 128, "\x7f"])  # fmt: skip
stream_paths = st.one_of(
    st.tuples(st.sampled_from(["", "/"]), st.lists(path_parts, min_size=1, max_size=4)).map(
        lambda t: t[0] + "/".join(t[1])
    ),
    st.text(max_size=12),
)
stream_tables = st.fixed_dictionaries(
    {"path": stream_paths, "url": junk_urls},
    optional={
        "pin": st.one_of(st.booleans(), values),
        "readahead_seconds": numberish,
        "kind": st.one_of(st.sampled_from(["file", "hls", "HLS", ""]), values),
        "live_start_segments": numberish,
        "junk": values,
    },
)
cache_tables = st.fixed_dictionaries(
    {}, optional={"dir": st.one_of(st.text(max_size=10), values), "max_size": numberish}
)
mount_tables = st.fixed_dictionaries(
    {},
    optional={
        "read_timeout": numberish,
        "metadata_timeout": numberish,
        "readahead_seconds": numberish,
        "mountpoint": st.one_of(st.text(max_size=10), values),
    },
)
documents = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "cache": st.one_of(cache_tables, cache_tables, values),
            "mount": st.one_of(mount_tables, mount_tables, values),
            "stream": st.one_of(
                st.lists(st.one_of(stream_tables, stream_tables, stream_tables, values),
                         max_size=4),  # fmt: skip
                values,
            ),
        },
    ),
    st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=5)), values,
                    max_size=4),  # fmt: skip
)


def _positive_finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_settings(s: Settings) -> None:
    assert _positive_finite(s.read_timeout), s.read_timeout
    assert _positive_finite(s.metadata_timeout), s.metadata_timeout
    assert _positive_finite(s.readahead_seconds), s.readahead_seconds
    assert type(s.max_size) is int and s.max_size > 0, s.max_size
    assert isinstance(s.cache_dir, Path)
    for stream in s.streams:
        assert stream.url.lower().startswith(("http://", "https://")), stream.url
        assert stream.path, stream
        assert all(part not in ("", ".", "..") for part in stream.path), stream.path
        if stream.readahead_seconds is not None:
            assert _positive_finite(stream.readahead_seconds), stream.readahead_seconds
        assert stream.kind in ("file", "hls")
        assert isinstance(stream.pin, bool)
        if stream.kind == "hls":
            live = stream.option_map["live_start_segments"]
            assert type(live) is int and live >= 1, live
        else:
            assert stream.options == (), stream.options


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_parse_config_raises_only_config_error(data: dict[str, Any]) -> None:
    try:
        result = parse_config(data, source="fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc) or "\n" in repr(data)
        return
    check_settings(result)


TOML_SECTIONS = ["[cache]", "[mount]", "[[stream]]", "[stream]", "[[cache]]", "[junk]", ""]
TOML_VALUES = [
    "nan", "+nan", "inf", "-inf", "+inf", "-0.0", "1e400", "-1e400", "1e-400", "0", "-1", "1",
    "9" * 5000, "0x7fffffffffffffffffff", "1_000", '"inf"', '"1e400"', '"2G"', '"nan"',
    '"-inf"', "true", "[1, 2]", "{a = 1}", '"http://h/a.mp3"', '"ht\\ttp://h/a"',
    '"\\u0000http://h/x"', "1979-05-27T07:32:00Z", '""', '"a/../b"', "'٣'", '"٣G"',
    "99999999999999999999999999", '"https://h/x.m3u8"', '"hls"', "3.5", '"a/b.mp3"',
]  # fmt: skip
toml_lines = st.one_of(
    st.sampled_from(TOML_SECTIONS),
    st.builds(
        lambda k, v: f"{k} = {v}", st.sampled_from(SCHEMA_KEYS), st.sampled_from(TOML_VALUES)
    ),
    st.text(max_size=20),
)
toml_docs = st.one_of(
    st.binary(max_size=300),
    st.lists(toml_lines, max_size=12).map(lambda lines: "\n".join(lines).encode()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(toml_docs)
def test_load_config_raises_only_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "streams.toml"
        path.write_bytes(raw)
        try:
            result = load_config(path)
        except ConfigError:
            return
    check_settings(result)


# -- 2. HLS playlists ---------------------------------------------------------------------------

PLAYLIST_URL = "http://origin.test/prog/index.m3u8"
VALID_PLAYLISTS = [
    # A master playlist with an audio rendition and two variants.
    "#EXTM3U\n#EXT-X-VERSION:3\n"
    '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",LANGUAGE="en",NAME="English",URI="en/index.m3u8"\n'
    '#EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS="mp4a.40.2",AUDIO="aud"\nlow/index.m3u8\n'
    "#EXT-X-STREAM-INF:BANDWIDTH=256000,AVERAGE-BANDWIDTH=250000\n"
    "https://cdn.test/high/index.m3u8\n",
    # VOD, encrypted, byte ranges and a discontinuity.
    "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n"
    '#EXT-X-KEY:METHOD=AES-128,URI="key.bin",IV=0x000102030405060708090a0b0c0d0e0f\n'
    "#EXTINF:6.0,\n#EXT-X-BYTERANGE:1000@0\nseg.ts\n#EXTINF:5.5,\n#EXT-X-BYTERANGE:2000\nseg.ts\n"
    '#EXT-X-KEY:METHOD=NONE\n#EXT-X-DISCONTINUITY\n#EXTINF:4,title\nb.ts\n#EXT-X-ENDLIST\n',
    # fMP4 with init sections.
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n"
    '#EXT-X-MAP:URI="init.mp4",BYTERANGE="720@0"\n#EXTINF:4.000,\ns1.m4s\n#EXTINF:4.000,\ns2.m4s\n'
    '#EXT-X-MAP:URI="init2.mp4"\n#EXTINF:3.2,\n/abs/s3.m4s\n#EXT-X-ENDLIST\n',
    # Live, AES-128 without IV (the sequence is the IV).
    "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1234\n"
    '#EXT-X-KEY:METHOD=AES-128,URI="https://keys.test/k"\n'
    "#EXTINF:2.002,\nlive1234.aac\n#EXTINF:2.002,\nlive1235.aac\n#EXTINF:1.9,\nlive1236.aac\n",
]
JUNK_NUMBERS = [
    "-1", "0", "-0", "-0.0", "99999999999999999999999999999999999999999", "1e400", "-1e400",
    "nan", "NaN", "inf", "-inf", "٣", "²", "１２", "1_000", "0x10", "", " 5 ", "1.5", "4294967296",
    str(2**63), str(2**64), str(2**128), str(2**130), "9" * 5000, "1e308", "1.7976931348623157e308",
    "5e-324", "+3",
]  # fmt: skip
JUNK_URIS = [
    "file:///etc/passwd", "data:,x", "javascript:x", "ftp://h/x", "//other.test/x", "HTTP://X/a",
    "http://[::1", "http://[", "https://[v1.x]/", "[::1]/a", "http://h:99999/", "", " ", "\x00",
    "http:", "a b.ts", "../../../x", "?q", "#frag", "\\\\server\\x", "ｈｔｔｐ://x/a",
    "http://例え.jp/a", "blob:http://x", "\x01http://x/a", "ht\ttp://x/a", "mailto:a@b",
]  # fmt: skip
IVS = ["0x000102030405060708090a0b0c0d0e0f", "0xZZ", "0x" + "0" * 40, "", "0x٣", "0x1", "0X1",
       "1", "0x", "0x 1", "00112233445566778899aabbccddeeff00"]  # fmt: skip
METHODS = ["NONE", "AES-128", "aes-128", "SAMPLE-AES", "", "AES-256", "none"]


def _junk_tag(draw: st.DrawFn) -> str:
    n = lambda: draw(st.sampled_from(JUNK_NUMBERS))  # noqa: E731
    uri = lambda: draw(st.sampled_from(JUNK_URIS + ["ok.ts", "k.bin"]))  # noqa: E731
    return draw(
        st.sampled_from(
            [
                f"#EXT-X-BYTERANGE:{n()}@{n()}",
                f"#EXT-X-BYTERANGE:{n()}",
                "#EXT-X-BYTERANGE:",
                f'#EXT-X-KEY:METHOD={draw(st.sampled_from(METHODS))},URI="{uri()}",'
                f"IV={draw(st.sampled_from(IVS))}",
                f"#EXT-X-KEY:METHOD={draw(st.sampled_from(METHODS))}",
                f'#EXT-X-MAP:URI="{uri()}",BYTERANGE="{n()}@{n()}"',
                f'#EXT-X-MAP:URI="{uri()}"',
                f"#EXTINF:{n()},",
                f"#EXT-X-TARGETDURATION:{n()}",
                f"#EXT-X-MEDIA-SEQUENCE:{n()}",
                f"#EXT-X-DISCONTINUITY-SEQUENCE:{n()}",
                "#EXT-X-DISCONTINUITY",
                "#EXT-X-ENDLIST",
                f"#EXT-X-STREAM-INF:BANDWIDTH={n()},CODECS=\"{draw(st.text(max_size=5))}\"",
                f'#EXT-X-MEDIA:TYPE=AUDIO,URI="{uri()}",NAME="{draw(st.text(max_size=5))}"',
                f"#EXT-X-PROGRAM-DATE-TIME:{draw(st.text(max_size=25))}",
                f"#EXT-X-START:TIME-OFFSET={n()}",
                f'#EXT-X-PART:DURATION={n()},URI="{uri()}"',
                f"#EXT-X-SERVER-CONTROL:HOLD-BACK={n()}",
                f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri()}"',
                f"#EXT-X-DATERANGE:ID=\"x\",START-DATE=\"{draw(st.text(max_size=8))}\"",
                uri(),
                draw(st.text(max_size=30)),
            ]
        )
    )


@st.composite
def junk_tag_playlists(draw: st.DrawFn) -> bytes:
    """#EXTM3U, then only junk tags and URIs."""
    tags = [_junk_tag(draw) for _ in range(draw(st.integers(0, 8)))]
    return "\n".join(["#EXTM3U", *tags]).encode()


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_URI_ATTR = re.compile(r'URI="[^"]*"')


@st.composite
def mutated_playlists(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(VALID_PLAYLISTS)).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "number", "uri", "insert", "append",
                                   "truncate"]))  # fmt: skip
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if not lines:
            lines.append("")
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "number":
            junk = draw(st.sampled_from(JUNK_NUMBERS))
            count = draw(st.integers(0, 2))
            lines[i] = _NUMBER.sub(lambda _, junk=junk: junk, lines[i], count=count)
        elif op == "uri":
            junk = draw(st.sampled_from(JUNK_URIS))
            if _URI_ATTR.search(lines[i]):
                lines[i] = _URI_ATTR.sub(lambda _, junk=junk: f'URI="{junk}"', lines[i])
            elif not lines[i].startswith("#"):
                lines[i] = junk
        elif op == "insert":
            lines.insert(i, _junk_tag(draw))
        elif op == "append":
            lines[i] += draw(st.sampled_from([",", "@", '"', "=", ",X=1", "\x00", "\r"]))
        else:
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
    text = "\n".join(lines)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["\ufeff", " \n", "\r\n"])) + text
    return text.encode("utf-8", "surrogatepass")


playlist_inputs = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: ("#EXTM3U\n" + t).encode()),
    junk_tag_playlists(),
    mutated_playlists(),
    mutated_playlists(),
    mutated_playlists(),
)


def _http_uri(uri: str) -> bool:
    """An absolute http(s) URL, as Resource and Variant document: scheme, then a host."""
    parts = urlsplit(uri)
    return (
        uri.lower().startswith(("http://", "https://"))
        and parts.scheme.lower() in ("http", "https")
        and bool(parts.hostname)
    )


def _check_resource(resource: Resource | None) -> None:
    if resource is None:
        return
    assert _http_uri(resource.uri), resource.uri
    assert isinstance(resource.iv, bytes) and len(resource.iv) == AES_BLOCK
    if resource.byterange is not None:
        assert resource.byterange.offset >= 0, resource.byterange
        assert 0 < resource.byterange.length <= MAX_SEGMENT_BYTES, resource.byterange
    if resource.key is not None:
        assert _http_uri(resource.key.uri), resource.key.uri
        assert resource.key.iv is None or len(resource.key.iv) == AES_BLOCK


def check_playlist(result: object) -> None:
    if isinstance(result, MasterPlaylist):
        assert 0 < len(result.variants) <= getattr(hls_module, "MAX_VARIANTS", math.inf)
        for variant in result.variants:
            assert _http_uri(variant.uri), variant.uri
            assert isinstance(variant.bandwidth, int)
            assert variant_stem(variant)
        return
    assert isinstance(result, MediaPlaylist), result
    # The upper bound exists once the module clamps EXT-X-TARGETDURATION (MAX_TARGET_DURATION).
    top = getattr(hls_module, "MAX_TARGET_DURATION", math.inf)
    assert math.isfinite(result.target_duration) and 1 <= result.target_duration <= top
    assert len(result.segments) <= MAX_SEGMENTS
    assert not result.ended or result.segments
    assert re.fullmatch("[0-9a-f]{32}", result.fingerprint)
    previous_part = 0
    for index, segment in enumerate(result.segments):
        assert segment.sequence == result.first_sequence + index and segment.sequence >= 0
        assert math.isfinite(segment.duration) and segment.duration >= 0, segment.duration
        assert segment.part in (previous_part, previous_part + 1) if index else segment.part == 0
        previous_part = segment.part
        _check_resource(segment.media)
        _check_resource(segment.init)
    assert sum(len(p) for p in result.parts()) == len(result.segments)
    assert container_extension(result)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(playlist_inputs)
def test_hls_parse_raises_only_playlist_error(text: bytes) -> None:
    try:
        result = parse(text, PLAYLIST_URL)
    except PlaylistError as exc:
        assert exc.url == PLAYLIST_URL
        return
    check_playlist(result)


# -- 3. headers ---------------------------------------------------------------------------------

header_numbers = st.one_of(
    st.integers(0, 2**70).map(str),
    st.sampled_from(["²", "٣", "１", "-1", "+1", " 1", "1 ", "0" * 30 + "1", "9" * 19, "9" * 20,
                     "", "*", str(2**63 - 1), str(2**63), "1_0", "1.0", "0x1", "\u00a01"]),
)  # fmt: skip
content_ranges = st.builds(
    lambda p, a, b, t: f"{p}{a}-{b}/{t}",
    st.sampled_from(["bytes ", "BYTES\t", "byteſ ", "bytes  ", "bytes", "bits ", " bytes ",
                     "bytes=", "ｂytes "]),  # fmt: skip
    header_numbers,
    header_numbers,
    header_numbers,
)
unsatisfied = st.builds(
    lambda p, t: f"{p}*/{t}",
    st.sampled_from(["bytes ", "bytes\t", "Bytes ", "byteſ "]),
    header_numbers,
)
dates = st.builds(
    lambda day, num, month, year, time_, zone: f"{day}{num} {month} {year} {time_}{zone}",
    st.sampled_from(["Mon, ", "Sun, ", "", "Xyz, ", "Sunday, "]),
    st.sampled_from(["01", "1", "0", "32", "99999999999", "٣", "-1"]),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo", ""]),
    st.sampled_from(["2020", "0", "1", "69", "9999", "10000", "99999999999", "-1", "٢٠٢٠"]),
    st.sampled_from(["00:00:00", "23:59:60", "25:61:61", "1:2", "", "99999999999:00:00"]),
    st.sampled_from([" GMT", " UTC", " +0000", " -0000", " +9999", " -99999999999999", " EST",
                     "", " Z", " +0100x"]),  # fmt: skip
)
header_values = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="0123456789-/*bytes \t²٣１\u00a0", max_size=40),
    content_ranges,
    unsatisfied,
    dates,
    header_numbers,
    st.text(min_size=250, max_size=300, alphabet="9 "),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_values, st.one_of(st.floats(-1e11, 1e11), st.just(1.7e9)))
def test_headers_never_raise_and_return_sane_values(value: str | None, now: float) -> None:
    span = headers.content_range(value)
    if span is not None:
        assert value is not None and value.isascii(), value  # only the exact ASCII grammar
        assert 0 <= span.first <= span.last <= headers.MAX_OFFSET
        assert span.total is None or span.last < span.total <= headers.MAX_OFFSET
        assert span.length >= 1
    unsat = headers.unsatisfied_length(value)
    if unsat is not None:
        assert value is not None and value.isascii(), value
        assert type(unsat) is int and 0 <= unsat <= headers.MAX_OFFSET
    length = headers.content_length(value)
    if length is not None:
        assert value is not None and value.strip(" \t").isascii(), value
        assert type(length) is int and 0 <= length <= headers.MAX_OFFSET
    wait = headers.retry_after(value, now)
    if wait is not None:
        assert isinstance(wait, float) and math.isfinite(wait) and wait >= 0, wait


offsets = st.integers(0, headers.MAX_OFFSET)


@settings(max_examples=300, deadline=None)
@given(offsets, offsets, offsets, st.booleans(), st.sampled_from([" ", "\t", "  "]))
def test_header_round_trips(a: int, b: int, t: int, star: bool, space: str) -> None:
    first, last = min(a, b), max(a, b)
    total = None if star else max(t, last + 1)
    shown = "*" if total is None else str(total)
    expected = None if total is not None and total > headers.MAX_OFFSET else (
        headers.ContentRange(first, last, total)
    )  # fmt: skip
    assert headers.content_range(f"bytes{space}{first}-{last}/{shown}") == expected
    assert headers.content_range(f" Bytes {first}-{last}/{shown}\t") == expected
    if first < last:  # reversed spans are junk
        assert headers.content_range(f"bytes {last}-{first}/{shown}") is None
    assert headers.unsatisfied_length(f"bytes */{t}") == t
    assert headers.content_length(str(t)) == t
    assert headers.content_length(str(t + headers.MAX_OFFSET + 1)) is None
    assert headers.retry_after(str(a), 0.0) == float(a)
    when = datetime(1971, 1, 1, tzinfo=UTC).timestamp() + (t % (10**10))
    date = format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True)
    now = float(b % (10**10))
    wait = headers.retry_after(date, now)
    assert wait == pytest.approx(max(0.0, int(when) - now))


# -- 4. ranges: interleaved adds and queries, every offset against the model -------------------

UNIVERSE = range(0, 95)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 70), st.integers(-4, 20)), max_size=25))
def test_rangeset_interleaved_against_model(ops: list[tuple[int, int]]) -> None:
    r = RangeSet()
    model: set[int] = set()
    for start, n in ops:
        before = r.spans()
        if start < 0 or n < 0:
            with pytest.raises(ValueError):
                r.add(start, start + n)
            assert r.spans() == before, "a rejected add changes nothing"
            continue
        r.add(start, start + n)
        model.update(range(start, start + n))
        assert len(r) == len(r.spans()) and r.total() == len(model)
        for offset in UNIVERSE:
            end = offset
            while end in model:
                end += 1
            assert r.present_end(offset) == r.first_missing(offset) == end
            later = [i for i in model if i >= offset]
            assert r.next_present(offset) == (min(later) if later else None)
            for size in (1, 3):
                covered = all(i in model for i in range(offset, offset + size))
                assert r.covers(offset, offset + size) == covered
            assert r.covers(offset, end) and not r.covers(offset, end + 1)
    assert RangeSet(reversed(r.spans())) == r == RangeSet(list(r))
    assert [i for a, b in r.missing(0, 95) for i in range(a, b)] == [
        i for i in UNIVERSE if i not in model
    ]


# -- 5. FUSE handlers, called directly with junk arguments -------------------------------------

FS_DATA = random.Random(7).randbytes(150_000)
CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)

# Biased to the inodes and handles that exist (the tree has ~9 nodes; the prelude opens fh 1-4).
inodes = st.one_of(st.integers(0, 10), st.integers(1, 9), st.integers(0, 2**64 - 1))
fhs = st.one_of(st.integers(0, 6), st.integers(1, 4), st.integers(0, 2**64 - 1))
# pid decides whose /proc descriptors the FUSE adapter reads for O_NONBLOCK: ours, none,
# gone, absurd.
ctxs = st.one_of(
    st.sampled_from([None, CTX]),
    st.builds(SimpleNamespace, uid=st.just(0), gid=st.just(0), umask=st.just(0),
              pid=st.sampled_from([0, 1, -1, os.getpid(), 2**31 - 1, 2**22 + 7])),
)  # fmt: skip
names = st.one_of(
    st.sampled_from([b"album", b"one.flac", b"two.mp3", b".index.m3u8", b".kithara",
                     b"status.json", b".", b"..", b"", b"/", b"album/one.flac"]),  # fmt: skip
    st.binary(max_size=300),
)
xattr_names = st.one_of(
    st.sampled_from([b"user.kithara.url", b"user.kithara.state", b"user.kithara.cached_bytes",
                     b"user.kithara.etag", b"user.kithara.error", b"user.kithara.variant",
                     b"user.kithara.content_type", b"", b"user."]),  # fmt: skip
    names,
)
flags = st.one_of(
    st.sampled_from([os.O_RDONLY, os.O_NONBLOCK, os.O_WRONLY, os.O_RDWR, os.O_APPEND,
                     os.O_TRUNC, os.O_DIRECTORY, os.O_RDONLY | os.O_NONBLOCK]),  # fmt: skip
    st.integers(0, 2**32 - 1),
)
read_offsets = st.one_of(st.integers(0, 2_000), st.integers(0, 160_000),
                         st.sampled_from([0, 149_999, 150_000, 150_001]),
                         st.integers(0, 2**63 - 1))  # fmt: skip
live_fhs = st.one_of(st.integers(1, 4), st.integers(1, 4), fhs)
read_sizes = st.one_of(st.integers(0, 200_000), st.sampled_from([0, 1, 4096, 131072, 2**31]))
calls = st.one_of(
    st.tuples(st.just("getattr"), st.tuples(inodes, ctxs)),
    st.tuples(st.just("lookup"), st.tuples(inodes, names, ctxs)),
    st.tuples(st.just("opendir"), st.tuples(inodes, ctxs)),
    st.tuples(st.just("releasedir"), st.tuples(fhs)),
    st.tuples(st.just("open"), st.tuples(inodes, flags, ctxs)),
    st.tuples(st.just("open"), st.tuples(inodes, flags, ctxs)),
    st.tuples(st.just("read"), st.tuples(live_fhs, read_offsets, read_sizes)),
    st.tuples(st.just("read"), st.tuples(live_fhs, read_offsets, read_sizes)),
    st.tuples(st.just("read"), st.tuples(live_fhs, read_offsets, read_sizes)),
    st.tuples(st.just("release"), st.tuples(fhs)),
    st.tuples(st.just("flush"), st.tuples(fhs)),
    st.tuples(st.just("poll"), st.tuples(inodes, fhs, st.none(), ctxs)),
    st.tuples(st.just("getxattr"), st.tuples(inodes, xattr_names, ctxs)),
    st.tuples(st.just("getxattr"), st.tuples(st.integers(3, 4), xattr_names, ctxs)),
    st.tuples(st.just("listxattr"), st.tuples(inodes, ctxs)),
    st.tuples(st.just("statfs"), st.tuples(ctxs)),
    st.tuples(st.just("access"), st.tuples(inodes, st.integers(0, 2**31 - 1), ctxs)),
    st.tuples(st.just("setattr"), st.tuples(inodes, st.none(), st.none(), fhs, ctxs)),
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _run_calls(folder: str, sequence: list[tuple[str, tuple[Any, ...]]]) -> None:
    origin = FakeOrigin(FS_DATA)
    config = parse_config({
        "cache": {"dir": folder},
        "mount": {"read_timeout": 0.05, "metadata_timeout": 1},
        "stream": [{"path": "album/one.flac", "url": "http://origin.test/one.flac?key=s"},
                   {"path": "two.mp3", "url": "http://origin.test/two.mp3",
                    "readahead_seconds": 1}],
    })  # fmt: skip
    with trio.fail_after(20):
        async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as n:
            # A real mount point (/) lets fuse/operations.py find a mount id and read descriptors.
            store = CacheStore(Path(folder))
            registry = Registry(config, http, store, Scheduler(n), n, mountpoint="/")
            fs = KitharaOperations(registry)
            # Open real files first, so that random reads and releases meet live handles.
            prelude = [(("album", "one.flac"), os.O_RDONLY), (("two.mp3",), os.O_NONBLOCK),
                       ((".index.m3u8",), os.O_RDONLY), ((".kithara", "status.json"), 0)]
            for parts, mode in prelude:
                with contextlib.suppress(pyfuse3.FUSEError):
                    inode = 1
                    for part in parts:
                        inode = (await fs.lookup(inode, part.encode(), None)).st_ino
                    await fs.open(inode, mode, CTX)
            for name, args in sequence:
                with contextlib.suppress(pyfuse3.FUSEError):
                    result = await getattr(fs, name)(*args)
                    if name == "read":
                        assert isinstance(result, bytes) and len(result) <= args[2]
            n.cancel_scope.cancel()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(calls, min_size=1, max_size=25))
def test_fuse_handlers_only_raise_fuse_error(sequence: list[tuple[str, tuple[Any, ...]]]) -> None:
    records = _Records()
    logger = logging.getLogger("kithara_fs")
    logger.addHandler(records)
    try:
        with tempfile.TemporaryDirectory() as folder:
            # Anything but FUSEError escaping a handler propagates out of trio.run and fails.
            trio.run(_run_calls, folder, sequence)
    finally:
        logger.removeHandler(records)
    # The boundary turns bugs into EIO; an "internal error" logged means one was hidden there.
    assert not [m for m in records.messages if "internal error" in m], records.messages
