"""Tests for the loopback origin and the demo media generator.

Owns: checking the origin's HTTP behaviour and fault injection against a real socket, and that
generated media decodes as audio of the requested length.

Must never: reach beyond 127.0.0.1, depend on files outside tmp_path, or pass on approximate
bodies: every body is compared byte for byte with its source.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from kithara_fs.demo import media
from kithara_fs.demo.origin import Origin, RequestRecord

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
