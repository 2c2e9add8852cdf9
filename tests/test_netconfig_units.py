"""Unit tests of the network options: their checks and messages, and where headers go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from kithara_fs.config import parse_config
from kithara_fs.errors import ConfigError
from kithara_fs.net import HttpClient
from kithara_fs.net.scoped import Secret, StreamHeaders

TOKEN = "tok-9a8b7c"


def stream(**keys: Any) -> dict[str, Any]:
    return {"stream": [{"path": "a.mp3", "url": "http://feeds.test/a.mp3", **keys}]}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="c.toml")
    text = str(caught.value)
    assert "\n" not in text and TOKEN not in text, text
    return text


def test_header_values_come_from_text_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t").write_text(f"{TOKEN}\r\n")
    monkeypatch.setenv("KFS_T", TOKEN)
    settings = parse_config(stream(headers={
        "Authorization": f"Bearer {TOKEN}", "X-File": f"@file:{tmp_path / 't'}",
        "X-Env": "@env:KFS_T", "X-At": "@@home"}, user_agent="Own/1"))  # fmt: skip
    requests = settings.streams[0].requests
    assert requests == StreamHeaders(
        (("Authorization", Secret(f"Bearer {TOKEN}")), ("X-At", Secret("@home")),
         ("X-Env", Secret(TOKEN)), ("X-File", Secret(TOKEN))), "Own/1")  # fmt: skip
    assert TOKEN not in repr(settings) and TOKEN not in str(requests.headers[0][1])


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Range": "bytes=0-"}, "headers: Range: not allowed (kithara_fs sets it)"),
        ({"User-Agent": "x"}, "headers: User-Agent: not allowed (use user_agent)"),
        ({"Bad Name": "x"}, "headers: 'Bad Name' is not a header name"),
        ({"X-A": f"{TOKEN}\nX-B: 1"}, "X-A: the value holds a line break"),
        ({"X-A": f"{TOKEN}é"}, "X-A: the value holds a line break, control character or non-AS"),
        ({"X-A": "@env:KFS_NOT_SET_ANYWHERE"}, "environment variable KFS_NOT_SET_ANYWHERE is no"),
        ({"X-A": "@file:/nonexistent/token"}, "X-A: cannot read /nonexistent/token: No such"),
        ({"X-A": "@token"}, "starts with @ but is neither @file: nor @env:"),
        ({"X-A": 5}, "X-A: must be a string"),
        ({"X-A": "  "}, "X-A: the value is empty"),
    ],
)  # fmt: skip
def test_a_bad_header_is_one_line_without_its_value(headers: dict[str, Any], message: str) -> None:
    text = error_of(stream(headers=headers))
    assert text.startswith("c.toml: stream 1 (a.mp3): ") and message in text, text


def test_a_header_file_that_is_not_ascii_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(TOKEN.encode() + b"\xff")
    text = error_of(stream(headers={"X-A": f"@file:{tmp_path / 't'}"}))
    assert f"the text of {tmp_path / 't'} is not ASCII" in text


def test_a_header_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = error_of(stream(headers={"X-A": f"@file:{fifo}"}))  # would block on open()
    assert f"X-A: cannot read {fifo}: not a regular file" in text
    assert "not a regular file" in error_of({"network": {"ca_file": str(fifo)}})


def test_headers_in_any_order_or_case_are_the_same_request() -> None:
    data = {"stream": [
        {"path": "a.mp3", "url": "http://h/x.mp3", "headers": {"X-A": "1", "Cookie": "s=1"}},
        {"path": "b.mp3", "url": "http://h/x.mp3", "headers": {"cookie": "s=1", "x-a": "1"}},
    ]}  # fmt: skip
    assert len(parse_config(data).streams) == 2


def test_one_url_asked_for_in_two_ways_is_refused() -> None:
    data = {"stream": [{"path": "a.mp3", "url": "http://h/x.mp3", "headers": {"X-A": "1"}},
                       {"path": "b.mp3", "url": "http://h/x.mp3"}]}  # fmt: skip
    assert "stream 2 (b.mp3): headers: stream 1 names the same URL" in error_of(data)


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"proxy": "socks5://p:1080"}, "proxy: must be an http:// or https:// URL"),
        ({"proxy": f"http://me:{TOKEN}@"}, "proxy: must be an http:// or https:// URL"),
        ({"proxy": 3128}, "proxy: must be a URL"),
        ({"ca_file": "/nonexistent.pem"}, "ca_file: cannot read /nonexistent.pem"),
        ({"max_connections": 0}, "max_connections: must be a whole number from 4 to 1000"),
        ({"max_connections": 3}, "max_connections: must be a whole number from 4 to 1000"),
        ({"max_connections": True}, "max_connections"),
    ],
)  # fmt: skip
def test_bad_network_options_are_one_line(network: dict[str, Any], message: str) -> None:
    text = error_of({"network": network})
    assert text.startswith("c.toml: [network] ") and message in text, text


def test_a_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    text = error_of({"network": {"ca_file": str(tmp_path / "ca.pem")}})
    assert "holds no PEM certificate" in text


def test_network_defaults() -> None:
    network = parse_config({}).network
    assert (network.proxy, network.ca_file, network.max_connections) == (None, None, 64)
    assert parse_config({"network": {"proxy": ""}}).network.proxy == ""


async def test_headers_go_to_the_streams_own_origin_only() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/hop":
            return httpx.Response(302, headers={"Location": "http://cdn.test/a.mp3"})
        if request.url.path == "/up":
            return httpx.Response(302, headers={"Location": "https://feeds.test/a.mp3"})
        if request.url.path == "/down":
            return httpx.Response(302, headers={"Location": "http://feeds.test/a.mp3"})
        return httpx.Response(206, content=b"x", headers={"Content-Range": "bytes 0-0/10"})

    extra = StreamHeaders((("X-Token", Secret(TOKEN)),), "Own/1")
    async with HttpClient(transport=httpx.MockTransport(answer)) as http:
        view = http.for_stream("http://feeds.test/feed.xml", extra)
        assert http.for_stream("http://feeds.test/other", extra) is view
        assert http.for_stream("http://feeds.test/x", StreamHeaders()) is http
        for path in ("/hop", "/up"):
            await view.probe(f"http://feeds.test{path}")
        await http.probe("http://feeds.test/plain")
        secure = http.for_stream("https://feeds.test/feed.xml", extra)
        await secure.probe("https://feeds.test/down")
        await secure.probe("https://feeds.test:8443/a.mp3")
    got = [(str(r.url), r.headers.get("X-Token"), r.headers.get("User-Agent")) for r in seen]
    assert got[0] == ("http://feeds.test/hop", TOKEN, "Own/1")
    assert got[1] == ("http://cdn.test/a.mp3", None, "Own/1"), "not to another host"
    assert got[2] == ("http://feeds.test/up", TOKEN, "Own/1")
    assert got[3] == ("https://feeds.test/a.mp3", TOKEN, "Own/1"), "an upgrade to https stays"
    assert got[4][1] is None and got[4][2] != "Own/1", "the mount's other streams carry neither"
    assert got[5] == ("https://feeds.test/down", TOKEN, "Own/1")
    assert got[6] == ("http://feeds.test/a.mp3", None, "Own/1"), "never down to plain http"
    assert got[7] == ("https://feeds.test:8443/a.mp3", None, "Own/1"), "nor to another port"
