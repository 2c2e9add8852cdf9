"""``kithara-fs status``: what running mounts are doing, for a person.

Owns finding this machine's kithara-fs mounts (``/proc/mounts``, file system type
``fuse.kithara``), reading each one's ``.kithara/status.json``, and showing one row per
stream: path, state, cached bytes of total with a progress bar, download rate, seconds of
audio buffered ahead of the reader, what a station plays now, and the last error. On a
terminal it draws a table with rich (colour, live refresh with ``--watch``); anywhere else
it prints plain text.

It must never need the config file or talk to the daemon other than through the mount.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

# rich is imported where a table is drawn: the daemon uses this module only to find mounts,
# and rich was a fifth of its start-up imports.
if TYPE_CHECKING:
    from rich.table import Table

STATUS_PATH = (".kithara", "status.json")
_COLUMNS = ("PATH", "STATE", "CACHED / TOTAL", "PROGRESS", "RATE", "AHEAD", "PLAYING", "ERROR")
_STATE_STYLE = {"downloading": "cyan", "cached": "green", "error": "red", "idle": "dim"}


def kithara_mounts(mounts_file: str = "/proc/mounts") -> list[str]:
    """Mount points of every kithara-fs on this machine."""
    found = []
    with open(mounts_file, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "fuse.kithara":
                found.append(_unescape(fields[1]))
    return found


def _unescape(field: str) -> str:
    """/proc/mounts writes blanks, tabs, newlines and backslashes as octal (\\040 …); the rest
    of the path is its raw bytes, which may be UTF-8."""
    raw = os.fsencode(field)
    unescaped = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)
    return os.fsdecode(unescaped)


def read_status(mountpoint: str) -> dict[str, Any]:
    with open(os.path.join(mountpoint, *STATUS_PATH), encoding="utf-8") as f:
        status: dict[str, Any] = json.load(f)
    return status


def human_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "#" * filled + "." * (width - filled)


def rows(status: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """One tuple of column texts per stream."""
    for stream in status["streams"]:
        size, cached = stream["size"], stream["cached_bytes"]
        fraction = cached / size if size else 0.0
        ahead = stream["buffered_seconds"]
        yield (
            stream["path"],
            stream["state"],
            f"{human_bytes(cached)} / {human_bytes(size)}",
            f"[{bar(fraction)}] {fraction:4.0%}",
            f"{human_bytes(stream['download_rate'])}/s" if stream["download_rate"] else "-",
            f"{ahead:.0f} s" if ahead is not None else "-",
            # A station's current title (absent from an older daemon's status).
            stream.get("title") or "-",
            stream["error"] or "-",
        )


def heading(mountpoint: str, status: dict[str, Any]) -> str:
    return f"{mountpoint} (pid {status['pid']}, {status['config']}): {status['summary']}"


def plain(mountpoint: str, status: dict[str, Any]) -> str:
    table = [_COLUMNS, *rows(status)]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines = [heading(mountpoint, status)]
    for row in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip())  # fmt: skip
    return "\n".join(lines)


def rich_table(mountpoint: str, status: dict[str, Any]) -> Table:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=escape(heading(mountpoint, status)), title_justify="left")
    for column in _COLUMNS:
        table.add_column(column, no_wrap=column != "ERROR")
    for row in rows(status):
        # Cells are text, not markup: a path or the progress bar may contain brackets.
        cells = [Text(cell) for cell in row]
        cells[1].stylize(_STATE_STYLE.get(row[1], ""))
        table.add_row(*cells)
    return table


def show(mountpoints: Sequence[str], *, watch: bool, as_json: bool, interval: float = 1.0) -> int:
    """Print the status of each mount; with ``watch``, refresh until interrupted."""
    from rich.console import Console, Group
    from rich.live import Live

    console = Console()
    if as_json:
        print(json.dumps({m: read_status(m) for m in mountpoints}, indent=2))
        return 0
    if not console.is_terminal:
        while True:
            print("\n\n".join(plain(m, read_status(m)) for m in mountpoints), flush=True)
            if not watch:
                return 0
            time.sleep(interval)
            print()
    tables = [rich_table(m, read_status(m)) for m in mountpoints]
    if not watch:
        for table in tables:
            console.print(table)
        return 0
    with Live(console=console, auto_refresh=False) as live:
        while True:
            live.update(Group(*[rich_table(m, read_status(m)) for m in mountpoints]),
                        refresh=True)  # fmt: skip
            time.sleep(interval)


__all__ = ["kithara_mounts", "plain", "read_status", "rows", "show"]
