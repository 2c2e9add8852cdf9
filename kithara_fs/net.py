"""The HTTP client: the only module that imports httpx.

Owns connection limits, retries with exponential backoff and full jitter, Range and If-Range
requests, validation of what the origin answered (status, Content-Range, validators,
Content-Encoding), and the translation of every httpx exception into our own
:class:`~kithara_fs.errors.OriginError` family at the point where it enters.

It must never decide what to download or cache, and never return a byte whose position in
the resource it has not checked.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import httpx
import trio

from . import headers
from .errors import OriginError, RemoteChangedError
from .redact import redact_url

log = logging.getLogger(__name__)

USER_AGENT = "kithara-fs/0.1"
# Status codes worth another try: the origin or a proxy is overloaded or restarting.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Everything httpx raises for a failed exchange; InvalidURL and StreamError are not HTTPErrors.
_HTTPX_ERRORS = (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL)
# Failures that another try cannot mend: a redirect loop, a redirect (or URL) to a scheme other
# than http(s), a URL httpx cannot even build. Retrying them only makes a request storm.
_PERMANENT_ERRORS = (httpx.TooManyRedirects, httpx.UnsupportedProtocol, httpx.InvalidURL)
# At most this many redirects per request (httpx allows 20; browsers about 20, curl 50 with
# -L): real CDNs use one or two, so ten is generous and a loop ends quickly.
MAX_REDIRECTS = 10
# A connection that delivers no byte for this long while we wait on it is stalled: it is
# abandoned and the download resumes on a new one at the first missing byte. Five seconds
# is far beyond any healthy gap between TCP segments (a slow link trickles bytes, it does
# not pause), and leaves a blocking reader (30 s budget) time for several replacements.
STALL_TIMEOUT = 5.0
# A host that did not answer a revalidation is taken to be offline for this long: opens of
# cached files from it do not ask again (and so do not wait) until then.
OFFLINE_MEMORY = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    Six attempts with a 0.25 s base and a 4 s cap sleep roughly 8 s in the worst case:
    longer than an origin restart or a load balancer's failover. The attempts themselves
    take time too (a 10 s connect timeout, a 5 s stall, a honoured Retry-After), so the
    retries also end once ``max_elapsed`` has passed since the first failure: a dead origin
    surfaces as EIO before a blocking reader's budget (30 s by default) runs out.
    """

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 4.0
    # A Retry-After header is honoured up to this many seconds; longer would starve readers.
    max_retry_after: float = 10.0
    # No new attempt starts this long after the first failure of a run (see above).
    max_elapsed: float = 20.0


class Backoff:
    """Counts consecutive failures and sleeps between attempts (full jitter, AWS-style)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self._first_failure: float | None = None

    def reset(self) -> None:
        self.failures = 0
        self._first_failure = None

    async def pause(self, exc: OriginError, retry_after: float | None = None) -> None:
        """Record a failure; re-raise ``exc`` once the attempts or the time are spent, else
        sleep before the next attempt."""
        now = trio.current_time()
        if self._first_failure is None:
            self._first_failure = now
        self.failures += 1
        ceiling = min(self.policy.max_delay, self.policy.base_delay * 2**self.failures)
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.max_retry_after))
        late = now + delay - self._first_failure > self.policy.max_elapsed
        if self.failures >= self.policy.attempts or late:
            exc.exhausted = True
            raise exc
        log.info("retrying in %.2fs after: %s", delay, exc)
        await trio.sleep(delay)


@dataclass(frozen=True)
class ResourceInfo:
    """What the origin told us about a resource.

    Attributes:
        length: total size in bytes, or None if the origin does not say.
        etag: the ETag header, verbatim (None when absent).
        last_modified: the Last-Modified header, verbatim.
        content_type: the Content-Type header.
        accepts_ranges: False once the origin answered a Range request with a whole body.
    """

    length: int | None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    accepts_ranges: bool = True

    def if_range(self) -> str | None:
        """The validator to send in If-Range; weak ETags are not allowed there (RFC 9110)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def same_version(self, other: ResourceInfo) -> bool:
        """Whether ``other`` describes the same bytes, judged by the strongest shared validator."""
        if self.length is not None and other.length is not None and self.length != other.length:
            return False
        if self.etag and other.etag:
            return self.etag == other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified == other.last_modified
        return True


@dataclass(frozen=True)
class Fetched:
    """A small resource read whole, and the URL it came from after redirects."""

    data: bytes
    url: str


@dataclass
class Body:
    """An open response body positioned at ``start``.

    Attributes:
        start: offset in the resource of the first byte :meth:`chunks` yields. It equals the
            requested offset, except 0 when the origin ignored the Range header.
        info: what this response said about the resource.
        expected_bytes: how many body bytes the answer promised (its Content-Range span, or
            its Content-Length; None when it did not say): no byte beyond them is handed
            out, and fewer is a transient failure.
    """

    start: int
    info: ResourceInfo
    _response: httpx.Response
    _url: str
    not_modified: bool = False
    expected_bytes: int | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes (never content-decoded), never more than the answer promised.

        A dropped or stalled connection, or a body that ends before the promised length, is
        a transient error raised after every byte that did arrive was handed on.
        """
        received = 0
        limit = self.expected_bytes
        try:
            # No re-chunking: every byte that arrived is handed on before a drop is noticed,
            # so a resumed request starts exactly where this one broke off.
            async for chunk in self._response.aiter_raw():
                if limit is not None and received + len(chunk) > limit:
                    chunk = chunk[: limit - received]
                received += len(chunk)
                if chunk:
                    yield chunk
                if limit is not None and received >= limit:
                    return
        except _HTTPX_ERRORS as exc:
            raise OriginError(self._url, f"connection lost mid-body after {received} bytes: "
                              f"{_describe(exc)}", transient=True) from exc  # fmt: skip
        if limit is not None and received < limit:
            raise OriginError(self._url, f"body ended after {received} of {limit} bytes",
                              transient=True)  # fmt: skip


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
        max_connections: int = 32,
    ) -> None:
        self.policy = policy or RetryPolicy()
        # Per-phase socket timeouts only; the user-facing budget is the read deadline, which
        # the caller enforces with a cancel scope around the whole wait.
        timeout = httpx.Timeout(connect=10.0, read=STALL_TIMEOUT, write=10.0, pool=30.0)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections // 2
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        # host -> when it last failed to answer (trio clock); cleared by any answer.
        self._unreachable: dict[str, float] = {}

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
        await self._client.aclose()

    async def probe(self, url: str) -> ResourceInfo:
        """Learn length and validators with a one-byte ranged GET (HEAD is often wrong)."""
        async with self.open_range(url, 0, 0) as body:
            return body.info

    async def revalidate(self, url: str, known: ResourceInfo) -> ResourceInfo | None:
        """Ask once, conditionally, whether ``known`` is still current.

        Returns None when it is (304 Not Modified, or the same validators), else the new
        version's info. No retries: a failure means "use the cache" to the caller.
        """
        conditions = {}
        if known.etag:
            conditions["If-None-Match"] = known.etag
        elif known.last_modified:
            conditions["If-Modified-Since"] = known.last_modified
        async with self.open_range(
            url, 0, 0, conditions=conditions, policy=RetryPolicy(attempts=1)
        ) as body:
            if body.not_modified or known.same_version(body.info):
                return None
            return body.info

    async def fetch(self, url: str, limit: int) -> Fetched:
        """GET a small resource whole (a playlist, a key), retrying transient failures.

        The body is never logged. Raises OriginError when it is not 200, or larger than
        ``limit`` bytes (read no further than that).
        """
        shown = redact_url(url)
        backoff = Backoff(self.policy)
        while True:
            retry_after: float | None = None
            try:
                async with self._client.stream("GET", url) as response:
                    status = response.status_code
                    encoding = response.headers.get("Content-Encoding", "").strip().lower()
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
                        return Fetched(bytes(data), str(response.url))
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
    async def open_range(
        self,
        url: str,
        start: int,
        end: int | None = None,
        expected: ResourceInfo | None = None,
        *,
        conditions: dict[str, str] | None = None,
        policy: RetryPolicy | None = None,
    ) -> AsyncIterator[Body]:
        """Open ``bytes=start-end`` (inclusive end, open-ended when None), retrying transients.

        A negative ``start`` asks for the last ``-start`` bytes (a suffix range).

        With ``expected``, the request carries If-Range and the answer is checked against
        it: a different version raises :class:`RemoteChangedError`.

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
        backoff = Backoff(policy or self.policy)
        while True:
            retry_after: float | None = None
            try:
                request = self._client.build_request("GET", url, headers=headers)
            except (ValueError, httpx.InvalidURL) as exc:  # incl. UnicodeEncodeError
                raise OriginError(shown, f"cannot build the request: {_describe(exc)}") from None
            try:
                response = await self._client.send(request, stream=True)
            except _HTTPX_ERRORS as exc:
                error = _translate(shown, exc)
                if not error.transient:
                    raise error from exc
            else:
                self._unreachable.pop(_host(url), None)
                try:
                    body = _interpret(response, shown, start, end, expected, bool(conditions))
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
                        await response.aclose()
                    return
            await backoff.pause(error, retry_after)


def _interpret(
    response: httpx.Response,
    url: str,
    start: int,
    end: int | None,
    expected: ResourceInfo | None,
    conditional: bool = False,
) -> Body:
    """Check a response to a ranged GET and say where its body starts and how long it is.

    Only a 206 whose Content-Range is exactly the span asked for, or a 200 (the whole
    resource, from byte 0), carries bytes. Everything else is an error, so an error page
    can never be taken for content.
    """
    status = response.status_code
    if status == 304 and conditional:
        return Body(start, _info(response, None), response, url, not_modified=True,
                    expected_bytes=0)  # fmt: skip
    if status in _TRANSIENT_STATUSES:
        raise OriginError(url, f"HTTP {status}", transient=True)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Transient: a cache or proxy in the way may compress one answer and not the next;
        # an origin that always does fails after the retries like any other.
        raise OriginError(url, f"origin sent Content-Encoding {encoding!r} despite identity",
                          transient=True)  # fmt: skip
    if status == 416:
        total = headers.unsatisfied_length(response.headers.get("Content-Range"))
        if expected is not None and expected.length is not None and start < expected.length:
            raise RemoteChangedError(url, f"origin no longer has byte {start} (now {total})")
        if total == 0 and start == 0:
            # A probe of an empty resource: the length is all it learns; the 416's body (an
            # error page, often) is never read.
            return Body(start, _info(response, 0), response, url, expected_bytes=0)
        shown_total = "an unknown length" if total is None else f"{total} bytes"
        raise OriginError(url, f"HTTP 416: byte {start} is past the end ({shown_total})")
    length_header = headers.content_length(response.headers.get("Content-Length"))
    promised: int | None
    if status == 206:
        span = headers.content_range(response.headers.get("Content-Range"))
        if span is None:
            raise OriginError(url, "206 answer without a usable Content-Range", transient=True)
        if start < 0:
            if span.total is None:
                raise OriginError(url, "suffix range answered without the length")
            start = max(0, span.total + start)  # a suffix range: ends at the last byte
        if span.first != start:
            raise OriginError(url, f"asked for byte {start}, origin sent from {span.first}",
                              transient=True)  # fmt: skip
        wanted_last = end if end is not None else None
        if span.total is not None:
            wanted_last = span.total - 1 if end is None else min(end, span.total - 1)
        if wanted_last is not None and span.last != wanted_last:
            raise OriginError(url, f"asked for bytes {start}-{wanted_last}, origin sent "
                              f"{span.first}-{span.last}", transient=True)  # fmt: skip
        if length_header is not None and length_header != span.length:
            raise OriginError(url, f"Content-Length {length_header} disagrees with Content-"
                              f"Range {span.first}-{span.last}", transient=True)  # fmt: skip
        info = _info(response, span.total)
        first, promised = span.first, span.length
    elif status == 200:
        info = _info(response, length_header)
        info = ResourceInfo(
            info.length, info.etag, info.last_modified, info.content_type, accepts_ranges=False
        )
        first, promised = 0, length_header
    else:
        raise OriginError(url, f"HTTP {status}")
    if expected is not None and not expected.same_version(info):
        raise RemoteChangedError(
            url, f"remote changed (ETag {expected.etag} -> {info.etag}, "
            f"length {expected.length} -> {info.length})"
        )
    return Body(first, info, response, url, expected_bytes=promised)


def _validator(value: str | None) -> str | None:
    """A validator we can send back (If-Range, If-None-Match): printable ASCII, bounded.

    RFC 9110 allows obs-text in an entity tag, but httpx cannot send it, and a validator we
    cannot send back is one we cannot use: without it, changes are noticed by length alone.
    """
    if value is None or len(value) > 256 or not value.isascii() or not value.isprintable():
        return None
    return value


def _info(response: httpx.Response, length: int | None) -> ResourceInfo:
    headers = response.headers
    return ResourceInfo(
        length=length,
        etag=_validator(headers.get("ETag")),
        last_modified=_validator(headers.get("Last-Modified")),
        content_type=headers.get("Content-Type"),
        accepts_ranges=True,
    )


def _retry_after(response: httpx.Response) -> float | None:
    return headers.retry_after(response.headers.get("Retry-After"), time.time())


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url


def _translate(url: str, exc: Exception) -> OriginError:
    """Our error for an httpx failure: transient unless retrying cannot help."""
    if isinstance(exc, httpx.TooManyRedirects):
        return OriginError(url, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return OriginError(url, "redirected to (or given) a URL that is not http or https")
    if isinstance(exc, httpx.InvalidURL):
        return OriginError(url, f"invalid URL: {exc}")
    error = OriginError(url, _describe(exc), transient=not isinstance(exc, _PERMANENT_ERRORS))
    error.__cause__ = exc
    return error


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
