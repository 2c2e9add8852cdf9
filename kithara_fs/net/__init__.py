"""The HTTP client: the only package that imports httpx.

Owns connection limits, retries with exponential backoff and full jitter, Range and If-Range
requests, validation of what the origin answered (status, Content-Range, validators,
Content-Encoding), endless streams read as they come (a station, with Shoutcast's
``ICY 200 OK`` read as HTTP), and the translation of every httpx exception into our own
:class:`~kithara_fs.errors.OriginError` family at the point where it enters. It is split in
five: ``retry`` paces the attempts, ``answers`` judges what came back, ``client`` sends the
requests, ``backend`` gives httpcore sockets whose read size a download picks, and ``lanes``
runs bursts of size probes on bare httpcore connections.

It must never decide what to download or cache, and never return a byte whose position in
the resource it has not checked.
"""

from .answers import MAX_REDIRECTS, Body, Fetched, LiveBody, ResourceInfo
from .client import OFFLINE_MEMORY, STALL_TIMEOUT, USER_AGENT, HttpClient
from .retry import Backoff, RetryPolicy

__all__ = [
    "MAX_REDIRECTS",
    "OFFLINE_MEMORY",
    "STALL_TIMEOUT",
    "USER_AGENT",
    "Backoff",
    "Body",
    "Fetched",
    "HttpClient",
    "LiveBody",
    "ResourceInfo",
    "RetryPolicy",
]
