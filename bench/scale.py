"""Scale: how mounting and the first `ls -lR` grow with the number of streams.

Owns one measurement per size (1,000 and 10,000 streams by default, in folders of 1,000):
the time from starting `kithara-fs mount --foreground` until the mount point lists; the time
of the first `ls -lR` and how many files it shows with their real size; the same `ls -lR`
after a remount with the origin gone (offline, sizes from the cache index); and the daemon's
RSS. The origin is the project's loopback origin, in this process, serving 64 KiB per path.

Run: `.venv/bin/python bench/scale.py [--streams 1000 10000]`. It prints a table (and, with
`--json FILE`, the raw figures). Timings are this machine's; the ratios between sizes are
what the speed issue judges ("10x the streams costs at most 12x").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kithara_fs.demo.origin import Origin

FOLDER = 1000
DATA = bytes(range(256)) * 256  # 64 KiB per stream
FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"


def write_config(path: Path, cache: Path, urls: list[str]) -> None:
    lines = [f'[cache]\ndir = "{cache}"\n']
    for index, url in enumerate(urls):
        lines.append(f'[[stream]]\npath = "d{index // FOLDER:02}/{index:05}.mp3"\nurl = "{url}"\n')
    path.write_text("\n".join(lines))


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


class Mounted:
    def __init__(self, config: Path, mountpoint: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir(exist_ok=True)
        started = time.monotonic()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kithara_fs", "mount", "--foreground", str(config),
                 str(mountpoint)], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = started + 900
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"kithara-fs exited with {self.process.returncode}")
            if os.path.ismount(mountpoint):
                try:
                    os.listdir(mountpoint)
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the mount did not answer within 15 minutes")
            time.sleep(0.02)
        self.ready = time.monotonic() - started

    def ls(self) -> tuple[float, int, int]:
        """Seconds for `ls -lR`, files listed, files listed with their real size."""
        started = time.monotonic()
        done = subprocess.run(["ls", "-lR", str(self.mountpoint)], capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        seconds = time.monotonic() - started
        files = [line.split() for line in done.stdout.splitlines() if line.endswith(".mp3")]
        sized = sum(1 for fields in files if fields[4] == str(len(DATA)))
        return seconds, len(files), sized

    def stop(self) -> None:
        subprocess.run([FUSERMOUNT, "-u", str(self.mountpoint)], capture_output=True)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            subprocess.run([FUSERMOUNT, "-uz", str(self.mountpoint)], capture_output=True)


def measure(count: int, workdir: Path, delay: float, keep: bool = False) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{count}-", dir=workdir))
    origin = Origin().start()
    try:
        urls = [origin.add(f"/s/{i}.mp3", DATA) for i in range(count)]
        for i in range(count):
            origin.faults(f"/s/{i}.mp3").delay = delay
        config = folder / "streams.toml"
        write_config(config, folder / "cache", urls)
        mounted = Mounted(config, folder / "mnt", folder / "daemon.log")
        try:
            seconds, listed, sized = mounted.ls()
            figures = {"streams": count, "mount_s": mounted.ready, "ls_s": seconds,
                       "listed": listed, "sized": sized, "rss_mib": rss_mib(mounted.process.pid)}
        finally:
            mounted.stop()
    finally:
        origin.stop()
    offline = Mounted(config, folder / "mnt", folder / "daemon.log")
    try:
        seconds, listed, sized = offline.ls()
        figures |= {"offline_mount_s": offline.ready, "offline_ls_s": seconds,
                    "offline_sized": sized, "offline_rss_mib": rss_mib(offline.process.pid)}
    finally:
        offline.stop()
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds the origin waits before each answer (a network's RTT)")
    args = parser.parse_args(argv)
    rows = [measure(count, args.workdir, args.delay, args.keep) for count in args.streams]
    header = ("streams", "mount s", "ls -lR s", "sized", "offline ls s", "offline sized",
              "RSS MiB")  # fmt: skip
    print("  ".join(header))
    for row in rows:
        print(f"{row['streams']:>7}  {row['mount_s']:7.2f}  {row['ls_s']:8.2f}  "
              f"{row['sized']:>5}/{row['listed']:<5}  {row['offline_ls_s']:12.2f}  "
              f"{row['offline_sized']:>13}  {row['rss_mib']:7.0f}")  # fmt: skip
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        factor = last["streams"] / first["streams"]
        print(f"{factor:.0f}x the streams: mount {last['mount_s'] / first['mount_s']:.1f}x, "
              f"first ls -lR {last['ls_s'] / first['ls_s']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
