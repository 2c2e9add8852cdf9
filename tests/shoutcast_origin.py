"""Test helper: a hostile Shoutcast v1 radio origin on loopback that records what it sent.

Owns one threaded TCP server (``socketserver.ThreadingTCPServer``) bound to a free port on
127.0.0.1 inside the test process, its ``serve_forever`` thread, one daemon thread per
client and the client sockets it accepts. ``with ShoutcastOrigin(mp3) as origin:`` starts
it; leaving the block stops accepting, shuts down and closes every client socket it still
holds, joins its threads and closes the listener. It must never listen beyond 127.0.0.1,
never start a process, never touch a file, never sleep without waking on shutdown, and
never record a byte that ``socket.send`` did not accept.

What it serves, exactly like a Shoutcast v1 server: ``ICY 200 OK`` and ``icy-*`` headers
ended by LF alone (no CRLF), no Content-Length, then the looped audio source paced at
``rate`` bytes per second. When the request carried ``Icy-MetaData: 1`` the answer has
``icy-metaint`` and a metadata block follows every ``metaint`` audio bytes: the current
title in the first block of a connection and at every ``title_every``-th block after it
(the first of those changes padded with NULs to the largest block, 4080 bytes), a single
zero byte in every other block. Without that header the body is audio alone.

Hostile on request: the first connection can be cut mid metadata block (``drop_after``),
a User-Agent containing ``reject_ua`` gets an HTML page with ``HTTP/1.0 200 OK``, and the
default titles hold a quote and Latin-1 bytes.

The oracle: ``sent_audio[n]`` is every audio byte (metadata removed) the kernel accepted on
connection ``n``, in order. A reader that got the whole stream up to a drop got exactly
that, because the cut block is the last thing sent before ``shutdown(SHUT_WR)``, and the
server reads the client's side to its end before closing, so the kernel never resets the
connection over unread bytes. After a client hangs up, the bytes recorded may exceed what
it read (they were in flight).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Sequence

from .lifecycle import StartsAndStops

MAX_BLOCK = 255 * 16  # the largest metadata block: length byte 255
PIECE_SECONDS = 0.05  # pacing: one piece of audio every 1/20 s
REQUEST_SECONDS = 10.0  # bound on a client sending its request head
REQUEST_LIMIT = 64 * 1024  # a request head larger than this is dropped
DRAIN_SECONDS = 1.0  # after our FIN, how long we read the client's side before closing
JOIN_SECONDS = 5.0  # bound on each client thread ending at shutdown

DEFAULT_TITLES: tuple[bytes, ...] = (
    b"Hostile Artist - First Song",
    "\u00c4rger & S\u00f6hne - Zweites Lied \u00b7 Caf\u00e9".encode("latin-1"),
    b"O'Brien - It's a Quote; Really",
)

HTML_PAGE = (
    b"HTTP/1.0 200 OK\r\n"
    b"content-type:text/html\r\n"
    b"\r\n"
    b"<html><head><title>SHOUTcast Administrator</title></head>"
    b"<body><h1>Hostile FM</h1><p>This stream requires Winamp.</p></body></html>\n"
)

_QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Dropped(Exception):
    """The first connection was cut on purpose; the socket is already closed."""


class _Gone(Exception):
    """The client went away (or sent garbage) before its request head ended."""


def metadata_block(title: bytes, *, big: bool = False) -> bytes:
    """One metadata block as sent: length byte, ``StreamTitle='…';StreamUrl='';``, NULs."""
    text = b"StreamTitle='" + title + b"';StreamUrl='';"
    if len(text) > MAX_BLOCK:
        raise ValueError(f"title of {len(title)} bytes does not fit a metadata block")
    size = MAX_BLOCK if big else -(-len(text) // 16) * 16
    return bytes([size // 16]) + text.ljust(size, b"\0")


def _read_request(sock: socket.socket) -> tuple[str, dict[str, str]]:
    """The request line and headers (names lower-cased), read up to the blank line."""
    buf = b""
    while True:
        ends = [i for i in (buf.find(b"\r\n\r\n"), buf.find(b"\n\n")) if i >= 0]
        if ends:
            break
        if len(buf) > REQUEST_LIMIT:
            raise _Gone
        chunk = sock.recv(4096)
        if not chunk:
            raise _Gone
        buf += chunk
    lines = [line.rstrip(b"\r").decode("latin-1") for line in buf[: min(ends)].split(b"\n")]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _finish(sock: socket.socket) -> None:
    """FIN after everything sent, then read the client's side to its end (or for 1 s).

    Closing with unread bytes from the client would make the kernel send RST, which can
    discard data the client has not read yet. The caller closes the socket afterwards.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_SECONDS)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and sock.recv(4096):
            pass
    except OSError:
        pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, origin: ShoutcastOrigin) -> None:
        self.origin = origin
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        self.origin._record_error()
        super().handle_error(request, client_address)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        sock = self.request
        assert isinstance(server, _Server) and isinstance(sock, socket.socket)
        server.origin._serve(sock)


class ShoutcastOrigin(StartsAndStops):
    """A Shoutcast v1 origin on 127.0.0.1; see the module docstring for what it sends.

    ``audio`` is looped; each connection starts where the last audio byte sent on any
    connection left off (connections that overlap each send a contiguous run from where
    they started, see ``start_offsets``). ``rate`` paces in pieces of 1/20 s; connection
    0 alone first gets ``burst`` bytes at once. ``titles`` rotate across connections: a
    block carries one on a connection's first block and on every ``title_every``-th block
    after it; with ``big_block`` the first of those changes on each connection is 4080
    bytes. ``drop_after=N``: connection 0, after N complete blocks and the next
    ``metaint`` audio bytes, sends a block's length byte and half its payload (the current
    title, not recorded in ``sent_titles``) and then FIN; without ``Icy-MetaData: 1`` it
    ends after ``N * metaint`` audio bytes instead. Any request path gets the stream.
    """

    def __init__(
        self,
        audio: bytes,
        *,
        metaint: int = 8192,
        rate: int = 16000,
        burst: int = 32768,
        titles: Sequence[bytes] = DEFAULT_TITLES,
        title_every: int = 2,
        big_block: bool = True,
        drop_after: int | None = None,
        reject_ua: str | None = None,
    ) -> None:
        if not audio:
            raise ValueError("audio must not be empty")
        if metaint < 1 or rate < 1 or burst < 0 or title_every < 1:
            raise ValueError("metaint, rate and title_every must be positive, burst >= 0")
        if drop_after is not None and drop_after < 0:
            raise ValueError("drop_after must be >= 0")
        for title in titles:
            metadata_block(title)  # raises if it cannot fit
        self.audio = bytes(audio)
        self.metaint = metaint
        self.rate = rate
        self.burst = burst
        self.titles: tuple[bytes, ...] = tuple(titles)
        self.title_every = title_every
        self.big_block = big_block
        self.drop_after = drop_after
        self.reject_ua = reject_ua

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on each new connection
        self._stopping = threading.Event()
        self._cursor = 0  # where the next connection starts in the audio source
        self._title_index = 0  # the current title, shared by every connection
        self._sent_audio: list[bytearray] = []
        self._sent_metadata: list[list[bytes]] = []
        self._sent_titles: list[bytes] = []
        self._requests: list[dict[str, str]] = []
        self._request_lines: list[str] = []
        self._start_offsets: list[int] = []
        self._errors: list[BaseException] = []
        self._open: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self) -> None:
        self.start()

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"shoutcast-origin:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()

    def close(self) -> None:
        """Stop accepting, cut every open client, join the threads, close the listener."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._lock:
            self._stopping.set()  # a client accepted from now on leaves at once
        server.shutdown()
        with self._lock:  # handlers close their socket under this lock: no fd reuse race
            for sock in self._open.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(JOIN_SECONDS)
        with self._lock:
            for sock in self._open.values():
                sock.close()
            self._open.clear()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(JOIN_SECONDS)

    # -- what tests read ---------------------------------------------------------------

    def url(self, path: str = "/stream") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> int:
        """Connections accepted so far (each has an index into the lists below)."""
        with self._lock:
            return len(self._requests)

    def open_connections(self) -> int:
        """Clients connected right now."""
        with self._lock:
            return len(self._open)

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` connections were accepted; TimeoutError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"{len(self._requests)} connections, wanted {count}")

    @property
    def sent_audio(self) -> list[bytes]:
        """Per connection, the audio bytes (no metadata) the kernel accepted, in order."""
        with self._lock:
            return [bytes(b) for b in self._sent_audio]

    @property
    def sent_titles(self) -> list[bytes]:
        """Raw title values of every complete block that carried one, all connections."""
        with self._lock:
            return list(self._sent_titles)

    @property
    def sent_metadata(self) -> list[list[bytes]]:
        """Per connection, each complete block's payload (b"" for L=0), NULs included."""
        with self._lock:
            return [list(blocks) for blocks in self._sent_metadata]

    @property
    def requests(self) -> list[dict[str, str]]:
        """Per connection, the request headers (names lower-cased; {} if none arrived)."""
        with self._lock:
            return [dict(h) for h in self._requests]

    @property
    def request_lines(self) -> list[str]:
        """Per connection, the request line ("" if none arrived)."""
        with self._lock:
            return list(self._request_lines)

    @property
    def start_offsets(self) -> list[int]:
        """Per connection, where in the audio source its audio started."""
        with self._lock:
            return list(self._start_offsets)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions in client threads (client hang-ups are not errors)."""
        with self._lock:
            return list(self._errors)

    def audio_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the looped audio source from ``offset``."""
        out = bytearray()
        offset %= len(self.audio)
        while len(out) < length:
            piece = self.audio[offset : offset + length - len(out)]
            out += piece
            offset = (offset + len(piece)) % len(self.audio)
        return bytes(out)

    # -- serving (client threads) ------------------------------------------------------

    def _record_error(self) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            with self._lock:
                self._errors.append(exc)

    def _serve(self, sock: socket.socket) -> None:
        with self._changed:
            if self._stopping.is_set():
                return
            conn = len(self._requests)
            self._requests.append({})
            self._request_lines.append("")
            self._sent_audio.append(bytearray())
            self._sent_metadata.append([])
            self._start_offsets.append(self._cursor)
            self._open[conn] = sock
            self._threads.append(threading.current_thread())
            self._changed.notify_all()
        try:
            _Connection(self, sock, conn).run()
        except (_Dropped, _Gone, *_QUIET_ERRORS):
            pass
        except OSError:
            if not self._stopping.is_set():
                raise
        finally:
            with self._lock:
                self._open.pop(conn, None)
                sock.close()


class _Connection:
    """One client: request, head, then audio with metadata blocks until it goes."""

    def __init__(self, origin: ShoutcastOrigin, sock: socket.socket, conn: int) -> None:
        self.origin = origin
        self.sock = sock
        self.conn = conn
        self.pos = 0  # offset in the audio source of the next byte to send
        self.metadata = False
        self.until_block = origin.metaint
        self.blocks = 0  # complete metadata blocks sent
        self.audio_sent = 0

    def run(self) -> None:
        origin = self.origin
        self.sock.settimeout(REQUEST_SECONDS)
        request_line, headers = _read_request(self.sock)
        with origin._lock:
            origin._requests[self.conn] = headers
            origin._request_lines[self.conn] = request_line
            self.pos = origin._start_offsets[self.conn]
        if origin.reject_ua is not None and origin.reject_ua in headers.get("user-agent", ""):
            self.sock.sendall(HTML_PAGE)
            _finish(self.sock)
            return
        self.sock.settimeout(None)
        self.metadata = headers.get("icy-metadata", "").strip() == "1"
        self._send(self._head())
        if self.conn == 0 and origin.burst:
            self._emit(origin.burst)
        piece = max(1, round(origin.rate * PIECE_SECONDS))
        interval = piece / origin.rate
        deadline = time.monotonic()
        while not origin._stopping.is_set():
            self._emit(piece)
            deadline += interval
            delay = deadline - time.monotonic()
            if delay > 0:
                origin._stopping.wait(delay)
            elif delay < -1.0:  # a slow reader: do not burst to catch up on more than 1 s
                deadline = time.monotonic()

    def _head(self) -> bytes:
        lines = [
            b"ICY 200 OK",
            b"icy-notice1:<BR>This stream requires Winamp<BR>",
            b"icy-name:Hostile FM",
            b"icy-genre:Test",
            b"icy-br:128",
        ]
        if self.metadata:
            lines.append(b"icy-metaint:%d" % self.origin.metaint)
        lines.append(b"content-type:audio/mpeg")
        return b"\n".join(lines) + b"\n\n"

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view) :]

    def _emit(self, count: int) -> None:
        """``count`` audio bytes, with a metadata block at each ``metaint`` boundary."""
        origin = self.origin
        while count > 0:
            if not self.metadata and origin.drop_after is not None and self.conn == 0:
                left = origin.drop_after * origin.metaint - self.audio_sent
                if left <= 0:
                    _finish(self.sock)
                    raise _Dropped
                count = min(count, left)
            step = min(count, self.until_block) if self.metadata else count
            self._send_audio(step)
            count -= step
            if not self.metadata:
                continue
            self.until_block -= step
            if self.until_block == 0:
                self._block()
                self.until_block = origin.metaint

    def _send_audio(self, count: int) -> None:
        origin = self.origin
        audio = origin.audio
        while count > 0:
            piece = memoryview(audio)[self.pos : self.pos + count]
            sent = self.sock.send(piece)
            with origin._lock:
                origin._sent_audio[self.conn] += piece[:sent]
                self.pos = (self.pos + sent) % len(audio)
                origin._cursor = self.pos
            self.audio_sent += sent
            count -= sent

    def _block(self) -> None:
        origin = self.origin
        k = self.blocks
        change = k > 0 and k % origin.title_every == 0
        cut = self.conn == 0 and origin.drop_after is not None and k == origin.drop_after
        with origin._lock:
            if change and not cut and origin.titles:
                origin._title_index = (origin._title_index + 1) % len(origin.titles)
            title = origin.titles[origin._title_index] if origin.titles else b""
        if cut:  # the length byte and half the payload, then FIN
            block = metadata_block(title)
            self._send(block[: 1 + (len(block) - 1) // 2])
            _finish(self.sock)
            raise _Dropped
        if (k == 0 or change) and origin.titles:
            block = metadata_block(title, big=origin.big_block and k == origin.title_every)
        else:
            block = b"\0"
        self._send(block)
        with origin._lock:
            origin._sent_metadata[self.conn].append(block[1:])
            if len(block) > 1:
                origin._sent_titles.append(title)
        self.blocks += 1
