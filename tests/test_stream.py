"""Stream.try_read, kithara's contract, on a virtual clock (trio MockClock, autojump).

The origin is an in-memory transport, so waits, budgets and seek epochs are exercised
exactly and instantly; the real-kernel versions of these checks are in test_mount_errno.py.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kithara_fs.budget import Deadline
from kithara_fs.cache import CacheStore
from kithara_fs.engine.scheduler import Scheduler, window_bytes
from kithara_fs.engine.stream import Bytes, Eof, Pending, PendingReason, Stream
from kithara_fs.errors import OriginError, RemoteChangedError, SeekPastEndError
from kithara_fs.net import HttpClient
from kithara_fs.sources import progressive
from kithara_fs.sources.progressive import HOLD_SECONDS, REVALIDATE_INTERVAL, ProgressiveSource

from .fakes import FakeOrigin

DATA = random.Random(7).randbytes(12_000_000)


class Rig:
    def __init__(self, origin: FakeOrigin, http: HttpClient, cache: Path, nursery: trio.Nursery):
        self.origin = origin
        self.source = ProgressiveSource("http://origin.test/a.mp3", http, CacheStore(cache).entry(
            "http://origin.test/a.mp3"))  # fmt: skip
        self.scheduler = Scheduler(nursery)

    async def open(self) -> Stream:
        await self.source.ensure_info()
        return Stream(self.source, self.scheduler)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    origin = FakeOrigin(DATA)
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        yield Rig(origin, http, tmp_path, nursery)
        nursery.cancel_scope.cancel()


async def test_bytes_are_whole_and_correct(rig: Rig) -> None:
    stream = await rig.open()
    for offset, size in [(0, 4096), (100_000, 131072), (11_999_000, 131072)]:
        outcome = await stream.try_read(offset, size, Deadline.after(30))
        assert outcome == Bytes(DATA[offset : offset + size])


async def test_eof_at_length_and_seek_past_end(rig: Rig) -> None:
    stream = await rig.open()
    assert await stream.try_read(len(DATA), 4096, Deadline.after(30)) == Eof(len(DATA))
    with pytest.raises(SeekPastEndError):
        await stream.try_read(len(DATA) + 1, 4096, Deadline.after(30))
    assert rig.origin.requests == ["bytes=0-0"], "neither needs a download"


async def test_blocking_read_waits_the_whole_budget_then_not_ready(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.stall()
    start = trio.current_time()
    outcome = await stream.try_read(0, 4096, Deadline.after(30))
    assert outcome == Pending(PendingReason.NOT_READY)
    assert trio.current_time() - start == pytest.approx(30)


async def test_slow_bytes_within_budget_are_served(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.stall()

    async def release_later() -> None:
        await trio.sleep(20)
        rig.origin.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        outcome = await stream.try_read(0, 4096, Deadline.after(30))
    assert outcome == Bytes(DATA[:4096])


async def test_nonblocking_budget_is_not_ready_at_once_but_starts_download(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    start = trio.current_time()
    assert await stream.try_read(0, 4096, Deadline.after(0)) == Pending(PendingReason.NOT_READY)
    assert trio.current_time() == start
    await trio.sleep(1)  # the demanded download runs meanwhile
    assert await stream.try_read(0, 4096, Deadline.after(0)) == Bytes(DATA[:4096])


async def test_read_superseded_by_seek_is_seek_pending(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.stall()
    results: dict[str, object] = {}

    async def read(name: str, offset: int) -> None:
        results[name] = await stream.try_read(offset, 4096, Deadline.after(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, "first", 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read, "second", 10_000_000)  # beyond the 4 MiB forward tolerance
        await trio.testing.wait_all_tasks_blocked()
        assert results == {"first": Pending(PendingReason.SEEK_PENDING)}
        rig.origin.release()
    assert results["second"] == Bytes(DATA[10_000_000:10_004_096])


async def test_concurrent_reads_near_each_other_are_both_served(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.stall()
    results: dict[int, object] = {}

    async def read(offset: int) -> None:
        results[offset] = await stream.try_read(offset, 4096, Deadline.after(100))

    async with trio.open_nursery() as nursery:
        for offset in (0, 2_000_000):  # within the tolerance: neither supersedes the other
            nursery.start_soon(read, offset)
            await trio.testing.wait_all_tasks_blocked()
        assert rig.scheduler.active(rig.source) == 2
        rig.origin.release()
    assert results == {o: Bytes(DATA[o : o + 4096]) for o in (0, 2_000_000)}


async def test_small_reordering_is_not_a_seek(rig: Rig) -> None:
    stream = await rig.open()
    await stream.try_read(1_000_000, 4096, Deadline.after(30))
    epoch = stream.timeline.epoch
    await stream.try_read(1_000_000 - 500_000, 4096, Deadline.after(30))
    await stream.try_read(1_000_000 + 3_000_000, 4096, Deadline.after(30))
    assert stream.timeline.epoch == epoch
    await stream.try_read(0, 4096, Deadline.after(30))
    assert stream.timeline.epoch == epoch + 1


async def test_interrupt_ends_waits(rig: Rig, autojump_clock: trio.testing.MockClock) -> None:
    stream = await rig.open()
    rig.origin.stall()
    async with trio.open_nursery() as nursery:
        outcome: list[object] = []

        async def read() -> None:
            outcome.append(await stream.try_read(0, 4096, Deadline.after(100)))

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        stream.interrupt()
    assert outcome == [Pending(PendingReason.SEEK_PENDING)]
    rig.origin.release()


async def test_remote_change_fails_old_handle_and_new_handle_gets_new_bytes(rig: Rig) -> None:
    stream = await rig.open()
    assert await stream.try_read(0, 4096, Deadline.after(30)) == Bytes(DATA[:4096])
    new = bytes(reversed(DATA))
    rig.origin.data, rig.origin.etag = new, '"v2"'
    with pytest.raises(RemoteChangedError):
        await stream.try_read(10_000_000, 4096, Deadline.after(30))  # beyond the read-ahead
    with pytest.raises(RemoteChangedError):
        await stream.try_read(0, 4096, Deadline.after(30))  # cached, but of the old version
    fresh = await rig.open()
    assert await fresh.try_read(0, 4096, Deadline.after(30)) == Bytes(new[:4096])


async def test_seek_starts_a_ranged_get_at_the_read_point(rig: Rig) -> None:
    stream = await rig.open()
    await stream.try_read(2_000_000, 4096, Deadline.after(30))
    # From the read point to the end of the read, and not a byte further: a reader that has
    # not shown it reads on gets what it asked for (issue: requests that start small).
    assert rig.origin.requests[1] == "bytes=2000000-2004095"
    await stream.try_read(9_000_000, 4096, Deadline.after(30))
    assert rig.origin.requests[2] == "bytes=9000000-9004095"


def spans(requests: list[str | None]) -> list[tuple[int, int | None]]:
    found = []
    for header in requests:
        first, _, last = (header or "").removeprefix("bytes=").partition("-")
        found.append((int(first), int(last) + 1 if last else None))
    return found


async def test_requests_grow_while_a_reader_reads_on(rig: Rig) -> None:
    stream = await rig.open()
    window = window_bytes(rig.source)
    read = 64 * 1024
    for offset in range(0, 60 * read, read):
        assert await stream.try_read(offset, read, Deadline.after(30)) == Bytes(
            DATA[offset : offset + read]
        )
        # Never more in flight or stored past the reader than its window.
        assert rig.source.first_missing(offset) <= offset + read + window
    requested = spans(rig.origin.requests[1:])
    assert requested[0] == (0, read), "the first read fetches its own bytes"
    sizes = [(end or len(DATA)) - start for start, end in requested]
    assert sizes[0] < sizes[1] < sizes[2], f"each read on reaches further: {requested}"
    # Bounded requests up to the window, then one open-ended one that the reader paces.
    assert all(size <= window for size in sizes[:-1]), requested
    assert requested[-1][1] in (None, len(DATA)), requested
    assert len(requested) <= 8, f"a few requests for 60 reads, not one each: {requested}"


async def test_a_download_at_its_target_holds_its_request_for_the_reader(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """Past the first reads, one open-ended request serves a reader that keeps reading; it is
    closed only once the reader has left it alone for HOLD_SECONDS."""
    stream = await rig.open()
    read = 64 * 1024
    window = window_bytes(rig.source)
    # 5.6 MiB: short of the end, and of the first index save (which syncs in a thread, in
    # real time, under the virtual clock).
    for offset in range(0, 90 * read, read):
        assert await stream.try_read(offset, read, Deadline.after(30)) == Bytes(
            DATA[offset : offset + read]
        )
        await trio.sleep(0.05)  # a reader slower than the link: the download waits for it
        assert rig.source.first_missing(offset) <= offset + read + window
    requested = spans(rig.origin.requests[1:])
    open_ended = [r for r in requested if r[1] in (None, len(DATA))]
    assert len(open_ended) == 1 and requested[-1] == open_ended[0], requested
    # A pause shorter than HOLD_SECONDS: the same request goes on serving the reader.
    await trio.sleep(HOLD_SECONDS / 2)
    offset += read
    assert await stream.try_read(offset, read, Deadline.after(30)) == Bytes(
        DATA[offset : offset + read]
    )
    assert len(rig.origin.requests) == len(requested) + 1, rig.origin.requests
    # A longer one: the request ended, and reading on takes a new one.
    await trio.sleep(HOLD_SECONDS + 1)
    assert rig.scheduler.active(rig.source) == 0
    far = rig.source.first_missing(offset)
    assert await stream.try_read(far, read, Deadline.after(30)) == Bytes(DATA[far : far + read])
    assert len(rig.origin.requests) == len(requested) + 2, rig.origin.requests


async def test_a_download_does_not_wait_for_its_index_save(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index save first syncs the data file (in a thread), which after a second of a fast
    download took ~0.3 s: the download, and the reader waiting on it, go on meanwhile. Here
    the sync does not end until every byte has been read (real clock)."""
    release = threading.Event()
    armed: list[int] = []

    def slow_fdatasync(fd: int) -> None:
        if armed:
            armed.append(fd)
            release.wait(30)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    monkeypatch.setattr(progressive, "FLUSH_INTERVAL", 0.0)
    stream = await rig.open()
    armed.append(-1)
    read = 128 * 1024
    try:
        for offset in range(0, len(DATA), read):
            outcome = await stream.try_read(offset, read, Deadline.after(10))
            assert outcome == Bytes(DATA[offset : offset + read]), offset
        assert len(armed) > 1, "an index save started during the download"
    finally:
        release.set()


async def test_random_reads_fetch_what_they_read(rig: Rig) -> None:
    stream = await rig.open()
    read = 64 * 1024
    offsets = [(i * 7_919 * 104_729) % (len(DATA) - read) for i in range(1, 25)]
    for offset in offsets:
        assert await stream.try_read(offset, read, Deadline.after(30)) == Bytes(
            DATA[offset : offset + read]
        )
    fetched = sum((end or len(DATA)) - start for start, end in spans(rig.origin.requests[1:]))
    assert fetched <= 1.25 * read * len(offsets), spans(rig.origin.requests[1:])


async def test_a_seek_starts_the_reach_again(rig: Rig) -> None:
    stream = await rig.open()
    read = 64 * 1024
    for offset in range(0, 8 * read, read):
        await stream.try_read(offset, read, Deadline.after(30))
    assert rig.scheduler.reach(stream.reader) > read
    await stream.try_read(9_000_000, read, Deadline.after(30))
    assert rig.scheduler.reach(stream.reader) == 0
    assert rig.origin.requests[-1] == f"bytes=9000000-{9_000_000 + read - 1}"


MP3_LIKE = b"ID3\x04\x00\x00\x00\x00\x00\x00" + DATA[10:4_000_000]
WAV_LIKE = b"RIFF\x00\x00\x00\x00WAVE" + DATA[12:4_000_000]


@pytest.mark.parametrize(("data", "tail"), [(MP3_LIKE, True), (WAV_LIKE, False)])
async def test_the_tail_follows_the_head_only_where_players_read_it(
    data: bytes, tail: bool, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    origin = FakeOrigin(data, latency=0.02)
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        rig = Rig(origin, http, tmp_path, nursery)
        stream = await rig.open()
        await trio.sleep(1)
        assert origin.requests == ["bytes=0-0"], "an open fetches nothing by itself"
        assert await stream.try_read(0, 65536, Deadline.after(30)) == Bytes(data[:65536])
        await trio.sleep(1)
        last = f"bytes={len(data) - 65536}-{len(data) - 1}"
        assert origin.requests == ["bytes=0-0", "bytes=0-65535"] + ([last] if tail else [])
        # The player's jump to the end right after (ffmpeg's ID3v1/APE look) is then cached.
        assert await stream.try_read(len(data) - 128, 128, Deadline.after(30)) == Bytes(
            data[-128:]
        )
        assert (origin.requests[-1] == last) == tail
        nursery.cancel_scope.cancel()


async def test_a_jump_to_the_end_keeps_the_tail_prefetch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The jump comes before the tail arrives: it waits for that request, not a new one."""
    origin = FakeOrigin(MP3_LIKE, latency=0.5)
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        rig = Rig(origin, http, tmp_path, nursery)
        stream = await rig.open()
        assert await stream.try_read(0, 65536, Deadline.after(30)) == Bytes(MP3_LIKE[:65536])
        end = len(MP3_LIKE)
        assert await stream.try_read(end - 128, 128, Deadline.after(30)) == Bytes(MP3_LIKE[-128:])
        assert origin.requests == ["bytes=0-0", "bytes=0-65535", f"bytes={end - 65536}-{end - 1}"]
        nursery.cancel_scope.cancel()


async def test_read_at_once_answers_cached_bytes_and_records_nothing_else(rig: Rig) -> None:
    stream = await rig.open()
    assert stream.read_at_once(0, 4096) is None
    assert stream.timeline.position is None, "a read it did not answer left no trace"
    assert rig.origin.requests == ["bytes=0-0"], "and started no download"
    assert await stream.try_read(0, 4096, Deadline.after(30)) == Bytes(DATA[:4096])
    assert stream.read_at_once(0, 4096) == Bytes(DATA[:4096])
    assert stream.read_at_once(4096, 4096) is None  # not fetched: the first read took 4 KiB
    assert stream.read_at_once(len(DATA), 4096) is None  # end of file: try_read's answer
    # A cached read far away is still a seek: older reads of the handle are superseded.
    await stream.try_read(9_000_000, 4096, Deadline.after(30))
    epoch = stream.timeline.epoch
    assert stream.read_at_once(0, 4096) == Bytes(DATA[:4096])
    assert stream.timeline.epoch == epoch + 1


async def test_readable_watches_where_the_reader_waits(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.stall()
    miss = await stream.try_read(5_000_000, 4096, Deadline.after(0))
    assert miss == Pending(PendingReason.NOT_READY)
    assert stream.timeline.resume_at == 5_000_000 and not stream.readable()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.wait_readable)
        await trio.testing.wait_all_tasks_blocked()
        rig.origin.release()
    assert stream.readable()
    hit = await stream.try_read(5_000_000, 4096, Deadline.after(0))
    assert hit == Bytes(DATA[5_000_000:5_004_096])
    assert stream.timeline.resume_at == 5_004_096


@pytest.fixture
async def slow_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    origin = FakeOrigin(DATA, latency=0.02)
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        yield Rig(origin, http, tmp_path, nursery)
        nursery.cancel_scope.cancel()


async def test_two_threads_far_apart_on_one_handle_both_finish(
    slow_rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """Each read supersedes the other once; their EINTR retries must not ping-pong."""
    stream = await slow_rig.open()
    results: dict[int, bytes] = {}
    interrupted = {0: 0, 10_000_000: 0}

    async def read_retrying_eintr(offset: int) -> None:
        while True:
            outcome = await stream.try_read(offset, 4096, Deadline.after(100))
            if isinstance(outcome, Bytes):
                results[offset] = outcome.data
                return
            assert outcome == Pending(PendingReason.SEEK_PENDING)
            interrupted[offset] += 1
            assert interrupted[offset] < 10, "livelock"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_retrying_eintr, 0)
        await trio.sleep(0.001)
        nursery.start_soon(read_retrying_eintr, 10_000_000)
    assert results == {o: DATA[o : o + 4096] for o in (0, 10_000_000)}


async def test_short_body_is_retried_with_backoff_not_a_hot_loop(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.short_body = True
    with pytest.raises(OriginError, match="body ended"):
        await stream.try_read(0, 4096, Deadline.after(100))
    assert len(rig.origin.requests) <= 1 + 2 * 6, rig.origin.requests  # probe + attempts


async def test_nonblocking_reader_gets_the_failure(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.statuses = [503] * 100
    assert await stream.try_read(0, 4096, Deadline.after(0)) == Pending(PendingReason.NOT_READY)
    await trio.sleep(60)  # the download spends its retries meanwhile
    assert stream.readable(), "poll must wake the reader so it can see the error"
    with pytest.raises(OriginError, match="HTTP 503"):
        await stream.try_read(0, 4096, Deadline.after(0))


async def test_overlapping_opens_of_a_republished_file_both_read_it(
    slow_rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    first = await slow_rig.open()
    assert await first.try_read(0, 4096, Deadline.after(30)) == Bytes(DATA[:4096])
    new = bytes(reversed(DATA))
    slow_rig.origin.data, slow_rig.origin.etag = new, '"v2"'
    await trio.sleep(REVALIDATE_INTERVAL + 1)
    handles: list[Stream] = []

    async def open_and_revalidate() -> None:  # as Registry.open does
        await slow_rig.source.ensure_info()
        await slow_rig.source.revalidate(Deadline.after(5))
        handles.append(Stream(slow_rig.source, slow_rig.scheduler))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_and_revalidate)
        nursery.start_soon(open_and_revalidate)
    for handle in handles:
        assert await handle.try_read(0, 4096, Deadline.after(30)) == Bytes(new[:4096])
    with pytest.raises(RemoteChangedError):
        await first.try_read(0, 4096, Deadline.after(30))


async def test_old_failure_does_not_fail_a_later_blocking_read(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    stream = await rig.open()
    rig.origin.statuses = [503] * 6  # exactly one download's attempts
    assert await stream.try_read(0, 4096, Deadline.after(0)) == Pending(PendingReason.NOT_READY)
    await trio.sleep(60)  # that download fails meanwhile; then the origin recovers
    assert rig.origin.statuses == []
    assert await stream.try_read(0, 4096, Deadline.after(30)) == Bytes(DATA[:4096])
