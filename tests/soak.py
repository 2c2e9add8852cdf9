"""Randomized soak: concurrent readers on a real mount of a chaotic loopback origin.

Run it with ``./dev soak [--seconds N] [--seed S] [--readers R]`` (or
``.venv/bin/python -m tests.soak ...``). It owns: generating a small media set (random bytes,
real audio, and one HLS VOD programme with two MPEG-TS variants) from one seed, serving it
from an in-process ``Origin`` on 127.0.0.1, mounting it with the ``Mount`` helper, turning
chaos on, and checking every byte a reader gets against an oracle (the served file, or for an
HLS variant file the concatenation of its segments in playlist order). Reads are watched, so
a hung read is reported instead of hanging the soak; the whole run is bounded by about
``--seconds`` + 60 s. It prints one summary line and one line of details, and exits 0 only
when nothing was wrong, nothing hung and the mount never died.

It must never: send traffic anywhere but 127.0.0.1, serve FUSE from this process (reads of
the mount from the serving process could deadlock), block forever on a syscall into the
mount, kill any process but the daemon it started (by PID, via ``Mount.stop``), leave a mount
behind, or count as wrong what the read contract allows (EIO, EAGAIN, ESTALE are counted and
reported, not failed). ``auto.*`` is not read: its bytes depend on the variant switches, so
it has no byte oracle.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from kithara_fs.demo import media
from kithara_fs.demo.origin import Origin

from . import hlsmedia
from .mounting import FUSERMOUNT, Mount, write_config

MiB = 1024 * 1024
READ_TIMEOUT = 20.0
# One read (or open, or close) taking longer than this is a hang: a blocking read must answer
# EAGAIN after read_timeout, and retries plus chaos stalls add well under 15 s on top.
HANG_AFTER = READ_TIMEOUT + 15.0
CHAOS_RATE = 0.15
MAX_READ = MiB
# Errnos the read contract allows under a flaky origin; counted, not failed.
ALLOWED = {errno.EIO, errno.EAGAIN, errno.ESTALE}
# Errnos that mean the mount itself is gone.
DEAD = {errno.ENOTCONN, errno.ECONNABORTED}
# After poll() said POLLIN, more than this many EAGAINs in a row counts as one poll lie.
POLL_LIE_STREAK = 3
# poll() promises only this many bytes at the reader's position (POLL_READY_BYTES in
# kithara_fs/engine/stream.py), so a longer read may still be EAGAIN after POLLIN: such lies are
# counted apart from those of reads that fit the window.
READY_WINDOW = 128 * 1024
POLL_WAIT_MS = 1000
NONBLOCKING_SLOW = 1.0
# Failure descriptions kept and printed in full; the counts go on past it.
KEEP_FAILURES = 25
# Allowed-but-notable events (EIO, slow O_NONBLOCK reads, poll lies) kept with their details.
KEEP_NOTES = 40

T = TypeVar("T")


class SetupError(Exception):
    """The soak could not be set up; not a verdict on the filesystem."""


class Hung(Exception):
    """A bounded call into the mount did not return in time."""


@dataclass(frozen=True)
class Target:
    """One file on the mount and the bytes it must hold."""

    rel: str
    kind: str
    oracle: bytes


@dataclass
class Stats:
    """Everything the readers and the monitor count; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    checked: int = 0
    reads: int = 0
    opens: int = 0
    nonblocking_opens: int = 0
    eof_reads: int = 0
    past_end_reads: int = 0
    wrong: int = 0
    hangs: int = 0
    deaths: int = 0
    poll_lies: int = 0
    poll_lies_wide: int = 0  # ... of which the read asked for more than READY_WINDOW
    poll_timeouts: int = 0
    nonblocking_eagain: int = 0
    # O_NONBLOCK preads that took longer than NONBLOCKING_SLOW: "EAGAIN at once" was not.
    nonblocking_slow: int = 0
    # ... of which no blocking descriptor of this process was open on the same file. The
    # daemon treats a read as blocking when any of the opener's descriptors on the file is
    # (kithara_fs/procfd.py), and all readers here are one process: with one open, a slow
    # O_NONBLOCK read is that rule at work; without, it is unexplained.
    nonblocking_slow_alone: int = 0
    # Blocking descriptors open now, per file.
    blocking_open: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, kind: str, text: str) -> None:
        with self.lock:
            if kind == "wrong":
                self.wrong += 1
            elif kind == "hang":
                self.hangs += 1
            elif kind == "death":
                self.deaths += 1
            if len(self.failures) < KEEP_FAILURES:
                self.failures.append(f"{_clock()} {kind}: {text}")

    def note(self, text: str) -> None:
        with self.lock:
            if len(self.notes) < KEEP_NOTES:
                self.notes.append(f"{_clock()} {text}")

    def error(self, code: int) -> None:
        with self.lock:
            self.errors[errno.errorcode.get(code, str(code))] += 1


def _clock() -> str:
    """Wall-clock time to the millisecond, to find the moment in the daemon's log."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def bounded(call: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``call`` in a daemon thread and give up after ``seconds`` (the thread is left)."""
    box: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"bounded:{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Hung(f"{what} did not return in {seconds:.0f} s")
    if failure:
        raise failure[0]
    return box[0]


def mounted(mountpoint: Path) -> bool:
    """Whether the mount table lists ``mountpoint``.

    Unlike os.path.ismount this never sends a request to the daemon, so it cannot block on
    a wedged one.
    """
    wanted = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == wanted:
                return True
    return False


def rss_mib(pid: int | None) -> int:
    """The daemon's VmRSS in whole MiB; 0 when the process is gone."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return 0


# -- media -----------------------------------------------------------------------------------


def build(
    origin: Origin, work: Path, rng: random.Random
) -> tuple[dict[str, str | dict[str, Any]], list[Target]]:
    """Register the media on ``origin``; return the config streams and the targets to read."""
    streams: dict[str, str | dict[str, Any]] = {}
    targets: list[Target] = []
    for i in range(3):
        # Random bytes: any misplaced byte shows, and a shifted block can be located exactly.
        data = rng.randbytes(rng.randint(1 * MiB, 8 * MiB))
        streams[f"noise/{i}.bin"] = origin.add(f"/noise/{i}.bin", data)
        targets.append(Target(f"noise/{i}.bin", "random bytes", data))
    have_ffmpeg = media.ffmpeg_available()
    # Without ffmpeg only the fallback WAV can be made, and no HLS programme.
    names = ["cbr.mp3", "flac.flac"] if have_ffmpeg else ["wav.wav"]
    for name, path in media.generate(work / "media", duration=40.0, names=names).items():
        streams[f"audio/{name}"] = origin.add(f"/audio/{name}", path)
        targets.append(Target(f"audio/{name}", f"audio {name}", path.read_bytes()))
    if have_ffmpeg:
        programme = hlsmedia.variants(work / "hls", seconds=40.0, bitrates=["64k", "128k"],
                                      fmp4=False)  # fmt: skip
        programme.serve(origin, "/hls")
        streams["hls"] = origin.url("/hls/master.m3u8")
        targets += hls_targets(programme)
    return streams, targets


def hls_targets(programme: hlsmedia.Programme) -> list[Target]:
    """The variant files the mount should show, each with its segments as the oracle."""
    master = programme.files["master.m3u8"].decode()
    variants: list[tuple[int, str]] = []
    lines = master.splitlines()
    for index, line in enumerate(lines):
        found = re.search(r"BANDWIDTH=(\d+)", line)
        if line.startswith("#EXT-X-STREAM-INF") and found:
            uri = next(u for u in lines[index + 1 :] if u and not u.startswith("#"))
            variants.append((int(found.group(1)), uri))
    if len(variants) < 2:
        raise SetupError(f"expected two variants in the master playlist:\n{master}")
    targets = []
    for bandwidth, uri in variants:
        stem = f"{round(bandwidth / 1000)}k"
        targets.append(Target(f"hls/{stem}.ts", f"HLS variant {stem} (TS)",
                              b"".join(programme.plain[uri])))  # fmt: skip
    by_rate = sorted(zip((b for b, _ in variants), targets, strict=True), key=lambda p: p[0])
    for alias, (_, target) in (("worst", by_rate[0]), ("best", by_rate[-1])):
        targets.append(Target(f"hls/{alias}.ts", f"HLS {alias} = {target.kind}", target.oracle))
    return targets


# -- readers ---------------------------------------------------------------------------------


@dataclass
class Soak:
    """What every reader shares."""

    mount: Mount
    targets: list[Target]
    stats: Stats
    deadline: float
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)


class Reader(threading.Thread):
    """Opens random targets and reads them at random; every syscall is watched by the monitor."""

    def __init__(self, index: int, soak: Soak, seed: int) -> None:
        super().__init__(name=f"reader-{index}", daemon=True)
        self.index = index
        self.soak = soak
        self.rng = random.Random(seed * 1000 + index)
        # (monotonic start, description) of the call into the mount in progress, or None.
        # Assigned whole, so the monitor reads it without a lock.
        self.inflight: tuple[float, str] | None = None
        # Set by the monitor when this reader's call overran HANG_AFTER.
        self.hung = threading.Event()

    def run(self) -> None:
        soak = self.soak
        while not soak.stop.is_set() and time.monotonic() < soak.deadline:
            target = self.rng.choice(soak.targets)
            nonblocking = self.rng.random() < 0.25
            try:
                self.session(target, nonblocking)
            except _Abandon:
                return

    def watched(self, what: str, call: Callable[[], T]) -> T:
        self.inflight = (time.monotonic(), what)
        try:
            return call()
        finally:
            self.inflight = None

    def session(self, target: Target, nonblocking: bool) -> None:
        """One open, a random run of reads, one close."""
        stats = self.soak.stats
        path = self.soak.mount.path(target.rel)
        flags = os.O_RDONLY | (os.O_NONBLOCK if nonblocking else 0)
        mode = "O_NONBLOCK" if nonblocking else "blocking"
        try:
            fd = self.watched(f"{mode} open of {target.rel}", lambda: os.open(path, flags))
        except OSError as exc:
            self.check_errno(exc.errno or 0, f"{mode} open of {target.rel} ({target.kind})")
            return
        finally:
            self.abandon_if_hung()
        with stats.lock:
            stats.opens += 1
            stats.nonblocking_opens += nonblocking
            stats.blocking_open[target.rel] += not nonblocking
        try:
            self.reads(fd, target, nonblocking)
        finally:
            with stats.lock:
                stats.blocking_open[target.rel] -= not nonblocking
            # A hung reader keeps its descriptor: closing it under a pread still in the kernel
            # helps nothing, and the daemon's kill at stop ends that read anyway.
            if not self.hung.is_set():
                self.watched(f"close of {target.rel}", lambda: os.close(fd))
                self.abandon_if_hung()

    def reads(self, fd: int, target: Target, nonblocking: bool) -> None:
        size = len(target.oracle)
        rng = self.rng
        # Players read the head first; other readers start anywhere.
        position = 0 if rng.random() < 0.5 else rng.randrange(size)
        for _ in range(rng.randint(3, 40)):
            if self.soak.stop.is_set() or time.monotonic() >= self.soak.deadline:
                return
            pick = rng.random()
            length = min(MAX_READ, int(2 ** rng.uniform(0, 20.0001)))
            if pick < 0.55:
                offset = position  # sequential
            elif pick < 0.85:
                offset = rng.randrange(size)  # a seek
            elif pick < 0.92:
                # Crossing the end: the reply must stop exactly at the length.
                offset = max(0, size - rng.randint(1, 256 * 1024))
                length = MAX_READ
            elif pick < 0.96:
                offset = size  # exactly at the end: b""
            else:
                offset = size + rng.randint(1, 16 * MiB)  # strictly past it: EINVAL
            outcome = self.read(fd, offset, length, nonblocking, target)
            if isinstance(outcome, bytes):
                position = offset + len(outcome)
                if position >= size:
                    position = 0
            elif outcome == errno.ESTALE:
                return  # this handle is done for; a new open gets the current version

    def read(
        self, fd: int, offset: int, length: int, nonblocking: bool, target: Target
    ) -> bytes | int:
        mode = "O_NONBLOCK" if nonblocking else "blocking"
        what = f"{mode} pread of {length} at {offset} of {target.rel} (size {len(target.oracle)})"
        if nonblocking:
            outcome = self.watched(
                what, lambda: self.read_nonblocking(fd, offset, length, target, what)
            )
        else:
            outcome = self.watched(what, lambda: _pread(fd, length, offset))
        self.abandon_if_hung()
        self.judge(outcome, offset, length, target, what)
        return outcome

    def read_nonblocking(
        self, fd: int, offset: int, length: int, target: Target, what: str
    ) -> bytes | int:
        """Read until bytes or an error other than EAGAIN, waiting in poll() in between."""
        stats = self.soak.stats
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        said_ready = False
        streak = 0
        lied = False
        while True:
            blocking_before = stats.blocking_open[target.rel]
            began = time.monotonic()
            got = _pread(fd, length, offset)
            took = time.monotonic() - began
            # A hung reader's read ends only when the daemon is killed: not a slow read.
            if took > NONBLOCKING_SLOW and not self.hung.is_set():
                alone = blocking_before == 0 and stats.blocking_open[target.rel] == 0
                with stats.lock:
                    stats.nonblocking_slow += 1
                    stats.nonblocking_slow_alone += alone
                company = "no" if alone else "a"
                stats.note(f"slow O_NONBLOCK pread ({company} blocking descriptor on the file): "
                           f"{took:.1f} s, {_shown(got)}: {what}")  # fmt: skip
            if got != errno.EAGAIN:
                return got
            with stats.lock:
                stats.nonblocking_eagain += 1
            if said_ready:
                streak += 1
                if streak > POLL_LIE_STREAK and not lied:
                    lied = True
                    wanted = min(length, len(target.oracle) - offset)
                    with stats.lock:
                        stats.poll_lies += 1
                        stats.poll_lies_wide += wanted > READY_WINDOW
                    stats.note(f"poll lie: POLLIN then {streak} EAGAINs in a row for "
                               f"{wanted} bytes: {what}")  # fmt: skip
            if self.hung.is_set():
                return errno.EAGAIN
            if lied:
                time.sleep(0.01)  # poll keeps saying ready; do not spin the daemon's CPU
            events = poller.poll(POLL_WAIT_MS)
            said_ready = any(mask & select.POLLIN for _, mask in events)
            if not events:
                streak = 0
                with stats.lock:
                    stats.poll_timeouts += 1

    def judge(self, outcome: bytes | int, offset: int, length: int, target: Target,
              what: str) -> None:  # fmt: skip
        stats = self.soak.stats
        size = len(target.oracle)
        with stats.lock:
            stats.reads += 1
            stats.eof_reads += offset == size
            stats.past_end_reads += offset > size
        where = f"{what} [{target.kind}]"
        if offset > size:
            if outcome != errno.EINVAL:
                stats.fail("wrong", f"{where}: expected EINVAL past the end, got {_shown(outcome)}")
            return
        if offset == size:
            if outcome != b"":
                stats.fail("wrong", f"{where}: expected b'' at the end, got {_shown(outcome)}")
            return
        if isinstance(outcome, int):
            self.check_errno(outcome, where)
            return
        expected = target.oracle[offset : offset + length]
        if outcome == expected:
            with stats.lock:
                stats.checked += len(outcome)
            return
        if not outcome:
            stats.fail("wrong", f"{where}: b'' before the end (expected {len(expected)} bytes)")
        elif len(outcome) < len(expected) and outcome == expected[: len(outcome)]:
            stats.fail("wrong", f"{where}: short read mid-file, {len(outcome)} of "
                                f"{len(expected)} bytes (right as far as they go)")  # fmt: skip
        else:
            stats.fail("wrong", f"{where}: {mismatch(outcome, expected, offset, target.oracle)}")

    def check_errno(self, code: int, where: str) -> None:
        stats = self.soak.stats
        stats.error(code)
        if code in DEAD:
            return  # the monitor counts the death itself
        if code in (errno.EIO, errno.ESTALE):
            stats.note(f"{errno.errorcode[code]}: {where}")
        if code not in ALLOWED:
            stats.fail("wrong", f"{where}: unexpected errno {errno.errorcode.get(code, code)}")

    def abandon_if_hung(self) -> None:
        if self.hung.is_set():
            raise _Abandon


class _Abandon(Exception):
    """A reader whose call hung stops reading; the soak is being stopped."""


def _pread(fd: int, length: int, offset: int) -> bytes | int:
    """The bytes, or the errno (os.pread already retries EINTR, PEP 475)."""
    try:
        return os.pread(fd, length, offset)
    except OSError as exc:
        return exc.errno or -1


def _shown(outcome: bytes | int) -> str:
    if isinstance(outcome, int):
        return errno.errorcode.get(outcome, str(outcome))
    return f"{len(outcome)} bytes {outcome[:16].hex()}"


def mismatch(got: bytes, expected: bytes, offset: int, oracle: bytes) -> str:
    """Where ``got`` first differs from ``expected``, and where its bytes really come from."""
    first = next(i for i in range(min(len(got), len(expected)) + 1)
                 if i == len(got) or i == len(expected) or got[i] != expected[i])  # fmt: skip
    text = (f"{len(got)} bytes (expected {len(expected)}), first difference at file offset "
            f"{offset + first} (+{first}): expected {expected[first:first + 16].hex()} "
            f"got {got[first:first + 16].hex()}")  # fmt: skip
    bad = got[first:]
    if bad and bad.count(0) == len(bad):
        text += "; the rest is zeros"
    else:
        # Random data makes a 64-byte probe unique: it tells a shifted block from garbage.
        probe = got[first : first + 64]
        source = oracle.find(probe) if len(probe) >= 16 else -1
        if source >= 0:
            text += f"; those bytes are the file's at {source} (shift {source - offset - first})"
    return text


# -- the run ---------------------------------------------------------------------------------


def monitor(soak: Soak, readers: list[Reader], until: float) -> None:
    """Watch reads, the daemon and the mount table until ``until`` or every reader ended.

    After a hang the others get a few seconds more, not a full HANG_AFTER each: they are
    abandoned (daemon threads), and killing the daemon ends their reads.
    """
    stats = soak.stats
    process = soak.mount.process
    while any(r.is_alive() and not r.hung.is_set() for r in readers):
        now = time.monotonic()
        if now >= until:
            return
        if stats.hangs:
            until = min(until, now + 5.0)
        if process is None or process.poll() is not None or not mounted(soak.mount.mountpoint):
            code = None if process is None else process.returncode
            stats.fail("death", f"daemon exit code {code}, still in the mount table: "
                                f"{mounted(soak.mount.mountpoint)}, "
                                f"{now - soak.started:.1f} s into the reading")  # fmt: skip
            soak.stop.set()
            return
        for reader in readers:
            call = reader.inflight
            if call is not None and now - call[0] > HANG_AFTER and not reader.hung.is_set():
                reader.hung.set()
                stats.fail("hang", f"reader {reader.index}: {call[1]} still running after "
                                   f"{now - call[0]:.0f} s")  # fmt: skip
                # A stuck read means the soak cannot say more; stop and kill the daemon.
                soak.stop.set()
        time.sleep(0.2)


def run(mount: Mount, origin: Origin, targets: list[Target], seconds: float, seed: int,
        readers_count: int) -> tuple[Stats, int, int]:  # fmt: skip
    """Check sizes, turn chaos on, read for ``seconds``; return the stats and RSS before/after."""
    stats = Stats()
    readable: list[Target] = []
    listings: dict[str, list[str]] = {}
    for folder in sorted({t.rel.split("/")[0] for t in targets}):
        listings[folder] = bounded(partial(os.listdir, mount.path(folder)), 60, f"ls {folder}")
    for target in targets:
        # Every size is learnt before chaos: loading a playlist under chaos is another test,
        # and a wrong size would make every later comparison meaningless.
        try:
            size = bounded(partial(os.stat, mount.path(target.rel)), 60, target.rel).st_size
        except OSError as exc:
            raise SetupError(f"stat of {target.rel}: {exc}; listings: {listings}") from exc
        if size != len(target.oracle):
            stats.fail("wrong", f"stat of {target.rel} [{target.kind}]: size {size}, "
                                f"expected {len(target.oracle)}")  # fmt: skip
        else:
            readable.append(target)
    if not readable:
        raise SetupError("no file on the mount has its expected size")
    origin.chaos(None, rate=CHAOS_RATE, seed=seed)
    pid = mount.process.pid if mount.process is not None else None
    rss_before = rss_mib(pid)
    soak = Soak(mount, readable, stats, time.monotonic() + seconds)
    readers = [Reader(i, soak, seed) for i in range(readers_count)]
    for reader in readers:
        reader.start()
    monitor(soak, readers, soak.deadline)
    # Reads still in progress at the deadline finish (or hang) under the same watch.
    soak.stop.set()
    monitor(soak, readers, time.monotonic() + HANG_AFTER + 2)
    rss_after = rss_mib(pid)
    origin.chaos_off()
    return stats, rss_before, rss_after


def stop_mount(mount: Mount) -> int | None:
    """Mount.stop, with a last resort: kill the daemon by PID if stop itself gets stuck.

    Mount.stop asks os.path.ismount first, which a wedged daemon may never answer.
    """
    process = mount.process
    try:
        # Mount.stop's own escalation (unmount, 20 s, SIGTERM, 10 s, SIGKILL) fits in this.
        return bounded(mount.stop, 35, "Mount.stop")
    except Hung:
        if process is not None:
            process.kill()
        try:
            return bounded(mount.stop, 15, "Mount.stop after kill")
        except Hung:
            return None
    finally:
        # A killed daemon leaves a dead mount that os.path.ismount calls unmounted.
        if mounted(mount.mountpoint):
            subprocess.run([FUSERMOUNT, "-uz", str(mount.mountpoint)], capture_output=True,
                           timeout=15)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="reading time (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--readers", type=int, default=6, help="reader threads (default 6)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (and log) on success"
    )
    args = parser.parse_args(argv)
    seed: int = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    # Loopback traffic must never go through a proxy from the environment.
    for key in [k for k in os.environ if "proxy" in k.lower()]:
        del os.environ[key]
    if not (os.path.exists("/dev/fuse") and shutil.which(FUSERMOUNT)):
        print("soak: needs /dev/fuse and fusermount3 (./dev setup installs them)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="kithara-soak-"))
    began = time.monotonic()
    try:
        with Origin("127.0.0.1") as origin:
            streams, targets = build(origin, work, random.Random(seed))
            total = sum(
                len(t.oracle) for t in targets if not t.rel.startswith(("hls/best", "hls/worst"))
            )
            # A bit under the total, so eviction runs while the readers go on.
            cache = {"max_size": int(total * 0.8)}
            config = write_config(work / "soak.toml", streams, work / "cache", cache,
                                  read_timeout=READ_TIMEOUT, metadata_timeout=20)  # fmt: skip
            mount = Mount(config, work / "mnt", work / "daemon.log")
            try:
                mount.start(timeout=30)
                stats, rss_before, rss_after = run(mount, origin, targets, args.seconds, seed,
                                                   args.readers)  # fmt: skip
                chaos = origin.chaos_counts()
            finally:
                exit_code = stop_mount(mount)
    except (SetupError, Hung) as exc:
        print(f"soak: setup failed: {exc} (seed {seed}, files in {work})", file=sys.stderr)
        return 2
    log = mount.log_text()
    tracebacks = log.count("Traceback")
    loud = sum(1 for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line)
    passed = stats.wrong == stats.hangs == stats.deaths == 0
    for note in stats.notes:
        print(f"soak: note {note}", file=sys.stderr)
    for failure in stats.failures:
        print(f"soak: {failure}", file=sys.stderr)
    print(f"soak: {stats.checked} bytes checked, {stats.wrong} wrong, {stats.hangs} hangs, "
          f"{stats.deaths} mount deaths, RSS {rss_before} -> {rss_after} MiB")  # fmt: skip
    errors = ", ".join(f"{k} {v}" for k, v in sorted(stats.errors.items())) or "none"
    faults = ", ".join(f"{k} {v}" for k, v in chaos.items())
    details = (
        f"details: seed {seed}; {stats.reads} reads ({stats.eof_reads} at the end, "
        f"{stats.past_end_reads} past it) on {stats.opens} opens ({stats.nonblocking_opens} "
        f"O_NONBLOCK; {stats.nonblocking_eagain} EAGAINs there, {stats.poll_timeouts} poll "
        f"timeouts, {stats.poll_lies} poll lies ({stats.poll_lies_wide} for reads "
        f"over {READY_WINDOW // 1024} KiB), {stats.nonblocking_slow} preads slower than "
        f"{NONBLOCKING_SLOW:.0f} s, {stats.nonblocking_slow_alone} of them with no blocking "
        f"descriptor on the file); errors: {errors}; chaos: {faults}; "
        f"daemon exit {exit_code}, log {tracebacks} tracebacks, {loud} ERROR lines; "
        f"{len(targets)} files, {total / MiB:.0f} MiB, {time.monotonic() - began:.0f} s"
    )
    if not passed or args.keep:
        details += f"; daemon log: {mount.log}"
    print(details)
    if passed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
