"""A loopback HTTP origin with fault injection, for `kithara-fs demo` and the tests.

Owns: serving registered byte resources over HTTP/1.1 (GET and HEAD, single byte ranges,
If-Range, strong ETags), per-path injected faults (failure statuses, cut and stalled bodies,
lying Content-Range and Content-Length, redirects, gzip, padding, changing validators), a
seeded chaos mode that injects detectable faults at random, and a log of every request it
answered.

Must never: listen on anything but the address it was given (loopback by default), apply a
Content-Encoding no fault asked for, read a file-backed resource whole into memory, print
per-request logs or tracebacks for clients that hang up, let chaos change content or
validators or send wrong bytes that a client checking status, Content-Range, Content-Length
and Content-Encoding could not notice, or depend on anything outside the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import re
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kithara_fs.demo.media import content_type_for

CHUNK = 16 * 1024
# Upper bound on a stall so a test that forgets to release it cannot leave threads behind.
STALL_CAP = 60.0

# What chaos mode can inject, by the names the request log and chaos_counts() use. Every one
# leaves the content and its validators alone and is visible in the status, Content-Range,
# Content-Length (a body that ends short) or Content-Encoding; header_stall only delays.
CHAOS_FAULTS = (
    "fail_status",
    "drop",
    "body_stall",
    "header_stall",
    "range_shift",
    "length_overstates",
    "ignore_range",
    "gzip",
)
# Chaos stalls last this long (seconds), drawn uniformly.
CHAOS_STALL = (0.5, 3.0)
# Upper bound on a chaos Content-Range shift or Content-Length overstatement, in bytes.
CHAOS_MAX_LIE = 4096
# Stands in for the chaos generator when chaos is off; never drawn from.
_NO_CHAOS = random.Random(0)


@dataclass
class Faults:
    """Mutable per-path misbehaviour; tests change the fields while the origin runs.

    A `*_count` field is how many more GET answers get the fault it belongs to; 0 means off
    (except redirect_count, see there). It is spent under the origin's lock, one per answer
    the fault applies to (a Content-Range lie only by a 206, a body fault only by a 200 or
    206, a header stall by any GET answer), so concurrent requests never share one; only a
    redirect is spent by HEAD. Per request, a redirect wins over fail_statuses, which wins
    over the content answer and its body faults; body faults otherwise combine.
    """

    # Consumed one per GET: answer this status with a small body instead of the content.
    fail_statuses: list[int] = field(default_factory=list)
    # Sent verbatim as Retry-After with the fail_statuses answers. Junk ("²"), negative, huge
    # and date values are all fair game: clients must survive each. Text that Latin-1 cannot
    # encode goes out as UTF-8 bytes.
    retry_after: str | None = None
    # Send the full Content-Length, then only this many body bytes, then cut the connection.
    # Only applies while drop_count > 0.
    drop_after: int | None = None
    # How many more responses get the drop treatment.
    drop_count: int = 0
    # Behave like a server without Range support: always 200 with the whole body.
    ignore_range: bool = False
    # Seconds to wait before the response headers.
    delay: float = 0.0
    # Before the response headers, wait until this is set (at most STALL_CAP seconds).
    stall: threading.Event | None = None
    # Body bytes per second.
    rate: int | None = None
    # A 206's Content-Range claims a first and last shifted by this many bytes (either sign,
    # not clamped, so it may even go negative) while the body holds the requested bytes: a
    # client trusting the header would put right bytes at the wrong offset.
    range_shift: int = 0
    range_shift_count: int = 0
    # A 206's Content-Range last is this much lower while Content-Length and the body carry
    # the whole requested span: more body than the range says. Not clamped at first.
    range_claims_fewer: int = 0
    # A 206's Content-Range claims this many bytes more than Content-Length and the body
    # carry. The claimed last grows up to total-1; whatever does not fit (the total must stay
    # the real size) comes off the end of the body instead. Unused while range_claims_fewer
    # is set; both share range_lie_count.
    range_claims_more: int = 0
    range_lie_count: int = 0
    # Content-Length promises this many bytes more than the body; after the real body the
    # connection is shut down, so the client sees the body end short.
    length_overstates: int = 0
    length_overstates_count: int = 0
    # After this many body bytes, send nothing for stall_seconds (at most STALL_CAP; stop()
    # and clear_faults() end it early) with the connection open, then close it without the
    # rest. A stall_after past the body's end stalls after the whole body, then closes.
    stall_after: int | None = None
    stall_seconds: float = 0.0
    stall_count: int = 0
    # Seconds to wait before the status line, bounded and ended early like stall_seconds.
    header_stall_seconds: float = 0.0
    header_stall_count: int = 0
    # Answer GET and HEAD with 302 and this Location, sent verbatim so a relative reference
    # works too; the path needs no resource. redirect_count 0 means every request, forever;
    # a positive count limits it to that many answers, and redirect_to is cleared after the
    # last one (as 0 would otherwise mean forever again).
    redirect_to: str | None = None
    redirect_count: int = 0
    # GET only: gzip the (possibly ranged) body and say so in Content-Encoding, with the
    # compressed Content-Length, whatever Accept-Encoding asked for. Content-Range keeps
    # describing the uncompressed bytes.
    gzip: bool = False
    # One X-Padding header of this many bytes on every answer for the path, HEAD included.
    huge_header_bytes: int = 0
    # The body of 416 answers (sent as text/html), e.g. an error page; empty sends none.
    unsatisfiable_body: bytes = b""
    # Every 200 and 206 answer, HEAD included, carries a new ETag and a Last-Modified one
    # second later although the bytes are the same. If-Range is compared with the validators
    # as last issued, so an older one gets the whole body with 200.
    fresh_etag: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the origin saw it."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int  # bytes actually written, not the Content-Length promised
    # The injected faults by name, "+"-joined; chaos ones as "chaos:<name>". None: a clean
    # answer (delay, stall and rate are not counted: they only slow an answer down).
    fault: str | None = None


@dataclass
class _Entry:
    """A log entry still being written to; guarded by Origin._lock."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int = 0
    fault: str | None = None

    def freeze(self) -> RequestRecord:
        return RequestRecord(
            self.method,
            self.path,
            self.range,
            self.if_range,
            self.status,
            self.body_bytes,
            self.fault,
        )


@dataclass(frozen=True)
class _Resource:
    data: bytes | Path
    size: int
    etag: str
    stamp: int
    last_modified: str
    content_type: str

    def chunks(self, start: int, length: int, chunk: int) -> Iterator[bytes]:
        if isinstance(self.data, bytes):
            view = memoryview(self.data)
            for offset in range(start, start + length, chunk):
                yield bytes(view[offset : min(offset + chunk, start + length)])
            return
        with self.data.open("rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                block = f.read(min(chunk, remaining))
                if not block:
                    return
                remaining -= len(block)
                yield block


@dataclass
class _Plan:
    """One request's answer, decided under Origin._lock so each counted fault is spent once."""

    resource: _Resource | None
    faults: Faults | None
    # Set to end this request's stalls early; stop() and clear_faults() set it.
    release: threading.Event
    status: int = 200
    # True for a 200 or 206 with the content; anything else is a short fixed body.
    content: bool = False
    body: bytes = b""
    body_type: str | None = "text/plain"
    headers: list[tuple[str, str]] = field(default_factory=list)
    padding: int = 0
    header_stall: float = 0.0
    # The content bytes to send: `length` of them from `start`, before any gzip.
    start: int = 0
    length: int = 0
    content_range: str | None = None
    accept_ranges: bool = True
    gzip: bool = False
    overstate: int = 0
    # Body bytes (as sent, so compressed ones under gzip) after which the body stops and the
    # connection is closed.
    cut: int | None = None
    body_stall: float | None = None
    names: list[str] = field(default_factory=list)

    @property
    def fault(self) -> str | None:
        return "+".join(self.names) or None

    def fail(self, status: int, retry_after: str | None, name: str) -> None:
        self.status = status
        self.body = f"{status} injected\n".encode()
        if retry_after is not None:
            self.headers.append(("Retry-After", retry_after))
        self.names.append(name)

    def cut_at(self, offset: int) -> None:
        self.cut = offset if self.cut is None else min(self.cut, offset)


@dataclass
class _Chaos:
    paths: frozenset[str] | None
    rate: float
    rng: random.Random


class _Unsatisfiable(Exception):
    pass


_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def parse_range(value: str, total: int) -> tuple[int, int] | None:
    """Inclusive (first, last) for a single byte range, or None when the header must be ignored.

    Raises _Unsatisfiable when the range is well formed but lies past the end. Multiple ranges
    and malformed values are ignored, as RFC 9110 allows, which yields a plain 200.
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first_s, last_s = match.groups()
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or total == 0:
            raise _Unsatisfiable
        return max(0, total - suffix), total - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= total:
        raise _Unsatisfiable
    last = min(int(last_s), total - 1) if last_s else total - 1
    return first, last


def _gzipped(blocks: Iterable[bytes]) -> Iterator[bytes]:
    # wbits 31 is the gzip container. zlib writes a zero mtime into its header, so the same
    # bytes always compress to the same stream: the handler counts Content-Length in a first
    # pass and sends in a second without holding the body in memory.
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for block in blocks:
        out = compressor.compress(block)
        if out:
            yield out
    yield compressor.flush()


def _truncated(blocks: Iterable[bytes], limit: int | None) -> Iterator[bytes]:
    if limit is None:
        yield from blocks
        return
    left = limit
    for block in blocks:
        if left <= 0:
            return
        yield block[:left]
        left -= len(block)


def _header_text(value: str) -> str:
    """`value` as send_header() can put it on the wire: Latin-1 if it fits, else UTF-8 bytes."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value


def _chaos_retry_after(rng: random.Random) -> str | None:
    # Numeric values (and dates) stay within a second, so a client that obeys them keeps a
    # soak test quick; the junk ones are there to be survived, not obeyed.
    return rng.choice(
        [
            None,
            "0",
            "1",
            "0.5",
            "-5",
            "",
            "soon",
            "²",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            formatdate(int(time.time()) + 1, usegmt=True),
        ]
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 overflows when a client (or a soak test) opens more
    # connections at once, and each dropped SYN costs a 1 s retransmit.
    request_queue_size = 128
    origin: Origin

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are normal here (that is what tests provoke).
        # Anything else is a bug in this module and should be seen.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kithara-demo-origin"
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The tests read the request log instead; stderr noise would bury real failures.
        pass

    def setup(self) -> None:
        super().setup()
        self.server.origin._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.origin._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        origin = self.server.origin
        path = unquote(urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        plan = origin._plan(path, head, range_header, if_range)

        def answer(status: int) -> _Entry:
            # Logged before the first byte goes out: a client that has its response may look at
            # the log straight away, so the entry must already be there.
            entry = _Entry(self.command, path, range_header, if_range, status, fault=plan.fault)
            origin._answer(entry)
            self.send_response(status)
            return entry

        try:
            faults = plan.faults
            if faults is not None:
                if faults.delay > 0:
                    time.sleep(faults.delay)
                if faults.stall is not None:
                    faults.stall.wait(STALL_CAP)
            if plan.header_stall > 0:
                plan.release.wait(min(plan.header_stall, STALL_CAP))

            resource = plan.resource
            if not plan.content or resource is None:
                entry = answer(plan.status)
                if plan.body_type is not None:
                    self.send_header("Content-Type", plan.body_type)
                self.send_header("Content-Length", str(len(plan.body)))
                for name, value in plan.headers:
                    self.send_header(name, _header_text(value))
                self._end_headers(plan)
                if not head and plan.body:
                    self._write(entry, plan.body)
                return

            size = plan.length
            if plan.gzip:
                size = sum(len(b) for b in _gzipped(resource.chunks(plan.start, size, CHUNK)))
            entry = answer(plan.status)
            self.send_header("Content-Type", resource.content_type)
            self.send_header("Content-Length", str(size + plan.overstate))
            self.send_header("ETag", resource.etag)
            self.send_header("Last-Modified", resource.last_modified)
            if plan.accept_ranges:
                self.send_header("Accept-Ranges", "bytes")
            if plan.content_range is not None:
                self.send_header("Content-Range", plan.content_range)
            if plan.gzip:
                self.send_header("Content-Encoding", "gzip")
            self._end_headers(plan)
            if head:
                return

            rate = faults.rate if faults is not None else None
            chunk = CHUNK if not rate else max(1, min(CHUNK, rate // 8))
            if plan.gzip:
                blocks = _truncated(
                    _gzipped(resource.chunks(plan.start, plan.length, chunk)), plan.cut
                )
            else:
                limit = plan.length if plan.cut is None else min(plan.cut, plan.length)
                blocks = resource.chunks(plan.start, limit, chunk)
            began = time.monotonic()
            sent = 0
            for block in blocks:
                self._write(entry, block)
                sent += len(block)
                if rate:
                    # Pace against the start time so sleep overshoot does not accumulate.
                    ahead = began + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            if plan.body_stall is not None:
                # The connection stays open and silent: a client needs a read timeout here.
                plan.release.wait(min(plan.body_stall, STALL_CAP))
            if plan.cut is not None or plan.overstate > 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            origin._done()

    def _end_headers(self, plan: _Plan) -> None:
        if plan.padding > 0:
            self.send_header("X-Padding", "x" * plan.padding)
        self.end_headers()

    def _write(self, entry: _Entry, data: bytes) -> None:
        # Counted before the write for the same reason the entry is logged early; taken back if
        # the write fails, so body_bytes never claims bytes the client cannot have had.
        self.server.origin._count(entry, len(data))
        try:
            self.wfile.write(data)
        except OSError:
            self.server.origin._count(entry, -len(data))
            raise


class Origin:
    """An HTTP server on a loopback port serving registered resources.

    The socket is bound in the constructor so URLs are known before start(). A request enters
    the log when its status is decided and its body_bytes grows as the body is written;
    wait_idle() waits until every response in progress has finished.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        # Requests per path counted on arrival, before any fault delays their answer (the
        # request log holds only answered ones).
        self._arrivals: dict[str, int] = {}
        self._resources: dict[str, _Resource] = {}
        self._faults: dict[str, Faults] = {}
        self._connections: set[socket.socket] = set()
        self._version = 0
        # Stalls in progress wait on this; clear_faults() sets it and puts a fresh one here.
        self._release = threading.Event()
        self._chaos: _Chaos | None = None
        self._chaos_counts = dict.fromkeys(CHAOS_FAULTS, 0)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._server = _Server((host, port), _Handler)
        self._server.origin = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{quote(path)}"

    def add(self, path: str, data: bytes | Path, content_type: str | None = None) -> str:
        """Register `data` at `path` (e.g. "/x.mp3") and return its URL."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        self._store(path, data, content_type or content_type_for(path))
        return self.url(path)

    def replace(self, path: str, data: bytes | Path) -> None:
        """Swap the content at `path`; the ETag and Last-Modified change with it."""
        with self._lock:
            old = self._resources.get(path)
        if old is None:
            raise KeyError(path)
        self._store(path, data, old.content_type)

    def faults(self, path: str) -> Faults:
        with self._lock:
            return self._faults.setdefault(path, Faults())

    def redirect_loop(self, path: str, relative: bool = False) -> Faults:
        """Make `path` answer every request with a 302 to itself, forever.

        The Location is the absolute URL, or with `relative` the bare path (a relative
        reference the client must resolve against the request URL). A client can only stop
        by counting hops; the path needs no registered resource.
        """
        faults = self.faults(path)
        with self._lock:
            faults.redirect_to = quote(path) if relative else self.url(path)
            faults.redirect_count = 0
        return faults

    def chaos(self, paths: Iterable[str] | None, rate: float, seed: int) -> None:
        """Fault a random share of the GETs on `paths` (every path when None) from now on.

        Each GET of a registered resource independently, with probability `rate`, gets one
        fault drawn from CHAOS_FAULTS (those that fit the answer: a Content-Range lie or an
        ignored Range only for a 206, a cut body only for a non-empty one). Per-path Faults
        still apply on top. HEAD is never touched, content and validators never change, and
        every fault shows in the status, Content-Range, Content-Length or Content-Encoding;
        a header stall alone only delays a correct answer. Draws come from
        random.Random(seed) under the lock; which request gets which draw depends on the
        order requests arrive in. Restarts chaos_counts() from zero.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1]: {rate!r}")
        # A bare string is one path, not a set of one-character ones.
        chosen = None if paths is None else frozenset([paths] if isinstance(paths, str) else paths)
        with self._lock:
            self._chaos = _Chaos(chosen, rate, random.Random(seed))
            self._chaos_counts = dict.fromkeys(CHAOS_FAULTS, 0)

    def chaos_off(self) -> None:
        """Stop injecting chaos faults; answers already planned keep theirs (stalls included)."""
        with self._lock:
            self._chaos = None

    def chaos_counts(self) -> dict[str, int]:
        """How many of each CHAOS_FAULTS name were injected since chaos() was last called."""
        with self._lock:
            return dict(self._chaos_counts)

    def clear_faults(self) -> None:
        """Remove every path's faults and chaos mode, and end every stall in progress."""
        with self._lock:
            stalls = [f.stall for f in self._faults.values() if f.stall is not None]
            self._faults.clear()
            self._chaos = None
            release = self._release
            # Once stopped the set event stays, so a request still arriving cannot stall.
            if not self._stopped:
                self._release = threading.Event()
        # Release anything parked on a stall that is no longer configured.
        for stall in stalls:
            stall.set()
        release.set()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        with self._lock:
            return [entry.freeze() for entry in self._entries]

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == path]

    def arrivals(self, path: str | None = None) -> int:
        """Requests that arrived (for ``path``, or all), answered or still held by a fault."""
        with self._lock:
            if path is None:
                return sum(self._arrivals.values())
            return self._arrivals.get(path, 0)

    def clear_log(self) -> None:
        with self._lock:
            self._entries.clear()
            self._arrivals.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no response is in progress, so the log is complete; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def start(self) -> Origin:
        if self._stopped:
            raise RuntimeError("an Origin cannot be restarted after stop()")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                # A short poll keeps stop() quick; the cost is a few idle wake-ups.
                kwargs={"poll_interval": 0.05},
                name=f"origin:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.clear_faults()
        # shutdown() waits for serve_forever to acknowledge, so only call it if it runs.
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        # Keep-alive connections would otherwise go on being served after the origin "went away".
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _store(self, path: str, data: bytes | Path, content_type: str) -> None:
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        # A copy, so a caller mutating a bytearray cannot change served content.
        kept = data if isinstance(data, Path) else bytes(data)
        with self._lock:
            old = self._resources.get(path)
            # Strictly increasing whole seconds per path: HTTP dates have one-second resolution,
            # and two versions must never share a Last-Modified or If-Range would splice them.
            stamp = max(int(time.time()), old.stamp + 1 if old else 0)
            self._resources[path] = self._mint(path, kept, size, content_type, stamp)

    def _mint(
        self, path: str, data: bytes | Path, size: int, content_type: str, stamp: int
    ) -> _Resource:
        """`data` under validators no earlier version of `path` had; call with _lock held."""
        self._version += 1
        digest = hashlib.sha256(f"{self._version}:{path}:{size}".encode()).hexdigest()[:16]
        return _Resource(
            data=data,
            size=size,
            etag=f'"v{self._version}-{digest}"',
            stamp=stamp,
            last_modified=formatdate(stamp, usegmt=True),
            content_type=content_type,
        )

    def _plan(self, path: str, head: bool, range_header: str | None, if_range: str | None) -> _Plan:
        """Decide this request's answer and consume its share of the faults atomically."""
        with self._lock:
            self._busy += 1
            self._arrivals[path] = self._arrivals.get(path, 0) + 1
            resource = self._resources.get(path)
            faults = self._faults.get(path)
            plan = _Plan(resource, faults, self._release)
            if faults is not None:
                if faults.huge_header_bytes > 0:
                    plan.padding = faults.huge_header_bytes
                    plan.names.append("huge_header")
                if not head and faults.header_stall_count > 0:
                    faults.header_stall_count -= 1
                    plan.header_stall = faults.header_stall_seconds
                    plan.names.append("header_stall")
                if faults.redirect_to is not None:
                    location = faults.redirect_to
                    if faults.redirect_count > 0:
                        faults.redirect_count -= 1
                        if faults.redirect_count == 0:
                            faults.redirect_to = None
                    plan.status = 302
                    plan.body = f"302 found: {location}\n".encode()
                    plan.headers.append(("Location", location))
                    plan.names.append("redirect")
                    return plan
            if resource is None:
                plan.status = 404
                plan.body = b"404 not found\n"
                return plan
            if faults is not None and not head and faults.fail_statuses:
                plan.fail(faults.fail_statuses.pop(0) or 500, faults.retry_after, "fail_status")
                return plan
            self._plan_content(plan, resource, faults, path, head, range_header, if_range)
            return plan

    def _plan_content(
        self,
        plan: _Plan,
        resource: _Resource,
        faults: Faults | None,
        path: str,
        head: bool,
        range_header: str | None,
        if_range: str | None,
    ) -> None:
        """The 200, 206 or 416 part of _plan, with the body faults; call with _lock held."""
        total = resource.size
        ignore_range = faults is not None and faults.ignore_range
        plan.accept_ranges = not ignore_range
        if ignore_range and range_header is not None:
            plan.names.append("ignore_range")
        use_range = range_header is not None and not ignore_range
        if use_range and if_range is not None:
            # A validator that no longer matches means the client's earlier bytes are of
            # another version, so it gets the whole new body instead of a spliced one. With
            # fresh_etag the resource holds the validators as last issued.
            use_range = if_range.strip() in (resource.etag, resource.last_modified)
        parsed: tuple[int, int] | None = None
        unsatisfiable = False
        if use_range and range_header is not None:
            try:
                parsed = parse_range(range_header, total)
            except _Unsatisfiable:
                unsatisfiable = True
        first, last = parsed or (0, total - 1)
        status = 416 if unsatisfiable else 206 if parsed else 200

        chaos = self._roll_chaos(path, head, status, last - first + 1)
        # Only drawn from when chaos picked a fault, and then self._chaos is set.
        rng = self._chaos.rng if self._chaos is not None else _NO_CHAOS
        if chaos == "fail_status":
            plan.fail(503, _chaos_retry_after(rng), "chaos:fail_status")
            return
        if chaos == "header_stall":
            plan.header_stall = max(plan.header_stall, rng.uniform(*CHAOS_STALL))
        if chaos == "ignore_range":
            parsed, status, first, last = None, 200, 0, total - 1
        if chaos is not None:
            plan.names.append(f"chaos:{chaos}")

        if status == 416:
            plan.status = 416
            plan.headers.append(("Content-Range", f"bytes */{total}"))
            body = faults.unsatisfiable_body if faults is not None else b""
            plan.body, plan.body_type = body, "text/html" if body else None
            if body:
                plan.names.append("unsatisfiable_body")
            return

        plan.content = True
        plan.status = status
        plan.start, plan.length = first, last - first + 1
        counted = faults if faults is not None and not head else None
        if parsed is not None:
            claim_first, claim_last = first, last
            if counted is not None and counted.range_lie_count > 0:
                if counted.range_claims_fewer > 0:
                    counted.range_lie_count -= 1
                    claim_last -= counted.range_claims_fewer
                    plan.names.append("range_claims_fewer")
                elif counted.range_claims_more > 0:
                    counted.range_lie_count -= 1
                    wanted = counted.range_claims_more
                    claim_last = max(last, min(last + wanted, total - 1))
                    # The total must stay true, so what the claim could not grow by comes off
                    # the body: either way the range says `wanted` bytes more than is sent.
                    plan.length = max(0, plan.length - (wanted - (claim_last - last)))
                    plan.names.append("range_claims_more")
            shift = 0
            if counted is not None and counted.range_shift and counted.range_shift_count > 0:
                counted.range_shift_count -= 1
                shift = counted.range_shift
                plan.names.append("range_shift")
            if chaos == "range_shift":
                # A shift that keeps the claim inside the resource where one exists, so only
                # comparing it with the range asked for gives it away.
                size = rng.randint(1, CHAOS_MAX_LIE)
                fits_above = claim_last + shift + size <= total - 1
                fits_below = claim_first + shift - size >= 0
                shift += -size if fits_below and not fits_above else size
            plan.content_range = f"bytes {claim_first + shift}-{claim_last + shift}/{total}"

        if counted is not None:
            if counted.length_overstates > 0 and counted.length_overstates_count > 0:
                counted.length_overstates_count -= 1
                plan.overstate = counted.length_overstates
                plan.names.append("length_overstates")
            if counted.drop_after is not None and counted.drop_count > 0:
                counted.drop_count -= 1
                plan.cut_at(counted.drop_after)
                plan.names.append("drop")
            if counted.stall_after is not None and counted.stall_count > 0:
                counted.stall_count -= 1
                plan.cut_at(counted.stall_after)
                plan.body_stall = counted.stall_seconds
                plan.names.append("body_stall")
            if counted.gzip:
                plan.gzip = True
                plan.names.append("gzip")
        if chaos == "length_overstates":
            plan.overstate += rng.randint(1, CHAOS_MAX_LIE)
        elif chaos == "drop":
            plan.cut_at(rng.randrange(max(1, plan.length)))
        elif chaos == "body_stall":
            plan.cut_at(rng.randrange(max(1, plan.length)))
            plan.body_stall = rng.uniform(*CHAOS_STALL)
        elif chaos == "gzip":
            plan.gzip = True

        if faults is not None and faults.fresh_etag:
            fresh = self._mint(
                path, resource.data, resource.size, resource.content_type, resource.stamp + 1
            )
            self._resources[path] = plan.resource = fresh
            plan.names.append("fresh_etag")

    def _roll_chaos(self, path: str, head: bool, status: int, length: int) -> str | None:
        """Draw this GET's chaos fault, if any, and count it; call with _lock held."""
        chaos = self._chaos
        if chaos is None or head or (chaos.paths is not None and path not in chaos.paths):
            return None
        if chaos.rng.random() >= chaos.rate:
            return None
        options = ["fail_status", "header_stall"]
        if status != 416:
            options += ["length_overstates", "gzip"]
            # Cutting an empty body short would leave nothing to notice.
            if length > 0:
                options += ["drop", "body_stall"]
        if status == 206:
            options += ["range_shift", "ignore_range"]
        name = chaos.rng.choice(options)
        self._chaos_counts[name] += 1
        return name

    def _answer(self, entry: _Entry) -> _Entry:
        with self._lock:
            self._entries.append(entry)
        return entry

    def _count(self, entry: _Entry, nbytes: int) -> None:
        with self._lock:
            entry.body_bytes += nbytes

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def main(argv: list[str] | None = None) -> int:
    """Serve every file under a directory until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m kithara_fs.demo.origin", description="Serve a directory of files."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    root: Path = args.directory
    if not root.is_dir():
        parser.error(f"not a directory: {root}")

    origin = Origin(args.host, args.port)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        print(origin.add("/" + file.relative_to(root).as_posix(), file), flush=True)
    with origin, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
