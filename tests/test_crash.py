"""Crash consistency: SIGKILL the daemon mid-download, mid-eviction and mid-version-change.

After the kill, a new ``kithara-fs mount`` on the same mount point clears the dead mount by
itself, serves only bytes that verify against the origin's, and does not download again
what the index recorded as durable before the kill.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse
from .mounting import wait_until
from .test_mount_faults import read_all

pytestmark = needs_fuse

FILES = {f"/f{i}.bin": random.Random(50 + i).randbytes(3 * 1024 * 1024) for i in range(4)}


def durable_ranges(cache: Path) -> dict[str, list[tuple[int, int]]]:
    """What the index on disk vouches for, read as the next mount will read it."""
    db = sqlite3.connect(cache / "v2" / "index.sqlite3")
    try:
        rows = db.execute("SELECT url, ranges FROM resources").fetchall()
    finally:
        db.close()
    return {url: [tuple(span) for span in json.loads(spans)] for url, spans in rows}


def fetched_again(server: Origin, path: str, durable: list[tuple[int, int]]) -> int:
    """Bytes of durable ranges that the origin sent again after the restart."""
    again = 0
    for record in server.requests_for(path):
        # bytes=0-0 is the one-byte revalidation at open, not a download.
        if record.range in (None, "bytes=0-0") or record.status not in (200, 206):
            continue
        first = int(record.range.removeprefix("bytes=").split("-")[0] or 0)
        sent = (first, first + record.body_bytes)
        for start, end in durable:
            again += max(0, min(end, sent[1]) - max(start, sent[0]))
    return again


@pytest.mark.parametrize("moment", ["downloads", "eviction", "version-change"])
def test_sigkill_then_remount_serves_verified_bytes_and_resumes(
    moment: str, mount: MountFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with Origin() as server:
        urls = {}
        for path, data in FILES.items():
            urls[path] = server.add(path, data)
            server.faults(path).rate = 1_500_000  # downloads are in flight when it dies
        streams = {path.lstrip("/"): url for path, url in urls.items()}
        # Eviction: a bound below what the readers pull, so evicting runs all the time.
        limits = {"max_size": 4 * 1024 * 1024} if moment == "eviction" else None
        first = mount(streams, name="mnt", cache=limits, readahead_seconds=60)
        first.expect_log(r"remote changed|dropping cached bytes|download failed|read: ")
        readers = [subprocess.Popen(["cat", str(first.path(name))], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for name in streams]  # fmt: skip
        wait_until(lambda: sum(r.body_bytes for r in server.requests) > 3 * 1024 * 1024,
                   "downloads under way")  # fmt: skip
        if moment == "version-change":
            changed = random.Random(99).randbytes(3 * 1024 * 1024)
            server.replace("/f0.bin", changed)
            files_now = {**FILES, "/f0.bin": changed}
            time.sleep(0.3)
        else:
            files_now = dict(FILES)
        first.kill()
        for reader in readers:
            reader.wait(timeout=30)
        durable = durable_ranges(cache)
        assert durable, "nothing was durable before the kill"
        for path in FILES:
            server.faults(path).rate = None
        server.clear_log()
        # Same mount point, still dead: the new mount clears it itself.
        second = mount(streams, name="second", cache=limits, mountpoint=first.mountpoint)
        second.expect_log(r"left by a crashed kithara-fs")
        second.expect_log(r"changed|dropping cached bytes|remote changed")
        for name in streams:
            assert read_all(second.path(name)) == files_now["/" + name], name
        server.wait_idle()
        # With eviction running, durable bytes may be evicted and fetched again on purpose.
        if moment == "downloads":
            for path, url in urls.items():
                assert fetched_again(server, path, durable.get(url, [])) == 0, path


def test_a_reader_killed_with_the_daemon_leaves_no_process_behind(
    mount: MountFactory, tmp_path: Path
) -> None:
    """The kill test's readers end with ENOTCONN instead of hanging in D state."""
    with Origin() as server:
        url = server.add("/slow.bin", FILES["/f1.bin"])
        server.faults("/slow.bin").rate = 200_000
        m = mount({"slow.bin": url})
        done: list[BaseException | bytes] = []

        def read() -> None:
            try:
                done.append(m.path("slow.bin").read_bytes())
            except OSError as exc:
                done.append(exc)

        thread = threading.Thread(target=read)
        thread.start()
        wait_until(lambda: any(r.body_bytes for r in server.requests), "a download")
        m.kill()
        thread.join(timeout=30)
        assert not thread.is_alive() and isinstance(done[0], OSError)
