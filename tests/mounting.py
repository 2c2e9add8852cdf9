"""Test helper: a real kithara-fs mount in a subprocess, always cleaned up.

Owns starting ``kithara-fs mount --foreground`` on a config, waiting until the mount
answers, unmounting (lazily if it must) and killing only the process it started, and reading
the daemon's log for unexpected warnings (the s3ql checklogs idea). Never serves FUSE from
the test process itself: syscalls on the mount from the serving process could deadlock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
_LOUD = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


def wait_until(condition: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    """Poll a condition (bounded); the bound is a hang guard, not a speed assertion."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.05)


def clean_env() -> dict[str, str]:
    """The environment minus proxy settings: all test traffic goes straight to 127.0.0.1."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def write_config(
    path: Path,
    streams: dict[str, str | dict[str, Any]],
    cache_dir: Path,
    cache: dict[str, Any] | None = None,
    network: dict[str, Any] | None = None,
    **mount: Any,
) -> Path:
    """A TOML config; a stream is a URL or a table such as ``{"url": ..., "pin": True}``."""
    lines = [f'[cache]\ndir = "{cache_dir}"\n' + "".join(
        f"{k} = {_toml(v)}\n" for k, v in (cache or {}).items())]  # fmt: skip
    if network:
        lines.append("[network]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in network.items()))
    if mount:
        lines.append("[mount]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in mount.items()))
    for rel, stream in streams.items():
        table = {"url": stream} if isinstance(stream, str) else stream
        lines.append(f'[[stream]]\npath = "{rel}"\n' + "".join(
            f"{k} = {_toml(v)}\n" for k, v in table.items()))  # fmt: skip
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # an inline table, e.g. a stream's headers
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return repr(value)


class Mount:
    """A mounted kithara-fs; use ``with Mount(...) as m:``."""

    def __init__(
        self,
        config: Path,
        mountpoint: Path,
        log: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        mount_args: list[str] | None = None,
    ) -> None:
        self.config = config
        # Options of `kithara-fs mount` itself, such as --allow-other.
        self.mount_args = mount_args or []
        self.env = env or {}
        # What runs `kithara-fs`: by default the installed package; a test may run a
        # program of its own that embeds kithara_fs (one that registers a kind, say).
        self.command = command or [sys.executable, "-m", "kithara_fs"]
        self.mountpoint = mountpoint
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        # Set by kill(): the daemon was SIGKILLed on purpose and its dead mount left behind.
        self.killed = False
        self._expected: list[re.Pattern[str]] = []

    def path(self, rel: str) -> Path:
        return self.mountpoint / rel

    def expect_log(self, pattern: str) -> None:
        """Declare a warning this test provokes on purpose."""
        self._expected.append(re.compile(pattern))

    def start(self, timeout: float = 30.0) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*self.command, "--log-level", "debug", "mount", "--foreground",
                 *self.mount_args, str(self.config), str(self.mountpoint)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=clean_env() | self.env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"kithara-fs exited with {self.process.returncode}:\n"
                                   f"{self.log_text()[-3000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount did not answer in {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self) -> int | None:
        """Unmount and wait for the daemon; escalate to lazy unmount and kill by PID."""
        if self.process is None:
            if os.path.ismount(self.mountpoint):  # a killed daemon's dead mount
                subprocess.run([FUSERMOUNT, "-uz", str(self.mountpoint)], capture_output=True)
            return self.returncode
        if os.path.ismount(self.mountpoint):
            subprocess.run([FUSERMOUNT, "-u", str(self.mountpoint)], capture_output=True)
        try:
            self.returncode = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.returncode = self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.returncode = self.process.wait()
        if os.path.ismount(self.mountpoint):
            subprocess.run([FUSERMOUNT, "-uz", str(self.mountpoint)], capture_output=True)
        self.process = None
        return self.returncode

    def _answers(self) -> bool:
        """Mounted and answering (a crashed daemon's dead mount is mounted, but ENOTCONN)."""
        if not os.path.ismount(self.mountpoint):
            return False
        try:
            os.listdir(self.mountpoint)  # stat may be answered from the kernel's cache
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), leaving its dead mount point behind."""
        if self.process is None:
            return
        self.process.kill()
        self.returncode = self.process.wait(timeout=30)
        self.process = None
        self.killed = True

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def unexpected_log_lines(self) -> list[str]:
        return [
            line
            for line in self.log_text().splitlines()
            if _LOUD.search(line) and not any(p.search(line) for p in self._expected)
        ]

    def __enter__(self) -> Mount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
