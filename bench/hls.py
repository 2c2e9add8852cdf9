"""HLS: a fresh mount's first bytes and seeks on a one-hour programme, against the players'
own HLS clients reading the same playlist.

Owns: making the programme once (3,600 s of AAC in MPEG-TS, 6 s segments: 600 segments and
a VOD media playlist, under bench/.media/hls-3600s), and three measurements per link, each
from a fresh start with an empty cache:

- kithara_fs: from starting ``kithara-fs mount`` to holding the first 64 KiB of the variant
  file (``stream.ts``); and, on another fresh mount, ``ffmpeg -ss 1800`` on that file;
- ffmpeg reading the playlist URL itself: time to its first 64 KiB of ``-c copy`` output,
  and ``ffmpeg -ss 1800`` on the URL;
- streamlink (when installed): time to its first 64 KiB on stdout.

Process start is included for all of them (each is a program a user starts). Run.py calls
:func:`measure` with the origin it started; ``python bench/hls.py`` runs it alone on the
LAN link (``--delay 0.02`` for the network link's latency).

Must never leave a mount or a process behind, or talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mounts import KITHARA_FS, unmount
from shaped_origin import Shape, ShapedOrigin
from workloads import READ_SIZE, ffmpeg_seek, median

from kithara_fs.demo.media import lavfi_signal

SECONDS = 3600
SEGMENT_SECONDS = 6
SEEK_TO = 1800
REPEATS = 3
TIMEOUT = 60.0


def programme(root: Path) -> dict[str, Path]:
    """The programme's files (origin path below the folder -> local file), made once."""
    folder = root / f"hls-{SECONDS}s"
    playlist = folder / "index.m3u8"
    if not playlist.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
             lavfi_signal(SECONDS), "-c:a", "aac", "-b:a", "64k", "-f", "hls",
             "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
             "-hls_segment_filename", str(folder / "seg%03d.ts"), str(playlist) + ".tmp.m3u8"],
            check=True, capture_output=True, timeout=1800,
        )  # fmt: skip
        os.replace(str(playlist) + ".tmp.m3u8", playlist)
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix in (".ts", ".m3u8")}


def _first_bytes_of(command: list[str]) -> float:
    """Seconds from starting ``command`` to its first 64 KiB on stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        got = 0
        while got < READ_SIZE:
            chunk = os.read(proc.stdout.fileno(), READ_SIZE - got)
            if not chunk:
                raise OSError(f"{command[0]} ended after {got} bytes")
            got += len(chunk)
        return time.perf_counter() - start
    finally:
        proc.kill()  # by pid: the process this call started
        proc.wait(10)


class _Mount:
    """A fresh kithara_fs mount of the one programme, with an empty cache."""

    def __init__(self, workdir: Path, url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hls-", dir=workdir))
        self.mountpoint = self.dir / "mnt"
        self.mountpoint.mkdir()
        self.config = self.dir / "streams.toml"
        self.config.write_text(f'[cache]\ndir = "{self.dir / "cache"}"\n\n'
                               f'[[stream]]\npath = "prog"\nurl = "{url}"\n')  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the daemon; returns the clock reading just before it was started."""
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(KITHARA_FS), "mount", "--foreground", str(self.config), str(self.mountpoint)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "daemon.log", "wb"), start_new_session=True,  # noqa: SIM115
        )  # fmt: skip
        return began

    @property
    def file(self) -> Path:
        return self.mountpoint / "prog" / "stream.ts"

    def first_bytes(self, began: float) -> float:
        """Seconds from ``began`` to the first 64 KiB of the variant file."""
        deadline = began + TIMEOUT
        while time.perf_counter() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise OSError(f"kithara-fs exited with {self.proc.returncode}")
            try:
                fd = os.open(self.file, os.O_RDONLY)
            except OSError:
                time.sleep(0.002)  # not mounted (or not listed) yet
                continue
            try:
                data = os.pread(fd, READ_SIZE, 0)
            finally:
                os.close(fd)
            if len(data) != READ_SIZE:
                raise OSError(f"first read returned {len(data)} bytes")
            return time.perf_counter() - began
        raise OSError("no first bytes within the timeout")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.file.parent.is_dir():
            if time.monotonic() > deadline:
                raise OSError("the mount did not list the programme")
            time.sleep(0.01)

    def stop(self) -> None:
        try:
            unmount(self.mountpoint, self.proc)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def measure(origin: ShapedOrigin, folder: str, workdir: Path) -> dict[str, Any]:
    """Every HLS figure for the programme served at ``/<folder>/index.m3u8``."""
    url = origin.url(f"/{folder}/index.m3u8")
    out: dict[str, Any] = {"kithara_fs": {}, "ffmpeg": {}, "streamlink": {}}
    first: list[float] = []
    seek: list[float] = []
    for _ in range(REPEATS):
        mount = _Mount(workdir, url)
        try:
            first.append(mount.first_bytes(mount.start()))
        finally:
            mount.stop()
        mount = _Mount(workdir, url)
        try:
            mount.start()
            mount.wait_ready()
            seek.append(ffmpeg_seek(str(mount.file), SEEK_TO))
        finally:
            mount.stop()
    out["kithara_fs"] = {"first_64k_s": first, "ffmpeg_ss_s": seek}
    copy = ["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-c", "copy", "-f", "mpegts", "-"]
    out["ffmpeg"] = {
        "first_64k_s": [_first_bytes_of(copy) for _ in range(REPEATS)],
        "ffmpeg_ss_s": [ffmpeg_seek(url, SEEK_TO) for _ in range(REPEATS)],
    }
    if shutil.which("streamlink"):
        command = ["streamlink", "--stdout", "--loglevel", "none", f"hls://{url}", "best"]
        out["streamlink"] = {"first_64k_s": [_first_bytes_of(command) for _ in range(REPEATS)]}
    return out


def rows(figures: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """(metric, value per client) for the table."""

    def value(client: str, key: str) -> float | None:
        values = figures.get(client, {}).get(key)
        return median(values) if values else None

    return [
        ("fresh mount → first 64 KiB of the variant (median)",
         {c: value(c, "first_64k_s") for c in ("kithara_fs", "ffmpeg", "streamlink")}),
        (f"`ffmpeg -ss {SEEK_TO}` on a fresh mount / on the playlist (median)",
         {c: value(c, "ffmpeg_ss_s") for c in ("kithara_fs", "ffmpeg", "streamlink")}),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds the origin waits before each answer (0.02: the bench's "
                             "network link)")  # fmt: skip
    args = parser.parse_args(argv)
    bench = Path(__file__).resolve().parent
    files = programme(bench / ".media")
    origin = ShapedOrigin({f"/hls/{n}": p for n, p in files.items()},
                          {f"/hls/{n}": Shape(args.delay, None) for n in files})  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="kfs-hls-"))
    try:
        origin.start()
        figures = measure(origin, "hls", workdir)
    finally:
        origin.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for metric, values in rows(figures):
        shown = ", ".join(f"{c} {v:.3f} s" for c, v in values.items() if v is not None)
        print(f"{metric}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
