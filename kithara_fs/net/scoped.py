"""Headers a stream adds to its requests: a User-Agent anywhere, secrets only at home.

Owns :class:`Secret` (a header value that never shows itself), :class:`StreamHeaders` (what
one ``[[stream]]`` adds to its requests) and the httpx request hook that puts a stream's
headers on each request to the stream's own origin — the scheme, host and port of its URL —
and takes them off any other, a redirect to another host included. So a bearer token for a
private feed reaches the feed's host, and never the CDN or tracker its episodes live on.

It must never log, format or compare a header value outside the hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

# The request extension that carries a stream's scope through httpx (redirects keep it).
EXTENSION = "kithara.scope"

Origin = tuple[str, str, int]


@dataclass(frozen=True)
class Secret:
    """A header value: its repr and str show nothing, so no log line or error can."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class StreamHeaders:
    """What one stream adds to its requests.

    Attributes:
        headers: name and value pairs, sent only to the stream's own origin.
        user_agent: the stream's User-Agent (not a secret: it goes with every request).
    """

    headers: tuple[tuple[str, Secret], ...] = ()
    user_agent: str | None = None

    def __bool__(self) -> bool:
        return bool(self.headers) or self.user_agent is not None


@dataclass(frozen=True)
class Scope:
    """Where a stream's headers may go, and the headers."""

    origin: Origin
    headers: tuple[tuple[str, Secret], ...]


def origin_of(url: httpx.URL) -> Origin:
    port = url.port or (443 if url.scheme == "https" else 80)
    return (url.scheme, url.host, port)


def home_of(url: str) -> Origin:
    """The origin of a stream's URL (a URL httpx cannot parse gets none: its requests fail
    with a clear error of their own)."""
    try:
        return origin_of(httpx.URL(url))
    except (httpx.InvalidURL, ValueError):
        return ("", url, 0)


def _at_home(here: Origin, home: Origin) -> bool:
    if here == home:
        return True
    # An upgrade from http to https on the same host stays at home, as httpx keeps its
    # Authorization header across that redirect.
    return home == ("http", here[1], 80) and here == ("https", home[1], 443)


async def apply_scope(request: httpx.Request) -> None:
    """The httpx request hook: run before every request is sent, redirects included."""
    scope = request.extensions.get(EXTENSION)
    if not isinstance(scope, Scope):
        return
    home = _at_home(origin_of(request.url), scope.origin)
    for name, secret in scope.headers:
        if home:
            request.headers[name] = secret.value
        elif request.headers.get(name) == secret.value:  # ours, carried over by a redirect
            del request.headers[name]
