"""Unit tests of the HLS layers alone: playlist checks, names, throughput and live feeds."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from kithara_fs.budget import Deadline
from kithara_fs.cache import CacheStore
from kithara_fs.errors import PlaylistError
from kithara_fs.net import HttpClient
from kithara_fs.sources.hls.feed import SegmentFeed
from kithara_fs.sources.hls.playlist import (
    MasterPlaylist,
    MediaPlaylist,
    Variant,
    parse,
    unique,
    variant_stem,
)
from kithara_fs.sources.hls.programme import Programme, VariantMedia
from kithara_fs.sources.hls.segments import SegmentFetcher
from kithara_fs.sources.hls.throughput import Throughput

from .fakes import streamed

URL = "http://origin.test/prog/index.m3u8"


def media(body: str) -> MediaPlaylist:
    playlist = parse(("#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + body).encode(), URL)
    assert isinstance(playlist, MediaPlaylist)
    return playlist


def test_segments_resolve_relative_uris_and_take_the_sequence_as_iv() -> None:
    playlist = media("#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n"
                     "#EXTINF:2,\na.ts\n#EXTINF:2,\n/b.ts\n#EXT-X-ENDLIST\n")  # fmt: skip
    first, second = playlist.segments
    assert (first.sequence, first.media.uri) == (7, "http://origin.test/prog/a.ts")
    assert second.media.uri == "http://origin.test/b.ts"
    assert first.media.key is not None and first.media.key.uri == "http://origin.test/prog/k"
    assert first.media.iv == (7).to_bytes(16, "big") and second.media.iv == (8).to_bytes(16, "big")
    assert playlist.ended and len(playlist.parts()) == 1


def test_byte_ranges_without_offset_continue_the_previous_range() -> None:
    playlist = media("#EXTINF:2,\n#EXT-X-BYTERANGE:100@0\nall.ts\n"
                     "#EXTINF:2,\n#EXT-X-BYTERANGE:50\nall.ts\n#EXT-X-ENDLIST\n")  # fmt: skip
    ranges = [s.media.byterange for s in playlist.segments]
    assert [(r.offset, r.length) for r in ranges if r] == [(0, 100), (100, 50)]


def test_discontinuities_and_new_init_sections_start_parts() -> None:
    playlist = media('#EXT-X-MAP:URI="i1.mp4"\n#EXTINF:2,\na.m4s\n#EXTINF:2,\nb.m4s\n'
                     '#EXT-X-MAP:URI="i2.mp4"\n#EXTINF:2,\nc.m4s\n#EXT-X-DISCONTINUITY\n'
                     '#EXTINF:2,\nd.m4s\n#EXT-X-ENDLIST\n')  # fmt: skip
    assert [len(part) for part in playlist.parts()] == [2, 1, 1]


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("#EXTINF:2,\na.ts\n", "missing #EXTM3U"),
        ("#EXTM3U\n#EXTINF:-1,\na.ts\n", "invalid duration"),
        ("#EXTM3U\n#EXTINF:nan,\na.ts\n", "invalid duration"),
        ("#EXTM3U\n#EXT-X-BYTERANGE:2000000000@0\n#EXTINF:2,\na.ts\n", "larger than 1 GiB"),
        ("#EXTM3U\n#EXT-X-BYTERANGE:0@0\n#EXTINF:2,\na.ts\n", "invalid EXT-X-BYTERANGE"),
        ("#EXTM3U\n#EXTINF:2,\nfile:///etc/passwd\n", "refusing file: URI"),
        ("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"file:///k\"\n#EXTINF:2,\na.ts\n",
         "refusing file: URI"),
        ("#EXTM3U\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k\"\n#EXTINF:2,\na.ts\n",
         "METHOD=SAMPLE-AES is not supported"),
        ("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0xZZ\n#EXTINF:2,\na.ts\n", "invalid IV"),
        ("#EXTM3U\n#EXT-X-ENDLIST\n", "no segments"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\ndata:text/plain,x\n", "refusing data: URI"),
    ],
)  # fmt: skip
def test_bad_playlists_are_one_line_errors(text: str, cause: str) -> None:
    with pytest.raises(PlaylistError) as failed:
        parse(text.encode(), URL)
    assert cause in str(failed.value)
    assert "\n" not in str(failed.value)


def test_variant_names_are_readable_and_unique() -> None:
    master = parse(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=128000\nhi.m3u8\n"
                   b"#EXT-X-STREAM-INF:BANDWIDTH=128300\nhi2.m3u8\n"
                   b'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",LANGUAGE="en",NAME="Director\'s cut",'
                   b'URI="en.m3u8"\n', URL)  # fmt: skip
    assert isinstance(master, MasterPlaylist)
    stems = unique([variant_stem(v) for v in master.variants])
    assert stems == ["128k", "128k-2", "en-director-s-cut"]
    assert unique(["a", "a", "a-2"]) == ["a", "a-2", "a-2-2"]


def _variants(*bandwidths: int) -> list[VariantMedia]:
    playlist = media("#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n")
    return [VariantMedia(Variant(f"http://o/{b}.m3u8", b, ""), playlist, f"{b // 1000}k", "ts")
            for b in bandwidths]  # fmt: skip


def test_throughput_drops_fast_rises_slowly_and_keeps_the_current_variant_in_the_band() -> None:
    variants = _variants(256_000, 128_000, 64_000)  # best first
    estimate = Throughput()
    assert estimate.choose(variants, 2) == 2  # nothing measured: stay
    estimate.sample(1_000_000, 1.0)  # 8 Mbit/s
    assert estimate.choose(variants, 2) == 0
    estimate.sample(12_500, 1.0)  # one segment at 100 kbit/s: half believed at once
    assert estimate.estimate is not None and estimate.estimate < 200_000
    assert estimate.choose(variants, 0) == 1
    # 170 kbit/s sustained: 128k needs 0.75 of it — inside the band (<= 0.85), above the
    # switch-up line (0.7): whoever plays 128k stays, whoever plays 64k does not move up.
    steady = Throughput()
    for _ in range(20):
        steady.sample(170_000 // 8, 1.0)
    assert steady.choose(variants, 1) == 1
    assert steady.choose(variants, 2) == 2


async def test_a_live_feed_skips_a_sequence_gap_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The live window moved past segments the feed had not fetched yet: it jumps ahead."""
    published = ["#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
                 "#EXTINF:1,\ns0.ts\n#EXTINF:1,\ns1.ts\n"]  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".m3u8"):
            return httpx.Response(200, content=streamed(published[-1].encode()))
        return httpx.Response(200, content=streamed(request.url.path.encode()))

    async with HttpClient(transport=httpx.MockTransport(answer)) as http:
        store = CacheStore(tmp_path)
        fetcher = SegmentFetcher(http)
        programme = Programme("http://o/live.m3u8", "live", fetcher, store, {}, 30.0)
        first = await programme.playlist("http://o/live.m3u8")
        assert isinstance(first, MediaPlaylist)
        feed = SegmentFeed(programme, (VariantMedia(Variant("http://o/live.m3u8", 0, ""), first,
                                                    "stream", "ts"),),
                           live=True, start_behind=3, readahead_seconds=30.0,
                           throughput=Throughput(), label="live")  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run)
            with trio.fail_after(5):
                while feed.produced < len(b"/s0.ts/s1.ts"):
                    await feed.changed.wait(Deadline.never())
            # The window slides by four segments at once, then the programme ends.
            published.append("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n"
                             "#EXTINF:1,\ns5.ts\n#EXTINF:1,\ns6.ts\n#EXT-X-ENDLIST\n")  # fmt: skip
            with trio.fail_after(5):
                while not feed.eof:
                    await feed.changed.wait(Deadline.never())
        assert feed.read(0, 100) == b"/s0.ts/s1.ts/s5.ts/s6.ts"
        assert "segments 2 to 4 left the playlist" in caplog.text
        store.close()

