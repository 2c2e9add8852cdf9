"""What the loopback origin can be told to do wrong: per-path faults and chaos mode.

Owns: the Faults dataclass tests mutate while the origin runs, the stall cap, the names and
bounds of chaos faults, the chaos mode's settings, and drawing (and counting) one request's
chaos fault and its junk Retry-After.

Must never: take the origin's lock itself (callers hold it while drawing), touch sockets or
sleep, draw from the chaos generator for a HEAD or a path chaos does not cover, or offer a
fault that a client checking status, Content-Range, Content-Length and Content-Encoding
could not notice.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate

# Upper bound on a stall so a test that forgets to release it cannot leave threads behind.
STALL_CAP = 60.0

# What chaos mode can inject, by the names the request log and chaos_counts() use. Every one
# leaves the content and its validators alone and is visible in the status, Content-Range,
# Content-Length (a body that ends short) or Content-Encoding; header_stall only delays.
CHAOS_FAULTS = (
    "fail_status",
    "drop",
    "body_stall",
    "header_stall",
    "range_shift",
    "length_overstates",
    "ignore_range",
    "gzip",
)
# Chaos stalls last this long (seconds), drawn uniformly.
CHAOS_STALL = (0.5, 3.0)
# Upper bound on a chaos Content-Range shift or Content-Length overstatement, in bytes.
CHAOS_MAX_LIE = 4096
# Stands in for the chaos generator when chaos is off; never drawn from.
_NO_CHAOS = random.Random(0)


@dataclass
class Faults:
    """Mutable per-path misbehaviour; tests change the fields while the origin runs.

    A `*_count` field is how many more GET answers get the fault it belongs to; 0 means off
    (except redirect_count, see there). It is spent under the origin's lock, one per answer
    the fault applies to (a Content-Range lie only by a 206, a body fault only by a 200 or
    206, a header stall by any GET answer), so concurrent requests never share one; only a
    redirect is spent by HEAD. Per request, a redirect wins over fail_statuses, which wins
    over the content answer and its body faults; body faults otherwise combine.
    """

    # Consumed one per GET: answer this status with a small body instead of the content.
    fail_statuses: list[int] = field(default_factory=list)
    # Sent verbatim as Retry-After with the fail_statuses answers. Junk ("²"), negative, huge
    # and date values are all fair game: clients must survive each. Text that Latin-1 cannot
    # encode goes out as UTF-8 bytes.
    retry_after: str | None = None
    # Send the full Content-Length, then only this many body bytes, then cut the connection.
    # Only applies while drop_count > 0.
    drop_after: int | None = None
    # How many more responses get the drop treatment.
    drop_count: int = 0
    # Behave like a server without Range support: always 200 with the whole body.
    ignore_range: bool = False
    # Seconds to wait before the response headers.
    delay: float = 0.0
    # Before the response headers, wait until this is set (at most STALL_CAP seconds).
    stall: threading.Event | None = None
    # Body bytes per second.
    rate: int | None = None
    # A 206's Content-Range claims a first and last shifted by this many bytes (either sign,
    # not clamped, so it may even go negative) while the body holds the requested bytes: a
    # client trusting the header would put right bytes at the wrong offset.
    range_shift: int = 0
    range_shift_count: int = 0
    # A 206's Content-Range last is this much lower while Content-Length and the body carry
    # the whole requested span: more body than the range says. Not clamped at first.
    range_claims_fewer: int = 0
    # A 206's Content-Range claims this many bytes more than Content-Length and the body
    # carry. The claimed last grows up to total-1; whatever does not fit (the total must stay
    # the real size) comes off the end of the body instead. Unused while range_claims_fewer
    # is set; both share range_lie_count.
    range_claims_more: int = 0
    range_lie_count: int = 0
    # Content-Length promises this many bytes more than the body; after the real body the
    # connection is shut down, so the client sees the body end short.
    length_overstates: int = 0
    length_overstates_count: int = 0
    # After this many body bytes, send nothing for stall_seconds (at most STALL_CAP; stop()
    # and clear_faults() end it early) with the connection open, then close it without the
    # rest. A stall_after past the body's end stalls after the whole body, then closes.
    stall_after: int | None = None
    stall_seconds: float = 0.0
    stall_count: int = 0
    # Seconds to wait before the status line, bounded and ended early like stall_seconds.
    header_stall_seconds: float = 0.0
    header_stall_count: int = 0
    # Answer GET and HEAD with 302 and this Location, sent verbatim so a relative reference
    # works too; the path needs no resource. redirect_count 0 means every request, forever;
    # a positive count limits it to that many answers, and redirect_to is cleared after the
    # last one (as 0 would otherwise mean forever again).
    redirect_to: str | None = None
    redirect_count: int = 0
    # GET only: gzip the (possibly ranged) body and say so in Content-Encoding, with the
    # compressed Content-Length, whatever Accept-Encoding asked for. Content-Range keeps
    # describing the uncompressed bytes.
    gzip: bool = False
    # One X-Padding header of this many bytes on every answer for the path, HEAD included.
    huge_header_bytes: int = 0
    # A Set-Cookie header (this value) on every answer for the path, as a CDN's token.
    set_cookie: str | None = None
    # The body of 416 answers (sent as text/html), e.g. an error page; empty sends none.
    unsatisfiable_body: bytes = b""
    # Every 200 and 206 answer, HEAD included, carries a new ETag and a Last-Modified one
    # second later although the bytes are the same. If-Range is compared with the validators
    # as last issued, so an older one gets the whole body with 200.
    fresh_etag: bool = False


@dataclass
class _Chaos:
    paths: frozenset[str] | None
    rate: float
    rng: random.Random


def _chaos_retry_after(rng: random.Random) -> str | None:
    # Numeric values (and dates) stay within a second, so a client that obeys them keeps a
    # soak test quick; the junk ones are there to be survived, not obeyed.
    return rng.choice(
        [
            None,
            "0",
            "1",
            "0.5",
            "-5",
            "",
            "soon",
            "²",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            formatdate(int(time.time()) + 1, usegmt=True),
        ]
    )


def roll_chaos(
    chaos: _Chaos | None, counts: dict[str, int], path: str, head: bool, status: int, length: int
) -> str | None:
    """Draw this GET's chaos fault, if any, and count it in `counts`; call with the lock held."""
    if chaos is None or head or (chaos.paths is not None and path not in chaos.paths):
        return None
    if chaos.rng.random() >= chaos.rate:
        return None
    options = ["fail_status", "header_stall"]
    if status != 416:
        options += ["length_overstates", "gzip"]
        # Cutting an empty body short would leave nothing to notice.
        if length > 0:
            options += ["drop", "body_stall"]
    if status == 206:
        options += ["range_shift", "ignore_range"]
    name = chaos.rng.choice(options)
    counts[name] += 1
    return name
