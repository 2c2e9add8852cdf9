"""What the loopback origin keeps: its served resources and its request log entries.

Owns: RequestRecord (the frozen log entry tests read), the log entry still being written
to, and a registered resource with its validators and a way to read its bytes in chunks.

Must never: read a file-backed resource whole into memory, take the origin's lock itself,
or decide anything about an answer (that is the planner's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the origin saw it."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int  # bytes actually written, not the Content-Length promised
    # The injected faults by name, "+"-joined; chaos ones as "chaos:<name>". None: a clean
    # answer (delay, stall and rate are not counted: they only slow an answer down).
    fault: str | None = None
    # Every request header as received, in order (tests of what a client sends); not part
    # of a record's equality, so tests compare logs by what was asked and answered.
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def header(self, name: str) -> str | None:
        """The first value of a request header, by case-insensitive name."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class _Entry:
    """A log entry still being written to; guarded by Origin._lock."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    body_bytes: int = 0
    fault: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def freeze(self) -> RequestRecord:
        return RequestRecord(
            self.method,
            self.path,
            self.range,
            self.if_range,
            self.status,
            self.body_bytes,
            self.fault,
            self.headers,
        )


@dataclass(frozen=True)
class _Resource:
    data: bytes | Path
    size: int
    etag: str
    stamp: int
    last_modified: str
    content_type: str

    def chunks(self, start: int, length: int, chunk: int) -> Iterator[bytes]:
        if isinstance(self.data, bytes):
            view = memoryview(self.data)
            for offset in range(start, start + length, chunk):
                yield bytes(view[offset : min(offset + chunk, start + length)])
            return
        with self.data.open("rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                block = f.read(min(chunk, remaining))
                if not block:
                    return
                remaining -= len(block)
                yield block
