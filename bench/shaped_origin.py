"""The benchmark's origin: the project's loopback origin, shaped, in a process of its own.

Owns: starting ``kithara_fs.demo.origin.Origin`` in a child process (so its serving threads
never compete with the measuring reader for the benchmark's GIL), per-path shaping — a
latency added before every response's headers (``Faults.delay``) and a bandwidth cap shared
by *all* connections to that path (a FIFO "link", unlike ``Faults.rate`` which caps each
response on its own and so lets a client with N parallel connections get N times the link) —
HTML index pages for folder URLs (rclone's ``:http:`` remote and httpdirfs need a directory
listing; the project's origin serves files only), and answering the parent's questions about
the request log.

Must never: listen on anything but 127.0.0.1, change kithara_fs itself, or shape the index
pages (they are not part of any measurement).

Two private names of ``kithara_fs.demo.origin`` are used, on purpose and only here: the
server object (``Origin._server``) to install a handler subclass, and the handler class it
holds. If they change, ``ShapedOrigin`` fails at start with a clear error rather than
measuring something else.
"""

from __future__ import annotations

import html
import multiprocessing
import multiprocessing.connection
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from kithara_fs.demo.origin import Origin, RequestRecord


@dataclass(frozen=True)
class Shape:
    """How one path's link behaves: added latency per request, shared bandwidth (bytes/s)."""

    delay: float
    rate: int | None


class Link:
    """A FIFO link of ``rate`` bytes/second shared by every response that uses it.

    Each write reserves the next free slot on the link's timeline and sleeps until that slot
    has passed, so the sum over all connections never exceeds ``rate``. Time the link sat
    idle (or a sleeper overslept) is credited back up to ``BURST_SECS`` worth of bytes, like
    a token bucket; without that credit, sleep overshoot on every 16 KiB chunk held a
    500 Mbit/s link to ~340 Mbit/s.
    """

    # 20 ms of line rate, but at least one origin chunk (16 KiB): a typical router buffer.
    BURST_SECS = 0.020
    MIN_BURST = 16 * 1024

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.burst = max(self.MIN_BURST, int(rate * self.BURST_SECS))
        self._lock = threading.Lock()
        self._free_at = 0.0

    def take(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now - self.burst / self.rate, self._free_at)
            self._free_at = start + nbytes / self.rate
            wait = self._free_at - now
        if wait > 0:
            time.sleep(wait)


class _ShapedWriter:
    """Wraps a handler's ``wfile``: each write first waits for its slot on the link."""

    def __init__(self, inner: BinaryIO, handler: Any) -> None:
        self._inner = inner
        self._handler = handler

    def write(self, data: bytes) -> int:
        link: Link | None = getattr(self._handler, "bench_link", None)
        if link is not None and data:
            link.take(len(data))
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _make_handler(base: type, links: dict[str, Link], folders: dict[str, list[str]]) -> type:
    """A subclass of the origin's handler with shaped writes and folder index pages."""

    class BenchHandler(base):  # type: ignore[misc]
        bench_link: Link | None = None

        def setup(self) -> None:
            super().setup()
            self.wfile = _ShapedWriter(self.wfile, self)  # type: ignore[has-type,arg-type]

        def do_GET(self) -> None:
            if not self._index(head=False):
                super().do_GET()

        def do_HEAD(self) -> None:
            if not self._index(head=True):
                super().do_HEAD()

        def _index(self, head: bool) -> bool:
            path = unquote(urlsplit(self.path).path)
            self.bench_link = links.get(path)
            # httpdirfs asks for a folder without its trailing slash.
            names = folders.get(path if path.endswith("/") else path + "/")
            if names is None:
                return False
            links_html = "\n".join(f'<a href="{quote(n)}">{html.escape(n)}</a><br>' for n in names)
            body = (
                f"<html><head><title>Index of {html.escape(path)}</title></head>"
                f"<body><h1>Index of {html.escape(path)}</h1>\n{links_html}\n</body></html>\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return True

    return BenchHandler


def _serve(
    conn: multiprocessing.connection.Connection, files: dict[str, str], shapes: dict[str, Shape]
) -> None:
    """Child process body: run the origin and answer the parent's requests until 'stop'."""
    origin = Origin("127.0.0.1", 0)
    server = getattr(origin, "_server", None)
    base = getattr(server, "RequestHandlerClass", None)
    if server is None or not isinstance(base, type):
        conn.send(("error", "kithara_fs.demo.origin.Origin no longer exposes _server"))
        return
    links: dict[str, Link] = {}
    folders: dict[str, list[str]] = {}
    for path, source in files.items():
        origin.add(path, Path(source))
        shape = shapes.get(path)
        if shape is not None:
            faults = origin.faults(path)
            faults.delay = shape.delay
            if shape.rate:
                links[path] = Link(shape.rate)
        folder, _, name = path.rpartition("/")
        # Every ancestor folder lists its direct children (files and sub-folders).
        parts = folder.split("/")[1:]
        child = name
        for depth in range(len(parts), -1, -1):
            key = "/" + "/".join(parts[:depth]) + ("/" if depth else "")
            key = key.replace("//", "/")
            entries = folders.setdefault(key, [])
            if child not in entries:
                entries.append(child)
            if depth:
                child = parts[depth - 1] + "/"
    server.RequestHandlerClass = _make_handler(base, links, folders)
    # socketserver listens with a backlog of 5; rclone and httpdirfs open up to 8-10
    # connections at once, and an overflowing backlog costs a 1 s SYN retransmit. Calling
    # listen() again on a listening socket only changes the backlog (Linux).
    server.socket.listen(128)
    origin.start()
    conn.send(("ready", origin.port))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            command, args = message[0], message[1:]
            if command == "stop":
                conn.send(("ok",))
                return
            if command == "log":
                (path,) = args
                conn.send(("ok", origin.requests_for(path)))
            elif command == "wait_idle":
                (timeout,) = args
                conn.send(("ok", origin.wait_idle(timeout)))
            elif command == "clear_log":
                origin.clear_log()
                conn.send(("ok",))
            else:
                conn.send(("error", f"unknown command {command!r}"))
    finally:
        origin.stop()


class ShapedOrigin:
    """Parent-side handle of the origin process.

    ``files`` maps origin paths ("/kithara/seq1.wav") to local files; ``shapes`` maps the same
    paths to their link. Folders get index pages automatically.
    """

    def __init__(self, files: dict[str, Path], shapes: dict[str, Shape]) -> None:
        self._files = {path: str(source) for path, source in files.items()}
        self._shapes = dict(shapes)
        self._conn: multiprocessing.connection.Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self.port = 0

    def start(self) -> ShapedOrigin:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, self._files, self._shapes),
            name="bench-origin",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(30):
            raise RuntimeError("bench origin did not start within 30 s")
        answer = parent.recv()
        if answer[0] != "ready":
            raise RuntimeError(f"bench origin failed: {answer[1]}")
        self.port = int(answer[1])
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{quote(path)}"

    def _call(self, *message: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("bench origin is not running")
        self._conn.send(message)
        if not self._conn.poll(120):
            raise RuntimeError(f"bench origin did not answer {message[0]!r}")
        answer = self._conn.recv()
        if answer[0] != "ok":
            raise RuntimeError(f"bench origin: {answer[1]}")
        return answer[1] if len(answer) > 1 else None

    def requests_for(self, path: str) -> list[RequestRecord]:
        result: list[RequestRecord] = self._call("log", path)
        return result

    def wait_idle(self, timeout: float) -> bool:
        return bool(self._call("wait_idle", timeout))

    def clear_log(self) -> None:
        self._call("clear_log")

    def stop(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            try:
                conn.send(("stop",))
                conn.poll(10)
            except (OSError, EOFError):
                pass
            conn.close()
        if proc is not None:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()  # by pid: only the process this object started
                proc.join(5)
