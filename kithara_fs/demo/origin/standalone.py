"""Serving a directory of files with the loopback origin from the command line.

Owns: `python -m kithara_fs.demo.origin DIR`: parsing its arguments, registering every file
under DIR at its relative path, printing the URLs, and serving until interrupted.

Must never: read the files into memory (they are served from disk) or inject faults.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from pathlib import Path

from kithara_fs.demo.origin.server import Origin


def main(argv: list[str] | None = None) -> int:
    """Serve every file under a directory until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m kithara_fs.demo.origin", description="Serve a directory of files."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    root: Path = args.directory
    if not root.is_dir():
        parser.error(f"not a directory: {root}")

    origin = Origin(args.host, args.port)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        print(origin.add("/" + file.relative_to(root).as_posix(), file), flush=True)
    with origin, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0
