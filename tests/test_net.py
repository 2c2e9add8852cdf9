"""The HTTP layer against a real loopback origin: ranges, validators, retries, bad answers."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import httpx
import pytest
import trio

from kithara_fs.demo.origin import Origin
from kithara_fs.errors import OriginError, RemoteChangedError
from kithara_fs.net import HttpClient, ResourceInfo, RetryPolicy, backend, lanes
from kithara_fs.redact import redact_url

DATA = random.Random(3).randbytes(500_000)
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def server() -> Iterator[Origin]:
    with Origin() as origin:
        origin.add("/a.mp3", DATA)
        yield origin


async def body_of(http: HttpClient, url: str, start: int, expected: ResourceInfo | None) -> bytes:
    async with http.open_range(url, start, None, expected) as body:
        assert body.start == start
        return b"".join([chunk async for chunk in body.chunks()])


async def test_probe_learns_length_and_validators(server: Origin) -> None:
    async with HttpClient() as http:
        info = await http.probe(server.url("/a.mp3"))
    assert info.length == len(DATA) and info.etag and info.last_modified and info.accepts_ranges
    assert info.content_type == "audio/mpeg"
    assert server.requests_for("/a.mp3")[0].range == "bytes=0-0"


async def test_ranged_read_with_if_range(server: Origin) -> None:
    async with HttpClient() as http:
        info = await http.probe(server.url("/a.mp3"))
        assert await body_of(http, server.url("/a.mp3"), 123_456, info) == DATA[123_456:]
    last = server.requests_for("/a.mp3")[-1]
    assert last.if_range == info.etag and last.status == 206


async def test_changed_version_is_remote_changed(server: Origin) -> None:
    async with HttpClient() as http:
        info = await http.probe(server.url("/a.mp3"))
        server.replace("/a.mp3", DATA[::-1])
        with pytest.raises(RemoteChangedError):
            await body_of(http, server.url("/a.mp3"), 1000, info)


async def test_ignored_range_starts_at_zero(server: Origin) -> None:
    server.faults("/a.mp3").ignore_range = True
    async with HttpClient() as http:
        info = await http.probe(server.url("/a.mp3"))
        assert not info.accepts_ranges
        async with http.open_range(server.url("/a.mp3"), 5000, None, info) as body:
            assert body.start == 0
            assert b"".join([c async for c in body.chunks()]) == DATA


async def test_503_is_retried(server: Origin) -> None:
    server.faults("/a.mp3").fail_statuses = [503, 503]
    async with HttpClient(policy=FAST) as http:
        assert await body_of(http, server.url("/a.mp3"), 0, None) == DATA
    assert [r.status for r in server.requests_for("/a.mp3")] == [503, 503, 206]


async def test_retries_run_out(server: Origin) -> None:
    server.faults("/a.mp3").fail_statuses = [503] * 10
    async with HttpClient(policy=FAST) as http:
        with pytest.raises(OriginError) as info:
            await http.probe(server.url("/a.mp3"))
    assert info.value.transient and "HTTP 503" in str(info.value)
    assert len(server.requests_for("/a.mp3")) == FAST.attempts


@pytest.mark.parametrize("status", [404, 403, 410])
async def test_permanent_statuses_are_not_retried(server: Origin, status: int) -> None:
    server.faults("/a.mp3").fail_statuses = [status] * 3
    async with HttpClient(policy=FAST) as http:
        with pytest.raises(OriginError) as info:
            await http.probe(server.url("/a.mp3"))
    assert not info.value.transient and f"HTTP {status}" in str(info.value)
    assert len(server.requests_for("/a.mp3")) == 1


async def test_drop_mid_body_is_a_transient_error_after_the_bytes_that_came(
    server: Origin,
) -> None:
    faults = server.faults("/a.mp3")
    faults.drop_after, faults.drop_count = 100_000, 1
    received = b""
    async with HttpClient(policy=FAST) as http:
        with pytest.raises(OriginError) as info:
            async with http.open_range(server.url("/a.mp3"), 0) as body:
                async for chunk in body.chunks():
                    received += chunk
    assert info.value.transient
    assert received == DATA[:100_000], "every byte that arrived is handed on"


async def test_refused_connection_is_transient_origin_error() -> None:
    origin = Origin()
    url = origin.url("/gone")
    origin.stop()
    async with HttpClient(policy=FAST) as http:
        with pytest.raises(OriginError) as info:
            await http.probe(url)
    assert info.value.transient and "ConnectError" in str(info.value)


async def test_compressed_answer_is_refused() -> None:
    def gzip_anyway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            206,
            headers={"Content-Encoding": "gzip", "Content-Range": "bytes 0-0/10"},
            content=b"x",
        )

    async with HttpClient(transport=httpx.MockTransport(gzip_anyway), policy=FAST) as http:
        with pytest.raises(OriginError, match="Content-Encoding 'gzip'"):
            await http.probe("http://origin.test/a")


async def test_wrong_content_range_start_is_refused() -> None:
    def off_by_one(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"Content-Range": "bytes 1-1/10"}, content=b"x")

    async with HttpClient(transport=httpx.MockTransport(off_by_one), policy=FAST) as http:
        with pytest.raises(OriginError, match="asked for byte 0, origin sent from 1"):
            await http.probe("http://origin.test/a")


def test_redact_url() -> None:
    assert redact_url("https://u:p@h.example:8443/a/b.mp3?token=x#f") == (
        "https://h.example:8443/a/b.mp3?<redacted>"
    )
    assert redact_url("http://h/a.mp3") == "http://h/a.mp3"


async def test_revalidate_same_version_changed_and_not_modified(server: Origin) -> None:
    async with HttpClient(policy=FAST) as http:
        info = await http.probe(server.url("/a.mp3"))
        assert await http.revalidate(server.url("/a.mp3"), info) is None
        assert server.requests_for("/a.mp3")[-1].range == "bytes=0-0"
        server.replace("/a.mp3", DATA[::-1])
        newer = await http.revalidate(server.url("/a.mp3"), info)
        assert newer is not None and newer.etag != info.etag and newer.length == len(DATA)

    def not_modified(request: httpx.Request) -> httpx.Response:
        assert request.headers["If-None-Match"] == '"v1"'
        return httpx.Response(304)

    async with HttpClient(transport=httpx.MockTransport(not_modified)) as http:
        known = ResourceInfo(length=10, etag='"v1"')
        assert await http.revalidate("http://origin.test/a", known) is None


async def test_connections_are_reused_after_whole_answers(server: Origin) -> None:
    """A size probe's one byte, and a ranged body read to its end, leave their connection
    to the next request: 20 probes and 5 ranged reads in a row use one TCP connection (a new
    connection per request costs a TLS handshake on every probe of an https origin). Probes
    have their own connections (lanes), so one for the probes and one for the reads."""
    url = server.url("/a.mp3")
    async with HttpClient() as http:
        info = await http.probe(url)
        for _ in range(19):
            assert await http.probe(url) == info
        for start in (0, 1000, 250_000, 499_000, 400_000):
            async with http.open_range(url, start, start + 999, info) as body:
                assert b"".join([c async for c in body.chunks()]) == DATA[start : start + 1000]
    assert len(server.requests_for("/a.mp3")) == 25
    assert server.connections_accepted == 2


@pytest.mark.parametrize("pad", [150_000, 90_000])
async def test_a_huge_header_block_is_refused_whatever_the_read_size(
    server: Origin, pad: int
) -> None:
    """h11 only refuses an incomplete block over 100 KiB; with large socket reads a whole
    150 KB block could pass it. Both must fail; a block h11 let through is refused for good
    (h11's own refusal counts as a broken connection, and is retried)."""
    server.faults("/a.mp3").huge_header_bytes = pad
    async with HttpClient(policy=FAST) as http:
        with pytest.raises(OriginError, match="headers too large|Receive buffer too long"):
            await http.probe(server.url("/a.mp3"))
        with pytest.raises(OriginError, match="headers too large|Receive buffer too long"):
            await http.fetch(server.url("/a.mp3"), 10**7)
    gets = [r for r in server.requests_for("/a.mp3") if r.method == "GET"]
    if pad < 100 * 1024:
        assert len(gets) == 2, "refused for good, not retried"


async def test_ordinary_headers_pass(server: Origin) -> None:
    server.faults("/a.mp3").huge_header_bytes = 8_000
    async with HttpClient(policy=FAST) as http:
        assert (await http.probe(server.url("/a.mp3"))).length == len(DATA)


async def test_socket_reads_are_as_large_as_the_download_wants(server: Origin) -> None:
    """The client's connections read what the download asks for (net/backend.py says why):
    if httpx stops keeping its pool where backend.transport replaces it, or the stream is not
    ours, this fails instead of downloads silently slowing down or holding memory."""
    async with HttpClient() as http:
        async with http.open_range(server.url("/a.mp3"), 0) as body:
            stream = body._response.extensions["network_stream"]
            assert isinstance(stream, backend.SizedStream)
            assert stream.read_size == backend.DEFAULT_READ
            body.want(10 * 1024 * 1024)
            assert stream.read_size == backend.MAX_READ
            got = b""
            async for chunk in body.chunks():
                assert len(chunk) <= backend.MAX_READ
                got += chunk
                body.want(1)
                assert stream.read_size == backend.MIN_READ
        assert got == DATA
        # Kept alive, the connection serves the next body with the default size again.
        async with http.open_range(server.url("/a.mp3"), 0, 99) as body:
            assert body._response.extensions["network_stream"].read_size == backend.DEFAULT_READ
            await body.drain()
    assert server.connections_accepted == 1


async def test_a_probe_on_a_lane_learns_what_the_full_client_learns(server: Origin) -> None:
    """The fast path (a bare connection) and httpx's path agree on every field, and a
    redirect, which lanes do not follow, still ends at the resource."""
    server.faults("/moved.mp3").redirect_to = server.url("/a.mp3")
    async with HttpClient() as http:
        assert http._lanes is not None, "lanes are in use without a proxy or test transport"
        fast = await http.probe(server.url("/a.mp3"))
        followed = await http.probe(server.url("/moved.mp3"))
        assert await http.probe(server.url("/moved.mp3")) == followed
        async with http.open_range(server.url("/a.mp3"), 0, 0) as body:
            await body.drain()
            full = body.info
        # Credentials in the URL go with the full client only.
        user = server.url("/a.mp3").replace("http://", "http://user:secret@")
        assert await http._lanes.probe(user) is None
    assert fast == full == followed
    assert [r.range for r in server.requests_for("/a.mp3")] == ["bytes=0-0"] * 4
    # The lane's 302, then httpx's; the host redirected once, so then httpx's alone.
    assert len(server.requests_for("/moved.mp3")) == 3


async def test_a_failed_lane_probe_is_the_first_attempt(server: Origin) -> None:
    """A 503 on the lane counts as the first of the policy's attempts: no extra request."""
    server.faults("/a.mp3").fail_statuses = [503]
    async with HttpClient(policy=FAST) as http:
        info = await http.probe(server.url("/a.mp3"))
    assert info.length == len(DATA)
    assert [r.status for r in server.requests_for("/a.mp3")] == [503, 206]


def test_lanes_are_not_used_behind_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert lanes.usable(None)
    assert not lanes.usable(httpx.MockTransport(lambda request: httpx.Response(200)))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert not lanes.usable(None)


async def test_a_cookie_an_origin_sets_on_a_probe_is_kept(server: Origin) -> None:
    """A CDN may set a token on its first answer and want it back: a lane does not keep
    cookies, so such an answer is asked again through httpx, whose jar keeps it, and the
    client's later probes go through httpx (with the cookie) too."""
    server.faults("/a.mp3").set_cookie = "token=abc; Path=/"
    async with HttpClient() as http:
        assert (await http.probe(server.url("/a.mp3"))).length == len(DATA)
        assert http._client.cookies.get("token") == "abc"
        await http.probe(server.url("/a.mp3"))
    assert len(server.requests_for("/a.mp3")) == 3, "the lane's answer, then httpx's twice"


def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own transport would make httpx ignore HTTPS_PROXY: behind a proxy the client keeps
    httpx's own transports (and its proxy mounts), and no lanes."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    http = HttpClient()
    assert http._client._mounts, "httpx mounted the proxy from the environment"
    assert http._lanes is None


async def test_a_slow_origin_does_not_hold_other_probes(server: Origin) -> None:
    """Every lane held by an origin that does not answer: another probe waits a second for
    a lane, then asks through httpx, well before the stalled lane gives up (its read timeout
    alone would free it after 5 s: the bound below stays under that, so it tells)."""
    server.add("/b.mp3", DATA)
    release = threading.Event()
    server.faults("/b.mp3").stall = release
    async with HttpClient() as http, trio.open_nursery() as nursery:
        assert http._lanes is not None
        http._lanes._limit = trio.CapacityLimiter(1)  # one lane, held by the stalled probe
        nursery.start_soon(http.probe, server.url("/b.mp3"))
        await trio.sleep(0.2)
        try:
            with trio.fail_after(3 * lanes.WAIT_FOR_LANE):
                assert (await http.probe(server.url("/a.mp3"))).length == len(DATA)
        finally:
            release.set()


def _established_to(ports: set[int]) -> int:
    """This process's established TCP connections to 127.0.0.1 at any of ``ports`` (the
    client's side: a closed client socket leaves that state at once)."""
    wanted = {f"0100007F:{port:04X}" for port in ports}
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[3] == "01" and row[2] in wanted)


async def test_lanes_close_another_origins_idle_connection_before_opening_one() -> None:
    """Two lanes, three origins: the third probe's new connection does not make three."""
    origins = [Origin().start() for _ in range(3)]
    try:
        for origin in origins:
            origin.add("/a.mp3", DATA)
        origins[2].faults("/a.mp3").delay = 0.5  # time to look while it is open
        ports = {origin.port for origin in origins}
        async with HttpClient(max_connections=4) as http:
            assert http._lanes is not None and http._lanes._lanes == 2
            for origin in origins[:2]:
                await http.probe(origin.url("/a.mp3"))
            assert _established_to(ports) == 2, "both kept for the next probe"
            peak = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(http.probe, origins[2].url("/a.mp3"))
                with trio.move_on_after(0.4):
                    while True:
                        await trio.sleep(0.01)
                        peak = max(peak, _established_to(ports))
            assert peak == 2, peak
    finally:
        for origin in origins:
            origin.stop()
