"""The sockets under httpcore: connections whose read size the download chooses.

Owns :class:`SizedBackend`, an httpcore network backend that wraps the default one, and its
streams, whose ``read_size`` says how much one socket read asks for, whatever httpcore asks
(its own default is 64 KiB). :func:`transport` builds the httpx transport on it.

Why: on a fast link the per-read work in httpcore and h11 is what limits a download. A cold
sequential read through the mount ran at 180 MB/s with 256 KiB reads and 270–290 MB/s with
1 MiB ones here. But a chunk stays referenced by httpx's and httpcore's suspended generators
while a download waits at its target for the reader, so large fixed reads held a megabyte
per waiting stream: 50 open streams peaked at 97 MiB RSS with 1 MiB reads, against 63 MiB with
256 KiB. So the download says what suits it (``Body.want``): reads as large as its reader's
read-ahead, between 64 KiB and 1 MiB. (Sizing them by the way left to the target instead
kept the download in small reads just behind a fast reader: 160 MB/s.)

It also reads a Shoutcast v1 status line (``ICY 200 OK``) as ``HTTP/1.0 200 OK``.

It must never change a byte or the order of bytes (but for that status line), and never
read more than ``read_size`` at a time.
It relies on one private name: ``httpx.AsyncHTTPTransport._pool`` (set once, at build time;
tests/test_net.py fails if httpx renames it).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# What a read asks for when nobody said (a playlist, a probe, a segment): 256 KiB streamed
# 106 MB over loopback with 183 ms of CPU, 64 KiB with 268 ms.
DEFAULT_READ = 256 * 1024
# The bounds of what a download may ask for.
MIN_READ = 64 * 1024
MAX_READ = 1024 * 1024
# A Shoutcast v1 server answers "ICY 200 OK", which h11 refuses as an illegal status line
# (the fix curl, DeaDBeeF and music-assistant made too): the first bytes of a connection are
# read as HTTP/1.0 when they start so. Nothing else is touched: only a connection's first
# bytes, where an HTTP answer's status line must be, and only this exact prefix. h11 already
# accepts the bare-LF header lines such servers send (pinned in tests/test_radio_units.py).
ICY_STATUS = b"ICY "
HTTP_STATUS = b"HTTP/1.0 "


class SizedStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads ask for ``read_size`` bytes.

    The first bytes a connection receives are also mended if they are a Shoutcast v1
    server's status line (:data:`ICY_STATUS`).
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self.read_size = DEFAULT_READ
        self._first = True

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # A read returns what has arrived, so a large size never holds bytes back.
        data = await self._inner.read(self.read_size, timeout)
        if self._first:
            self._first = False
            while data and len(data) < len(ICY_STATUS) and ICY_STATUS.startswith(data):
                more = await self._inner.read(self.read_size, timeout)
                if not more:
                    break
                data += more
            if data.startswith(ICY_STATUS):
                data = HTTP_STATUS + data[len(ICY_STATUS) :]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return SizedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class SizedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend (the daemon runs on trio), with :class:`SizedStream` ones."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return SizedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return SizedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def transport(tls: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections are :class:`SizedStream` ones."""
    built = httpx.AsyncHTTPTransport(verify=tls, limits=limits)
    if not isinstance(getattr(built, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps its pool in _pool")
    built._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=SizedBackend(),
    )
    return built


def want(response: httpx.Response, size: int) -> None:
    """Let ``response``'s connection read about ``size`` bytes at a time (within bounds)."""
    stream = response.extensions.get("network_stream")
    if isinstance(stream, SizedStream):
        stream.read_size = min(MAX_READ, max(MIN_READ, size))
