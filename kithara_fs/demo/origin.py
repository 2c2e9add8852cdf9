"""A loopback HTTP origin with fault injection, for `kithara-fs demo` and the tests.

Owns: serving registered byte resources over HTTP/1.1 (GET and HEAD, single byte ranges,
If-Range, strong ETags), per-path injected faults, and a log of every request it answered.

Must never: listen on anything but the address it was given (loopback by default), apply a
Content-Encoding, read a file-backed resource whole into memory, print per-request logs or
tracebacks for clients that hang up, or depend on anything outside the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
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


@dataclass
class Faults:
    """Mutable per-path misbehaviour; tests change the fields while the origin runs."""

    # Consumed one per GET: answer this status with a small body instead of the content.
    fail_statuses: list[int] = field(default_factory=list)
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


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the origin saw it."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int  # bytes actually written, not the Content-Length promised


@dataclass
class _Entry:
    """A log entry still being written to; guarded by Origin._lock."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int = 0

    def freeze(self) -> RequestRecord:
        return RequestRecord(
            self.method, self.path, self.range, self.if_range, self.status, self.body_bytes
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
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

        def answer(status: int) -> _Entry:
            # Logged before the first byte goes out: a client that has its response may look at
            # the log straight away, so the entry must already be there.
            entry = origin._answer(_Entry(self.command, path, range_header, if_range, status))
            self.send_response(status)
            return entry

        resource, faults, fail_status, drop_after = origin._plan(path, head)
        try:
            if faults is not None:
                if faults.delay > 0:
                    time.sleep(faults.delay)
                if faults.stall is not None:
                    faults.stall.wait(STALL_CAP)

            if resource is None or fail_status is not None:
                status = 404 if resource is None else fail_status or 500
                body = f"{status} {'not found' if resource is None else 'injected'}\n".encode()
                entry = answer(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self._write(entry, body)
                return

            ignore_range = faults is not None and faults.ignore_range
            total = resource.size
            start, length = 0, total
            status = 200
            content_range: str | None = None
            use_range = range_header is not None and not ignore_range
            if use_range and if_range is not None:
                # A validator that no longer matches means the client's earlier bytes are of
                # another version, so it gets the whole new body instead of a spliced one.
                use_range = if_range.strip() in (resource.etag, resource.last_modified)
            if use_range and range_header is not None:
                try:
                    parsed = parse_range(range_header, total)
                except _Unsatisfiable:
                    answer(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parsed is not None:
                    first, last = parsed
                    start, length = first, last - first + 1
                    status = 206
                    content_range = f"bytes {first}-{last}/{total}"

            entry = answer(status)
            self.send_header("Content-Type", resource.content_type)
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", resource.etag)
            self.send_header("Last-Modified", resource.last_modified)
            if not ignore_range:
                self.send_header("Accept-Ranges", "bytes")
            if content_range is not None:
                self.send_header("Content-Range", content_range)
            self.end_headers()
            if head:
                return

            limit = length if drop_after is None else min(drop_after, length)
            rate = faults.rate if faults is not None else None
            chunk = CHUNK if not rate else max(1, min(CHUNK, rate // 8))
            began = time.monotonic()
            sent = 0
            for block in resource.chunks(start, limit, chunk):
                self._write(entry, block)
                sent += len(block)
                if rate:
                    # Pace against the start time so sleep overshoot does not accumulate.
                    ahead = began + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            if drop_after is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            origin._done()

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
        self._resources: dict[str, _Resource] = {}
        self._faults: dict[str, Faults] = {}
        self._connections: set[socket.socket] = set()
        self._version = 0
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

    def clear_faults(self) -> None:
        with self._lock:
            stalls = [f.stall for f in self._faults.values() if f.stall is not None]
            self._faults.clear()
        # Release anything parked on a stall that is no longer configured.
        for stall in stalls:
            stall.set()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first."""
        with self._lock:
            return [entry.freeze() for entry in self._entries]

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self._entries.clear()

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
        with self._lock:
            self._version += 1
            old = self._resources.get(path)
            # Strictly increasing whole seconds per path: HTTP dates have one-second resolution,
            # and two versions must never share a Last-Modified or If-Range would splice them.
            stamp = max(int(time.time()), old.stamp + 1 if old else 0)
            digest = hashlib.sha256(f"{self._version}:{path}:{size}".encode()).hexdigest()[:16]
            self._resources[path] = _Resource(
                # A copy, so a caller mutating a bytearray cannot change served content.
                data=data if isinstance(data, Path) else bytes(data),
                size=size,
                etag=f'"v{self._version}-{digest}"',
                stamp=stamp,
                last_modified=formatdate(stamp, usegmt=True),
                content_type=content_type,
            )

    def _plan(
        self, path: str, head: bool
    ) -> tuple[_Resource | None, Faults | None, int | None, int | None]:
        """Snapshot the resource and consume this request's share of the faults atomically."""
        with self._lock:
            self._busy += 1
            resource = self._resources.get(path)
            faults = self._faults.get(path)
            fail_status: int | None = None
            drop_after: int | None = None
            if faults is not None and not head and resource is not None:
                if faults.fail_statuses:
                    fail_status = faults.fail_statuses.pop(0)
                elif faults.drop_after is not None and faults.drop_count > 0:
                    faults.drop_count -= 1
                    drop_after = faults.drop_after
            return resource, faults, fail_status, drop_after

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
