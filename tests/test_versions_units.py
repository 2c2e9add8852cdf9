"""Unit tests of one progressive source whose origin answers every request with a new
version (dynamic ad insertion), through the real scheduler and read contract and an
in-memory origin: never two versions to one handle, no spinning, no needless ESTALE.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from kithara_fs.budget import Deadline
from kithara_fs.cache import CacheStore
from kithara_fs.engine import scheduler as scheduling
from kithara_fs.engine.scheduler import Scheduler
from kithara_fs.engine.stream import Bytes, Eof, Stream
from kithara_fs.net import HttpClient, ResourceInfo
from kithara_fs.sources.progressive import ProgressiveSource

URL = "http://cdn.test/ep.mp3"


class StitchingHost:
    """Version k is ``bytes([k]) * (base + 1000 k)`` under ETag "vk"; every request gets
    the next k. If-Range is honoured (another version's validator gets the whole body);
    bodies come in chunks, ``delay`` seconds apart. ``stall_after`` requests, it stalls."""

    def __init__(self, base: int, delay: float = 0.01, stall_after: int | None = None) -> None:
        self.base, self.delay, self.stall_after = base, delay, stall_after
        self.requests: list[str | None] = []

    def data(self, k: int) -> bytes:
        return bytes([k]) * (self.base + 1000 * k)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        k = len(self.requests)
        self.requests.append(request.headers.get("Range"))
        if self.stall_after is not None and k >= self.stall_after:
            await trio.sleep_forever()
        data, etag = self.data(k), f'"v{k}"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range") or "")
        if_range = request.headers.get("If-Range")
        if asked is None or (if_range is not None and if_range != etag):
            headers["Content-Length"] = str(len(data))
            return httpx.Response(200, headers=headers, content=self._chunks(data))
        first = int(asked.group(1))
        last = min(int(asked.group(2) or len(data) - 1), len(data) - 1)
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return httpx.Response(206, headers=headers, content=self._chunks(data[first : last + 1]))

    async def _chunks(self, data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            await trio.sleep(self.delay)
            yield data[start : start + 65536]


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    made = CacheStore(tmp_path / "cache")
    yield made
    made.close()


def _source(http: HttpClient, store: CacheStore) -> ProgressiveSource:
    source = ProgressiveSource(URL, http, store.entry(f"episode {URL}"))
    source.versions_vary = True
    return source


async def test_a_reader_in_order_gets_one_whole_version_in_few_requests(
    store: CacheStore,
) -> None:
    host = StitchingHost(base=2_000_000)
    async with HttpClient(transport=httpx.MockTransport(host.handle)) as http, \
            trio.open_nursery() as nursery:  # fmt: skip
        source = _source(http, store)
        await source.ensure_info()
        handle = Stream(source, Scheduler(nursery))
        data, offset = bytearray(), 0
        while True:
            outcome = await handle.try_read(offset, 131072, Deadline.after(30))
            if isinstance(outcome, Eof):
                break
            assert isinstance(outcome, Bytes), outcome
            data += outcome.data
            offset += len(outcome.data)
        nursery.cancel_scope.cancel()
    # One version, whole (not the probe's: no request ever brings that one back).
    assert bytes(data) in {host.data(k) for k in range(1, len(host.requests))}
    assert len(host.requests) <= 4, host.requests  # probe, one ask again, the one taken


async def test_a_read_whose_end_was_of_the_old_length_is_answered_to_the_new_end(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two reads of one handle wait; one follows a shorter version first. The other must
    # work its end out again (it was past the new length): no spin of downloads that end
    # at once, and the bytes up to the new end, not EAGAIN.
    started = []
    start = scheduling.Scheduler._start
    monkeypatch.setattr(scheduling.Scheduler, "_start",
                        lambda self, *a: started.append(a) or start(self, *a))  # fmt: skip
    host = StitchingHost(base=2_500_000, stall_after=1)
    async with HttpClient(transport=httpx.MockTransport(host.handle)) as http, \
            trio.open_nursery() as nursery:  # fmt: skip
        source = _source(http, store)
        await source.ensure_info()
        handle = Stream(source, Scheduler(nursery))
        answer: list[object] = []

        async def second_read() -> None:
            answer.append(await handle.try_read(2_150_000, 131072, Deadline.after(5)))

        nursery.start_soon(second_read)
        await trio.sleep(1)
        # What a download that takes a 2.2 MB version whole does, and the first read's follow.
        source._replace_version(ResourceInfo(2_200_000, '"v9"', accepts_ranges=False), quiet=True)
        handle.version = source.version
        source.entry.write(0, b"\x09" * 2_200_000)
        source.changed.notify()
        with trio.fail_after(10):
            while not answer:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert answer == [Bytes(b"\x09" * 50_000)]
    assert len(started) <= 3
