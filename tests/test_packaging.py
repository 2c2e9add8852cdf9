"""Acceptance: ``pipx install .`` from a clone gives a working ``kithara-fs``.

Owns the packaging promise of the README: the project installs from a copy of the
checkout's files (what a clone holds, not the development ``.venv``) with pipx, or with pip
into a new virtual environment where pipx is missing, and the installed command validates a
config and mounts and serves a file. Dependencies come from the package index, as a user's
would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kithara_fs.demo.origin import Origin

from .conftest import MountFactory, needs_fuse
from .mounting import clean_env

ROOT = Path(__file__).resolve().parent.parent


def clone_files(into: Path) -> Path:
    """The files a clone would hold (tracked, plus new ones not ignored), copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def install(tmp_path: Path) -> Path:
    """Install a copy of the checkout; the path of the installed ``kithara-fs``."""
    source = clone_files(tmp_path / "clone")
    env = clean_env() | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if shutil.which("pipx"):
        env |= {"PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
        done = subprocess.run(["pipx", "install", str(source)], capture_output=True, text=True,
                              env=env, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return tmp_path / "bin" / "kithara-fs"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin" / "kithara-fs"


@needs_fuse
def test_an_installed_kithara_fs_checks_mounts_and_serves(
    tmp_path: Path, origin: Origin, mount: MountFactory, media_files: dict[str, Path]
) -> None:
    command = install(tmp_path)
    assert command.exists() and not str(command.resolve()).startswith(str(ROOT / ".venv"))
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True,
                             timeout=60, env=clean_env())  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("kithara-fs "), version
    # Run from elsewhere, so the checkout's own package cannot be the one imported.
    config = tmp_path / "c.toml"
    config.write_text(f'[[stream]]\npath = "a/b.flac"\nurl = "{origin.url("/flac.flac")}"\n')
    checked = subprocess.run([str(command), "check", str(config)], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path, env=clean_env())  # fmt: skip
    assert checked.returncode == 0 and "b.flac" in checked.stdout, checked
    m = mount({"a/b.flac": origin.url("/flac.flac")}, command=[str(command)])
    assert m.path("a/b.flac").read_bytes() == media_files["flac.flac"].read_bytes()
    # The daemon is the installed script (its interpreter runs it as the first argument).
    pid = m.process.pid  # type: ignore[union-attr]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert cmdline[1] == str(command), cmdline
