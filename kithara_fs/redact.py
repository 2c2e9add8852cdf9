"""Secrets out of text: URL credentials and query strings become ``<redacted>``.

Owns the two functions every path to a person goes through — log lines (tracebacks
included), extended attributes, the status file, error messages: :func:`redact_url` for one
URL, and :func:`redact_text` for free text that may hold URLs anywhere (any scheme, any
letter case, IPv6 hosts, inside brackets or quotes). Tokens live in user info
(``user:password@``) and in query strings (``?token=…``, signed CDN URLs); both go, while
scheme, host, port and path stay, so a message still says which stream failed.

It must never raise (it runs inside logging), and never return text longer than it needs
to keep a secret out; it imports nothing of kithara_fs.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"
# A URL in free text: a scheme (any case) and "://", then everything up to white space or a
# quote. Brackets stay in (IPv6 hosts); trailing sentence punctuation and unbalanced
# closing brackets are given back to the sentence by _url_end.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s\"'<>`]+")
# User info with characters that end a URL in free text (a quote in a password): it goes
# first, up to the "@" before the host, whatever it holds but white space and slashes.
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,15}://)[^\s/@]*@")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def redact_url(url: str) -> str:
    """The URL without credentials or query string, safe for logs and extended attributes."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _url_end(candidate: str) -> int:
    """Where a URL found in text really ends: without ``.`` ``,`` ``)`` … that close a sentence.

    One pass from the end with running bracket counts, so a hostile run of ``)`` costs
    linear time (this runs inside logging, on the event loop's thread).
    """
    counts = {closer: candidate.count(closer) - candidate.count(opener)
              for closer, opener in _CLOSERS.items()}  # fmt: skip
    end = len(candidate)
    while end > 0:
        last = candidate[end - 1]
        if last in _CLOSERS and counts[last] > 0:
            counts[last] -= 1
        elif last not in ".,;:!?":
            break
        end -= 1
    return end


def _replace(match: re.Match[str]) -> str:
    found = match.group(0)
    end = _url_end(found)
    url, rest = found[:end], found[end:]
    if "@" not in url and "?" not in url and "#" not in url:
        return found  # nothing secret; keep it verbatim
    return redact_url(url) + rest


# A query string seen without its URL (a relative reference, a path in a message).
_BARE_QUERY = re.compile(r"(?<![A-Za-z0-9])(/[^\s\"'<>`?]*)\?[^\s\"'<>`]+")


def redact_text(text: str) -> str:
    """``text`` with every URL's credentials and query string replaced; never raises."""
    try:
        text = _USERINFO.sub(r"\1", text)
        text = _URL.sub(_replace, text)
        return _BARE_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    except Exception:  # a redactor that fails must fail closed
        return REDACTED
