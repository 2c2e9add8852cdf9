"""The errno contract of DESIGN.md §2, asserted with real syscalls on a real mount.

CPython retries EINTR by itself (PEP 475), so reads that must observe EINTR or EAGAIN call
pread(2) through ctypes with ``use_errno=True``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
import time
from pathlib import Path

import pytest

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse
from .mounting import Mount

pytestmark = needs_fuse

_libc = ctypes.CDLL(None, use_errno=True)
_libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
_libc.pread.restype = ctypes.c_ssize_t


def raw_pread(fd: int, size: int, offset: int) -> bytes | int:
    """The bytes read, or the errno of a failed pread(2) (no retry on EINTR)."""
    buf = ctypes.create_string_buffer(size)
    n = _libc.pread(fd, buf, size, offset)
    if n < 0:
        return ctypes.get_errno()
    return buf.raw[:n]


def mount_then_stall(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path], name: str, **opts: object
) -> tuple[Mount, bytes, threading.Event]:
    """Mount one file, learn its size, then make the origin hold every answer until set."""
    m = mount({f"x{Path(name).suffix}": origin.url(f"/{name}")}, **opts)
    expected = media_files[name].read_bytes()
    assert m.path(f"x{Path(name).suffix}").stat().st_size == len(expected)
    stall = threading.Event()
    origin.faults(f"/{name}").stall = stall
    return m, expected, stall


def test_eof_at_length_and_einval_past_it(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"x.mp3": origin.url("/cbr.mp3")})
    expected = media_files["cbr.mp3"].read_bytes()
    fd = os.open(m.path("x.mp3"), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert size == len(expected)
        assert raw_pread(fd, 4096, size) == b""
        assert raw_pread(fd, 4096, size + 1) == errno.EINVAL
        assert raw_pread(fd, 4096, size + 10_000_000) == errno.EINVAL
        # The last bytes are whole: a read crossing the end is cut exactly at the length.
        assert raw_pread(fd, 4096, size - 100) == expected[-100:]
    finally:
        os.close(fd)


def test_write_type_calls_are_erofs(origin: Origin, mount: MountFactory) -> None:
    m = mount({"d/x.mp3": origin.url("/cbr.mp3")})
    target = m.path("d/x.mp3")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(OSError) as info:
            os.open(target, flags)
        assert info.value.errno == errno.EROFS
    calls = [
        lambda: os.open(m.path("d/new.mp3"), os.O_WRONLY | os.O_CREAT, 0o644),
        lambda: os.mkdir(m.path("d/sub")),
        lambda: os.unlink(target),
        lambda: os.rename(target, m.path("d/y.mp3")),
        lambda: os.chmod(target, 0o644),
        lambda: os.truncate(target, 0),
        lambda: os.setxattr(target, "user.x", b"1"),
        lambda: os.symlink("x.mp3", m.path("d/link")),
    ]
    for call in calls:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EROFS


def test_nonblocking_read_of_uncached_bytes_is_eagain_at_once(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    # A blocking read would wait ten minutes here, far past the test's own timeout: only a
    # budget of zero can make this test pass.
    m = mount({"x.wav": origin.url("/wav.wav")}, read_timeout=600)
    expected = media_files["wav.wav"].read_bytes()
    assert m.path("x.wav").stat().st_size == len(expected)  # size probed before the stall
    stall = threading.Event()
    origin.faults("/wav.wav").stall = stall
    fd = os.open(m.path("x.wav"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert raw_pread(fd, 65536, 1_000_000) == errno.EAGAIN
        assert raw_pread(fd, 65536, 1_000_000) == errno.EAGAIN
        stall.set()
        # The EAGAIN read started the download; the bytes become readable without blocking.
        for _ in range(500):
            got = raw_pread(fd, 65536, 1_000_000)
            if got != errno.EAGAIN:
                break
            time.sleep(0.02)
        assert got == expected[1_000_000:1_065_536]
    finally:
        stall.set()
        os.close(fd)


def test_superseded_read_is_eintr(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m, expected, stall = mount_then_stall(
        origin, mount, media_files, "wav.wav", read_timeout=120
    )
    fd = os.open(m.path("x.wav"), os.O_RDONLY)
    first: list[bytes | int] = []
    reader = threading.Thread(target=lambda: first.append(raw_pread(fd, 4096, 0)))
    try:
        reader.start()
        time.sleep(0.5)  # let the first read reach the daemon and start waiting
        assert not first, "the first read should still be waiting on the stalled origin"
        far = 20 * 1024 * 1024
        second: list[bytes | int] = []
        seeker = threading.Thread(target=lambda: second.append(raw_pread(fd, 4096, far)))
        seeker.start()
        reader.join(timeout=60)
        assert first == [errno.EINTR]
        stall.set()
        seeker.join(timeout=60)
        assert second == [expected[far : far + 4096]]
    finally:
        stall.set()
        reader.join(timeout=60)
        os.close(fd)


def test_blocking_read_waits_through_a_slow_origin(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"x.flac": origin.url("/flac.flac")}, read_timeout=30)
    expected = media_files["flac.flac"].read_bytes()
    assert m.path("x.flac").stat().st_size == len(expected)
    origin.faults("/flac.flac").delay = 2.0
    fd = os.open(m.path("x.flac"), os.O_RDONLY)
    try:
        assert raw_pread(fd, 65536, 500_000) == expected[500_000:565_536]
    finally:
        os.close(fd)


def test_blocking_read_gets_eagain_only_after_a_real_stall(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m = mount({"x.flac": origin.url("/flac.flac")}, read_timeout=1)
    m.expect_log(r"no bytes at offset 0 within 1 s; answering EAGAIN")
    assert m.path("x.flac").stat().st_size > 0
    stall = threading.Event()
    origin.faults("/flac.flac").stall = stall
    fd = os.open(m.path("x.flac"), os.O_RDONLY)
    try:
        started = time.monotonic()
        assert raw_pread(fd, 4096, 0) == errno.EAGAIN
        # Not a timing assertion on speed: EAGAIN must not come before the budget is spent.
        assert time.monotonic() - started >= 0.9
    finally:
        stall.set()
        os.close(fd)


def test_failed_origin_is_eio_after_retries(origin: Origin, mount: MountFactory) -> None:
    m = mount({"x.mp3": origin.url("/vbr.mp3")}, read_timeout=60)
    m.expect_log(r"download failed at byte \d+: .*HTTP 503")  # the head and tail probes
    m.expect_log(r"read: .*HTTP 503 \(EIO\)")
    assert m.path("x.mp3").stat().st_size > 0
    origin.faults("/vbr.mp3").fail_statuses = [503] * 100
    fd = os.open(m.path("x.mp3"), os.O_RDONLY)
    try:
        assert raw_pread(fd, 4096, 0) == errno.EIO
        statuses = [r.status for r in origin.requests_for("/vbr.mp3")]
        assert statuses.count(503) >= 6, statuses
    finally:
        os.close(fd)


def test_poll_reports_readiness_when_bytes_arrive(
    origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    m, expected, stall = mount_then_stall(
        origin, mount, media_files, "wav.wav", read_timeout=600
    )
    fd = os.open(m.path("x.wav"), os.O_RDONLY | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        assert raw_pread(fd, 65536, 3_000_000) == errno.EAGAIN
        assert poller.poll(0) == [], "nothing is readable while the origin stalls"
        stall.set()
        # Blocks in poll(2) (no busy loop) until the daemon reports the bytes arrived.
        events = poller.poll(60_000)
        assert events and events[0][1] & select.POLLIN, events
        assert raw_pread(fd, 65536, 3_000_000) == expected[3_000_000:3_065_536]
    finally:
        stall.set()
        os.close(fd)
