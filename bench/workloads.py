"""The readers: what the benchmark does to a file, and how it times it.

Owns: time to the first 64 KiB after open, sequential whole-file reads, timed 64 KiB reads at
fixed random offsets, the same through curl (the network's ceiling), ``ffmpeg -ss`` timings,
the real-time playback simulation, dropping the page cache for the
local-disk baseline, and the over-fetch arithmetic on the origin's request log.

Must never: mount, unmount or talk to the origin process (run.py does), or hide a failed read:
a short read in the middle of a file is an error here, as it is for kithara's contract.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kithara_fs.demo.origin import RequestRecord

KIB = 1024
READ_SIZE = 64 * KIB
# coreutils cat/cp read 128 KiB at a time; every sequential read here uses the same size.
SEQ_BLOCK = 128 * KIB


def drop_page_cache() -> bool:
    """Write back and drop the kernel page cache (needs root); True if it worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _pread_full(fd: int, size: int, offset: int) -> int:
    """Read ``size`` bytes at ``offset`` (or up to EOF); a short read mid-file raises."""
    got = 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        got += len(chunk)
    return got


def first_bytes_latency(path: Path) -> float:
    """Seconds from open() to holding the first 64 KiB."""
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = _pread_full(fd, READ_SIZE, 0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    if got != READ_SIZE:
        raise OSError(f"{path}: first read returned {got} bytes, expected {READ_SIZE}")
    return elapsed


def sequential_read(
    path: Path, expected_size: int, before_close: Callable[[], object] | None = None
) -> float:
    """Read the whole file in 128 KiB reads; returns bytes per second (open to last byte).

    ``before_close`` runs after the clock stops and before the file is closed.
    """
    buf = bytearray(SEQ_BLOCK)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
        elapsed = time.perf_counter() - start
        if before_close is not None:
            before_close()
    if total != expected_size:
        raise OSError(f"{path}: read {total} bytes, expected {expected_size}")
    return total / elapsed


def seek_offsets(
    size: int, count: int, spacing: int, margin: int, seed: int = 20240611
) -> list[int]:
    """``count`` fixed pseudo-random 4 KiB-aligned offsets, at least ``spacing`` apart, in
    descending order, none within ``margin`` of either end of the file.

    Read in this order on one handle, every read is cold for all three filesystems: each
    fetches forward from (or, httpdirfs, in aligned 8 MiB segments around) a read, so with
    reads going backwards and ``spacing`` ≥ the largest segment, nothing an earlier read
    fetched covers a later one. Fewer offsets are returned when the file is too small.
    """
    rng = random.Random(seed)
    usable = size - 2 * margin - READ_SIZE
    count = max(1, min(count, usable // spacing + 1))
    slack = usable - (count - 1) * spacing
    picks = sorted(rng.randint(0, slack) for _ in range(count))
    offsets = [
        (margin + pick + i * spacing) // (4 * KIB) * (4 * KIB) for i, pick in enumerate(picks)
    ]
    return offsets[::-1]


def random_reads(path: Path, offsets: list[int], think: float) -> list[float]:
    """Latency of a 64 KiB pread at each offset on one open handle, ``think`` s apart
    (a player decoding what it got before it seeks again)."""
    latencies: list[float] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            start = time.perf_counter()
            got = _pread_full(fd, READ_SIZE, offset)
            latencies.append(time.perf_counter() - start)
            if got != READ_SIZE:
                raise OSError(f"{path}: read at {offset} returned {got} bytes")
            time.sleep(think)
    finally:
        os.close(fd)
    return latencies


def curl_range(url: str, offset: int, size: int = READ_SIZE) -> tuple[float, float]:
    """Seconds for ``curl`` to fetch ``size`` bytes at ``offset`` with one ranged GET: the
    wall time of the whole command (starting the process included), and curl's own
    ``time_total`` (connect to last byte, which is what a player's own request costs)."""
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sSf", "-o", "/dev/null", "-w", "%{time_total}", "-r",
         f"{offset}-{offset + size - 1}", url],
        capture_output=True, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise OSError(f"curl {url}: {done.stderr.decode(errors='replace').strip()}")
    return elapsed, float(done.stdout)


def curl_whole(url: str, expected_size: int) -> tuple[float, float]:
    """Bytes per second of ``curl`` downloading the whole URL to /dev/null: over the whole
    command, and over curl's own ``time_total``."""
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    size, own = (done.stdout or b"0 1").split()
    if done.returncode != 0 or int(size) != expected_size:
        raise OSError(f"curl {url}: {done.stderr.decode(errors='replace').strip()}")
    return expected_size / elapsed, expected_size / float(own)


def ffmpeg_seek(source: str, position: float, seconds: float = 1.0) -> float:
    """Seconds for ``ffmpeg -ss position`` to open ``source`` (a path or a URL) and decode
    ``seconds`` of audio from there: what a player's seek costs, ffmpeg's own start included."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-ss", str(position), "-i", source,
               "-t", str(seconds), "-f", "null", "-"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise OSError(f"ffmpeg -ss {position} {source}: {done.stderr.decode(errors='replace')}")
    return elapsed


@dataclass
class Playback:
    """What a listener experienced."""

    startup: float  # open() → first chunk in hand
    stalls: list[float] = field(default_factory=list)  # every underrun, seconds
    played: float = 0.0  # seconds of audio played
    wall: float = 0.0  # seconds from first chunk to the end of the simulation
    min_buffer: float = 0.0  # lowest buffer level seen after a read, seconds

    def stalls_over(self, threshold: float) -> int:
        return sum(1 for s in self.stalls if s > threshold)


def playback(
    path: Path, byte_rate: int, seconds: float, buffer_secs: float, chunk: int = READ_SIZE
) -> Playback:
    """Play ``seconds`` of a constant-bitrate file in real time, like a player would.

    The player reads ``chunk`` bytes whenever its buffer holds less than ``buffer_secs`` of
    audio, and otherwise sleeps. Playback starts the moment the first chunk arrives and
    drains the buffer at ``byte_rate``. When a read is still blocked after the buffer ran
    dry, the time from running dry until the read returns is one stall (playback resumes at
    once when bytes arrive). Reads block (a normal player's open), so the filesystem's wait
    is the stall, never an error.
    """
    target_bytes = int(seconds * byte_rate)
    buffer_bytes = int(buffer_secs * byte_rate)
    size = path.stat().st_size
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        first = len(os.read(fd, chunk))
        clock = time.perf_counter()
        result = Playback(startup=clock - start, min_buffer=first / byte_rate)
        began = clock
        delivered = first
        consumed = 0.0

        def advance(now: float) -> None:
            nonlocal consumed, clock
            available = delivered - consumed
            wanted = (now - clock) * byte_rate
            if wanted > available:
                dry_at = clock + available / byte_rate
                result.stalls.append(now - dry_at)
                consumed = float(delivered)
            else:
                consumed += wanted
            clock = now

        while consumed < target_bytes:
            advance(time.perf_counter())
            buffered = delivered - consumed
            if buffered >= buffer_bytes or delivered >= size:
                if delivered >= size and buffered <= 0:
                    break
                # Sleep until there is room for one more chunk (short naps keep it responsive).
                room_in = (buffered - buffer_bytes + chunk) / byte_rate
                time.sleep(min(0.05, max(0.001, room_in)))
                continue
            n = len(os.read(fd, chunk))
            if n == 0:
                raise OSError(f"{path}: EOF at {delivered} of {size} bytes")
            advance(time.perf_counter())
            delivered += n
            result.min_buffer = min(result.min_buffer, (delivered - consumed) / byte_rate)
        result.played = consumed / byte_rate
        result.wall = time.perf_counter() - began
    finally:
        os.close(fd)
    return result


# -- over-fetch ------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def fetched_intervals(records: list[RequestRecord]) -> list[tuple[int, int]]:
    """Byte intervals [start, end) of the file each GET actually delivered."""
    out: list[tuple[int, int]] = []
    for r in records:
        if r.method != "GET" or r.body_bytes <= 0 or r.status not in (200, 206):
            continue
        start = 0
        if r.status == 206 and r.range:
            m = _RANGE.fullmatch(r.range.strip())
            if m:
                start = int(m.group(1))
        out.append((start, start + r.body_bytes))
    return out


def _overlap(a: tuple[int, int], windows: list[tuple[int, int]]) -> int:
    """Bytes of interval ``a`` inside the union of ``windows`` (sorted, non-overlapping)."""
    return sum(max(0, min(a[1], w[1]) - max(a[0], w[0])) for w in windows)


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


@dataclass(frozen=True)
class OverFetch:
    fetched: int  # body bytes the origin sent
    readahead: int  # of those, bytes inside declared read-ahead windows
    needed: int  # bytes the reader asked for
    requests: int  # GETs

    @property
    def ratio(self) -> float:
        return self.fetched / self.needed

    @property
    def ratio_excl_readahead(self) -> float:
        return (self.fetched - self.readahead) / self.needed

    def __add__(self, other: OverFetch) -> OverFetch:
        return OverFetch(
            self.fetched + other.fetched,
            self.readahead + other.readahead,
            self.needed + other.needed,
            self.requests + other.requests,
        )


def over_fetch(
    records: list[RequestRecord], reads: list[tuple[int, int]], declared_readahead: int, size: int
) -> OverFetch:
    """Origin bytes ÷ bytes read, with and without the declared read-ahead after each read.

    ``reads`` are the reader's (offset, length). A read's declared window is the
    ``declared_readahead`` bytes right after it; bytes fetched inside any window (and not
    inside a read) are the filesystem's announced speculation, everything else beyond the
    reads themselves is over-fetch. Bytes fetched twice count twice.
    """
    read_iv = _union([(o, o + n) for o, n in reads])
    windows = _union([(o + n, min(size, o + n + declared_readahead)) for o, n in reads])
    # A window never covers bytes some read needed.
    pure_windows: list[tuple[int, int]] = []
    for w in windows:
        cuts = [w]
        for r in read_iv:
            next_cuts = []
            for c in cuts:
                if r[1] <= c[0] or r[0] >= c[1]:
                    next_cuts.append(c)
                    continue
                if c[0] < r[0]:
                    next_cuts.append((c[0], r[0]))
                if r[1] < c[1]:
                    next_cuts.append((r[1], c[1]))
            cuts = next_cuts
        pure_windows.extend(cuts)
    intervals = fetched_intervals(records)
    fetched = sum(e - s for s, e in intervals)
    in_windows = sum(_overlap(iv, pure_windows) for iv in intervals)
    needed = sum(n for _, n in reads)
    gets = sum(1 for r in records if r.method == "GET")
    return OverFetch(fetched=fetched, readahead=in_windows, needed=needed, requests=gets)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
