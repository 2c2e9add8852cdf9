"""Deciding one request's answer for the loopback origin, and spending its faults.

Owns: the plan of one answer (status, headers, which content bytes, which body faults) and
choosing it from the path's resource, its Faults, the Range and If-Range headers and chaos
mode, spending each counted fault once as it is chosen.

Must never: take the origin's lock itself (the origin holds it across a whole plan, so
concurrent requests never share a counted fault), touch sockets or sleep, mint validators
(fresh_etag is the origin's), or let chaos change content or validators.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kithara_fs.demo.origin.faults import (
    _NO_CHAOS,
    CHAOS_MAX_LIE,
    CHAOS_STALL,
    Faults,
    _Chaos,
    _chaos_retry_after,
    roll_chaos,
)
from kithara_fs.demo.origin.records import _Resource
from kithara_fs.demo.origin.wire import _Unsatisfiable, parse_range


@dataclass(frozen=True)
class Request:
    """What of a request the plan depends on."""

    path: str
    head: bool
    range_header: str | None
    if_range: str | None
    if_none_match: str | None = None


@dataclass
class _Plan:
    """One request's answer, decided under Origin._lock so each counted fault is spent once."""

    resource: _Resource | None
    faults: Faults | None
    # Set to end this request's stalls early; stop() and clear_faults() set it.
    release: threading.Event
    status: int = 200
    # True for a 200 or 206 with the content; anything else is a short fixed body.
    content: bool = False
    body: bytes = b""
    body_type: str | None = "text/plain"
    headers: list[tuple[str, str]] = field(default_factory=list)
    padding: int = 0
    cookie: str | None = None
    header_stall: float = 0.0
    # The content bytes to send: `length` of them from `start`, before any gzip.
    start: int = 0
    length: int = 0
    content_range: str | None = None
    accept_ranges: bool = True
    gzip: bool = False
    overstate: int = 0
    # Body bytes (as sent, so compressed ones under gzip) after which the body stops and the
    # connection is closed.
    cut: int | None = None
    body_stall: float | None = None
    names: list[str] = field(default_factory=list)

    @property
    def fault(self) -> str | None:
        return "+".join(self.names) or None

    def fail(self, status: int, retry_after: str | None, name: str) -> None:
        self.status = status
        self.body = f"{status} injected\n".encode()
        if retry_after is not None:
            self.headers.append(("Retry-After", retry_after))
        self.names.append(name)

    def cut_at(self, offset: int) -> None:
        self.cut = offset if self.cut is None else min(self.cut, offset)


def plan_request(
    resource: _Resource | None,
    faults: Faults | None,
    release: threading.Event,
    chaos_mode: _Chaos | None,
    chaos_counts: dict[str, int],
    request: Request,
) -> _Plan:
    """Decide this request's answer and consume its share of the faults; call with the lock held.

    fresh_etag is left to the caller: it applies when the plan has `content`.
    """
    head = request.head
    plan = _Plan(resource, faults, release)
    if faults is not None:
        if faults.huge_header_bytes > 0:
            plan.padding = faults.huge_header_bytes
            plan.names.append("huge_header")
        plan.cookie = faults.set_cookie
        if not head and faults.header_stall_count > 0:
            faults.header_stall_count -= 1
            plan.header_stall = faults.header_stall_seconds
            plan.names.append("header_stall")
        if faults.redirect_to is not None:
            location = faults.redirect_to
            if faults.redirect_count > 0:
                faults.redirect_count -= 1
                if faults.redirect_count == 0:
                    faults.redirect_to = None
            plan.status = 302
            plan.body = f"302 found: {location}\n".encode()
            plan.headers.append(("Location", location))
            plan.names.append("redirect")
            return plan
    if resource is None:
        plan.status = 404
        plan.body = b"404 not found\n"
        return plan
    if faults is not None and not head and faults.fail_statuses:
        plan.fail(faults.fail_statuses.pop(0) or 500, faults.retry_after, "fail_status")
        return plan
    plan_content(plan, resource, chaos_mode, chaos_counts, request)
    return plan


def plan_content(
    plan: _Plan,
    resource: _Resource,
    chaos_mode: _Chaos | None,
    chaos_counts: dict[str, int],
    request: Request,
) -> None:
    """The 200, 206 or 416 part of plan_request, with the body faults; call with the lock held."""
    faults = plan.faults
    path, head = request.path, request.head
    range_header, if_range = request.range_header, request.if_range
    if (request.if_none_match is not None and range_header is None
            and request.if_none_match.strip() == resource.etag):  # fmt: skip
        # A conditional GET of the current version: 304, no body (RFC 9110 §15.4.5).
        plan.status, plan.body, plan.body_type = 304, b"", None
        plan.headers.append(("ETag", resource.etag))
        return
    total = resource.size
    ignore_range = faults is not None and faults.ignore_range
    plan.accept_ranges = not ignore_range
    if ignore_range and range_header is not None:
        plan.names.append("ignore_range")
    use_range = range_header is not None and not ignore_range
    if use_range and if_range is not None:
        # A validator that no longer matches means the client's earlier bytes are of
        # another version, so it gets the whole new body instead of a spliced one. With
        # fresh_etag the resource holds the validators as last issued.
        use_range = if_range.strip() in (resource.etag, resource.last_modified)
    parsed: tuple[int, int] | None = None
    unsatisfiable = False
    if use_range and range_header is not None:
        try:
            parsed = parse_range(range_header, total)
        except _Unsatisfiable:
            unsatisfiable = True
    first, last = parsed or (0, total - 1)
    status = 416 if unsatisfiable else 206 if parsed else 200

    chaos = roll_chaos(chaos_mode, chaos_counts, path, head, status, last - first + 1)
    # Only drawn from when chaos picked a fault, and then chaos_mode is set.
    rng = chaos_mode.rng if chaos_mode is not None else _NO_CHAOS
    if chaos == "fail_status":
        plan.fail(503, _chaos_retry_after(rng), "chaos:fail_status")
        return
    if chaos == "header_stall":
        plan.header_stall = max(plan.header_stall, rng.uniform(*CHAOS_STALL))
    if chaos == "ignore_range":
        parsed, status, first, last = None, 200, 0, total - 1
    if chaos is not None:
        plan.names.append(f"chaos:{chaos}")

    if status == 416:
        plan.status = 416
        plan.headers.append(("Content-Range", f"bytes */{total}"))
        body = faults.unsatisfiable_body if faults is not None else b""
        plan.body, plan.body_type = body, "text/html" if body else None
        if body:
            plan.names.append("unsatisfiable_body")
        return

    plan.content = True
    plan.status = status
    plan.start, plan.length = first, last - first + 1
    counted = faults if faults is not None and not head else None
    if parsed is not None:
        claim_first, claim_last = first, last
        if counted is not None and counted.range_lie_count > 0:
            if counted.range_claims_fewer > 0:
                counted.range_lie_count -= 1
                claim_last -= counted.range_claims_fewer
                plan.names.append("range_claims_fewer")
            elif counted.range_claims_more > 0:
                counted.range_lie_count -= 1
                wanted = counted.range_claims_more
                claim_last = max(last, min(last + wanted, total - 1))
                # The total must stay true, so what the claim could not grow by comes off
                # the body: either way the range says `wanted` bytes more than is sent.
                plan.length = max(0, plan.length - (wanted - (claim_last - last)))
                plan.names.append("range_claims_more")
        shift = 0
        if counted is not None and counted.range_shift and counted.range_shift_count > 0:
            counted.range_shift_count -= 1
            shift = counted.range_shift
            plan.names.append("range_shift")
        if chaos == "range_shift":
            # A shift that keeps the claim inside the resource where one exists, so only
            # comparing it with the range asked for gives it away.
            size = rng.randint(1, CHAOS_MAX_LIE)
            fits_above = claim_last + shift + size <= total - 1
            fits_below = claim_first + shift - size >= 0
            shift += -size if fits_below and not fits_above else size
        plan.content_range = f"bytes {claim_first + shift}-{claim_last + shift}/{total}"

    if counted is not None:
        if counted.length_overstates > 0 and counted.length_overstates_count > 0:
            counted.length_overstates_count -= 1
            plan.overstate = counted.length_overstates
            plan.names.append("length_overstates")
        if counted.drop_after is not None and counted.drop_count > 0:
            counted.drop_count -= 1
            plan.cut_at(counted.drop_after)
            plan.names.append("drop")
        if counted.stall_after is not None and counted.stall_count > 0:
            counted.stall_count -= 1
            plan.cut_at(counted.stall_after)
            plan.body_stall = counted.stall_seconds
            plan.names.append("body_stall")
        if counted.gzip:
            plan.gzip = True
            plan.names.append("gzip")
    if chaos == "length_overstates":
        plan.overstate += rng.randint(1, CHAOS_MAX_LIE)
    elif chaos == "drop":
        plan.cut_at(rng.randrange(max(1, plan.length)))
    elif chaos == "body_stall":
        plan.cut_at(rng.randrange(max(1, plan.length)))
        plan.body_stall = rng.uniform(*CHAOS_STALL)
    elif chaos == "gzip":
        plan.gzip = True
