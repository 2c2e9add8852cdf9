"""Mounting and unmounting the three filesystems under test.

Owns: the command line of each filesystem (kithara_fs, httpdirfs, rclone mount), starting it
in the foreground as a child process in its own session (so a Ctrl-C in the terminal reaches
only the benchmark, which then unmounts in order), waiting until the mount answers, reading
the daemon's peak RSS, and unmounting — ``fusermount3 -u``, then SIGTERM/SIGKILL to *that*
child's pid, then a lazy ``fusermount3 -uz`` as a last resort.

Must never: signal a process it did not start, or leave a mount behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kithara_fs.config import load_config

MOUNT_TIMEOUT = 60.0
KITHARA_FS = Path(sys.executable).with_name("kithara-fs")


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def dpkg_version(package: str) -> str:
    """The installed Debian package version, or 'not installed'."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout else "not installed"


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point in the mount table, even if its FUSE daemon died
    (``os.path.ismount`` says False then, because stat fails with ENOTCONN)."""
    target = os.path.realpath(path)
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return os.path.ismount(path)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")
            if point == target:
                return True
    return False


def unmount(mountpoint: Path, proc: subprocess.Popen[bytes] | None) -> int | None:
    """Unmount ``mountpoint`` and reap ``proc`` (the filesystem this bench started): a clean
    unmount first, then SIGTERM/SIGKILL to that pid, and a lazy unmount if all else failed.
    Returns the exit code, None if the process had to be killed."""
    code: int | None = None
    try:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True,
                           timeout=30)  # fmt: skip
        if proc is not None:
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    finally:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True,
                           timeout=30)  # fmt: skip
    return code


class Mount:
    """One filesystem mounted at ``mountpoint`` from the origin folder ``folder_url``.

    Subclasses give the command line; ``files`` is the list of file names inside the folder,
    and ``path(name)`` where each appears in the mount.
    """

    name = "?"
    # Bytes the filesystem declares it fetches past a read on its own (for over-fetch).
    declared_readahead = 0

    def __init__(
        self, workdir: Path, folder_url: str, files: dict[str, str], log_dir: Path
    ) -> None:
        self.workdir = workdir / self.name
        self.mountpoint = self.workdir / "mnt"
        self.cache_dir = self.workdir / "cache"
        self.folder_url = folder_url
        self.files = files  # name -> origin URL
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def path(self, name: str) -> Path:
        return self.mountpoint / name

    @staticmethod
    def version() -> str:
        raise NotImplementedError

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before mounting; "
                    f"see {self.log_path}"
                )
            if os.path.ismount(self.mountpoint):
                try:
                    listed = set(os.listdir(self.mountpoint))
                except OSError:
                    listed = set()
                if set(self.files) <= listed:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not mount within {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def peak_rss(self) -> int | None:
        """VmHWM of the filesystem process in bytes (None if it is gone)."""
        if self.proc is None:
            return None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self) -> int | None:
        """Unmount and reap the process; returns its exit code (None if it had to be killed)."""
        try:
            return unmount(self.mountpoint, self.proc)
        finally:
            log = self._log
            self._log = None
            if log is not None:
                with contextlib.suppress(OSError):
                    log.close()  # type: ignore[attr-defined]

    def log_tail(self, lines: int) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def warnings(self) -> list[str]:
        """Lines of the filesystem's log that look like warnings or errors."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        keys = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback", "ERROR :", "panic")
        return [line for line in lines if any(k in line for k in keys)]


class KitharaMount(Mount):
    name = "kithara_fs"

    def __init__(
        self,
        workdir: Path,
        folder_url: str,
        files: dict[str, str],
        log_dir: Path,
        byte_rate: int = 176_400,
    ) -> None:
        super().__init__(workdir, folder_url, files, log_dir)
        self.config_path = self.workdir / "streams.toml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = ["[cache]", f'dir = "{self.cache_dir}"', ""]
        for name, url in files.items():
            lines += ["[[stream]]", f'path = "{name}"', f'url = "{url}"', ""]
        self.config_path.write_text("\n".join(lines))
        # The mount's defaults are the product under test; read the declared read-ahead back
        # from its own config parser (bytes, or seconds of audio at the file's byte rate).
        settings = load_config(self.config_path)
        if hasattr(settings, "readahead"):
            self.declared_readahead = int(settings.readahead)
        else:
            self.declared_readahead = int(float(settings.readahead_seconds) * byte_rate)

    def command(self) -> list[str]:
        return [
            str(KITHARA_FS),
            "mount",
            "--foreground",
            str(self.config_path),
            str(self.mountpoint),
        ]

    @staticmethod
    def version() -> str:
        return _version([str(KITHARA_FS), "--version"])


class HttpdirfsMount(Mount):
    name = "httpdirfs"
    # httpdirfs has no read-ahead setting; it downloads whole segments (--dl-seg-size, 8 MB
    # by default) around each read. That is its fetch granularity, counted as over-fetch.
    declared_readahead = 0

    def command(self) -> list[str]:
        return [
            "httpdirfs",
            "-f",
            "--cache",
            "--cache-location",
            str(self.cache_dir),
            self.folder_url,
            str(self.mountpoint),
        ]

    @staticmethod
    def version() -> str:
        return f"httpdirfs {dpkg_version('httpdirfs')} (Debian package)"


class RcloneMount(Mount):
    name = "rclone"
    # In --vfs-cache-mode full, rclone reads ahead --buffer-size (16 MiB by default) plus
    # --vfs-read-ahead (0 by default) of each read; both are pinned below.
    BUFFER_SIZE = 16 * 1024 * 1024
    declared_readahead = BUFFER_SIZE

    def command(self) -> list[str]:
        return [
            "rclone",
            "mount",
            ":http:",
            str(self.mountpoint),
            "--http-url",
            self.folder_url,
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(self.cache_dir),
            "--buffer-size",
            str(self.BUFFER_SIZE),
            "--vfs-read-ahead",
            "0",
            "--read-only",
            "--config",
            "/dev/null",
            "--log-level",
            "NOTICE",
        ]

    @staticmethod
    def version() -> str:
        return f"{_version(['rclone', 'version'])} (Debian package {dpkg_version('rclone')})"


class PassthroughMount(Mount):
    """Not a peer but the FUSE ceiling: bench/passthrough.py over local copies (symlinks) of
    the same files, ``direct_io`` on every open like kithara_fs. Its files are local and hot
    in the page cache, so every figure is the cost of the FUSE round trip through Python."""

    name = "passthrough"

    def __init__(
        self, workdir: Path, folder_url: str, files: dict[str, str], log_dir: Path,
        local: dict[str, Path],
    ) -> None:  # fmt: skip
        super().__init__(workdir, folder_url, files, log_dir)
        self.source_dir = self.workdir / "src"
        self.local = local

    def start(self) -> None:
        self.source_dir.mkdir(parents=True, exist_ok=True)
        for name in self.files:
            link = self.source_dir / name
            if not link.is_symlink():
                link.symlink_to(self.local[name].resolve())
        super().start()

    def command(self) -> list[str]:
        here = Path(__file__).resolve().parent
        return [sys.executable, str(here / "passthrough.py"), str(self.source_dir),
                str(self.mountpoint)]  # fmt: skip

    @staticmethod
    def version() -> str:
        return "bench/passthrough.py"


MOUNTS: list[type[Mount]] = [KitharaMount, HttpdirfsMount, RcloneMount]


def missing_tools() -> list[str]:
    """Programs the benchmark needs that are not on PATH."""
    needed = ["fusermount3", "httpdirfs", "rclone", "ffmpeg", "curl"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if not KITHARA_FS.exists():
        missing.append(str(KITHARA_FS))
    return missing
