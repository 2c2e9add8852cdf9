"""The loopback origin itself: registered resources, their faults, chaos mode and the log.

Owns: the Origin class — binding its socket, starting and stopping the serving thread,
registering and replacing resources under validators no earlier version had, paths that
serve two versions by turns (an ad-inserting host), the per-path Faults and chaos settings,
ending stalls, the request log and arrivals, waiting until idle, and the lock that makes
each request's plan (and its share of the faults) atomic.

Must never: listen on anything but the address it was given (loopback by default), keep
serving keep-alive connections after stop(), be restarted after stop(), let two versions of
a path share an ETag or Last-Modified, or depend on anything outside the standard library
(and kithara_fs.demo).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from kithara_fs.demo.media import content_type_for
from kithara_fs.demo.origin.faults import CHAOS_FAULTS, Faults, _Chaos
from kithara_fs.demo.origin.handler import _Handler, _Server
from kithara_fs.demo.origin.planner import Request, _Plan, plan_request
from kithara_fs.demo.origin.records import RequestRecord, _Entry, _Resource


class Origin:
    """An HTTP server on a loopback port serving registered resources.

    The socket is bound in the constructor so URLs are known before start(). A request enters
    the log when its status is decided and its body_bytes grows as the body is written;
    wait_idle() waits until every response in progress has finished.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: a server-side context to speak HTTPS with (its certificate must name
        ``host``)."""
        self.host = host
        self.scheme = "http" if tls is None else "https"
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        # Requests per path counted on arrival, before any fault delays their answer (the
        # request log holds only answered ones).
        self._arrivals: dict[str, int] = {}
        self._resources: dict[str, _Resource] = {}
        # Paths that serve two versions by turns (alternate()).
        self._alternating: dict[str, list[_Resource]] = {}
        self._faults: dict[str, Faults] = {}
        self._connections: set[socket.socket] = set()
        # Every connection ever accepted (a client that reuses connections opens few).
        self.connections_accepted = 0
        # The most connections open at once (a client's connection limit shows here).
        self.peak_connections = 0
        self._version = 0
        # Stalls in progress wait on this; clear_faults() sets it and puts a fresh one here.
        self._release = threading.Event()
        self._chaos: _Chaos | None = None
        self._chaos_counts = dict.fromkeys(CHAOS_FAULTS, 0)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._server = _Server((host, port), _Handler)
        self._server.origin = self
        if tls is not None:
            # Handshakes happen in accept(): a client that refuses the certificate costs the
            # serving thread one failed accept, which socketserver shrugs off (an OSError).
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{quote(path)}"

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

    def alternate(self, path: str, *others: bytes | Path) -> None:
        """Serve ``path``'s current bytes and each of ``others`` by turns, one per request
        (HEAD too), each under validators of its own: an ad-inserting podcast host. With
        the ``fresh_etag`` fault too, no two answers carry the same validators."""
        with self._lock:
            current = self._resources[path]
            turns = [current]
            for other in others:
                size = other.stat().st_size if isinstance(other, Path) else len(other)
                kept = other if isinstance(other, Path) else bytes(other)
                turns.append(self._mint(path, kept, size, current.content_type,
                                        current.stamp + len(turns)))  # fmt: skip
            self._alternating[path] = turns

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

    def _plan(
        self, path: str, head: bool, range_header: str | None, if_range: str | None,
        if_none_match: str | None = None,
    ) -> _Plan:  # fmt: skip
        """Decide this request's answer and consume its share of the faults atomically."""
        with self._lock:
            self._busy += 1
            self._arrivals[path] = self._arrivals.get(path, 0) + 1
            resource = self._resources.get(path)
            turns = self._alternating.get(path)
            if turns is not None:
                resource = turns[0]
                turns.append(turns.pop(0))
            faults = self._faults.get(path)
            request = Request(path, head, range_header, if_range, if_none_match)
            plan = plan_request(
                resource, faults, self._release, self._chaos, self._chaos_counts, request
            )
            # Validators are minted here, under the same lock, once the plan sends content.
            if resource is not None and plan.content and faults is not None and faults.fresh_etag:
                fresh = self._mint(
                    path, resource.data, resource.size, resource.content_type, resource.stamp + 1
                )
                self._resources[path] = plan.resource = fresh
                plan.names.append("fresh_etag")
            return plan

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
                self.connections_accepted += 1
                self.peak_connections = max(self.peak_connections, len(self._connections))
            else:
                self._connections.discard(conn)
