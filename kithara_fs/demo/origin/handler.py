"""The loopback origin's HTTP side: its threading server and its request handler.

Owns: accepting connections (a deep backlog, daemon threads, silence about clients hanging
up), and answering one GET or HEAD as the origin planned it: delays and stalls, the status
line and headers, the body paced, gzipped, cut or stalled, and every byte counted into the
request log entry before it goes out.

Must never: decide an answer or spend a fault itself (the plan has done that), apply a
Content-Encoding the plan did not ask for, read a file-backed resource whole into memory,
print per-request logs or tracebacks for clients that hang up, or stall longer than
STALL_CAP.
"""

from __future__ import annotations

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from kithara_fs.demo.origin.faults import STALL_CAP
from kithara_fs.demo.origin.planner import _Plan
from kithara_fs.demo.origin.records import _Entry
from kithara_fs.demo.origin.wire import CHUNK, _gzipped, _header_text, _truncated

if TYPE_CHECKING:
    from kithara_fs.demo.origin.server import Origin


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
    # TCP_NODELAY, as real servers set it: headers and body go out in separate writes, and
    # with Nagle's algorithm the body of a kept-alive connection would wait for the client's
    # delayed ACK (40 ms) on every small answer.
    disable_nagle_algorithm = True
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
        plan = origin._plan(path, head, range_header, if_range, self.headers.get("If-None-Match"))

        def answer(status: int) -> _Entry:
            # Logged before the first byte goes out: a client that has its response may look at
            # the log straight away, so the entry must already be there.
            entry = _Entry(self.command, path, range_header, if_range, status, fault=plan.fault,
                           headers=tuple(self.headers.items()))
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
                if plan.status != 304:
                    # RFC 9110 §8.6: a 304 carries no Content-Length of its own (Squid 5
                    # stores one as the file's length: its bug 5538).
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
        if plan.cookie is not None:
            self.send_header("Set-Cookie", plan.cookie)
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
