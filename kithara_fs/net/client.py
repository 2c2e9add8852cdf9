"""Sending the requests: connection limits, timeouts, Range and If-Range, retry loops.

Owns :class:`HttpClient` (one ``httpx.AsyncClient`` configured for byte-exact ranged
downloads), the retry loops around each request (paced by ``retry``), and the memory of
which hosts recently did not answer.

It must never decide what to download or cache, never hand out a response that ``answers``
has not judged, and never let an httpx exception out untranslated.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from ..errors import OriginError
from ..redact import redact_url
from . import backend, lanes, scoped
from .answers import (
    _HTTPX_ERRORS,
    _TRANSIENT_STATUSES,
    MAX_REDIRECTS,
    Body,
    Fetched,
    LiveBody,
    ResourceInfo,
    _describe,
    _interpret,
    _interpret_live,
    _retry_after,
    _translate,
    _validator,
    check_headers,
)
from .retry import Backoff, RetryPolicy

# No "Mozilla" (Shoutcast's HTML page) and no hyphen (radiotray-ng#252: no audio for those).
USER_AGENT = "KitharaFS/0.1"
# A connection that delivers no byte for this long while we wait on it is stalled: the
# download resumes on a new one at the first missing byte. Five seconds is far beyond any
# healthy gap between TCP segments, and leaves a blocking reader (30 s) several tries.
STALL_TIMEOUT = 5.0
# A host that did not answer a revalidation is taken to be offline for this long: opens of
# cached files from it do not ask again (and so do not wait) until then.
OFFLINE_MEMORY = 60.0


class HttpClient:
    """An httpx.AsyncClient configured for byte-exact ranged downloads.

    Use as ``async with HttpClient() as http:``. Pass ``transport`` to substitute a test
    transport (unit tests only).
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        user_agent: str = USER_AGENT,
        proxy: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """``proxy``: None for the environment's (as httpx reads it), ``""`` for none at all,
        or a URL. ``ca_file``: PEM certificates to trust beside the usual ones.
        ``max_connections``: connections open at once, size probes' lanes included."""
        self.policy = policy or RetryPolicy()
        # Per-phase socket timeouts only; the user-facing budget is the read deadline, which
        # the caller enforces with a cancel scope around the whole wait.
        timeout = httpx.Timeout(connect=10.0, read=STALL_TIMEOUT, write=10.0, pool=30.0)
        # One TLS context for every pool: loading the CA bundle takes ~40 ms each time.
        tls = None if transport is not None else httpx.create_ssl_context()
        if tls is not None and ca_file:
            tls.load_verify_locations(cafile=ca_file)
        # Our own sockets and probe lanes only where httpx would connect directly: given a
        # transport, httpx ignores the proxy environment variables, and lanes know no proxy.
        direct = tls is not None and (proxy == "" or (proxy is None and lanes.usable(transport)))
        # Half the connections are the probes' lanes (where there are lanes, and enough to
        # share): the limit holds for both together.
        lane_count = min(lanes.LANES, max_connections // 2) if max_connections >= 4 else 0
        pooled = max_connections - (lane_count if direct else 0)
        # Every connection may stay open for the next request: a burst of size probes (an
        # HLS programme's segments) that keeps only half of them reconnects the other half
        # on every round, which costs the origin a connection (and here a thread) each.
        limits = httpx.Limits(max_connections=pooled, max_keepalive_connections=pooled)
        # The environment's proxy settings count only when the config names no proxy.
        chosen: dict[str, Any] = {} if proxy is None else {"trust_env": False}
        if proxy:
            chosen["proxy"] = proxy

        def client(limits: httpx.Limits) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                timeout=timeout,
                limits=limits,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                # Sockets whose read size the download picks (backend.py says why).
                transport=backend.transport(tls, limits) if direct and tls else transport,
                verify=tls if tls is not None else True,
                headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
                # A stream's own headers go only to its own origin (scoped.py).
                event_hooks={"request": [scoped.apply_scope]},
                **chosen,
            )

        self._client = client(limits)
        self._behind_proxy = bool(proxy) or (proxy is None and transport is None and not direct)
        # Size probes come in bursts (a folder's files, an HLS programme's segments) and take
        # lanes of their own (see lanes.py); anything but a clean answer is asked again here.
        self._lanes = None
        if direct and tls is not None and lane_count:
            self._lanes = lanes.ProbeLanes(
                tls, dict(self._client.headers),
                {"connect": 10.0, "read": STALL_TIMEOUT, "write": 10.0, "pool": 30.0},
                lanes=lane_count,
            )  # fmt: skip
        # host -> when it last failed to answer (trio clock); cleared by any answer.
        self._unreachable: dict[str, float] = {}
        # What this client adds to each request: set on the views for_stream makes.
        self._scope: scoped.Scope | None = None
        self._agent: str | None = None
        self._views: dict[tuple[scoped.Origin, scoped.StreamHeaders], HttpClient] = {}

    def for_stream(self, url: str, extra: scoped.StreamHeaders) -> HttpClient:
        """This client as one stream uses it: the same connections, retries and memory of
        hosts, plus ``extra`` (its User-Agent on every request, its headers on those to the
        origin of ``url``). One view per stream origin and headers, kept for the mount."""
        if not extra:
            return self
        home = scoped.home_of(url)
        key = (home, extra)
        view = self._views.get(key)
        if view is None:
            view = copy.copy(self)
            # Probe lanes send only the client's own headers: a view's probes go by httpx.
            view._lanes = None
            view._scope = scoped.Scope(home, extra.headers) if extra.headers else None
            view._agent = extra.user_agent
            self._views[key] = view
        return view

    def _dressed(self, headers: dict[str, str]) -> dict[str, Any]:
        """A request's headers and extensions, with what this view adds."""
        agent = {} if self._agent is None else {"User-Agent": self._agent}
        scope = {} if self._scope is None else {scoped.EXTENSION: self._scope}
        # A header the caller sets itself (a station's own User-Agent) wins.
        return {"headers": {**agent, **headers}, "extensions": scope}

    def note_unreachable(self, url: str) -> None:
        """Remember that ``url``'s host did not answer (see :meth:`recently_unreachable`)."""
        self._unreachable[_host(url)] = trio.current_time()

    def recently_unreachable(self, url: str) -> bool:
        """Whether ``url``'s host failed to answer within the last :data:`OFFLINE_MEMORY` s."""
        since = self._unreachable.get(_host(url))
        return since is not None and trio.current_time() - since < OFFLINE_MEMORY

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._client.aclose()
        finally:
            if self._lanes is not None:
                await self._lanes.aclose()

    async def probe(self, url: str) -> ResourceInfo:
        """Learn length and validators with a one-byte ranged GET (HEAD is often wrong)."""
        return (await self.probe_where(url))[0]

    async def probe_where(self, url: str) -> tuple[ResourceInfo, str]:
        """:meth:`probe`, and the URL the answer came from after redirects (may carry
        credentials: never log it)."""
        backoff = Backoff(self.policy)
        # Cookies an origin set (a CDN's token, say) go only with the full client's requests.
        if self._lanes is not None and not self._client.cookies:
            try:
                info = await self._lanes.probe(url)
            except lanes.Failure as failure:
                if failure.answered:
                    self._unreachable.pop(_host(url), None)
                if not failure.error.transient:
                    raise failure.error from None
                # The first attempt, spent: the full client makes the others.
                await backoff.pause(failure.error, failure.retry_after)
            else:
                if info is not None:  # lanes follow no redirect: the answer is from ``url``
                    self._unreachable.pop(_host(url), None)
                    return info, url
        async with self.open_range(url, 0, 0, backoff=backoff) as body:
            await body.drain()
            return body.info, body.final_url

    async def revalidate(self, url: str, known: ResourceInfo) -> ResourceInfo | None:
        """Ask once, conditionally, whether ``known`` is still current.

        Returns None when it is (304 Not Modified, or the same validators), else the new
        version's info. No retries: a failure means "use the cache" to the caller.
        """
        # max-age=0: a cache on the way checks its copy with the origin before it answers.
        conditions = {"Cache-Control": "max-age=0"}
        # Behind a proxy, no validator of ours: Squid sends a client's own upstream in place
        # of its copy's, and the origin would send a new version whole for every host that
        # held the old one. The answer's validators decide then (below).
        if not self._behind_proxy and known.etag:
            conditions["If-None-Match"] = known.etag
        elif not self._behind_proxy and known.last_modified:
            conditions["If-Modified-Since"] = known.last_modified
        async with self.open_range(
            url, 0, 0, conditions=conditions, policy=RetryPolicy(attempts=1)
        ) as body:
            await body.drain()
            if body.not_modified or known.same_version(body.info):
                return None
            return body.info

    async def fetch(self, url: str, limit: int, known: Fetched | None = None) -> Fetched:
        """GET a small resource whole (a playlist, a key, a feed), retrying transients.

        With ``known`` (an earlier fetch), the request is conditional on its validators,
        and an unchanged resource comes back as ``not_modified`` (a 304, or the same ETag).
        The body is never logged. Raises OriginError when it is not 200, or larger than
        ``limit`` bytes (read no further than that).
        """
        shown = redact_url(url)
        backoff = Backoff(self.policy)
        conditions = {}
        if known is not None and known.etag:
            conditions["If-None-Match"] = known.etag
        elif known is not None and known.last_modified:
            conditions["If-Modified-Since"] = known.last_modified
        while True:
            retry_after: float | None = None
            try:
                async with self._client.stream("GET", url, **self._dressed(conditions)) as response:
                    check_headers(response, shown)
                    status = response.status_code
                    encoding = response.headers.get("Content-Encoding", "").strip().lower()
                    etag = _validator(response.headers.get("ETag"))
                    modified = _validator(response.headers.get("Last-Modified"))
                    if known is not None and (status == 304 or (
                            status == 200 and etag is not None and etag == known.etag)):
                        return Fetched(b"", str(response.url), known.etag,
                                       known.last_modified, not_modified=True)  # fmt: skip
                    if status == 200 and encoding not in ("", "identity"):
                        # Never decoded: a small gzip body can inflate to gigabytes.
                        error = OriginError(shown, f"origin sent Content-Encoding {encoding!r} "
                                            "despite identity", transient=True)  # fmt: skip
                    elif status == 200:
                        data = bytearray()
                        async for chunk in response.aiter_raw():
                            data += chunk
                            if len(data) > limit:
                                raise OriginError(shown, f"larger than {limit} bytes")
                        return Fetched(bytes(data), str(response.url), etag, modified)
                    else:
                        error = OriginError(
                            shown, f"HTTP {status}", transient=status in _TRANSIENT_STATUSES
                        )
                        retry_after = _retry_after(response)
            except _HTTPX_ERRORS as exc:
                error = _translate(shown, exc)
            if not error.transient:
                raise error
            await backoff.pause(error, retry_after)

    async def tail(self, url: str, count: int, limit: int) -> tuple[int, bytes]:
        """The resource's length and its last ``count`` bytes, in one suffix-range GET.

        An origin that ignores Range sends the whole body; it is read (up to ``limit``
        bytes) and its end kept.
        """
        async with self.open_range(url, -count) as body:
            data = bytearray()
            seen = 0
            async for chunk in body.chunks():
                seen += len(chunk)
                if seen > limit:
                    raise OriginError(redact_url(url), f"larger than {limit} bytes")
                # Only the last ``count`` bytes are kept: an origin that ignores Range sends
                # the whole body, which must not pile up in memory.
                data += chunk
                del data[: max(0, len(data) - count)]
            length = body.info.length
            if length is None:
                raise OriginError(redact_url(url), "origin does not report the length")
            return length, bytes(data[-count:])

    @asynccontextmanager
    async def listen(self, url: str, headers: dict[str, str]) -> AsyncIterator[LiveBody]:
        """Open an endless stream (a station) with a plain GET carrying ``headers``.

        One attempt, no retries: the caller reconnects at its own pace. Raises OriginError
        for a failed exchange or an answer that carries no audio (``_interpret_live``).
        """
        shown = redact_url(url)
        try:
            request = self._client.build_request("GET", url, **self._dressed(headers))
        except (ValueError, httpx.InvalidURL) as exc:  # incl. UnicodeEncodeError
            raise OriginError(shown, f"cannot build the request: {_describe(exc)}") from None
        try:
            response = await self._client.send(request, stream=True)
        except _HTTPX_ERRORS as exc:
            raise _translate(shown, exc) from exc
        try:
            self._unreachable.pop(_host(url), None)
            yield _interpret_live(response, shown)
        finally:
            await response.aclose()

    @asynccontextmanager
    async def open_range(
        self,
        url: str,
        start: int,
        end: int | None = None,
        expected: ResourceInfo | None = None,
        *,
        conditions: dict[str, str] | None = None,
        policy: RetryPolicy | None = None,
        backoff: Backoff | None = None,
        adopt: bool = False,
    ) -> AsyncIterator[Body]:
        """Open ``bytes=start-end`` (inclusive end, open-ended when None), retrying transients.

        A negative ``start`` asks for the last ``-start`` bytes (a suffix range).

        With ``expected``, the request carries If-Range and the answer is checked against
        it: a different version raises :class:`RemoteChangedError` — or, with ``adopt``, is
        handed on with ``Body.other_version`` set (for a caller that may take it).
        ``backoff`` carries on a count of attempts begun elsewhere (a size probe's first,
        made on its own lane).

        Raises:
            OriginError: permanent failure, or transient failures after all retries.
            RemoteChangedError: the origin serves a different version than ``expected``.
        """
        shown = redact_url(url)
        spec = f"-{-start}" if start < 0 else f"{start}-{'' if end is None else end}"
        headers = {"Range": f"bytes={spec}"}
        if expected is not None and (validator := expected.if_range()):
            headers["If-Range"] = validator
        headers.update(conditions or {})
        backoff = backoff or Backoff(policy or self.policy)
        client = self._client
        while True:
            retry_after: float | None = None
            try:
                request = client.build_request("GET", url, **self._dressed(headers))
            except (ValueError, httpx.InvalidURL) as exc:  # incl. UnicodeEncodeError
                raise OriginError(shown, f"cannot build the request: {_describe(exc)}") from None
            try:
                response = await client.send(request, stream=True)
            except _HTTPX_ERRORS as exc:
                error = _translate(shown, exc)
                if not error.transient:
                    raise error from exc
            else:
                self._unreachable.pop(_host(url), None)
                try:
                    body = _interpret(response, shown, start, end, expected, bool(conditions),
                                      adopt=adopt)  # fmt: skip
                except OriginError as exc:
                    await response.aclose()
                    if not exc.transient:
                        raise
                    error = exc
                    retry_after = _retry_after(response)
                else:
                    try:
                        yield body
                    finally:
                        # Back to the default before the connection serves anything else
                        # (the next answer's headers, a playlist), kept alive or not.
                        body.want(backend.DEFAULT_READ)
                        await response.aclose()
                    return
            await backoff.pause(error, retry_after)


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url
