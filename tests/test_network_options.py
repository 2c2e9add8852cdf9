"""Acceptance: the network options, each against a loopback origin that records requests.

Owns the promises of ``[network]`` (``proxy`` and the proxy environment, ``user_agent``,
``ca_file``, ``max_connections``) and of a stream's ``headers`` (literal, ``@file:``,
``@env:``) and ``user_agent``: each reaches the wire as the README says, a stream's headers
reach only its own origin, and no header value shows in the log, the attributes, the status
file or ``kithara-fs status``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse, sha256
from .mounting import Mount, clean_env, wait_until

pytestmark = needs_fuse

LITERAL = "Bearer literal-4f1c9a"
FROM_FILE = "file-token-77d0e2"
FROM_ENV = "env-token-c3a9b5"
SECRETS = (LITERAL, FROM_FILE, FROM_ENV)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def every_visible_text(m: Mount, paths: list[Path]) -> str:
    """What a user or a log reader can see: the daemon's log (at debug level), every
    attribute of every file, the status file and ``kithara-fs status``."""
    seen = [m.log_text(), m.path(".kithara/status.json").read_text()]
    for path in paths:
        for name in os.listxattr(path):
            seen.append(f"{name}={os.getxattr(path, name)!r}")
    shown = subprocess.run([sys.executable, "-m", "kithara_fs", "status", "--json",
                            str(m.mountpoint)], capture_output=True, text=True,
                           env=clean_env(), timeout=60)  # fmt: skip
    seen += [shown.stdout, shown.stderr]
    return "\n".join(seen)


def test_stream_headers_from_literal_file_and_environment(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(FROM_FILE + "\n")
    # /hop redirects to the same origin under another name: another origin for the rules.
    origin.faults("/hop").redirect_to = f"http://localhost:{origin.port}/vbr.mp3"
    m = mount(
        {
            "lit.flac": {"url": origin.url("/flac.flac"), "headers": {"Authorization": LITERAL}},
            "file.mp3": {"url": origin.url("/cbr.mp3"),
                         "headers": {"X-Token": f"@file:{token_file}"}},
            "env.ogg": {"url": origin.url("/vorbis.ogg"), "headers": {"X-Key": "@env:KFS_KEY"},
                        "user_agent": "OwnAgent/2"},
            "plain.wav": origin.url("/wav.wav"),
            "moved.mp3": {"url": origin.url("/hop"), "headers": {"X-Key": "@env:KFS_KEY"}},
        },
        env={"KFS_KEY": FROM_ENV},
        network={"user_agent": "MountAgent/1"},
    )
    files = {"lit.flac": "flac.flac", "file.mp3": "cbr.mp3", "env.ogg": "vorbis.ogg",
             "plain.wav": "wav.wav", "moved.mp3": "vbr.mp3"}  # fmt: skip
    for name, original in files.items():
        assert sha256(read(m.path(name))) == sha256(media_files[original].read_bytes()), name
    origin.wait_idle()

    def sent(path: str, header: str) -> set[str | None]:
        records = origin.requests_for(path)
        assert records, path
        return {record.header(header) for record in records}

    assert sent("/flac.flac", "Authorization") == {LITERAL}
    assert sent("/cbr.mp3", "X-Token") == {FROM_FILE}
    assert sent("/vorbis.ogg", "X-Key") == {FROM_ENV}
    assert sent("/vorbis.ogg", "User-Agent") == {"OwnAgent/2"}
    for path in ("/flac.flac", "/cbr.mp3", "/wav.wav"):
        assert sent(path, "User-Agent") == {"MountAgent/1"}, path
    plain = origin.requests_for("/wav.wav")
    assert not [r for r in plain if {"authorization", "x-token", "x-key"} & {
        k.lower() for k, _ in r.headers}]  # fmt: skip
    # The redirect's first hop is the stream's own origin; the target is not.
    assert sent("/hop", "X-Key") == {FROM_ENV}
    assert sent("/vbr.mp3", "X-Key") == {None}
    assert {r.header("Host") for r in origin.requests_for("/vbr.mp3")} == {
        f"localhost:{origin.port}"}  # fmt: skip

    visible = every_visible_text(m, [m.path(name) for name in files])
    assert "moved.mp3" in visible and "cached" in visible, "the texts searched are real"
    for secret in SECRETS:
        assert secret not in visible


def test_a_bad_header_is_one_line_that_shows_no_value(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[stream]]\npath = "a.mp3"\nurl = "http://127.0.0.1:9/a.mp3"\n'
        'headers = { Authorization = "@env:KFS_MISSING" }\n'
        '[[stream]]\npath = "b.mp3"\nurl = "http://127.0.0.1:9/b.mp3"\n'
        'headers = { X-Token = "secret-\\u0007-value" }\n'
    )
    env = {k: v for k, v in clean_env().items() if k != "KFS_MISSING"}
    done = subprocess.run([sys.executable, "-m", "kithara_fs", "check", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "stream 1 (a.mp3): headers: Authorization: environment variable KFS_MISSING is " \
           "not set" in lines[0]  # fmt: skip
    config.write_text(config.read_text().replace("@env:KFS_MISSING", "fine"))
    done = subprocess.run([sys.executable, "-m", "kithara_fs", "check", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "stream 2 (b.mp3): headers: X-Token: the value holds a line break, control " \
           "character or non-ASCII text" in done.stderr  # fmt: skip
    assert "secret" not in done.stderr


@pytest.fixture
def proxy(media_files: dict[str, Path]) -> Iterator[Origin]:
    """A recording stand-in for a forward proxy: an origin that answers absolute-form
    requests (``GET http://host/path``) from its own copies of the files."""
    with Origin() as server:
        for name, path in media_files.items():
            server.add(f"/{name}", path)
        yield server


@pytest.fixture
def elsewhere() -> Iterator[Origin]:
    """The origin the stream URLs name: it serves nothing, so a byte that arrives came
    through the proxy."""
    with Origin() as server:
        yield server


@pytest.mark.parametrize("how", ["environment", "config"])
def test_requests_go_through_the_proxy(
    how: str, proxy: Origin, elsewhere: Origin, mount: MountFactory,
    media_files: dict[str, Path],
) -> None:  # fmt: skip
    address = f"http://127.0.0.1:{proxy.port}"
    streams = {"a.flac": elsewhere.url("/flac.flac")}
    if how == "environment":
        m = mount(streams, env={"HTTP_PROXY": address})
    else:
        m = mount(streams, network={"proxy": address}, env={"HTTP_PROXY": "http://127.0.0.1:9"})
    assert read(m.path("a.flac")) == media_files["flac.flac"].read_bytes()
    assert elsewhere.requests == []
    assert proxy.requests_for("/flac.flac")
    assert {r.header("Host") for r in proxy.requests_for("/flac.flac")} == {
        f"127.0.0.1:{elsewhere.port}"}  # fmt: skip


def test_proxy_empty_ignores_the_environment(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    dead = "http://127.0.0.1:9"
    m = mount({"a.flac": origin.url("/flac.flac")}, network={"proxy": ""},
              env={"HTTP_PROXY": dead, "ALL_PROXY": dead})  # fmt: skip
    assert read(m.path("a.flac")) == media_files["flac.flac"].read_bytes()


@pytest.fixture
def tls_origin(media_files: dict[str, Path], tmp_path: Path) -> Iterator[tuple[Origin, Path]]:
    """An HTTPS origin on 127.0.0.1 whose certificate comes from a CA of the test's own,
    and that CA's PEM file."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    with Origin(tls=context) as server:
        server.add("/flac.flac", media_files["flac.flac"])
        yield server, pem


def test_ca_file_trusts_a_private_ca(
    tls_origin: tuple[Origin, Path], mount: MountFactory, media_files: dict[str, Path]
) -> None:
    server, pem = tls_origin
    url = server.url("/flac.flac")
    assert url.startswith("https://127.0.0.1:")
    m = mount({"a.flac": url}, network={"ca_file": str(pem)})
    assert m.path("a.flac").stat().st_size == media_files["flac.flac"].stat().st_size
    assert read(m.path("a.flac")) == media_files["flac.flac"].read_bytes()


def test_without_ca_file_the_private_ca_is_refused(
    tls_origin: tuple[Origin, Path], mount: MountFactory
) -> None:
    server, _ = tls_origin
    m = mount({"a.flac": server.url("/flac.flac")}, read_timeout=3, metadata_timeout=2)
    m.expect_log(r"TLS certificate not trusted")
    with pytest.raises(OSError):
        read(m.path("a.flac"))
    assert server.requests == [], "no request was sent over an untrusted connection"
    line = next(x for x in m.log_text().splitlines() if "TLS certificate not trusted" in x)
    assert "a private CA goes in [network] ca_file" in line, line


def test_max_connections_bounds_the_connections_at_once(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    names = ["flac.flac", "wav.wav", "cbr.mp3", "vorbis.ogg", "aac.m4a", "opus.opus"]
    for name in names:
        origin.faults(f"/{name}").rate = 8_000_000
    m = mount({name: origin.url(f"/{name}") for name in names},
              network={"max_connections": 4})  # fmt: skip
    results: dict[str, bytes] = {}
    pid = m.process.pid  # type: ignore[union-attr]
    peak = 0
    done = threading.Event()

    def reader(name: str) -> None:
        results[name] = read(m.path(name))

    def watch() -> None:
        # Counted on the daemon's side: the origin's own count lags, since its threads see
        # a closed connection only at their next write.
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(open_connections(pid, origin.port)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=reader, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done.set()
    watcher.join()
    for name in names:
        assert results[name] == media_files[name].read_bytes(), name
    # Two lanes for the size probes, two connections for six readers' downloads.
    assert 2 <= peak <= 4, peak


def open_connections(pid: int, port: int) -> set[int]:
    """The socket inodes of ``pid``'s established TCP connections to 127.0.0.1:``port``."""
    mine = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    mine.add(int(target[8:-1]))
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], int(fields[9])
            if state == "01" and remote == f"0100007F:{port:04X}" and inode in mine:
                found.add(inode)
    return found


def test_a_reload_sends_a_rotated_token_from_then_on(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("token-before-1\n")
    secret = {"X-Token": f"@file:{token}"}
    m = mount({"a.flac": {"url": origin.url("/flac.flac"), "headers": secret},
               "b.wav": origin.url("/wav.wav")}, readahead_seconds=1)  # fmt: skip
    with open(m.path("a.flac"), "rb") as f:
        head = f.read(65536)
    origin.wait_idle()
    before = len(origin.requests_for("/flac.flac"))
    before_b = len(origin.requests_for("/wav.wav"))
    token.write_text("token-after-2\n")
    # b gains a header at the same reload: its source existed without one.
    m.config.write_text(m.config.read_text().replace(
        f'url = "{origin.url("/wav.wav")}"',
        f'url = "{origin.url("/wav.wav")}"\nheaders = {{ X-Token = "@file:{token}" }}'))
    done = subprocess.run([sys.executable, "-m", "kithara_fs", "reload", str(m.mountpoint)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "reloaded" in m.log_text(), "the reload")
    with open(m.path("a.flac"), "rb") as f:
        f.seek(len(head))
        rest = f.read()
    assert head + rest == media_files["flac.flac"].read_bytes()
    assert read(m.path("b.wav")) == media_files["wav.wav"].read_bytes()
    origin.wait_idle()
    later = origin.requests_for("/flac.flac")[before:]
    assert later and {r.header("X-Token") for r in later} == {"token-after-2"}
    later_b = origin.requests_for("/wav.wav")[before_b:]
    assert later_b and {r.header("X-Token") for r in later_b} == {"token-after-2"}
