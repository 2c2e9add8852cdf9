"""Test helper: a real Icecast 2 server on loopback, fed by ffmpeg sources, always cleaned up.

Owns one folder it creates under the directory it is given (config, logs), an ``icecast2``
process listening on a free 127.0.0.1 port, and the ``ffmpeg`` sources it starts; on exit it
stops every one of those processes by PID (terminate, then kill) and leaves the folder for
the caller's ``tmp_path`` cleanup. It must never signal a process it did not start (no
pkill/killall, no process groups), never touch anything outside its folder, never listen
beyond 127.0.0.1 and never go through a proxy.

Icecast refuses to run as root: when the tests run as root the server runs as ``nobody``
(Popen ``user=``/``group=``, so the PID we hold is icecast itself, not a wrapper). Its
working directory is the folder and every path it opens there is relative, so the folder's
ancestors (pytest's 0700 ``/tmp/pytest-of-root``) need not be reachable by ``nobody``.
"""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

from .lifecycle import StartsAndStops, free_port, tail

WEBROOT = "/usr/share/icecast2/web"
ADMINROOT = "/usr/share/icecast2/admin"
START_SECONDS = 15.0  # bound on icecast answering, and on a mount appearing or going
STOP_SECONDS = 5.0  # grace after SIGTERM before SIGKILL

# codec → ffmpeg encoder, muxer, Content-Type the source announces
CODECS: dict[str, tuple[str, str, str]] = {
    "mp3": ("libmp3lame", "mp3", "audio/mpeg"),
    "opus": ("libopus", "ogg", "audio/ogg"),
    "aac": ("aac", "adts", "audio/aac"),
}


def icecast_available() -> bool:
    """Both the server and the source client are installed."""
    return shutil.which("icecast2") is not None and shutil.which("ffmpeg") is not None


def _no_proxy_env() -> dict[str, str]:
    """ffmpeg's http protocol honours http_proxy; loopback traffic must go straight there."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one process we started, by its PID; kill it if it ignores that."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_SECONDS)


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {seconds:g} s waiting for: {what}")
        time.sleep(0.05)


class Icecast(StartsAndStops):
    """``with Icecast(tmp_path) as ice:`` — a running server; sources via ``start_source``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.source_password = secrets.token_hex(12)
        self.admin_password = secrets.token_hex(12)
        self.folder: Path | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._sources: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._as_nobody = os.geteuid() == 0

    # -- lifecycle --------------------------------------------------------------------------

    def _start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="icecast-", dir=self.directory))
        self.port = free_port()
        config = self.folder / "icecast.xml"
        config.write_text(self._config())
        config.chmod(0o644)
        extra: dict[str, Any] = {}
        if self._as_nobody:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.folder, nobody.pw_uid, nobody.pw_gid)
            os.chown(config, nobody.pw_uid, nobody.pw_gid)
            extra = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.folder.chmod(0o755)
        log = self._log("icecast.out")
        self._server = subprocess.Popen(
            ["icecast2", "-c", "icecast.xml"],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_no_proxy_env(),
            **extra,
        )
        deadline = time.monotonic() + START_SECONDS
        while not self._answers():
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"icecast2 exited with {self._server.returncode} before answering\n"
                    + self._server_logs()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"icecast2 did not answer on 127.0.0.1:{self.port} within "
                    f"{START_SECONDS:g} s\n" + self._server_logs()
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every source and then the server, each by the PID we started it with."""
        for proc in self._sources:
            _stop(proc)
        self._sources.clear()
        if self._server is not None:
            _stop(self._server)
            self._server = None
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def _log(self, name: str) -> IO[bytes]:
        assert self.folder is not None
        handle = open(self.folder / name, "ab")  # noqa: SIM115 (closed in close())
        self._logs.append(handle)
        return handle

    def _server_logs(self) -> str:
        assert self.folder is not None
        return "\n".join(tail(self.folder / n) for n in ("icecast.out", "error.log"))

    def _config(self) -> str:
        e = escape
        return f"""<icecast>
    <location>loopback</location>
    <admin>test@localhost</admin>
    <hostname>127.0.0.1</hostname>
    <limits>
        <clients>100</clients>
        <sources>16</sources>
        <queue-size>524288</queue-size>
        <client-timeout>30</client-timeout>
        <header-timeout>15</header-timeout>
        <source-timeout>10</source-timeout>
        <burst-on-connect>1</burst-on-connect>
    </limits>
    <authentication>
        <source-password>{e(self.source_password)}</source-password>
        <relay-password>{e(secrets.token_hex(12))}</relay-password>
        <admin-user>admin</admin-user>
        <admin-password>{e(self.admin_password)}</admin-password>
    </authentication>
    <listen-socket>
        <port>{self.port}</port>
        <bind-address>127.0.0.1</bind-address>
    </listen-socket>
    <fileserve>1</fileserve>
    <paths>
        <basedir>.</basedir>
        <logdir>.</logdir>
        <webroot>{WEBROOT}</webroot>
        <adminroot>{ADMINROOT}</adminroot>
    </paths>
    <logging>
        <accesslog>access.log</accesslog>
        <errorlog>error.log</errorlog>
        <loglevel>3</loglevel>
        <logsize>1024</logsize>
    </logging>
    <security>
        <chroot>0</chroot>
    </security>
</icecast>
"""

    # -- HTTP --------------------------------------------------------------------------------

    def url(self, mount: str) -> str:
        """A listener's URL for a mount, e.g. ``http://127.0.0.1:PORT/radio.mp3``."""
        return f"http://127.0.0.1:{self.port}{mount}"

    def _admin(self, path_and_query: str, timeout: float = 5.0) -> bytes:
        request = urllib.request.Request(self.url(path_and_query))
        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
        with self._opener.open(request, timeout=timeout) as answer:
            body: bytes = answer.read()
        return body

    def _answers(self) -> bool:
        try:
            self._admin("/admin/stats", timeout=1.0)
        except (OSError, urllib.error.URLError):
            return False
        return True

    def _stats(self) -> ET.Element:
        return ET.fromstring(self._admin("/admin/stats"))

    def sources(self) -> set[str]:
        """The mounts that have a live source right now.

        A mount with listeners parked on its fallback stays in the stats without a source,
        showing only listener fields; a live one always has ``stream_start``.
        """
        return {
            mount
            for source in self._stats().iter("source")
            if (mount := source.get("mount")) is not None
            and source.find("stream_start") is not None
        }

    def listeners(self, mount: str) -> int:
        """The mount's current listener count, 0 if the mount is not live."""
        for source in self._stats().iter("source"):
            if source.get("mount") == mount:
                return int(source.findtext("listeners") or 0)
        return 0

    def set_title(self, mount: str, title: str, *, charset: str | None = None) -> None:
        """Set the mount's StreamTitle through the admin interface (title sent as UTF-8)."""
        query = urllib.parse.urlencode(
            {"mount": mount, "mode": "updinfo", "song": title}
            | ({"charset": charset} if charset is not None else {}),
            quote_via=urllib.parse.quote,
        )
        try:
            body = self._admin(f"/admin/metadata?{query}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(
                f"metadata update on {mount} refused: {error.code} {detail}"
            ) from error
        # An Ogg mount answers 200 with <return>1</return> too, but the message says it
        # ignored the update ("Mountpoint will not accept URL updates").
        answer = ET.fromstring(body)
        if answer.findtext("message") != "Metadata update successful":
            raise RuntimeError(f"metadata update on {mount} refused: {body.decode()!r}")

    # -- sources -----------------------------------------------------------------------------

    def start_source(
        self,
        mount: str = "/radio.mp3",
        *,
        codec: str = "mp3",
        name: str = "Test FM",
        genre: str = "Testing",
        bitrate: str = "128k",
        frequency: int = 440,
        announce_bitrate: bool = False,
    ) -> subprocess.Popen[bytes]:
        """An ffmpeg source playing a sine in real time; returns once the mount is live.

        ffmpeg's icecast protocol sends no bitrate header, so listeners get no ``icy-br``.
        ``announce_bitrate`` adds ``Ice-Audio-Info: bitrate=N;...`` by riding a CRLF in the
        ``Ice-Description`` value (ffmpeg copies it verbatim); Icecast then answers listeners
        with ``icy-br: N`` and ``ice-audio-info``.
        """
        assert self._server is not None, "use Icecast inside a with block"
        assert mount.startswith("/"), mount
        encoder, muxer, content_type = CODECS[codec]
        target = f"icecast://source:{self.source_password}@127.0.0.1:{self.port}{mount}"
        description: list[str] = []
        if announce_bitrate:
            kbps = int(bitrate.lower().removesuffix("k"))
            info = f"bitrate={kbps};samplerate=44100;channels=2"
            description = ["-ice_description", f"{name}\r\nIce-Audio-Info: {info}"]
        log = self._log(f"ffmpeg{mount.replace('/', '_')}.log")
        command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
                   "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=44100",
                   "-ac", "2", "-c:a", encoder, "-b:a", bitrate, "-f", muxer,
                   "-content_type", content_type, "-ice_name", name, "-ice_genre", genre,
                   *description, "-ice_public", "0", target]  # fmt: skip
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_no_proxy_env(),
        )
        self._sources.append(proc)
        deadline = time.monotonic() + START_SECONDS
        while mount not in self.sources():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                log.flush()
                raise RuntimeError(
                    f"source {mount} ({codec}) never went live (ffmpeg rc={proc.returncode})\n"
                    + tail(Path(log.name))
                    + "\n"
                    + self._server_logs()
                )
            time.sleep(0.05)
        return proc

    def stop_source(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a source we started and wait until its mount is gone from the stats."""
        args = proc.args
        assert isinstance(args, list) and proc in self._sources, "not a source of ours"
        mount = urllib.parse.urlsplit(str(args[-1])).path
        _stop(proc)
        self._sources.remove(proc)
        _wait_for(lambda: mount not in self.sources(), f"{mount} to leave the stats")
