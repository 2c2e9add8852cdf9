"""What the origin answered, and whether to believe it.

Owns :class:`ResourceInfo` (length and validators), :class:`Fetched`, :class:`Body` and
:class:`LiveBody` (the only ways body bytes leave this package), the validation of an
answer to a ranged GET (status, Content-Range, Content-Length, validators,
Content-Encoding) or to an endless stream's plain GET, and the translation of every httpx
exception into our own :class:`~kithara_fs.errors.OriginError` family.

It must never send a request or retry one (that is ``client``), never hand out a byte whose
position in the resource it has not checked or beyond what the answer promised, and never
let an httpx exception out untranslated.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import trio

from .. import headers
from ..errors import OriginError, RemoteChangedError
from . import backend

# Status codes worth another try: the origin or a proxy is overloaded or restarting.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Everything httpx raises for a failed exchange; InvalidURL and StreamError are not HTTPErrors.
_HTTPX_ERRORS = (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL)
# Failures another try cannot mend (a redirect loop or to a scheme not http(s), a bad URL).
_PERMANENT_ERRORS = (httpx.TooManyRedirects, httpx.UnsupportedProtocol, httpx.InvalidURL)
# At most this many redirects per request (httpx and browsers allow 20, curl -L 50): real
# CDNs use one or two, so ten is generous and a loop ends quickly.
MAX_REDIRECTS = 10
# An answer's whole header block may be at most this large. Real origins send a few KiB
# (signed cookies and CDN headers stay well under 32 KiB); more is hostile or broken.
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class ResourceInfo:
    """What the origin told us about a resource.

    Attributes:
        length: total size in bytes, or None if the origin does not say.
        etag: the ETag header, verbatim (None when absent).
        last_modified: the Last-Modified header, verbatim.
        content_type: the Content-Type header.
        accepts_ranges: False once the origin answered a Range request with a whole body.
        endless: the answer had no length and ICY headers (``icy-name``, ``icy-metaint``,
            ...): an internet radio station, which no length will ever come for.
    """

    length: int | None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    accepts_ranges: bool = True
    endless: bool = False

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
    """A small resource read whole, and the URL it came from after redirects.

    ``etag`` and ``last_modified`` are its validators (for the next conditional fetch);
    ``not_modified``: a conditional fetch found it unchanged (``data`` is empty then).
    """

    data: bytes
    url: str
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


# A body left after the headers (a probe's byte) is read to its end if this small and quick.
DRAIN_LIMIT = 64 * 1024
DRAIN_SECONDS = 1.0


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
        other_version: the answer is of another version than the one asked for (handed on
            only to a caller that may take it: ``open_range(adopt=True)``).
    """

    start: int
    info: ResourceInfo
    _response: httpx.Response
    _url: str
    not_modified: bool = False
    expected_bytes: int | None = None
    other_version: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes (never content-decoded), never more than the answer promised.

        A dropped or stalled connection, or a body that ends before the promised length, is
        a transient error raised after every byte that did arrive was handed on.
        """
        received = 0
        limit = self.expected_bytes
        stream = self._response.aiter_raw()
        try:
            # No re-chunking: every byte that arrived is handed on before a drop is noticed,
            # so a resumed request starts exactly where this one broke off.
            async for chunk in stream:
                if limit is not None and received + len(chunk) > limit:
                    chunk = chunk[: limit - received]
                received += len(chunk)
                if chunk:
                    yield chunk
                if limit is not None and received >= limit:
                    break
            if limit is not None and received >= limit:
                if self._framed(limit):
                    # The parser ends the message right after its last byte: one more step
                    # lets it see that, and the connection goes back to the pool instead of
                    # being closed. Every promised byte is in; a failure now costs nothing.
                    with contextlib.suppress(*_HTTPX_ERRORS):
                        async for _ in stream:
                            break
                return
        except _HTTPX_ERRORS as exc:
            raise OriginError(self._url, f"connection lost mid-body after {received} bytes: "
                              f"{_describe(exc)}", transient=True) from exc  # fmt: skip
        if limit is not None and received < limit:
            raise OriginError(self._url, f"body ended after {received} of {limit} bytes",
                              transient=True)  # fmt: skip

    @property
    def final_url(self) -> str:
        """Where the answer came from after redirects (may carry credentials: never log)."""
        return str(self._response.url)

    def want(self, size: int) -> None:
        """The caller wants about ``size`` more bytes before it pauses: the connection reads
        about that much at a time (backend.py: large reads while a reader waits far behind,
        small ones just before a download waits for its reader)."""
        backend.want(self._response, size)

    def _framed(self, limit: int) -> bool:
        """Whether the body is framed by a Content-Length of exactly ``limit`` bytes."""
        declared: str = self._response.headers.get("Content-Length", "")
        return declared.strip() == str(limit)

    async def drain(self, limit: int = DRAIN_LIMIT) -> None:
        """Read the rest of a small body, so that its connection carries the next request.

        httpcore closes a connection whose body was left unread, and a new TCP connection
        per size probe was most of a probe's cost (10,000 probes: 10,000 connects). A body
        of unknown length, larger than ``limit``, or slower than a second is left alone:
        closing it costs less than waiting for it.
        """
        if self.expected_bytes is None or self.expected_bytes > limit:
            return
        with trio.move_on_after(DRAIN_SECONDS), contextlib.suppress(OriginError):
            async for _ in self.chunks():
                pass


@dataclass
class LiveBody:
    """An open answer of no length (an endless station), read as it comes.

    Attributes:
        headers: the answer's headers (names are case-insensitive).
        url: where it came from after redirects (may carry credentials: never log it).
        content_type: its Content-Type, if it said.
    """

    headers: httpx.Headers
    url: str
    content_type: str | None
    _response: httpx.Response
    _shown: str

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw bytes as they arrive; a drop or a stall is a transient OriginError."""
        received = 0
        try:
            async for chunk in self._response.aiter_raw():
                received += len(chunk)
                if chunk:
                    yield chunk
        except _HTTPX_ERRORS as exc:
            raise OriginError(self._shown, f"connection lost after {received} bytes: "
                              f"{_describe(exc)}", transient=True) from exc  # fmt: skip
        raise OriginError(self._shown, f"the stream ended after {received} bytes",
                          transient=True)  # fmt: skip


def _interpret_live(response: httpx.Response, url: str) -> LiveBody:
    """Check the answer to a plain GET of an endless stream: a 200 with raw bytes, or an error.

    Any other status is an error (transient for the statuses worth another try), so an
    error page is never taken for audio.
    """
    check_headers(response, url)
    status = response.status_code
    if status != 200:
        raise OriginError(url, f"HTTP {status}", transient=status in _TRANSIENT_STATUSES)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise OriginError(url, f"origin sent Content-Encoding {encoding!r} despite identity",
                          transient=True)  # fmt: skip
    return LiveBody(response.headers, str(response.url), response.headers.get("Content-Type"),
                    response, url)  # fmt: skip


def check_headers(response: httpx.Response, url: str) -> None:
    """Refuse an answer whose header block is larger than :data:`MAX_HEADER_BYTES`.

    h11 refuses only an *incomplete* header block over its limit (httpcore sets 100 KiB), so
    whether a large one passes depended on how much one socket read brought in; this check
    does not.
    """
    size = sum(len(name) + len(value) + 4 for name, value in response.headers.raw)
    if size > MAX_HEADER_BYTES:
        raise OriginError(url, f"headers too large: {size} bytes (at most {MAX_HEADER_BYTES})")


def _interpret(
    response: httpx.Response,
    url: str,
    start: int,
    end: int | None,
    expected: ResourceInfo | None,
    conditional: bool = False,
    adopt: bool = False,
) -> Body:
    """Check a response to a ranged GET and say where its body starts and how long it is.

    Only a 206 whose Content-Range is exactly the span asked for, or a 200 (the whole
    resource, from byte 0), carries bytes. Everything else is an error, so an error page
    can never be taken for content. With ``adopt``, an answer of another version than
    ``expected`` is handed on marked ``other_version`` instead of raising.
    """
    check_headers(response, url)
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
        # Icecast and Shoutcast answer every request, ranged or not, with an endless 200
        # that carries icy-* headers (icy-metadata, icy-name) and no length.
        endless = length_header is None and any(
            name.lower().startswith("icy-") for name in response.headers
        )
        info = ResourceInfo(
            info.length, info.etag, info.last_modified, info.content_type, accepts_ranges=False,
            endless=endless,
        )  # fmt: skip
        first, promised = 0, length_header
    else:
        raise OriginError(url, f"HTTP {status}")
    if expected is not None and not expected.same_version(info):
        if adopt and info.length is not None:
            return Body(first, info, response, url, expected_bytes=promised, other_version=True)
        raise RemoteChangedError(
            url,
            f"remote changed (ETag {expected.etag} -> {info.etag}, "
            f"length {expected.length} -> {info.length})",
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


def _translate(url: str, exc: Exception) -> OriginError:
    """Our error for an httpx failure: transient unless retrying cannot help."""
    if isinstance(exc, httpx.TooManyRedirects):
        return OriginError(url, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return OriginError(url, "redirected to (or given) a URL that is not http or https")
    if isinstance(exc, httpx.InvalidURL):
        return OriginError(url, f"invalid URL: {exc}")
    if isinstance(exc, httpx.PoolTimeout):
        # Our own connection limit, not the origin: retrying would only queue more requests
        # behind the ones holding every connection (the caller tries again later, if at all).
        return OriginError(url, "no free connection in time (the mount's own limit)")
    refusal = _certificate_refusal(exc)
    if refusal is not None:
        # Permanent: asking again does not make it trusted. trio says "broken stream".
        unknown = "issuer" in refusal or "self" in refusal  # not a name or date mismatch
        hint = "; a private CA goes in [network] ca_file" if unknown else ""
        return OriginError(url, f"TLS certificate not trusted ({refusal}){hint}")
    error = OriginError(url, _describe(exc), transient=not isinstance(exc, _PERMANENT_ERRORS))
    error.__cause__ = exc
    return error


def _certificate_refusal(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk down the causes
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "verification failed")
        seen = seen and (seen.__cause__ or seen.__context__)
    return None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
