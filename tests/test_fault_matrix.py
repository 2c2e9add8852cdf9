"""The fault matrix: every injected origin fault × source kind × reader, on real mounts.

| fault | progressive | hls-vod | hls-live |
|---|---|---|---|
| `drop` | bytes | bytes | bytes |
| `5xx-burst` | bytes | bytes | bytes |
| `retry-after-1` | bytes | bytes | bytes |
| `retry-after-junk` | bytes | bytes | bytes |
| `retry-after-huge` | bytes | bytes | bytes |
| `ignore-range` | bytes | bytes | bytes |
| `range-shift` | bytes | bytes | bytes |
| `range-claims-fewer` | bytes | bytes | bytes |
| `range-claims-more` | bytes | bytes | bytes |
| `length-overstates` | bytes | bytes | bytes |
| `header-stall` | bytes | bytes | bytes |
| `body-stall` | bytes | bytes | bytes |
| `fresh-etag` | ESTALE | bytes | n/a |
| `redirect-loop` | EIO at open | EIO at open | EIO |
| `redirect-file` | EIO at open | EIO at open | EIO |
| `gzip-once` | bytes | bytes | bytes |
| `416-in-range` | ESTALE | EIO | EIO |
| `huge-headers` | EIO | EIO | EIO |
| `truncated-segment` | n/a | EIO | EIO |
| `key-404` | n/a | EIO | EIO |
| `bad-padding` | n/a | EIO | EIO |
| `byterange-past-end` | n/a | bytes, then EIO | bytes, then EIO |

- `drop`: drop mid-body (drop_after 50 000, once)
- `5xx-burst`: 503 × 3, no Retry-After
- `retry-after-1`: 503 × 2, Retry-After: 1
- `retry-after-junk`: 503 × 2, Retry-After: ²
- `retry-after-huge`: 503 × 1, Retry-After: 99999999 (waits the 10 s cap)
- `ignore-range`: 200 instead of 206 (ignore_range, every answer)
- `range-shift`: 206, Content-Range start +1000 (once)
- `range-claims-fewer`: 206, body 1000 bytes longer than Content-Range (once)
- `range-claims-more`: 206, body 1000 bytes shorter than Content-Range (once)
- `length-overstates`: Content-Length 1000 over the body (once)
- `header-stall`: stall 8 s before the status line (once)
- `body-stall`: stall 8 s after 50 000 body bytes (once)
- `fresh-etag`: new ETag on every answer, same bytes
- `redirect-loop`: 302 to itself, forever (from before the mount)
- `redirect-file`: 302 to file:///etc/passwd (from before the mount)
- `gzip-once`: gzip on a ranged answer (once)
- `416-in-range`: 416 for an in-range request (once)
- `huge-headers`: 200 000-byte header on every answer
- `truncated-segment`: segment cut before its body, every answer (drop_after 0)
- `key-404`: the AES key is 404 (from before the mount)
- `bad-padding`: a wrong 16-byte AES key (padding check fails)
- `byterange-past-end`: EXT-X-BYTERANGE starting past the resource's end

Each cell is the same for both readers unless marked. Notes on cells:

- `416-in-range`: ESTALE for progressive files (a ranged request with If-Range learns that
  the byte it asked for is gone: the resource shrank); EIO for HLS, whose segment requests
  carry no validator, so a 416 there is "past the end" of that segment.
- `fresh-etag` on `hls-vod`: a VOD variant's version is its playlist; segment validators are
  not compared and the bytes did not change, so the reader gets them.
- `truncated-segment`: drop_after 0, because a VOD variant resumes at the first byte not
  received, so a cut after N > 0 bytes of every answer still recovers (by design).

Source kinds: ``progressive`` is one file; ``hls-vod`` is the variant file of a VOD
programme of six segments (the fault on segment 1, counted from 0, which the reader's first
read waits for; on the key; or a BYTERANGE of segment 3 in the playlist); ``hls-live`` is the
live file of a live programme whose five segments are all published, with EXT-X-ENDLIST added
once the file is open (the fault on segment 2, or on the key used from segment 2 on).
Readers: ``blocking`` reads the whole file in 256 KiB steps, with pread(2) from 128 KiB on
for seekable files (past the head, which the reader reads first; the fault is injected once
the head has arrived) and read(2) for the live file; ``nonblocking`` does the same on an
O_NONBLOCK open, waits in poll(POLLIN) (bounded) on EAGAIN, and stops at any other errno.

Outcomes: *bytes* — exactly the origin's bytes, then end of file; *EIO at open* — stat shows
size 0 and open fails with EIO; *ESTALE* / *EIO* — the read (or open) fails with that errno;
*bytes, then EIO* — every byte before the faulty segment, then EIO. Whatever bytes a failing
cell returned before its error must equal the origin's. Every cell also asserts that no read
(or poll wait) took longer than read_timeout + 15 s, that the mount answers afterwards, that
the fault really reached the origin (a one-shot fault exactly as often as configured; a
persistent one within two rounds of the client's 6 attempts; redirects within 2 × 11
requests), and for failures that a warning names the stream and the cause; each kind's
daemon must log nothing else above INFO and exit 0.

One mount per kind holds every cell's stream, each with its own origin paths (so one cell's
one-shot fault or cached bytes never serve another); all cells of a kind are read at once in
threads, so stalls and Retry-After waits overlap, and each test asserts one recorded cell.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import random
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kithara_fs.demo.origin import Origin, RequestRecord

from .conftest import needs_fuse
from .mounting import Mount, wait_until, write_config

pytestmark = [needs_fuse, pytest.mark.timeout(600)]

# -- the table ------------------------------------------------------------------------------

BYTES = "bytes"
EIO_AT_OPEN = "EIO at open"
ESTALE = "ESTALE"
EIO = "EIO"
BYTES_THEN_EIO = "bytes, then EIO"
NA = "n/a"

KINDS = ("progressive", "hls-vod", "hls-live")
READERS = ("blocking", "nonblocking")

# fault → how it is injected (listed under the table)
FAULTS: dict[str, str] = {
    "drop": "drop mid-body (drop_after 50 000, once)",
    "5xx-burst": "503 × 3, no Retry-After",
    "retry-after-1": "503 × 2, Retry-After: 1",
    "retry-after-junk": "503 × 2, Retry-After: ²",
    "retry-after-huge": "503 × 1, Retry-After: 99999999 (waits the 10 s cap)",
    "ignore-range": "200 instead of 206 (ignore_range, every answer)",
    "range-shift": "206, Content-Range start +1000 (once)",
    "range-claims-fewer": "206, body 1000 bytes longer than Content-Range (once)",
    "range-claims-more": "206, body 1000 bytes shorter than Content-Range (once)",
    "length-overstates": "Content-Length 1000 over the body (once)",
    "header-stall": "stall 8 s before the status line (once)",
    "body-stall": "stall 8 s after 50 000 body bytes (once)",
    "fresh-etag": "new ETag on every answer, same bytes",
    "redirect-loop": "302 to itself, forever (from before the mount)",
    "redirect-file": "302 to file:///etc/passwd (from before the mount)",
    "gzip-once": "gzip on a ranged answer (once)",
    "416-in-range": "416 for an in-range request (once)",
    "huge-headers": "200 000-byte header on every answer",
    "truncated-segment": "segment cut before its body, every answer (drop_after 0)",
    "key-404": "the AES key is 404 (from before the mount)",
    "bad-padding": "a wrong 16-byte AES key (padding check fails)",
    "byterange-past-end": "EXT-X-BYTERANGE starting past the resource's end",
}

LOUD = re.compile(r" (WARNING|ERROR|CRITICAL) ")
_TRANSIENT = {kind: BYTES for kind in KINDS}
MATRIX: dict[str, dict[str, str]] = {
    "drop": _TRANSIENT,
    "5xx-burst": _TRANSIENT,
    "retry-after-1": _TRANSIENT,
    "retry-after-junk": _TRANSIENT,
    "retry-after-huge": _TRANSIENT,
    "ignore-range": _TRANSIENT,
    "range-shift": _TRANSIENT,
    "range-claims-fewer": _TRANSIENT,
    "range-claims-more": _TRANSIENT,
    "length-overstates": _TRANSIENT,
    "header-stall": _TRANSIENT,
    "body-stall": _TRANSIENT,
    # A VOD variant's version is its playlist: segment validators are not compared, and the
    # bytes did not change. Live bytes are never cached, so there is no version to change.
    "fresh-etag": {"progressive": ESTALE, "hls-vod": BYTES, "hls-live": NA},
    # A live file opens without fetching anything: the failure comes with the first read.
    "redirect-loop": {"progressive": EIO_AT_OPEN, "hls-vod": EIO_AT_OPEN, "hls-live": EIO},
    "redirect-file": {"progressive": EIO_AT_OPEN, "hls-vod": EIO_AT_OPEN, "hls-live": EIO},
    "gzip-once": _TRANSIENT,
    # Segment requests carry no If-Range (segments have no version of their own), so a 416
    # there is "past the end", not "changed".
    "416-in-range": {"progressive": ESTALE, "hls-vod": EIO, "hls-live": EIO},
    "huge-headers": {kind: EIO for kind in KINDS},
    "truncated-segment": {"progressive": NA, "hls-vod": EIO, "hls-live": EIO},
    "key-404": {"progressive": NA, "hls-vod": EIO, "hls-live": EIO},
    "bad-padding": {"progressive": NA, "hls-vod": EIO, "hls-live": EIO},
    "byterange-past-end": {"progressive": NA, "hls-vod": BYTES_THEN_EIO,
                           "hls-live": BYTES_THEN_EIO},
}  # fmt: skip

# (fault, kind, reader or None for both) → why the cell fails today; strict xfail. Empty:
# the one bug found (nested retries on HLS segments, 36 requests instead of 6) is fixed.
BUGS: dict[tuple[str, str, str | None], str] = {}


def render_table() -> str:
    """MATRIX as the Markdown table in the module docstring, then what each fault is."""
    rows = ["| fault | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for fault, cells in MATRIX.items():
        shown = []
        for kind in KINDS:
            text = cells[kind]
            readers = [r for (f, k, r) in BUGS if f == fault and k == kind]
            if readers:
                text += " (bug: " + ("both" if None in readers else "/".join(map(str, readers)))
                text += ")"
            shown.append(text)
        rows.append(f"| `{fault}` | " + " | ".join(shown) + " |")
    rows.append("")
    rows += [f"- `{fault}`: {text}" for fault, text in FAULTS.items()]
    return "\n".join(rows)


# -- media and timing -----------------------------------------------------------------------

STEP = 256 * 1024
# Readers of seekable files first read the head, as players do (an open fetches nothing by
# itself), then the rest from there; faults are injected once the head has arrived.
PREFETCH_HEAD = 128 * 1024
READ_TIMEOUT = 30.0  # the mount's default
HANG_GUARD = READ_TIMEOUT + 15.0
PROGRESSIVE_SIZE = 1_200_000
# The faulty VOD segment is the one the reader's first read waits for: the read-ahead window
# spans the whole file, and a one-shot fault met by a read-ahead nobody waits on would just
# get a fresh try. A persistent BYTERANGE fault sits further on, so bytes come before it.
VOD_SEGMENT, VOD_SEGMENTS, VOD_FAULTY, VOD_BYTERANGE_FAULTY = 160_000, 6, 1, 3
LIVE_SEGMENT, LIVE_SEGMENTS, LIVE_FAULTY = 120_000, 5, 2
KEY = bytes(range(16))
# Request budget of a failure that must not be retried: 11 requests per attempt (the first
# and ten redirects), one attempt for the size probe and one at open, and the size probe's
# first request on its lane (net/lanes.py), which does not follow the redirect itself.
REDIRECT_BUDGET = 2 * 11 + 1
# Faulted answers a persistent fault may draw: the client's 6 attempts, for a read-ahead that
# failed unwatched and once more for the reader's fresh try.
RETRY_BUDGET = 2 * 6


@dataclass(frozen=True)
class Injection:
    """How a fault is put on a cell's target path, and how its effect is witnessed."""

    apply: Callable[[Origin, str], None] | None
    # The name in RequestRecord.fault ("status:N" for a plain status) the fault leaves.
    witness: str
    # Exactly this many faulted answers (one-shot faults), or None for at least one.
    hits: int | None
    # Injected before the mount starts, instead of just before the reader needs it.
    early: bool = False
    # A log line naming the stream must give this cause (failing cells only).
    cause: str = ""


def _set(**values: Any) -> Callable[[Origin, str], None]:
    def apply(origin: Origin, path: str) -> None:
        faults = origin.faults(path)
        for name, value in values.items():
            # A fresh list per cell: the origin pops fail_statuses as it answers.
            setattr(faults, name, list(value) if isinstance(value, list) else value)

    return apply


def _loop(origin: Origin, path: str) -> None:
    origin.redirect_loop(path)


INJECTIONS: dict[str, Injection] = {
    "drop": Injection(_set(drop_after=50_000, drop_count=1), "drop", 1),
    "5xx-burst": Injection(_set(fail_statuses=[503] * 3), "fail_status", 3),
    "retry-after-1": Injection(_set(fail_statuses=[503] * 2, retry_after="1"), "fail_status", 2),
    "retry-after-junk": Injection(_set(fail_statuses=[503] * 2, retry_after="²"),
                                  "fail_status", 2),
    "retry-after-huge": Injection(_set(fail_statuses=[503], retry_after="99999999"),
                                  "fail_status", 1),
    "ignore-range": Injection(_set(ignore_range=True), "ignore_range", None),
    "range-shift": Injection(_set(range_shift=1000, range_shift_count=1), "range_shift", 1),
    "range-claims-fewer": Injection(_set(range_claims_fewer=1000, range_lie_count=1),
                                    "range_claims_fewer", 1),
    "range-claims-more": Injection(_set(range_claims_more=1000, range_lie_count=1),
                                   "range_claims_more", 1),
    "length-overstates": Injection(_set(length_overstates=1000, length_overstates_count=1),
                                   "length_overstates", 1),
    "header-stall": Injection(_set(header_stall_seconds=8.0, header_stall_count=1),
                              "header_stall", 1),
    "body-stall": Injection(_set(stall_after=50_000, stall_seconds=8.0, stall_count=1),
                            "body_stall", 1),
    "fresh-etag": Injection(_set(fresh_etag=True), "fresh_etag", None, cause="remote changed"),
    "redirect-loop": Injection(_loop, "redirect", None, early=True, cause="redirect loop"),
    "redirect-file": Injection(_set(redirect_to="file:///etc/passwd"), "redirect", None,
                               early=True, cause="not http or https"),
    # Turned off again by a watcher once one gzip answer went out (see KindRun._watch).
    "gzip-once": Injection(_set(gzip=True), "gzip", None),
    "416-in-range": Injection(_set(fail_statuses=[416]), "fail_status", 1,
                              cause="no longer has byte|remote changed|HTTP 416"),
    "huge-headers": Injection(_set(huge_header_bytes=200_000), "huge_header", None,
                              cause="Receive buffer too long|headers too large"),
    "truncated-segment": Injection(_set(drop_after=0, drop_count=10**6), "drop", None,
                                   cause="connection lost mid-body|body ended"),
    "key-404": Injection(_set(fail_statuses=[404] * 1000), "fail_status", None, early=True,
                         cause="key not available: HTTP 404"),
    "bad-padding": Injection(None, "status:200", None, early=True,
                             cause="padding check failed"),
    "byterange-past-end": Injection(None, "status:416", None, early=True,
                                    cause="past the end"),
}  # fmt: skip


def _encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def _padding_ok(key: bytes, before: bytes, last_block: bytes) -> bool:
    """Whether ``last_block`` (decrypted with ``before`` as IV) ends in valid PKCS#7 padding."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(before)).decryptor()
    last = decryptor.update(last_block) + decryptor.finalize()
    pad = last[-1]
    return 1 <= pad <= 16 and last[-pad:] == bytes([pad]) * pad


def _wrong_key(tails: list[tuple[bytes, bytes]]) -> bytes:
    """A 16-byte key under which no segment's padding checks out (a few tries suffice)."""
    for seed in range(1000):
        key = random.Random(seed).randbytes(16)
        if key != KEY and not any(_padding_ok(key, *tail) for tail in tails):
            return key
    raise AssertionError("no wrong key found")


def _playlist(entries: list[str], *, target: int, ended: bool, vod: bool) -> bytes:
    head = [
        "#EXTM3U",
        "#EXT-X-VERSION:4",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ] + (["#EXT-X-PLAYLIST-TYPE:VOD"] if vod else [])
    return ("\n".join(head + entries + (["#EXT-X-ENDLIST"] if ended else [])) + "\n").encode()


# -- cells -------------------------------------------------------------------------------


@dataclass
class Result:
    """What one reader saw."""

    data: bytes = b""
    error: int | None = None  # errno that ended the read, if any
    phase: str | None = None  # "open" or "read"
    eof: bool = False
    stat_size: int | None = None
    durations: list[float] = field(default_factory=list)  # each open, read and poll wait
    hang: str | None = None
    mount_ok: bool = False
    exception: str | None = None


@dataclass
class Cell:
    fault: str
    kind: str
    reader: str
    stream: str | dict[str, Any]  # the [[stream]] table (or URL)
    stream_path: str  # the [[stream]] path
    read_path: str  # the file read, relative to the mount point
    target: str  # the origin path the fault is put on
    oracle: bytes
    start: int
    boundary: int | None = None  # bytes, then EIO: where the bad segment starts
    playlist: str | None = None  # live: the playlist, replaced by `ended` after the open
    ended: bytes | None = None
    result: Result = field(default_factory=Result)

    @property
    def tag(self) -> str:
        return f"{self.kind}/{self.fault}-{self.reader}"

    @property
    def expected(self) -> str:
        return MATRIX[self.fault][self.kind]

    @property
    def bug(self) -> str | None:
        return BUGS.get((self.fault, self.kind, self.reader)) or BUGS.get(
            (self.fault, self.kind, None)
        )

    @property
    def log_pattern(self) -> str:
        return re.escape(self.tag) + r"\b[^\n]*(" + INJECTIONS[self.fault].cause + ")"


def _build(origin: Origin, kind: str, fault: str, reader: str, seed: int) -> Cell:
    rng = random.Random(seed)
    tag = f"{kind}/{fault}-{reader}"
    if kind == "progressive":
        data = rng.randbytes(PROGRESSIVE_SIZE)
        origin.add(f"/{tag}.bin", data)
        return Cell(fault, kind, reader, origin.url(f"/{tag}.bin"), f"{tag}.bin", f"{tag}.bin",
                    f"/{tag}.bin", data, PREFETCH_HEAD)  # fmt: skip
    live = kind == "hls-live"
    size, count, faulty = (LIVE_SEGMENT, LIVE_SEGMENTS, LIVE_FAULTY) if live else (
        VOD_SEGMENT, VOD_SEGMENTS, VOD_FAULTY)  # fmt: skip
    if fault == "byterange-past-end" and not live:
        faulty = VOD_BYTERANGE_FAULTY
    target_duration = 1 if live else 2
    plain = [rng.randbytes(size) for _ in range(count)]
    entries: list[str] = []
    target = f"/{tag}/seg{faulty}.ts"
    boundary = None
    if fault == "byterange-past-end":
        blob = b"".join(plain)
        origin.add(f"/{tag}/blob.ts", blob)
        for index in range(count):
            offset = index * size if index != faulty else len(blob) + 10 * size
            entries += [f"#EXTINF:{target_duration}.0,", f"#EXT-X-BYTERANGE:{size}@{offset}",
                        "blob.ts"]  # fmt: skip
        target, boundary = f"/{tag}/blob.ts", faulty * size
    else:
        encrypted = fault in ("key-404", "bad-padding")
        tails: list[tuple[bytes, bytes]] = []  # (next-to-last, last) cipher block
        for index, data in enumerate(plain):
            if encrypted and index == faulty:
                # Segments from the faulty one on use the key (IV: the sequence number).
                entries.append('#EXT-X-KEY:METHOD=AES-128,URI="key.bin"')
            if encrypted and index >= faulty:
                iv = index.to_bytes(16, "big")
                data = _encrypt(KEY, iv, data)
                tails.append((data[-32:-16], data[-16:]))
            origin.add(f"/{tag}/seg{index}.ts", data)
            entries += [f"#EXTINF:{target_duration}.0,", f"seg{index}.ts"]
        if encrypted:
            served = KEY if fault == "key-404" else _wrong_key(tails)
            origin.add(f"/{tag}/key.bin", served, "application/octet-stream")
            target = f"/{tag}/key.bin"
    oracle = b"".join(plain)
    name = "live.m3u8" if live else "index.m3u8"
    origin.add(f"/{tag}/{name}", _playlist(entries, target=target_duration, ended=not live,
                                          vod=not live))  # fmt: skip
    stream: dict[str, Any] = {"url": origin.url(f"/{tag}/{name}")}
    if live:
        stream["live_start_segments"] = count  # from the first segment on
    cell = Cell(fault, kind, reader, stream, tag, f"{tag}/stream.ts", target, oracle,
                0 if live else PREFETCH_HEAD, boundary)  # fmt: skip
    if live:
        cell.playlist = f"/{tag}/{name}"
        cell.ended = _playlist(entries, target=target_duration, ended=True, vod=False)
    return cell


# -- readers --------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
_libc.pread.restype = ctypes.c_ssize_t
_libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.read.restype = ctypes.c_ssize_t


def _raw_read(fd: int, size: int, offset: int | None) -> bytes | int:
    """pread(2) (or read(2) without an offset) with no EINTR retry: bytes, or the errno."""
    buf = ctypes.create_string_buffer(size)
    n = _libc.read(fd, buf, size) if offset is None else _libc.pread(fd, buf, size, offset)
    if n < 0:
        return ctypes.get_errno()
    return buf.raw[:n]


def _read_all(fd: int, result: Result, start: int, seekable: bool, nonblocking: bool) -> None:
    offset = start
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    given_up = time.monotonic() + 4 * HANG_GUARD
    try:
        while time.monotonic() < given_up:
            began = time.monotonic()
            got = _raw_read(fd, STEP, offset if seekable else None)
            result.durations.append(time.monotonic() - began)
            if isinstance(got, bytes):
                if not got:
                    result.eof = True
                    return
                data += got
                offset += len(got)
                continue
            if got == errno.EAGAIN and nonblocking:
                began = time.monotonic()
                events = poller.poll(HANG_GUARD * 1000)
                waited = time.monotonic() - began
                result.durations.append(waited)
                if not events:
                    result.hang = f"poll() reported nothing for {waited:.0f} s"
                    return
                if waited < 0.001:
                    time.sleep(0.005)  # readable, but not the whole read yet: no busy loop
                continue
            result.error, result.phase = got, "read"
            return
        result.hang = "the reader gave up"
    finally:
        result.data = bytes(data)


def _cached_head(path: Path) -> bool:
    state = os.getxattr(path, "user.kithara.state").decode()
    cached = int(os.getxattr(path, "user.kithara.cached_bytes"))
    return state != "downloading" and cached >= PREFETCH_HEAD


# -- one mount per kind ---------------------------------------------------------------------


def cells_of(kind: str) -> list[tuple[str, str]]:
    return [(f, r) for f in MATRIX for r in READERS if MATRIX[f][kind] != NA]


class KindRun:
    """One origin and one mount holding every cell of a kind; every cell read at once."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.origin = Origin()
        self.cells: dict[tuple[str, str], Cell] = {}
        self.mount: Mount | None = None
        self.mount_ok = False
        self.exit_code: int | None = None
        self.unexpected: list[str] = []
        self.log = ""
        self.loud: list[str] = []
        self.requests: list[RequestRecord] = []
        self.wall = 0.0
        self._stop = threading.Event()

    def execute(self) -> KindRun:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.origin.start()
        watcher = threading.Thread(target=self._watch, daemon=True)
        try:
            for seed, (fault, reader) in enumerate(cells_of(self.kind)):
                cell = _build(self.origin, self.kind, fault, reader, seed)
                self.cells[(fault, reader)] = cell
                injection = INJECTIONS[fault]
                if injection.early and injection.apply is not None:
                    injection.apply(self.origin, cell.target)
            config = write_config(self.root / "streams.toml",
                                  {c.stream_path: c.stream for c in self.cells.values()},
                                  self.root / "cache", metadata_timeout=20)  # fmt: skip
            mount = self.mount = Mount(config, self.root / "mnt", self.root / "daemon.log")
            for cell in self.cells.values():
                if cell.expected != BYTES:
                    mount.expect_log(cell.log_pattern)
                if cell.bug:
                    # The symptoms of a known bug (its cell is a strict xfail).
                    mount.expect_log(re.escape(cell.tag) + r"\b")
            mount.start()
            self._wait_for_sizes(mount)
            watcher.start()
            with ThreadPoolExecutor(max_workers=len(self.cells)) as pool:
                list(pool.map(self._read_cell, self.cells.values()))
            self.mount_ok = self._answers()
        finally:
            self._stop.set()
            if self.mount is not None:
                self.exit_code = self.mount.stop()
                self.log = self.mount.log_text()
                self.loud = [line for line in self.log.splitlines() if LOUD.search(line)]
                self.unexpected = self.mount.unexpected_log_lines()
            self.origin.stop()
            self.requests = self.origin.requests
            self.wall = time.monotonic() - began
        return self

    def _answers(self) -> bool:
        """The mount root can be stat'ed and the daemon is alive."""
        mount = self.mount
        if mount is None or mount.process is None or mount.process.poll() is not None:
            return False
        try:
            os.stat(mount.mountpoint)
        except OSError:
            return False
        return True

    def _wait_for_sizes(self, mount: Mount) -> None:
        """List every programme and learn every size, so faults meet the reader's requests."""

        def listed(cell: Cell) -> bool:
            return os.listdir(mount.path(cell.stream_path)) == ["stream.ts"]

        def sized(cell: Cell) -> bool:
            return mount.path(cell.read_path).stat().st_size == len(cell.oracle)

        for cell in self.cells.values():
            if cell.kind != "progressive":
                wait_until(functools.partial(listed, cell), f"the listing of {cell.tag}")
            # Faults from before the mount fail the size probe (BYTERANGE ones do not).
            if cell.kind == "hls-live" or INJECTIONS[cell.fault].early and cell.boundary is None:
                continue
            wait_until(functools.partial(sized, cell), f"the size of {cell.tag}")

    def _watch(self) -> None:
        """Turn each gzip-once fault off as soon as its first gzip answer was planned."""
        pending = {c.target for c in self.cells.values() if c.fault == "gzip-once"}
        while pending and not self._stop.wait(0.002):
            for record in self.origin.requests:
                if record.path in pending and "gzip" in (record.fault or ""):
                    self.origin.faults(record.path).gzip = False
                    pending.discard(record.path)

    def _read_cell(self, cell: Cell) -> None:
        assert self.mount is not None
        result = cell.result
        path = self.mount.path(cell.read_path)
        seekable = cell.kind != "hls-live"
        nonblocking = cell.reader == "nonblocking"
        injection = INJECTIONS[cell.fault]
        late = injection.apply if not injection.early else None
        try:
            result.stat_size = path.stat().st_size
            if late is not None and not seekable:
                late(self.origin, cell.target)  # nothing fetches a live segment before open
            began = time.monotonic()
            try:
                fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if nonblocking else 0))
            except OSError as exc:
                result.error, result.phase = exc.errno, "open"
                return
            finally:
                result.durations.append(time.monotonic() - began)
            try:
                if seekable:
                    # A non-blocking read may answer EAGAIN; it still fetches the head.
                    _raw_read(fd, PREFETCH_HEAD, 0)
                    wait_until(lambda: _cached_head(path), f"the head of {cell.tag}",
                               seconds=HANG_GUARD)  # fmt: skip
                    if late is not None:
                        late(self.origin, cell.target)
                else:
                    assert cell.playlist is not None and cell.ended is not None
                    self.origin.replace(cell.playlist, cell.ended)
                _read_all(fd, result, cell.start, seekable, nonblocking)
            finally:
                os.close(fd)
        except Exception as exc:  # recorded, asserted by the cell's test
            result.exception = repr(exc)
        finally:
            result.mount_ok = self._answers()


class Matrix:
    """Runs each kind once, on first use, for the whole module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[str, KindRun] = {}
        self.broken: dict[str, str] = {}

    def run(self, kind: str) -> KindRun:
        if kind in self.broken:  # one broken run fails its cells, it is not redone per cell
            pytest.fail(f"the {kind} run failed: {self.broken[kind]}")
        if kind not in self.runs:
            try:
                self.runs[kind] = KindRun(kind, self.root / kind).execute()
            except Exception as exc:
                self.broken[kind] = repr(exc)
                raise
        return self.runs[kind]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    yield Matrix(tmp_path_factory.mktemp("matrix"))


# -- the tests ------------------------------------------------------------------------------


def _params() -> list[Any]:
    params = []
    for kind in KINDS:
        for fault, reader in cells_of(kind):
            bug = BUGS.get((fault, kind, reader)) or BUGS.get((fault, kind, None))
            marks = [pytest.mark.xfail(strict=True, reason=f"bug: {bug}")] if bug else []
            params.append(pytest.param(kind, fault, reader, marks=marks,
                                       id=f"{kind}-{fault}-{reader}"))  # fmt: skip
    return params


def test_docstring_renders_the_matrix() -> None:
    assert __doc__ is not None and render_table() in __doc__
    assert set(MATRIX) == set(FAULTS) == set(INJECTIONS)
    assert all(set(row) == set(KINDS) for row in MATRIX.values())


@pytest.mark.parametrize(("kind", "fault", "reader"), _params())
def test_cell(kind: str, fault: str, reader: str, matrix: Matrix) -> None:
    run = matrix.run(kind)
    cell = run.cells[(fault, reader)]
    result = cell.result
    injection = INJECTIONS[fault]
    summary = (f"{cell.tag}: error={result.error and errno.errorcode[result.error]} "
               f"phase={result.phase} eof={result.eof} got={len(result.data)} "
               f"stat={result.stat_size} exception={result.exception}")  # fmt: skip
    assert result.exception is None, summary
    assert result.hang is None, summary
    assert max(result.durations) <= HANG_GUARD, (summary, result.durations)
    assert result.mount_ok and run.mount_ok, "the mount stopped answering"
    # Never a wrong byte, whatever the outcome.
    assert result.data == cell.oracle[cell.start : cell.start + len(result.data)], summary

    expected = cell.expected
    if expected == BYTES:
        assert result.error is None and result.eof, summary
        assert len(result.data) == len(cell.oracle) - cell.start, summary
    elif expected == EIO_AT_OPEN:
        assert result.stat_size == 0, summary
        assert (result.phase, result.error) == ("open", errno.EIO), summary
    elif expected == ESTALE:
        assert result.error == errno.ESTALE, summary
    elif expected == EIO:
        assert result.error == errno.EIO, summary
    else:
        assert expected == BYTES_THEN_EIO and cell.boundary is not None
        assert (result.phase, result.error) == ("read", errno.EIO), summary
        reached = cell.start + len(result.data)
        if cell.kind == "hls-live":
            assert reached == cell.boundary, summary  # a live read returns what arrived
        else:
            assert cell.boundary - STEP < reached <= cell.boundary, summary

    # The fault reached the origin (and a one-shot one exactly as often as configured).
    records = [r for r in run.requests if r.path == cell.target]
    if injection.witness.startswith("status:"):
        hits = sum(r.status == int(injection.witness[7:]) for r in records)
    else:
        hits = sum(injection.witness in (r.fault or "").split("+") for r in records)
    if injection.hits is None:
        assert hits >= 1, records
    else:
        assert hits == injection.hits, records
    if fault.startswith("redirect"):
        assert len(records) <= REDIRECT_BUDGET, records
    elif injection.hits is None and expected != BYTES:
        assert hits <= RETRY_BUDGET, f"{hits} faulted answers: retries beyond the budget"
    if expected == BYTES:
        named = [line for line in run.loud if re.search(re.escape(cell.tag) + r"\b", line)]
        assert named == [], ("a recovered fault is not worth a warning", named)
    else:
        # A warning (or worse) names the stream and says why.
        named = [line for line in run.loud if re.search(cell.log_pattern, line)]
        assert named, (cell.log_pattern, "\n".join(run.loud)[-3000:])


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_exits_cleanly_and_logs_only_what_cells_explain(kind: str, matrix: Matrix) -> None:
    run = matrix.run(kind)
    assert run.exit_code == 0, run.log[-3000:]
    assert run.unexpected == [], "\n".join(run.unexpected)
