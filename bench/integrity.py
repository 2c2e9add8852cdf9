"""What the trust guarantees cost: checksummed cache reads, and direct_io on cached files.

Usage: ``.venv/bin/python bench/integrity.py [--mib N]`` from the repository root.

Owns three measurements, printed as a table of ratios (no pass/fail: machines are noisy):

1. CRC-32 (``zlib.crc32``, what the cache records) over 128 KiB chunks, against a plain
   memory copy of the same chunks — the hash's own speed.
2. Verified cache reads (``CacheEntry.read``: pread of the whole pieces touched, then a
   CRC-32 check) against bare ``os.pread`` of the same data file, both warm in the page cache.
3. Warm sequential reads of a wholly cached file through a real mount (every open is
   ``direct_io``, so each 128 KiB read is a FUSE request answered by the daemon) against the
   same bytes read from local disk through the page cache.

Must never leave a mount or a process behind, or use any address but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kithara_fs.cache import CacheStore  # noqa: E402
from kithara_fs.cache.index import EntryMeta  # noqa: E402
from kithara_fs.demo.origin import Origin  # noqa: E402
from tests.mounting import Mount, write_config  # noqa: E402

CHUNK = 128 * 1024


def best_of(runs: int, work: Callable[[], int]) -> float:
    """The best throughput (MiB/s) of a few runs: the least disturbed one."""
    best = 0.0
    for _ in range(runs):
        began = time.perf_counter()
        done = work()
        best = max(best, done / (time.perf_counter() - began) / 2**20)
    return best


def read_through(fd: int, size: int) -> int:
    for offset in range(0, size, CHUNK):
        os.pread(fd, CHUNK, offset)
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the test file")
    args = parser.parse_args()
    size = args.mib * 2**20
    data = random.Random(1).randbytes(size)
    rows: list[tuple[str, float, float]] = []
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]

    def crc() -> int:
        for chunk in chunks:
            zlib.crc32(chunk)
        return size

    def copy() -> int:
        for chunk in chunks:
            bytes(bytearray(chunk))
        return size

    rows.append(("CRC-32 vs memory copy", best_of(5, crc), best_of(5, copy)))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = CacheStore(folder / "cache")
        entry = store.entry("http://127.0.0.1/bench.bin")
        entry.set_meta(EntryMeta(size))
        for offset in range(0, size, 16 * 1024):  # network-sized chunks, as downloads write
            entry.write(offset, data[offset : offset + 16 * 1024])
        fd = os.open(entry.data_path, os.O_RDONLY)

        def verified() -> int:
            for offset in range(0, size, CHUNK):
                assert entry.read(offset, CHUNK) is not None
            return size

        rows.append(("verified cache read vs pread", best_of(5, verified),
                     best_of(5, lambda: read_through(fd, size))))  # fmt: skip
        os.close(fd)
        store.close()

        local = folder / "local.bin"
        local.write_bytes(data)
        with Origin() as origin:
            url = origin.add("/bench.bin", data)
            config = write_config(folder / "b.toml", {"bench.bin": url}, folder / "mcache")
            with Mount(config, folder / "mnt", folder / "mnt.log") as mount:
                path = mount.path("bench.bin")
                path.read_bytes()  # now wholly cached
                mounted = os.open(path, os.O_RDONLY)
                disk = os.open(local, os.O_RDONLY)
                try:
                    rows.append(("warm mount read (direct_io) vs local disk",
                                 best_of(5, lambda: read_through(mounted, size)),
                                 best_of(5, lambda: read_through(disk, size))))  # fmt: skip
                finally:
                    os.close(mounted)
                    os.close(disk)

    print(f"{'measurement':44} {'MiB/s':>9} {'baseline':>9} {'ratio':>6}")
    for name, value, baseline in rows:
        print(f"{name:44} {value:9.0f} {baseline:9.0f} {value / baseline:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
