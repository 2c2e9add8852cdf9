"""Tests for the loopback origin and the demo media generator.

Owns: checking the origin's HTTP behaviour and fault injection against a real socket, and that
generated media decodes as audio of the requested length.

Must never: reach beyond 127.0.0.1, depend on files outside tmp_path, or pass on approximate
bodies: every body is compared byte for byte with its source.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import wave
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from kithara_fs.demo import media
from kithara_fs.demo.origin import CHAOS_FAULTS, Origin, RequestRecord

DATA = random.Random(1234).randbytes(300_000)
TOTAL = len(DATA)


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        server.add("/a.mp3", DATA)
        yield server


def request(
    origin: Origin, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_full_get_returns_exact_bytes_and_headers(origin: Origin) -> None:
    status, headers, body = request(origin, "/a.mp3")
    assert status == 200
    assert body == DATA
    assert headers["Content-Length"] == str(TOTAL)
    assert headers["Content-Type"] == "audio/mpeg"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"v') and headers["ETag"].endswith('"')
    assert headers["Last-Modified"].endswith("GMT")
    assert "Content-Encoding" not in headers
    assert "Content-Range" not in headers


def test_url_points_at_the_resource(origin: Origin) -> None:
    assert origin.url("/a.mp3") == f"http://127.0.0.1:{origin.port}/a.mp3"


def test_head_sends_headers_without_body(origin: Origin) -> None:
    status, headers, body = request(origin, "/a.mp3", method="HEAD")
    assert status == 200
    assert headers["Content-Length"] == str(TOTAL)
    assert body == b""
    assert origin.requests_for("/a.mp3")[-1].body_bytes == 0


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=100-1099", 100, 1099),
        ("bytes=299000-", 299_000, TOTAL - 1),
        ("bytes=-500", TOTAL - 500, TOTAL - 1),
        ("bytes=5-999999999", 5, TOTAL - 1),
        ("bytes=0-0", 0, 0),
    ],
)
def test_single_range_gives_206(origin: Origin, header: str, first: int, last: int) -> None:
    status, headers, body = request(origin, "/a.mp3", {"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{TOTAL}"
    assert headers["Content-Length"] == str(last - first + 1)
    assert body == DATA[first : last + 1]


@pytest.mark.parametrize(
    "header", [f"bytes={TOTAL}-", f"bytes={TOTAL + 10}-{TOTAL + 20}", "bytes=-0"]
)
def test_range_past_end_gives_416(origin: Origin, header: str) -> None:
    status, headers, body = request(origin, "/a.mp3", {"Range": header})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{TOTAL}"
    assert body == b""


@pytest.mark.parametrize("header", ["bytes=0-10,20-30", "bytes=10-5", "items=0-10", "bytes=-"])
def test_multi_or_malformed_range_is_ignored(origin: Origin, header: str) -> None:
    status, _, body = request(origin, "/a.mp3", {"Range": header})
    assert status == 200
    assert body == DATA


def test_if_range_with_stale_etag_gives_full_body(origin: Origin) -> None:
    headers = {"Range": "bytes=10-20", "If-Range": '"v0-stale"'}
    status, resp_headers, body = request(origin, "/a.mp3", headers)
    assert status == 200
    assert body == DATA
    assert "Content-Range" not in resp_headers


def test_if_range_with_current_validators_honours_range(origin: Origin) -> None:
    _, headers, _ = request(origin, "/a.mp3", method="HEAD")
    for validator in (headers["ETag"], headers["Last-Modified"]):
        status, _, body = request(origin, "/a.mp3", {"Range": "bytes=10-20", "If-Range": validator})
        assert status == 206
        assert body == DATA[10:21]


def test_replace_changes_etag_last_modified_and_body(origin: Origin) -> None:
    _, before, _ = request(origin, "/a.mp3", method="HEAD")
    new = DATA[::-1][:1000]
    origin.replace("/a.mp3", new)
    status, after, body = request(origin, "/a.mp3")
    assert status == 200
    assert body == new
    assert after["ETag"] != before["ETag"]
    assert after["Last-Modified"] != before["Last-Modified"]
    # The old ETag is now stale, so a resumed read must get the new body whole.
    status, _, body = request(origin, "/a.mp3", {"Range": "bytes=10-", "If-Range": before["ETag"]})
    assert (status, body) == (200, new)


def test_file_backed_resource_serves_ranges(origin: Origin, tmp_path: Path) -> None:
    source = tmp_path / "song.flac"
    source.write_bytes(DATA)
    origin.add("/song.flac", source)
    status, headers, body = request(origin, "/song.flac", {"Range": "bytes=70000-150000"})
    assert status == 206
    assert headers["Content-Type"] == "audio/flac"
    assert body == DATA[70_000:150_001]
    assert request(origin, "/song.flac")[2] == DATA


def test_unknown_path_gives_404(origin: Origin) -> None:
    status, _, _ = request(origin, "/missing.mp3")
    assert status == 404


def test_ignore_range_always_sends_whole_body(origin: Origin) -> None:
    origin.faults("/a.mp3").ignore_range = True
    status, headers, body = request(origin, "/a.mp3", {"Range": "bytes=100-200"})
    assert status == 200
    assert body == DATA
    assert "Accept-Ranges" not in headers
    assert "Content-Range" not in headers


def test_fail_statuses_are_consumed_one_per_get(origin: Origin) -> None:
    origin.faults("/a.mp3").fail_statuses = [503, 503]
    assert request(origin, "/a.mp3")[0] == 503
    assert request(origin, "/a.mp3")[0] == 503
    status, _, body = request(origin, "/a.mp3")
    assert (status, body) == (200, DATA)
    assert origin.faults("/a.mp3").fail_statuses == []


def test_drop_after_cuts_the_body_short(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.drop_after = 1000
    faults.drop_count = 1
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.request("GET", "/a.mp3")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(TOTAL)
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            resp.read()
        assert excinfo.value.partial == DATA[:1000]
    finally:
        conn.close()
    assert origin.wait_idle()
    assert origin.requests_for("/a.mp3")[-1].body_bytes == 1000
    # drop_count is used up, so the next response is whole.
    assert request(origin, "/a.mp3")[2] == DATA


def test_drop_after_applies_within_a_range(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.drop_after = 10
    faults.drop_count = 1
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.request("GET", "/a.mp3", headers={"Range": "bytes=500-"})
        resp = conn.getresponse()
        assert resp.status == 206
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            resp.read()
        assert excinfo.value.partial == DATA[500:510]
    finally:
        conn.close()


def test_client_hanging_up_early_is_quiet_and_logged(
    origin: Origin, capfd: pytest.CaptureFixture[str]
) -> None:
    # Slow enough that the body cannot all sit in socket buffers before the client leaves.
    origin.faults("/a.mp3").rate = 100_000
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    conn.request("GET", "/a.mp3")
    resp = conn.getresponse()
    assert resp.read(1000) == DATA[:1000]
    conn.close()
    assert origin.wait_idle()
    record = origin.requests_for("/a.mp3")[-1]
    assert record.status == 200
    assert 1000 <= record.body_bytes < TOTAL
    assert "Traceback" not in capfd.readouterr().err
    # The origin keeps serving after the hang-up.
    origin.clear_faults()
    assert request(origin, "/a.mp3")[2] == DATA


def test_request_log_records_ranges_and_statuses(origin: Origin) -> None:
    request(origin, "/a.mp3", {"Range": "bytes=0-99"})
    request(origin, "/a.mp3", {"Range": f"bytes={TOTAL}-"})
    request(origin, "/a.mp3", method="HEAD")
    request(origin, "/nope")
    assert origin.wait_idle()
    assert origin.requests_for("/a.mp3") == [
        RequestRecord("GET", "/a.mp3", "bytes=0-99", None, 206, 100),
        RequestRecord("GET", "/a.mp3", f"bytes={TOTAL}-", None, 416, 0),
        RequestRecord("HEAD", "/a.mp3", None, None, 200, 0),
    ]
    assert [r.status for r in origin.requests_for("/nope")] == [404]
    origin.clear_log()
    assert origin.requests == []


def test_keep_alive_serves_several_requests_on_one_connection(origin: Origin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        sockets = []
        for first in (0, 1000, 2000):
            conn.request("GET", "/a.mp3", headers={"Range": f"bytes={first}-{first + 9}"})
            resp = conn.getresponse()
            assert resp.read() == DATA[first : first + 10]
            sockets.append(conn.sock)
        # http.client reconnects silently, so a new socket would mean the origin closed it.
        assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    finally:
        conn.close()


def test_stall_holds_the_response_until_released(origin: Origin) -> None:
    release = threading.Event()
    origin.faults("/a.mp3").stall = release
    result: list[bytes] = []
    worker = threading.Thread(target=lambda: result.append(request(origin, "/a.mp3")[2]))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and result == []
    release.set()
    worker.join(10)
    assert result == [DATA]


def test_rate_limits_the_body(origin: Origin) -> None:
    origin.faults("/a.mp3").rate = 200_000
    began = time.monotonic()
    status, _, body = request(origin, "/a.mp3", {"Range": "bytes=0-99999"})
    elapsed = time.monotonic() - began
    assert (status, body) == (206, DATA[:100_000])
    assert elapsed >= 0.4


def test_stop_refuses_new_connections() -> None:
    server = Origin().start()
    server.add("/x.wav", b"abc")
    assert request(server, "/x.wav")[2] == b"abc"
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        request(server, "/x.wav")


def raw_get(
    origin: Origin, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[bytes, bytes]:
    """(head, body) as sent on the wire, read to EOF: for what http.client refuses or decodes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", origin.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while block := sock.recv(65536):
            data += block
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def read_short(origin: Origin, path: str, headers: dict[str, str] | None = None) -> bytes:
    """GET a response whose body must end before its Content-Length; return what came."""
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            resp.read()
        return excinfo.value.partial
    finally:
        conn.close()


@pytest.mark.parametrize(
    "value", ["²", "-5", "99999999", "", "soon", formatdate(time.time() + 30, usegmt=True)]
)
def test_retry_after_is_sent_verbatim_with_fail_statuses(origin: Origin, value: str) -> None:
    faults = origin.faults("/a.mp3")
    faults.fail_statuses = [503]
    faults.retry_after = value
    status, headers, _ = request(origin, "/a.mp3")
    assert (status, headers["Retry-After"]) == (503, value)
    # Only the injected failures carry it.
    status, headers, body = request(origin, "/a.mp3")
    assert (status, body) == (200, DATA)
    assert "Retry-After" not in headers


def test_retry_after_beyond_latin1_goes_out_as_utf8(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.fail_statuses = [429]
    faults.retry_after = "五秒"
    head, body = raw_get(origin, "/a.mp3")
    assert head.startswith(b"HTTP/1.1 429")
    assert b"\r\nRetry-After: " + "五秒".encode() + b"\r\n" in head + b"\r\n"
    assert body == b"429 injected\n"


@pytest.mark.parametrize("shift", [100, -100])
def test_range_shift_claims_the_wrong_start_with_the_right_bytes(
    origin: Origin, shift: int
) -> None:
    faults = origin.faults("/a.mp3")
    faults.range_shift = shift
    faults.range_shift_count = 1
    status, headers, body = request(origin, "/a.mp3", {"Range": "bytes=1000-1999"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {1000 + shift}-{1999 + shift}/{TOTAL}"
    assert headers["Content-Length"] == "1000"
    assert body == DATA[1000:2000]
    # Spent: the next 206 tells the truth.
    _, headers, _ = request(origin, "/a.mp3", {"Range": "bytes=1000-1999"})
    assert headers["Content-Range"] == f"bytes 1000-1999/{TOTAL}"


def test_range_lies_are_only_spent_on_206_answers(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.range_shift, faults.range_shift_count = 7, 1
    faults.range_claims_fewer, faults.range_lie_count = 3, 1
    assert request(origin, "/a.mp3")[:3:2] == (200, DATA)
    assert request(origin, "/a.mp3", method="HEAD")[0] == 200
    assert (faults.range_shift_count, faults.range_lie_count) == (1, 1)
    _, headers, body = request(origin, "/a.mp3", {"Range": "bytes=0-99"})
    assert headers["Content-Range"] == f"bytes 7-103/{TOTAL}"
    assert body == DATA[:100]
    assert (faults.range_shift_count, faults.range_lie_count) == (0, 0)


def test_range_claims_fewer_sends_more_body_than_the_range_says(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.range_claims_fewer = 10
    faults.range_lie_count = 1
    status, headers, body = request(origin, "/a.mp3", {"Range": "bytes=1000-1999"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1000-1989/{TOTAL}"
    assert headers["Content-Length"] == "1000"
    assert body == DATA[1000:2000]
    assert faults.range_lie_count == 0


@pytest.mark.parametrize(
    ("first", "last", "claimed_last", "body_end"),
    [
        # Room to grow: the claim grows, the body is the requested span.
        (1000, 1999, 2009, 2000),
        # Already at the end: the total may not grow, so the body shrinks instead.
        (TOTAL - 100, TOTAL - 1, TOTAL - 1, TOTAL - 10),
        # Room for 4 of the 10: the claim grows by 4 and the body loses 6.
        (TOTAL - 100, TOTAL - 5, TOTAL - 1, TOTAL - 10),
    ],
)
def test_range_claims_more_sends_less_body_than_the_range_says(
    origin: Origin, first: int, last: int, claimed_last: int, body_end: int
) -> None:
    faults = origin.faults("/a.mp3")
    faults.range_claims_more = 10
    faults.range_lie_count = 1
    status, headers, body = request(origin, "/a.mp3", {"Range": f"bytes={first}-{last}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{claimed_last}/{TOTAL}"
    assert headers["Content-Length"] == str(body_end - first)
    assert body == DATA[first:body_end]
    assert (claimed_last - first + 1) - len(body) == 10


def test_length_overstates_promises_more_than_it_sends(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.length_overstates = 50
    faults.length_overstates_count = 2
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.request("GET", "/a.mp3")
        resp = conn.getresponse()
        assert resp.headers["Content-Length"] == str(TOTAL + 50)
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            resp.read()
        assert excinfo.value.partial == DATA
    finally:
        conn.close()
    assert read_short(origin, "/a.mp3", {"Range": "bytes=10-19"}) == DATA[10:20]
    assert request(origin, "/a.mp3")[2] == DATA


def test_body_stall_goes_silent_on_an_open_connection_then_closes(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.stall_after = 1000
    faults.stall_seconds = 0.3
    faults.stall_count = 1
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        began = time.monotonic()
        sock.sendall(b"GET /a.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 1000:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert f"Content-Length: {TOTAL}".encode() in head
        assert body == DATA[:1000]
        # Silence, but no EOF: the connection is still open while the stall lasts.
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(5)
        assert sock.recv(65536) == b""
        assert time.monotonic() - began >= 0.28
    assert origin.wait_idle()
    assert origin.requests_for("/a.mp3")[-1].body_bytes == 1000
    assert request(origin, "/a.mp3")[2] == DATA


def test_body_stall_is_ended_early_by_clear_faults(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.stall_after = 1000
    faults.stall_seconds = 30.0
    faults.stall_count = 1
    threading.Timer(0.2, origin.clear_faults).start()
    began = time.monotonic()
    assert read_short(origin, "/a.mp3") == DATA[:1000]
    assert time.monotonic() - began < 5


def test_header_stall_delays_the_status_line_once(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.header_stall_seconds = 0.3
    faults.header_stall_count = 1
    assert request(origin, "/a.mp3", method="HEAD")[0] == 200
    assert faults.header_stall_count == 1  # HEAD does not spend it
    began = time.monotonic()
    status, _, body = request(origin, "/a.mp3")
    assert (status, body) == (200, DATA)
    assert time.monotonic() - began >= 0.28
    assert request(origin, "/a.mp3")[2] == DATA
    assert origin.wait_idle()
    assert [r.fault for r in origin.requests_for("/a.mp3")] == [None, "header_stall", None]


def test_header_stall_is_ended_early_by_stop(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.header_stall_seconds = 30.0
    faults.header_stall_count = 1
    outcome: list[object] = []

    def fetch() -> None:
        try:
            outcome.append(request(origin, "/a.mp3")[0])
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    began = time.monotonic()
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()
    origin.stop()
    worker.join(5)
    assert not worker.is_alive() and len(outcome) == 1
    assert time.monotonic() - began < 5


def test_redirect_with_count_zero_answers_every_request(origin: Origin) -> None:
    # The redirecting path needs no resource of its own.
    faults = origin.faults("/old.mp3")
    faults.redirect_to = "/a.mp3"
    for method in ("GET", "HEAD", "GET"):
        status, headers, body = request(origin, "/old.mp3", method=method)
        assert (status, headers["Location"]) == (302, "/a.mp3")
        assert headers["Content-Length"] == str(len(b"302 found: /a.mp3\n"))
        assert body == (b"302 found: /a.mp3\n" if method == "GET" else b"")
    assert faults.redirect_to == "/a.mp3"
    # A stdlib client resolves the relative Location against the request URL.
    with urllib.request.urlopen(origin.url("/old.mp3"), timeout=10) as resp:
        assert resp.status == 200 and resp.read() == DATA


def test_redirect_count_limits_it_and_then_clears_it(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.redirect_to = "http://127.0.0.1:9/elsewhere"
    faults.redirect_count = 2
    assert request(origin, "/a.mp3")[0] == 302
    assert request(origin, "/a.mp3", method="HEAD")[0] == 302
    assert (faults.redirect_to, faults.redirect_count) == (None, 0)
    assert request(origin, "/a.mp3")[:3:2] == (200, DATA)


@pytest.mark.parametrize("relative", [False, True])
def test_redirect_loop_points_at_itself_forever(origin: Origin, relative: bool) -> None:
    origin.redirect_loop("/a.mp3", relative=relative)
    for _ in range(5):
        status, headers, _ = request(origin, "/a.mp3")
        assert status == 302
        assert headers["Location"] == ("/a.mp3" if relative else origin.url("/a.mp3"))
    with pytest.raises(urllib.error.HTTPError, match="infinite loop") as excinfo:
        urllib.request.urlopen(origin.url("/a.mp3"), timeout=10)
    excinfo.value.close()


def test_gzip_compresses_whole_and_ranged_bodies(origin: Origin, tmp_path: Path) -> None:
    source = tmp_path / "song.flac"
    source.write_bytes(DATA)
    origin.add("/song.flac", source)
    for path in ("/a.mp3", "/song.flac"):
        origin.faults(path).gzip = True
        status, headers, body = request(origin, path, {"Accept-Encoding": "identity"})
        assert (status, headers["Content-Encoding"]) == (200, "gzip")
        assert headers["Content-Length"] == str(len(body))
        assert gzip.decompress(body) == DATA
        status, headers, body = request(origin, path, {"Range": "bytes=1000-1999"})
        assert status == 206
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Range"] == f"bytes 1000-1999/{TOTAL}"
        assert headers["Content-Length"] == str(len(body))
        assert gzip.decompress(body) == DATA[1000:2000]
    # HEAD says nothing about an encoding it would not apply.
    assert "Content-Encoding" not in request(origin, "/a.mp3", method="HEAD")[1]


def test_huge_header_pads_every_answer(origin: Origin) -> None:
    origin.faults("/a.mp3").huge_header_bytes = 50_000
    for method in ("GET", "HEAD"):
        head, body = raw_get(origin, "/a.mp3", method=method)
        assert b"\r\nX-Padding: " + b"x" * 50_000 + b"\r\n" in head + b"\r\n"
        assert body == (DATA if method == "GET" else b"")
    # Past http.client's 64 KiB line limit a client must refuse it, not hang.
    origin.faults("/a.mp3").huge_header_bytes = 70_000
    with pytest.raises(http.client.LineTooLong):
        request(origin, "/a.mp3")


def test_unsatisfiable_body_comes_with_the_416(origin: Origin) -> None:
    page = b"<html><body>416 range not satisfiable</body></html>"
    origin.faults("/a.mp3").unsatisfiable_body = page
    status, headers, body = request(origin, "/a.mp3", {"Range": f"bytes={TOTAL}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{TOTAL}"
    assert headers["Content-Length"] == str(len(page))
    assert headers["Content-Type"] == "text/html"
    assert body == page


def test_fresh_etag_changes_validators_and_if_range_follows_the_last(origin: Origin) -> None:
    origin.faults("/a.mp3").fresh_etag = True
    _, first, body1 = request(origin, "/a.mp3")
    _, second, body2 = request(origin, "/a.mp3")
    assert body1 == body2 == DATA
    assert first["ETag"] != second["ETag"]
    assert (
        parsedate_to_datetime(second["Last-Modified"]).timestamp()
        - parsedate_to_datetime(first["Last-Modified"]).timestamp()
    ) == 1
    status, third, body = request(
        origin, "/a.mp3", {"Range": "bytes=10-20", "If-Range": second["ETag"]}
    )
    assert (status, body) == (206, DATA[10:21])
    assert third["ETag"] != second["ETag"]
    # `second` is no longer the latest, so a resume against it gets the whole body.
    status, _, body = request(
        origin, "/a.mp3", {"Range": "bytes=10-20", "If-Range": second["ETag"]}
    )
    assert (status, body) == (200, DATA)
    _, latest, _ = request(origin, "/a.mp3", method="HEAD")
    status, _, body = request(
        origin, "/a.mp3", {"Range": "bytes=10-20", "If-Range": latest["Last-Modified"]}
    )
    assert (status, body) == (206, DATA[10:21])


def test_request_log_names_the_injected_faults(origin: Origin) -> None:
    faults = origin.faults("/a.mp3")
    faults.fail_statuses = [503]
    faults.header_stall_count = 1
    request(origin, "/a.mp3")
    faults.range_shift, faults.range_shift_count = 5, 1
    faults.drop_after, faults.drop_count = 10, 1
    read_short(origin, "/a.mp3", {"Range": "bytes=0-99"})
    request(origin, "/a.mp3", method="HEAD")
    assert origin.wait_idle()
    assert origin.requests_for("/a.mp3") == [
        RequestRecord("GET", "/a.mp3", None, None, 503, 13, "header_stall+fail_status"),
        RequestRecord("GET", "/a.mp3", "bytes=0-99", None, 206, 10, "range_shift+drop"),
        RequestRecord("HEAD", "/a.mp3", None, None, 200, 0),
    ]


CHAOS_SIZE = 100_000
CHAOS_SPAN = 20_000


@dataclass
class Outcome:
    status: int | None
    headers: http.client.HTTPMessage | None
    body: bytes
    error: str | None  # "short" (body ended early), "timeout", or None


def fetch(origin: Origin, path: str, headers: dict[str, str], timeout: float) -> Outcome:
    """GET, giving up on a response silent for `timeout` (connecting may take longer)."""
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        try:
            return Outcome(resp.status, resp.headers, resp.read(), None)
        except http.client.IncompleteRead as exc:
            return Outcome(resp.status, resp.headers, exc.partial, "short")
    except TimeoutError:
        return Outcome(None, None, b"", "timeout")
    finally:
        conn.close()


def looks_correct(out: Outcome, status: int, content_range: str | None, body: bytes) -> bool:
    """What a client checking status, Content-Range, Content-Length and encoding accepts."""
    if out.error is not None or out.headers is None or out.status != status:
        return False
    return (
        out.headers.get("Content-Range") == content_range
        and out.headers.get("Content-Encoding") is None
        and out.headers.get("Content-Length") == str(len(out.body))
        and out.body == body
    )


def check_retry_after(value: str | None) -> None:
    if value is None:
        return
    with_number = True
    try:
        seconds = float(value)
    except ValueError:
        with_number = False
    if with_number:
        assert math.isfinite(seconds) and seconds <= 1, value
        return
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return  # junk, to be survived
    assert when <= time.time() + 1.5, value


def test_chaos_soak_every_fault_is_detectable(origin: Origin) -> None:
    data = DATA[:CHAOS_SIZE]
    origin.add("/chaos.mp3", data)
    origin.chaos(["/chaos.mp3"], rate=0.6, seed=20240601)
    # Unique Range/If-Range values tie each response to its log record. Whole bodies come by a
    # resume whose validator is stale, which must be a plain 200.
    plans: list[tuple[dict[str, str], int, str | None, bytes]] = []
    for i in range(160):
        if i % 4 == 0:
            plans.append(({"Range": "bytes=0-", "If-Range": f'"stale-{i}"'}, 200, None, data))
        else:
            first, last = 1000 + i, 1000 + i + CHAOS_SPAN - 1
            plans.append(
                (
                    {"Range": f"bytes={first}-{last}"},
                    206,
                    f"bytes {first}-{last}/{CHAOS_SIZE}",
                    data[first : last + 1],
                )
            )
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda p: fetch(origin, "/chaos.mp3", p[0], 1.0), plans))
    origin.chaos_off()
    counts = origin.chaos_counts()
    origin.clear_faults()  # ends the stalls the clients gave up on
    assert origin.wait_idle()

    records = {(r.range, r.if_range): r for r in origin.requests_for("/chaos.mp3")}
    assert len(records) == len(plans)
    seen: Counter[str] = Counter()
    for (headers, status, content_range, body), out in zip(plans, outcomes, strict=True):
        fault = records[(headers["Range"], headers.get("If-Range"))].fault
        correct = looks_correct(out, status, content_range, body)
        if fault is None:
            assert correct, (headers, out.status, out.error)
            continue
        name = fault.removeprefix("chaos:")
        seen[name] += 1
        if name == "header_stall":
            # Only late: right when it arrives, a timeout when the client gives up first.
            assert correct or out.error == "timeout"
            continue
        assert not correct, (name, headers)
        if out.error == "timeout":
            assert name == "body_stall"
            continue
        assert out.headers is not None
        if name == "fail_status":
            assert out.status == 503
            check_retry_after(out.headers.get("Retry-After"))
        elif name in ("drop", "body_stall"):
            assert out.error == "short" and len(out.body) < len(body)
            assert body.startswith(out.body)
        elif name == "length_overstates":
            assert out.error == "short" and out.body == body
        elif name == "range_shift":
            assert out.status == 206 and out.body == body
            assert out.headers["Content-Range"] != content_range
        elif name == "ignore_range":
            assert status == 206 and out.status == 200 and out.body == data
        elif name == "gzip":
            assert out.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(out.body) == body
        else:
            raise AssertionError(fault)
    assert seen == Counter({name: n for name, n in counts.items() if n})
    assert set(counts) == set(CHAOS_FAULTS)
    assert all(counts[name] > 0 for name in CHAOS_FAULTS), counts
    # Off again: every answer is clean.
    for headers, status, content_range, body in plans[:4]:
        assert looks_correct(fetch(origin, "/chaos.mp3", headers, 5.0), status, content_range, body)


def test_chaos_spares_head_other_paths_and_stops_when_off(origin: Origin) -> None:
    origin.add("/b.mp3", DATA)
    origin.chaos("/a.mp3", rate=1.0, seed=1)
    for _ in range(5):
        assert request(origin, "/a.mp3", method="HEAD")[0] == 200
        assert request(origin, "/b.mp3")[:3:2] == (200, DATA)
    origin.chaos_off()
    assert request(origin, "/a.mp3")[:3:2] == (200, DATA)
    assert origin.wait_idle()
    assert all(r.fault is None for r in origin.requests)
    assert origin.chaos_counts() == dict.fromkeys(CHAOS_FAULTS, 0)
    # None means every path.
    origin.chaos(None, rate=1.0, seed=1)
    fetch(origin, "/b.mp3", {}, 0.2)
    origin.clear_faults()
    assert origin.wait_idle()
    assert (origin.requests_for("/b.mp3")[-1].fault or "").startswith("chaos:")
    assert sum(origin.chaos_counts().values()) == 1
    with pytest.raises(ValueError):
        origin.chaos(None, rate=1.5, seed=1)


def test_chaos_is_reproducible_from_its_seed() -> None:
    def faults_drawn() -> dict[str | None, str | None]:
        with Origin() as server:
            server.add("/a.mp3", DATA[:CHAOS_SIZE])
            server.chaos(None, rate=0.7, seed=99)
            for i in range(12):
                fetch(server, "/a.mp3", {"Range": f"bytes={i}-{i + 999}"}, 0.2)
            server.clear_faults()
            assert server.wait_idle()
            # By range, not log order: a released stall is logged late, and several race.
            return {r.range: r.fault for r in server.requests}

    drawn = faults_drawn()
    assert len(drawn) == 12
    assert drawn == faults_drawn()
    assert any(drawn.values()) and not all(drawn.values())


def _probe(path: Path) -> tuple[str, float]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type:format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    return info["streams"][0]["codec_type"], float(info["format"]["duration"])


@pytest.mark.skipif(
    not media.ffmpeg_available() or shutil.which("ffprobe") is None, reason="needs ffmpeg"
)
def test_generate_makes_every_format_as_audio_of_the_right_length(tmp_path: Path) -> None:
    files = media.generate(tmp_path, duration=5.0)
    assert sorted(files) == sorted(media.FORMATS)
    for name, path in files.items():
        codec_type, duration = _probe(path)
        assert codec_type == "audio", name
        assert abs(duration - 5.0) <= 0.2, (name, duration)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.skipif(not media.ffmpeg_available(), reason="needs ffmpeg")
def test_generate_is_deterministic_and_keeps_existing_files(tmp_path: Path) -> None:
    first = media.generate(tmp_path / "a", duration=2.0, names=["wav.wav", "flac.flac"])
    second = media.generate(tmp_path / "b", duration=2.0, names=["wav.wav", "flac.flac"])
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name
    stamp = first["wav.wav"].stat().st_mtime_ns
    media.generate(tmp_path / "a", duration=2.0, names=["wav.wav"])
    assert first["wav.wav"].stat().st_mtime_ns == stamp


def test_generate_without_ffmpeg_writes_only_a_wav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "ffmpeg_available", lambda: False)
    files = media.generate(tmp_path, duration=3.5)
    assert list(files) == ["wav.wav"]
    with wave.open(str(files["wav.wav"]), "rb") as w:
        assert w.getnframes() == round(3.5 * w.getframerate())
        frames = w.readframes(w.getnframes())
    # Not silence and not one repeated second: the blocks must differ.
    second = w.getframerate() * 2
    assert frames[:second] != frames[second : 2 * second]
    assert len(set(frames)) > 100


def test_generate_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.xyz"):
        media.generate(tmp_path, duration=1.0, names=["nope.xyz"])
