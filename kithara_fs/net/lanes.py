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
credentials and no cookies: a URL with a user name, or a client holding cookies, is the full
client's (see ``HttpClient.probe``). It is not used behind a proxy.
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
        # (scheme, host, port) -> idle connections, oldest first (httpcore.Origin is unhashable)
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        # Origins that answered a probe with a redirect: their probes go to the full client.
        self._redirecting: set[tuple[bytes, bytes, int]] = set()

    async def probe(self, url: str) -> ResourceInfo | None:
        """The length and validators of ``url``, or None when the full client must ask
        (a redirect, a host that redirects, or a URL these connections do not take).

        Raises:
            Failure: the probe failed, for a reason the full client would also give.
        """
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            return None
        if target.scheme not in ("http", "https") or not target.host or target.userinfo:
            return None
        port = target.port or (443 if target.scheme == "https" else 80)
        if (target.raw_scheme, target.raw_host, port) in self._redirecting:
            return None
        origin = httpcore.Origin(target.raw_scheme, target.raw_host, port)
        async with self._limit:
            connection = self._take(origin)
            try:
                info = await self._ask(connection, origin, target, url)
            except _EXCHANGE_ERRORS as exc:
                error = OriginError(redact_url(url), _describe(exc), transient=True)
                raise Failure(error, None, answered=False) from exc
            finally:
                spare: httpcore.AsyncHTTPConnection | None = connection
                if connection.is_idle() and not connection.has_expired():
                    spare = self._give_back(origin, connection)
                if spare is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await spare.aclose()
            return info

    async def aclose(self) -> None:
        idle = [c for connections in self._idle.values() for c in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            await connection.aclose()

    async def _ask(
        self,
        connection: httpcore.AsyncHTTPConnection,
        origin: httpcore.Origin,
        target: httpx.URL,
        url: str,
    ) -> ResourceInfo | None:
        request = httpcore.Request(
            b"GET",
            httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port,
                         target=target.raw_path),
            headers=[(b"Host", target.netloc), (b"Range", b"bytes=0-0"), *self._headers],
            extensions={"timeout": self._timeouts},
        )  # fmt: skip
        response = await connection.handle_async_request(request)
        try:
            if 300 <= response.status < 400:
                # The full client follows redirects; this host's next probes go there directly.
                self._redirecting.add((origin.scheme, origin.host, origin.port))
                return None
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

    def _take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        idle = self._idle.get((origin.scheme, origin.host, origin.port))
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                return connection
            # Closed by the origin meanwhile: dropping it closes its socket.
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._tls, keepalive_expiry=KEEPALIVE_SECONDS
        )

    def _give_back(
        self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection
    ) -> httpcore.AsyncHTTPConnection | None:
        """Keep ``connection`` for the next probe of ``origin``; returns the one to close
        when that leaves more idle connections than lanes (another origin's first)."""
        key = (origin.scheme, origin.host, origin.port)
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
