"""A loopback HTTP origin with fault injection, for `kithara-fs demo` and the tests.

Owns: serving registered byte resources over HTTP/1.1 (GET and HEAD, single byte ranges,
If-Range, strong ETags), per-path injected faults (failure statuses, cut and stalled bodies,
lying Content-Range and Content-Length, redirects, gzip, padding, changing validators), a
seeded chaos mode that injects detectable faults at random, and a log of every request it
answered. This package file only re-exports the public names; the work is done in
faults (what can be injected), wire (byte ranges and body encoding), records (served
resources and the request log), planner (deciding one answer), handler (speaking HTTP),
server (the Origin itself) and standalone (serving a directory from the command line).

Must never: listen on anything but the address it was given (loopback by default), apply a
Content-Encoding no fault asked for, read a file-backed resource whole into memory, print
per-request logs or tracebacks for clients that hang up, let chaos change content or
validators or send wrong bytes that a client checking status, Content-Range, Content-Length
and Content-Encoding could not notice, or depend on anything outside the standard library.
"""

from __future__ import annotations

from kithara_fs.demo.origin.faults import (
    CHAOS_FAULTS,
    CHAOS_MAX_LIE,
    CHAOS_STALL,
    STALL_CAP,
    Faults,
)
from kithara_fs.demo.origin.records import RequestRecord
from kithara_fs.demo.origin.server import Origin
from kithara_fs.demo.origin.standalone import main
from kithara_fs.demo.origin.wire import CHUNK, parse_range

__all__ = [
    "CHAOS_FAULTS",
    "CHAOS_MAX_LIE",
    "CHAOS_STALL",
    "CHUNK",
    "STALL_CAP",
    "Faults",
    "Origin",
    "RequestRecord",
    "main",
    "parse_range",
]
