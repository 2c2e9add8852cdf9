"""HTTP header values an origin sends us, parsed without ever raising.

Owns the reading of the few response headers whose values decide where bytes go or how long
we wait: ``Content-Range`` (RFC 9110 §14.4), ``Content-Length`` (§8.6) and ``Retry-After``
(§10.2.3). Every function takes any text a hostile or broken origin may send and returns a
value or None; none of them raises, so junk such as ``Retry-After: ²`` (``str.isdigit()`` is
true for it, ``int()`` fails) can never end a task.

It must never do I/O, and never accept a value that is not exactly of the grammar: a
digit that is not ASCII, a sign, a space inside a number or an absurd size is "no value".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Headers longer than this are not parsed at all: no valid value of these headers comes
# close, and a bounded input keeps the regular expressions below cheap.
MAX_VALUE_LENGTH = 256
# 2**63 - 1 is the largest offset a file (off_t) can have; larger numbers are junk.
MAX_OFFSET = 2**63 - 1

# ASCII only: \d would match any Unicode digit (Arabic-Indic, fullwidth, …).
_DIGITS = "[0-9]{1,19}"
_RANGE = re.compile(rf"bytes[ \t]+({_DIGITS})-({_DIGITS})/({_DIGITS}|\*)", re.IGNORECASE | re.ASCII)
_UNSATISFIED = re.compile(rf"bytes[ \t]+\*/({_DIGITS})", re.IGNORECASE | re.ASCII)
_NUMBER = re.compile(_DIGITS, re.ASCII)


@dataclass(frozen=True)
class ContentRange:
    """``bytes first-last/total``: an inclusive span, and the whole length when known."""

    first: int
    last: int
    total: int | None

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def _clean(value: str | None) -> str | None:
    if value is None or len(value) > MAX_VALUE_LENGTH:
        return None
    return value.strip(" \t")


def content_range(value: str | None) -> ContentRange | None:
    """A satisfied ``Content-Range``; None for anything else (absent, ``*/N``, junk, reversed)."""
    text = _clean(value)
    match = _RANGE.fullmatch(text) if text is not None else None
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if first > last or last > MAX_OFFSET:
        return None
    if total is not None and (last >= total or total > MAX_OFFSET):
        return None
    return ContentRange(first, last, total)


def unsatisfied_length(value: str | None) -> int | None:
    """The length in a 416 answer's ``Content-Range: bytes */N``; None when not of that form."""
    text = _clean(value)
    match = _UNSATISFIED.fullmatch(text) if text is not None else None
    if match is None:
        return None
    total = int(match.group(1))
    return total if total <= MAX_OFFSET else None


def content_length(value: str | None) -> int | None:
    """A ``Content-Length`` of ASCII digits only; None when absent or not a plain number."""
    text = _clean(value)
    if text is None or not _NUMBER.fullmatch(text):
        return None
    length = int(text)
    return length if length <= MAX_OFFSET else None


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` (delta-seconds or an HTTP date), never negative.

    ``now`` is the current Unix time, for the date form. None when absent or unreadable.
    """
    text = _clean(value)
    if not text:
        return None
    if _NUMBER.fullmatch(text):
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:  # a date without a zone is not an HTTP date
        return None
    try:
        seconds = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
