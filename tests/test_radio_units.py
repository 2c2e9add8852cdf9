"""Unit tests of the radio layers alone: ICY splitting and titles, frames, station playlists,
the ring, the Shoutcast status line, and the radio config keys."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kithara_fs.cache.ring import RingFile
from kithara_fs.config import parse_config
from kithara_fs.errors import ConfigError
from kithara_fs.net import USER_AGENT
from kithara_fs.net.backend import SizedStream
from kithara_fs.sources.radio import stations
from kithara_fs.sources.radio.frames import FrameWalker, frame
from kithara_fs.sources.radio.icy import IcyDemuxer, decode_text, parse_metadata
from kithara_fs.sources.radio.pages import PageWalker, ogg_crc, page_is_valid, page_length

# -- ICY splitting -------------------------------------------------------------------------


def icy_stream(audio: bytes, blocks: list[bytes], metaint: int) -> bytes:
    """``audio`` with ``blocks`` (raw, padded here) after each ``metaint`` bytes; b"" = L 0."""
    out = bytearray()
    for index in range(0, len(audio), metaint):
        out += audio[index : index + metaint]
        if index + metaint <= len(audio):
            block = blocks[(index // metaint) % len(blocks)] if blocks else b""
            padded = block + b"\0" * (-len(block) % 16)
            out.append(len(padded) // 16)
            out += padded
    return bytes(out)


@given(
    audio=st.binary(min_size=0, max_size=3000),
    metaint=st.integers(1, 97),
    blocks=st.lists(st.binary(max_size=40), max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_the_demuxer_returns_the_audio_exactly_however_the_bytes_are_cut(
    audio: bytes, metaint: int, blocks: list[bytes], cuts: list[int]
) -> None:
    wire = icy_stream(audio, blocks, metaint)
    demuxer = IcyDemuxer(metaint)
    got = bytearray()
    metadata = []
    edges = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    for start, end in zip(edges, edges[1:], strict=False):
        chunk_audio, found = demuxer.feed(wire[start:end])
        got += chunk_audio
        metadata += found
    assert bytes(got) == audio
    expected = []
    for index in range(metaint, len(audio) + 1, metaint):
        block = blocks[(index // metaint - 1) % len(blocks)] if blocks else b""
        if block:
            expected.append((block + b"\0" * (-len(block) % 16), index))
    assert [(m.raw, m.at) for m in metadata] == expected


def test_a_block_cut_off_by_a_drop_never_reaches_the_audio() -> None:
    demuxer = IcyDemuxer(4)
    audio, blocks = demuxer.feed(b"abcd\x02StreamTitle='x")  # a 32-byte block, half sent
    assert audio == b"abcd" and blocks == []


def test_the_largest_block_is_read_whole() -> None:
    title = b"StreamTitle='" + b"x" * 4000 + b"';"
    block = title + b"\0" * (4080 - len(title))
    audio, blocks = IcyDemuxer(3).feed(b"abc" + bytes([255]) + block + b"def")
    assert audio == b"abcdef" and blocks[0].raw == block
    assert parse_metadata(blocks[0].raw)["StreamTitle"] == "x" * 1024  # cut to MAX_VALUE


# -- titles --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        (b"StreamTitle='Bj\xc3\xb6rk - It's \"Oh\"; So Quiet';StreamUrl='';",
         "Björk - It's \"Oh\"; So Quiet"),
        (b"StreamTitle='It';s <a&b> \xc3\xbc';\0\0\0", "It';s <a&b> ü"),  # Icecast, UTF-8
        (b"StreamTitle='It';s <a&b> \xfc';\0\0\0\0", "It';s <a&b> ü"),  # Latin-1
        (b"StreamTitle='Bj\xf6rk &#8211; It\\'s';\0", "Björk – It\\'s"),  # entity
        (b"StreamTitle='A \x96 B';", "A – B"),  # cp1252's en dash
        (b"StreamTitle='';\0", ""),
        (b"StreamTitle='no end", "no end"),
        (b"StreamTitle='tab\tand\nnewline';", "tab and newline"),
        (b"StreamTitle='x &#0; y &#55296;';", "x &#0; y &#55296;"),  # not characters
    ],
)  # fmt: skip
def test_titles_are_read_as_stations_write_them(raw: bytes, title: str) -> None:
    assert parse_metadata(raw)["StreamTitle"] == title


def test_the_stream_url_is_read_beside_the_title() -> None:
    pairs = parse_metadata(b"StreamTitle='a';StreamUrl='http://x/';\0\0")
    assert pairs == {"StreamTitle": "a", "StreamUrl": "http://x/"}


def test_text_is_utf8_else_cp1252_else_latin1() -> None:
    assert decode_text("é".encode()) == "é"
    assert decode_text(b"\x80") == "€"
    assert decode_text(b"\x81") == "\x81"  # a hole in cp1252


# -- frames --------------------------------------------------------------------------------

MP3_128K = bytes([0xFF, 0xFB, 0x90, 0x00])  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417 B
MP3_PADDED = bytes([0xFF, 0xFB, 0x92, 0x00])  # the same with a padding byte: 418 B


def adts(length: int) -> bytes:
    return bytes([0xFF, 0xF1, 0x50, 0x80 | (length >> 11), (length >> 3) & 0xFF,
                  ((length & 7) << 5) | 0x1F, 0xFC])  # fmt: skip


def test_frame_lengths_follow_the_headers() -> None:
    assert frame(MP3_128K + bytes(3))[:2] == (417, 128)
    assert frame(MP3_PADDED + bytes(3))[:2] == (418, 128)
    assert frame(adts(371))[:2] == (371, 0)
    assert frame(b"\xff\xff\xff\xff\xff\xff\xff") is None  # bad bitrate index
    assert frame(b"OggS\0\0\0") is None


@given(garbage=st.binary(max_size=600), count=st.integers(4, 12), cuts=st.lists(
    st.integers(0, 10_000), max_size=20), use_adts=st.booleans())  # fmt: skip
def test_the_walker_finds_every_frame_after_garbage(
    garbage: bytes, count: int, cuts: list[int], use_adts: bool
) -> None:
    frames = []
    for index in range(count):
        if use_adts:
            frames.append(adts(200 + index) + bytes(200 + index - 7))
        else:
            header = MP3_PADDED if index % 2 else MP3_128K
            frames.append(header + bytes(frame(header + bytes(3))[0] - 4))  # type: ignore[index]
    # No sync in the garbage but one lone header (an MP3 frame that no second one follows,
    # as a stray 0xFF in a tag may look): it must not be taken for the stream's start.
    garbage = b"\0" + MP3_128K + garbage.replace(b"\xff", b"\xfe")
    stream = garbage + b"".join(frames)
    starts = [len(garbage) + sum(len(f) for f in frames[:i]) for i in range(count)]
    walker = FrameWalker()
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for start, end in zip(edges, edges[1:], strict=False):
        walker.feed(stream[start:end])
        if walker.synced:
            assert walker.next_start in [*starts, len(stream)]
    assert walker.last_start == starts[-1]
    assert walker.next_start == len(stream)


def test_the_walker_resyncs_after_a_cut_mid_frame() -> None:
    body = bytes(413)
    walker = FrameWalker()
    walker.feed((MP3_128K + body) * 3 + MP3_128K + body[:100])  # a drop mid-frame...
    walker.feed((MP3_128K + body) * 3)  # ...then a new connection's frames
    assert walker.synced and walker.next_start == 417 * 3 + 104 + 417 * 3


# -- Ogg pages -----------------------------------------------------------------------------


def ogg_page(flags: int, granule: int, sequence: int, body: bytes, serial: int = 7) -> bytes:
    lacing = [255] * (len(body) // 255) + [len(body) % 255]
    head = (b"OggS" + bytes([0, flags]) + granule.to_bytes(8, "little")
            + serial.to_bytes(4, "little") + sequence.to_bytes(4, "little") + bytes(4)
            + bytes([len(lacing)]) + bytes(lacing))  # fmt: skip
    page = bytearray(head + body)
    page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
    return bytes(page)


def chain(serial: int, audio_pages: int) -> tuple[bytes, bytes]:
    """One logical stream: (its header pages, the whole stream with audio pages)."""
    headers = (ogg_page(0x02, 0, 0, b"OpusHead" + bytes(11), serial)
               + ogg_page(0, 0, 1, b"OpusTags" + bytes(300), serial))  # fmt: skip
    audio = b"".join(ogg_page(0, 960 * (i + 1), i + 2, bytes([i]) * (100 + i), serial)
                     for i in range(audio_pages))  # fmt: skip
    return headers, headers + audio


@given(garbage=st.binary(max_size=300), cuts=st.lists(st.integers(0, 20_000), max_size=25))
def test_the_page_walker_keeps_the_header_pages_of_each_link(
    garbage: bytes, cuts: list[int]
) -> None:
    first_headers, first = chain(1, 5)
    second_headers, second = chain(2, 4)
    # A bad page (a flipped byte fails the CRC) is never taken for a page.
    damaged = bytearray(ogg_page(0, 5, 9, b"x" * 50))
    damaged[40] ^= 1
    stream = garbage.replace(b"O", b"o") + bytes(damaged) + first + second
    walker = PageWalker()
    seen = []
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for start, end in zip(edges, edges[1:], strict=False):
        walker.feed(stream[start:end])
        seen += walker.take_headers()
    base = len(stream) - len(first) - len(second)
    assert seen == [(base, first_headers), (base + len(first), second_headers)]
    assert walker.next_start == len(stream)
    assert walker.last_start == len(stream) - len(ogg_page(0, 960 * 4, 5, bytes([3]) * 103, 2))


def _reference_ogg_crc(data: bytes) -> int:
    """RFC 3533's CRC, bit by bit: polynomial 0x04C11DB7, unreflected, from 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else crc << 1
    return crc


@given(st.binary(max_size=2000))
def test_the_ogg_crc_is_rfc_3533s(data: bytes) -> None:
    assert ogg_crc(data) == _reference_ogg_crc(data)


@pytest.mark.timeout(30)  # a hang guard: a Python CRC took ~50 s of CPU per MB of this
def test_fake_page_headers_cost_little() -> None:
    fake = b"OggS\0\0" + bytes(20) + b"\xff" * 256  # claims a 65 KiB page, every 282 bytes
    walker = PageWalker()
    stream = fake * (1_000_000 // len(fake))
    for at in range(0, len(stream), 4096):
        walker.feed(stream[at : at + 4096])
    assert not walker.synced and walker.take_headers() == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_the_ogg_crc_accepts_the_pages_of_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "a.opus"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a",
                    "libopus", str(path)], check=True, timeout=60)  # fmt: skip
    data = path.read_bytes()
    at = pages = 0
    while at < len(data):
        length = page_length(data, at)
        assert length and page_is_valid(data[at : at + length])
        at += length
        pages += 1
    assert pages >= 3


# -- station playlists ---------------------------------------------------------------------


def test_a_pls_lists_its_files_in_number_order() -> None:
    body = b"[playlist]\nFile2=http://b/\nTitle1=x\nfile1=http://a/stream\nNumberOfEntries=2\n"
    assert stations.stream_urls(body, "http://host/s.pls") == ["http://a/stream", "http://b/"]


def test_an_m3u_lists_its_http_lines_resolved_against_it() -> None:
    body = b"#EXTM3U\n#EXTINF:-1,Radio\nrelay/live\nftp://no/\nhttp://x/a\nhttp://x/a\n"
    assert stations.stream_urls(body, "http://host/list/s.m3u") == [
        "http://host/list/relay/live", "http://x/a"]  # fmt: skip


def test_an_xspf_lists_its_locations() -> None:
    body = (b'<?xml version="1.0"?><playlist xmlns="http://xspf.org/ns/0/"><trackList>'
            b"<track><location>http://a/1</location></track>"
            b"<track><location>http://b/2</location></track></trackList></playlist>")
    assert stations.stream_urls(body, "http://h/s.xspf") == ["http://a/1", "http://b/2"]


def test_an_xspf_with_entities_is_refused() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<playlist><trackList><track><location>http://x/&b;</location></track>"
            b"</trackList></playlist>")
    with pytest.raises(ValueError, match="XSPF"):
        stations.stream_urls(bomb, "http://h/s.xspf")


def test_a_playlist_without_streams_is_an_error() -> None:
    with pytest.raises(ValueError, match="no http"):
        stations.stream_urls(b"[playlist]\nNumberOfEntries=0\n", "http://h/s.pls")
    with pytest.raises(ValueError):
        stations.stream_urls(b"<html><body>hello</body></html>", "http://h/s.xspf")


# -- the ring ------------------------------------------------------------------------------


def test_the_ring_keeps_the_newest_bytes_and_refuses_older_ones(tmp_path: Path) -> None:
    ring = RingFile(tmp_path / "rings", 10)
    assert os.listdir(tmp_path / "rings") == []  # unlinked at once
    assert ring.read(0, 5) is None
    ring.append(b"0123456")
    ring.append(b"789abcd")  # wraps: holds positions 4..13
    assert ring.oldest == 4 and ring.written == 14
    assert ring.read(4, 100) == b"456789abcd"
    assert ring.read(9, 3) == b"9ab"
    with pytest.raises(ValueError):
        ring.read(3, 1)
    ring.append(b"x" * 25)  # larger than the ring: only its newest part
    assert ring.written == 39 and ring.read(29, 10) == b"x" * 10
    ring.close()


# -- the Shoutcast status line -------------------------------------------------------------


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


@pytest.mark.parametrize(
    ("chunks", "first"),
    [
        ((b"ICY 200 OK\n", b"rest"), b"HTTP/1.0 200 OK\n"),
        ((b"IC", b"Y 200 OK\n"), b"HTTP/1.0 200 OK\n"),
        ((b"HTTP/1.1 200 OK\r\n",), b"HTTP/1.1 200 OK\r\n"),
        ((b"ICE 200",), b"ICE 200"),
    ],
)
async def test_only_a_connections_first_icy_status_line_is_read_as_http(
    chunks: tuple[bytes, ...], first: bytes
) -> None:
    stream = SizedStream(_Chunks(*chunks, b"ICY 200 OK\n"))  # type: ignore[arg-type]
    assert await stream.read(1) == first
    rest = b"".join([await stream.read(1) for _ in range(3)])
    assert b"HTTP/1.0" not in rest  # later bytes are never touched


def test_h11_accepts_the_bare_lf_header_lines_of_shoutcast() -> None:
    # Pinned: the ICY rewrite relies on h11 taking LF-only lines once the status line is HTTP.
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    connection.receive_data(b"HTTP/1.0 200 OK\nicy-metaint:8192\ncontent-type:audio/mpeg\n\n")
    response = connection.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert (b"icy-metaint", b"8192") in list(response.headers)


# -- config --------------------------------------------------------------------------------


def radio(**keys: Any) -> dict[str, Any]:
    return {"stream": [{"path": "fm/a.mp3", "url": "http://h/a", "kind": "radio", **keys}]}


def test_radio_keys_have_defaults() -> None:
    options = parse_config(radio()).streams[0].option_map
    assert options == {"rewind_seconds": 0.0, "ring_size": 32 * 1024 * 1024, "tracks_kept": 20}
    assert parse_config({"stream": [{"path": "a", "url": "http://h/x.pls"}]}).streams[0].kind \
        == "radio"  # fmt: skip


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rewind_seconds": -1}, "rewind_seconds: must be a number of seconds"),
        ({"rewind_seconds": True}, "rewind_seconds"),
        ({"ring_size": "1K"}, "ring_size: must be a positive size such as 2G or 500M (at least"),
        ({"tracks_kept": 1.5}, "tracks_kept: must be a whole number"),
        ({"user_agent": "bad\nagent"}, "user_agent: must be printable ASCII"),
        ({"user_agent": "é"}, "user_agent"),
        ({"pin": True}, "pin: not supported for stations"),
    ],
)  # fmt: skip
def test_bad_radio_keys_give_one_line_naming_the_stream(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(radio(**keys), source="c.toml")
    text = str(caught.value)
    assert text.startswith("c.toml: stream 1 (fm/a.mp3): ") and message in text
    assert "\n" not in text


def test_a_radio_key_on_a_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="rewind_seconds: not a key of 'file' streams"):
        parse_config({"stream": [{"path": "a.mp3", "url": "http://h/a", "rewind_seconds": 5}]})


def test_the_network_user_agent_is_checked_and_kept() -> None:
    assert parse_config({"network": {"user_agent": "VLC/3.0"}}).user_agent == "VLC/3.0"
    assert parse_config({}).user_agent is None
    with pytest.raises(ConfigError, match=r"\[network\] user_agent"):
        parse_config({"network": {"user_agent": ""}}, source="c.toml")


def test_the_default_user_agent_passes_station_filters() -> None:
    # Shoutcast serves HTML to "Mozilla"; a station network sent nothing to UAs with a hyphen.
    assert "mozilla" not in USER_AGENT.lower() and "-" not in USER_AGENT
