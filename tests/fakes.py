"""An in-memory HTTP origin for unit tests of one layer (httpx.MockTransport).

Serves bytes with Range, ETag and If-Range like the real loopback origin, and can stall
until told to go on. Only for unit tests: anything that reaches the kernel uses the real
origin in ``kithara_fs.demo.origin``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import trio


class FakeOrigin:
    def __init__(self, data: bytes, etag: str = '"v1"', latency: float = 0.0) -> None:
        self.data = data
        self.etag = etag
        # Seconds before each answer: makes trio interleave tasks mid-request, as a real
        # network does (without it, MockTransport answers without ever yielding).
        self.latency = latency
        self.statuses: list[int] = []  # answered instead of the content, one per request
        self.short_body = False  # 206 headers with an empty body, as a broken proxy sends
        self.requests: list[str | None] = []
        self.stalled = False
        self.released = trio.Event()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def stall(self) -> None:
        self.stalled = True
        self.released = trio.Event()

    def release(self) -> None:
        self.stalled = False
        self.released.set()

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("Range")
        self.requests.append(header)
        if self.latency:
            await trio.sleep(self.latency)
        if self.stalled:
            await self.released.wait()
        if self.statuses:
            return httpx.Response(self.statuses.pop(0), content=streamed(b"unavailable"))
        headers = {"ETag": self.etag, "Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
        if_range = request.headers.get("If-Range")
        if match is None or (if_range is not None and if_range != self.etag):
            headers["Content-Length"] = str(len(self.data))
            return httpx.Response(200, headers=headers, content=streamed(self.data))
        total = len(self.data)
        start = int(match.group(1))
        end = min(int(match.group(2) or total - 1), total - 1)
        if start >= total:
            return httpx.Response(416, headers={"Content-Range": f"bytes */{total}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        if self.short_body:
            return httpx.Response(206, headers=headers, content=streamed(b""))
        return httpx.Response(206, headers=headers, content=streamed(self.data[start : end + 1]))


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    """A streamed body: httpx reads plain bytes content eagerly, so raw reads would fail."""
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]
