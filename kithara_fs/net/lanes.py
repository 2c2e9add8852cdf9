"""Size probes on bare httpcore connections: the fast path for bursts of them.

Owns a few keep-alive HTTP/1.1 connections ("lanes") used for nothing but one-byte ranged
GETs (``Range: bytes=0-0``), and reading such an answer into a
:class:`~.answers.ResourceInfo` by the same rules as every other answer
(:func:`~.answers._interpret`: the status, the Content-Range, the header block's size).

Why not the httpx client: an HLS programme of 600 segments needs 600 probes before its file
has an exact size, and a folder of 10,000 streams needs 10,000 before ``ls -l`` shows them.
Through httpx's client and connection pool a probe cost 2.2 ms of CPU on the bench machine
(the pool's bookkeeping grows with the requests it holds, encode/httpcore#1035, on top of
httpx's request and response models), so the probes, not the link, decided when a one-hour
programme could open. The same probe on a bare httpcore connection took 0.67 ms.

It must never follow a redirect, retry, or wait out a failure: a redirect returns None and
the caller asks again through the full client, which follows it (and the host's later probes
go there directly); any failure is raised as a :class:`Failure` holding the error the full
client would have made of it, and the caller counts it as its first attempt. It sends no
credentials and no cookies: a URL with a user name, a client holding cookies (see
``HttpClient.probe``) or an answer that sets one is the full client's. A probe waits at
most a second for a free lane and gets ten seconds for its exchange, so a slow origin cannot
hold the others' probes. It is not used behind a proxy.
"""

from __future__ import annotations

import ssl
from urllib.request import getproxies

import httpcore
import httpx
import trio

from ..errors import OriginError
from ..redact import redact_url
from .answers import DRAIN_LIMIT, DRAIN_SECONDS, ResourceInfo, _describe, _interpret, _retry_after

# How many probes may be on the wire at once, and so how many connections stay open at most.
LANES = 32
# An idle connection is reused for this long (httpx's own default keep-alive expiry).
KEEPALIVE_SECONDS = 5.0
# A probe waits this long for a free lane, then goes to the full client: one slow origin
# holding every lane must not hold every other origin's probes too.
WAIT_FOR_LANE = 1.0
# A lane probe's whole exchange gets this long; an origin slower than that (headers a byte
# at a time, say) is a transient failure, retried by the full client.
PROBE_SECONDS = 10.0
# Statuses httpx follows (with a Location); any other 3xx is judged like any answer.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# At most this many hosts are remembered as redirecting (then the memory starts again).
MAX_REDIRECTING = 1024
# (scheme, host, port): httpcore.Origin is unhashable.
_Key = tuple[bytes, bytes, int]
# What a failed exchange raises below httpx (httpx itself maps these to its own classes).
_EXCHANGE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpx.InvalidURL,
    ssl.SSLError,
    OSError,
    ValueError,  # a URL or header value h11 refuses to send
)


class Failure(Exception):
    """A probe that failed: ``error`` as the full client words it, the answer's Retry-After
    (seconds), and whether the origin answered at all."""

    def __init__(self, error: OriginError, retry_after: float | None, answered: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.answered = answered


def usable(transport: httpx.AsyncBaseTransport | None) -> bool:
    """Whether probes may bypass httpx: not with a test transport, and not behind a proxy
    (httpx honours the proxy environment variables; these connections would not)."""
    return transport is None and not getproxies()


class ProbeLanes:
    """At most :data:`LANES` probes at once, each on an idle connection to its origin when
    one is left from an earlier probe."""

    def __init__(
        self,
        tls: ssl.SSLContext,
        headers: dict[str, str],
        timeouts: dict[str, float],
        lanes: int = LANES,
    ) -> None:
        self._tls = tls
        self._headers = [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
        self._timeouts = timeouts
        self._limit = trio.CapacityLimiter(lanes)
        self._lanes = lanes
        # idle connections per origin, oldest first
        self._idle: dict[_Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        # Origins that answered a probe with a redirect: their probes go to the full client.
        self._redirecting: set[_Key] = set()

    async def probe(self, url: str) -> ResourceInfo | None:
        """The length and validators of ``url``, or None when the full client must ask
        (a redirect, a host that redirects, a cookie, every lane busy, or a URL these
        connections do not take).

        Raises:
            Failure: the probe failed, for a reason the full client would also give.
        """
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            return None
        if target.scheme not in ("http", "https") or not target.host or target.userinfo:
            return None
        port = target.port if target.port is not None else (
            443 if target.scheme == "https" else 80)  # fmt: skip
        key = (target.raw_scheme, target.raw_host, port)
        if key in self._redirecting:
            return None
        with trio.move_on_after(WAIT_FOR_LANE) as waited:
            await self._limit.acquire()
        if waited.cancelled_caught:
            return None  # every lane busy (a slow origin, say): the full client's pool asks
        try:
            return await self._probe(key, target, url)
        finally:
            self._limit.release()

    async def aclose(self) -> None:
        idle = [c for connections in self._idle.values() for c in connections]
        self._idle.clear()
        self._idle_count = 0
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            for connection in idle:
                await connection.aclose()

    async def _probe(self, key: _Key, target: httpx.URL, url: str) -> ResourceInfo | None:
        connection, stale = self._take(key)
        # Closed before the new connection opens: the lanes bound open connections.
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            for old in stale:
                await old.aclose()
        stale = []
        try:
            with trio.move_on_after(PROBE_SECONDS) as timed:
                info = await self._ask(connection, key, target, url)
            if timed.cancelled_caught:
                error = OriginError(redact_url(url), f"no answer within {PROBE_SECONDS:.0f} s",
                                    transient=True)  # fmt: skip
                raise Failure(error, None, answered=False)
            return info
        except _EXCHANGE_ERRORS as exc:
            error = OriginError(redact_url(url), _describe(exc), transient=True)
            raise Failure(error, None, answered=False) from exc
        finally:
            if connection.is_idle() and not connection.has_expired():
                spare = self._give_back(key, connection)
                if spare is not None:
                    stale.append(spare)
            else:
                stale.append(connection)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                for old in stale:
                    await old.aclose()

    async def _ask(
        self,
        connection: httpcore.AsyncHTTPConnection,
        key: _Key,
        target: httpx.URL,
        url: str,
    ) -> ResourceInfo | None:
        scheme, host, port = key
        request = httpcore.Request(
            b"GET",
            httpcore.URL(scheme=scheme, host=host, port=port, target=target.raw_path),
            headers=[(b"Host", target.netloc), (b"Range", b"bytes=0-0"), *self._headers],
            extensions={"timeout": self._timeouts},
        )  # fmt: skip
        response = await connection.handle_async_request(request)
        try:
            names = {name.lower() for name, _ in response.headers}
            if response.status in _REDIRECTS and b"location" in names:
                # The full client follows redirects; this host's next probes go there directly.
                if len(self._redirecting) >= MAX_REDIRECTING:
                    self._redirecting.clear()
                self._redirecting.add(key)
                return None
            if b"set-cookie" in names:
                return None  # the full client asks again and keeps the cookie for later
            # Judged as an httpx answer: the very rules the full client applies.
            # (An empty stream of its own: the Response need not read one.)
            answer = httpx.Response(response.status, headers=response.headers,
                                    stream=httpx.ByteStream(b""))  # fmt: skip
            try:
                body = _interpret(answer, redact_url(url), 0, 0, None)
            except OriginError as exc:
                raise Failure(exc, _retry_after(answer), answered=True) from None
            promised = body.expected_bytes
            if promised is not None and promised <= DRAIN_LIMIT:
                # Read the (one-byte) body so that the connection carries the next probe.
                received = 0
                with trio.move_on_after(DRAIN_SECONDS):
                    async for chunk in response.aiter_stream():
                        received += len(chunk)
                        if received > promised:
                            break
            return body.info
        finally:
            await response.aclose()

    def _take(
        self, key: _Key
    ) -> tuple[httpcore.AsyncHTTPConnection, list[httpcore.AsyncHTTPConnection]]:
        """An idle connection to ``key``'s origin (or a new one), and the expired ones met
        on the way, to be closed."""
        stale: list[httpcore.AsyncHTTPConnection] = []
        idle = self._idle.get(key, [])
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                break
            stale.append(connection)  # closed by the origin meanwhile
        else:
            connection = httpcore.AsyncHTTPConnection(
                httpcore.Origin(*key), ssl_context=self._tls, keepalive_expiry=KEEPALIVE_SECONDS
            )
            # A new connection beside the idle ones of other origins: one of those goes
            # first, so that open connections (in use and idle) never exceed the lanes.
            others = [k for k, kept in self._idle.items() if kept and k != key]
            if others and self._idle_count + self._limit.borrowed_tokens > self._lanes:
                stale.append(self._idle[others[0]].pop(0))
                self._idle_count -= 1
        if not idle:
            self._idle.pop(key, None)
        return connection, stale

    def _give_back(
        self, key: _Key, connection: httpcore.AsyncHTTPConnection
    ) -> httpcore.AsyncHTTPConnection | None:
        """Keep ``connection`` for the next probe of its origin; returns the one to close
        when that leaves more idle connections than lanes (another origin's first)."""
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1
        if self._idle_count <= self._lanes:
            return None
        others = [k for k, idle in self._idle.items() if idle and k != key]
        evicted = self._idle[others[0] if others else key].pop(0)
        self._idle_count -= 1
        for stale in [o for o, idle in self._idle.items() if not idle]:
            del self._idle[stale]
        return evicted
