"""Byte-level helpers of the loopback origin: Range parsing, gzip, cut bodies, header text.

Owns: the body chunk size, parsing a single `bytes=` Range against a size (and telling an
unsatisfiable one apart from one to ignore), gzip-compressing a stream of blocks
deterministically, cutting a stream of blocks short, and making header values sendable.

Must never: hold a whole body in memory, know about faults, plans or the request log, or
depend on anything outside the standard library.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator

CHUNK = 16 * 1024


class _Unsatisfiable(Exception):
    pass


_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def parse_range(value: str, total: int) -> tuple[int, int] | None:
    """Inclusive (first, last) for a single byte range, or None when the header must be ignored.

    Raises _Unsatisfiable when the range is well formed but lies past the end. Multiple ranges
    and malformed values are ignored, as RFC 9110 allows, which yields a plain 200.
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first_s, last_s = match.groups()
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or total == 0:
            raise _Unsatisfiable
        return max(0, total - suffix), total - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= total:
        raise _Unsatisfiable
    last = min(int(last_s), total - 1) if last_s else total - 1
    return first, last


def _gzipped(blocks: Iterable[bytes]) -> Iterator[bytes]:
    # wbits 31 is the gzip container. zlib writes a zero mtime into its header, so the same
    # bytes always compress to the same stream: the handler counts Content-Length in a first
    # pass and sends in a second without holding the body in memory.
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for block in blocks:
        out = compressor.compress(block)
        if out:
            yield out
    yield compressor.flush()


def _truncated(blocks: Iterable[bytes], limit: int | None) -> Iterator[bytes]:
    if limit is None:
        yield from blocks
        return
    left = limit
    for block in blocks:
        if left <= 0:
            return
        yield block[:left]
        left -= len(block)


def _header_text(value: str) -> str:
    """`value` as send_header() can put it on the wire: Latin-1 if it fits, else UTF-8 bytes."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value
