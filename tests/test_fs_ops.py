"""The FUSE adapter's handlers called directly (no kernel): errno mapping and the boundary."""

from __future__ import annotations

import errno
import logging
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from kithara_fs.cache import CacheStore
from kithara_fs.config import parse_config
from kithara_fs.engine.scheduler import Scheduler
from kithara_fs.engine.stream import Stream
from kithara_fs.fuse import KitharaOperations
from kithara_fs.net import HttpClient
from kithara_fs.tree import ROOT_INODE, Registry

from .fakes import FakeOrigin

DATA = random.Random(11).randbytes(200_000)


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[tuple[KitharaOperations, FakeOrigin]]:
    origin = FakeOrigin(DATA)
    settings = parse_config({
        "cache": {"dir": str(tmp_path)},
        "mount": {"read_timeout": 5},
        "stream": [{"path": "album/one.flac", "url": "http://origin.test/one.flac?key=secret"}],
    })  # fmt: skip
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        registry = Registry(
            settings, http, CacheStore(tmp_path), Scheduler(nursery), nursery
        )
        yield KitharaOperations(registry), origin
        nursery.cancel_scope.cancel()


async def lookup_path(ops: KitharaOperations, *parts: str) -> pyfuse3.EntryAttributes:
    inode = ROOT_INODE
    attr = None
    for part in parts:
        attr = await ops.lookup(inode, part.encode(), None)
        inode = attr.st_ino
    assert attr is not None
    return attr


async def test_tree_attributes(ops: tuple[KitharaOperations, FakeOrigin]) -> None:
    fs, _ = ops
    root = await fs.getattr(ROOT_INODE, None)
    assert root.st_mode == 0o40555
    folder = await lookup_path(fs, "album")
    assert folder.st_mode == 0o40555
    file = await lookup_path(fs, "album", "one.flac")
    assert file.st_mode == 0o100444 and file.st_size == len(DATA)
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fs.lookup(ROOT_INODE, b"nope", None)
    assert info.value.errno == errno.ENOENT


async def test_open_and_read(ops: tuple[KitharaOperations, FakeOrigin]) -> None:
    fs, _ = ops
    inode = (await lookup_path(fs, "album", "one.flac")).st_ino
    fi = await fs.open(inode, os.O_RDONLY, None)
    assert fi.direct_io
    assert await fs.read(fi.fh, 1000, 5000) == DATA[1000:6000]
    assert await fs.read(fi.fh, len(DATA), 5000) == b""
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fs.read(fi.fh, len(DATA) + 1, 5000)
    assert info.value.errno == errno.EINVAL
    await fs.release(fi.fh)


async def test_write_type_calls_are_erofs(ops: tuple[KitharaOperations, FakeOrigin]) -> None:
    fs, _ = ops
    inode = (await lookup_path(fs, "album", "one.flac")).st_ino
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_APPEND | os.O_WRONLY):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await fs.open(inode, flags, None)
        assert info.value.errno == errno.EROFS
    for call in (fs.write(1, 0, b"x"), fs.mkdir(ROOT_INODE, b"d", 0o755, None),
                 fs.unlink(ROOT_INODE, b"album", None), fs.setxattr(inode, b"user.a", b"1", None)):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await call
        assert info.value.errno == errno.EROFS


async def test_nonblocking_read_is_eagain(
    ops: tuple[KitharaOperations, FakeOrigin], autojump_clock: trio.testing.MockClock
) -> None:
    fs, origin = ops
    inode = (await lookup_path(fs, "album", "one.flac")).st_ino
    origin.stall()
    fi = await fs.open(inode, os.O_RDONLY | os.O_NONBLOCK, None)
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fs.read(fi.fh, 0, 4096)
    assert info.value.errno == errno.EAGAIN
    origin.release()


async def test_unexpected_exception_becomes_eio_not_a_dead_mount(
    ops: tuple[KitharaOperations, FakeOrigin],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs, _ = ops
    inode = (await lookup_path(fs, "album", "one.flac")).st_ino
    fi = await fs.open(inode, os.O_RDONLY, None)

    async def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Stream, "try_read", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as info:
        await fs.read(fi.fh, 0, 10)
    assert info.value.errno == errno.EIO
    assert "internal error in read" in caplog.text


async def test_xattrs(ops: tuple[KitharaOperations, FakeOrigin]) -> None:
    fs, _ = ops
    inode = (await lookup_path(fs, "album", "one.flac")).st_ino
    names = await fs.listxattr(inode, None)
    # The fake origin sends no Content-Type, and nothing failed: those two are absent.
    assert set(names) == {b"user.kithara.url", b"user.kithara.cached_bytes",
                          b"user.kithara.state", b"user.kithara.etag"}  # fmt: skip
    assert await fs.getxattr(inode, b"user.kithara.state", None) == b"idle"
    assert await fs.getxattr(inode, b"user.kithara.etag", None) == b'"v1"'
    url = await fs.getxattr(inode, b"user.kithara.url", None)
    assert url == b"http://origin.test/one.flac?<redacted>"
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fs.getxattr(inode, b"user.other", None)
    assert info.value.errno == pyfuse3.ENOATTR


async def test_paths_sharing_a_url_share_one_version(tmp_path: Path) -> None:
    big = random.Random(5).randbytes(12_000_000)
    origin = FakeOrigin(big)
    settings = parse_config({
        "cache": {"dir": str(tmp_path)},
        "stream": [{"path": "a.mp3", "url": "http://origin.test/x"},
                   {"path": "b.mp3", "url": "http://origin.test/x"}],
    })  # fmt: skip
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        registry = Registry(settings, http, CacheStore(tmp_path), Scheduler(nursery), nursery)
        fs = KitharaOperations(registry)
        a = await fs.open((await lookup_path(fs, "a.mp3")).st_ino, os.O_RDONLY, None)
        b = await fs.open((await lookup_path(fs, "b.mp3")).st_ino, os.O_RDONLY, None)
        assert await fs.read(b.fh, 0, 100) == big[:100]
        origin.data, origin.etag = big[::-1], '"v2"'
        # The change, noticed through a (beyond the read-ahead), must fail b's handle too.
        with pytest.raises(pyfuse3.FUSEError) as info:
            await fs.read(a.fh, 10_000_000, 100)
        assert info.value.errno == errno.ESTALE
        with pytest.raises(pyfuse3.FUSEError) as info:
            await fs.read(b.fh, 0, 100)
        assert info.value.errno == errno.ESTALE
        nursery.cancel_scope.cancel()


async def test_listing_waits_one_metadata_budget_in_all(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    origin = FakeOrigin(DATA)
    origin.stall()
    settings = parse_config({
        "cache": {"dir": str(tmp_path)},
        "mount": {"metadata_timeout": 5},
        "stream": [{"path": f"{i}.mp3", "url": f"http://origin.test/{i}"} for i in range(10)],
    })  # fmt: skip
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        registry = Registry(settings, http, CacheStore(tmp_path), Scheduler(nursery), nursery)
        registry.start_background()
        fs = KitharaOperations(registry)
        start = trio.current_time()
        sizes = [(await lookup_path(fs, f"{i}.mp3")).st_size for i in range(10)]
        assert sizes == [0] * 10
        assert trio.current_time() - start == pytest.approx(5)  # not 10 x 5 s
        origin.release()
        nursery.cancel_scope.cancel()


async def test_reload_turns_a_folder_into_a_file_and_back(tmp_path: Path) -> None:
    origin = FakeOrigin(DATA)

    def config(streams: list[dict[str, object]], readahead: float = 30) -> object:
        return parse_config({"cache": {"dir": str(tmp_path)},
                             "mount": {"readahead_seconds": readahead}, "stream": streams})

    before = config([{"path": "a/b.mp3", "url": "http://o/b"},
                     {"path": "x/.kithara/c.mp3", "url": "http://o/c"}])  # fmt: skip
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        registry = Registry(before, http, CacheStore(tmp_path), Scheduler(nursery), nursery)  # type: ignore[arg-type]
        fs = KitharaOperations(registry)
        # A nested .kithara is an ordinary folder: it has a playlist like any other.
        await lookup_path(fs, "x", ".kithara", ".index.m3u8")
        old_dir = (await lookup_path(fs, "a")).st_ino
        change = registry.reload(config([{"path": "a", "url": "http://o/b"}], readahead=5))  # type: ignore[arg-type]
        assert (ROOT_INODE, "a") in change.removed and (ROOT_INODE, "x") in change.removed
        file_a = await lookup_path(fs, "a")
        assert file_a.st_ino != old_dir and file_a.st_mode == 0o100444
        assert registry.node(old_dir) is None, "the old folder and its playlist are gone"
        node = registry.node(file_a.st_ino)
        assert node is not None and node.source.readahead_seconds == 5  # type: ignore[union-attr]
        registry.reload(config([{"path": "a/b.mp3", "url": "http://o/b"}]))  # type: ignore[arg-type]
        assert (await lookup_path(fs, "a", "b.mp3")).st_mode == 0o100444
        nursery.cancel_scope.cancel()
