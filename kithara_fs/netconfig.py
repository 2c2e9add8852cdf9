"""The network options of the config: the ``[network]`` table and a stream's own headers.

Owns the checking of ``proxy``, ``ca_file``, ``max_connections`` and ``user_agent`` in
``[network]``, and of a stream's ``headers`` and ``user_agent``, with the one-line errors.
A header value is the text itself, ``"@file:PATH"`` (the file's text, without the line end
around it) or ``"@env:NAME"`` (an environment variable), so that tokens can stay out of the
config; ``"@@..."`` is a literal value that starts with ``@``.

Header values are secrets: they are read into :class:`Secret` at once, and no error message
ever quotes one (a message names the stream, the header and the file or variable).

It must never touch the network. It reads only the files the config names.
"""

from __future__ import annotations

import errno
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .net.scoped import Secret, StreamHeaders
from .redact import redact_url
from .units import user_agent_value

NETWORK_KEYS = {"user_agent", "proxy", "ca_file", "max_connections"}
STREAM_KEYS = {"headers", "user_agent"}
# Connections at once over all origins: 32 for downloads and 32 lanes for size probes, which
# keeps a folder's probes and a few players' downloads moving; more than 1,000 would only
# exhaust file descriptors.
DEFAULT_MAX_CONNECTIONS = 64
MAX_CONNECTIONS = 1000
# Fewer would leave a second player waiting for the first one's connection.
MIN_CONNECTIONS = 4
# A header value longer than this is a mistake (a whole file named by @file:, say).
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 32
# Headers kithara_fs sets itself, on every request or where it must: a stream may not change
# them (a Range or Accept-Encoding of its own would break byte-exact downloads).
# Conditions of other kinds (If-Match, Expect) would turn answers into errors.
RESERVED = frozenset({
    "host", "range", "if-range", "if-none-match", "if-modified-since", "if-match",
    "if-unmodified-since", "expect", "accept-encoding", "connection", "content-length",
    "transfer-encoding", "te", "upgrade", "icy-metadata", "user-agent", "proxy-authorization",
    "keep-alive",
})  # fmt: skip
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Network:
    """The ``[network]`` table.

    Attributes:
        user_agent: the User-Agent of every request (None: kithara_fs's own).
        proxy: None to take the proxy from the environment, "" for none at all, or the URL
            of the proxy every request goes through (may carry credentials: never log it).
        ca_file: PEM certificates to trust beside the system's (a private CA).
        max_connections: connections open at once over all origins.
    """

    user_agent: str | None = None
    proxy: str | None = None
    ca_file: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def parse_network(table: Mapping[str, Any], where: str) -> Network:
    """The ``[network]`` table; ``where`` ("FILE: [network] ") starts every error."""
    user_agent = None
    if "user_agent" in table:
        user_agent = user_agent_value(table["user_agent"], where)
    proxy = None
    if "proxy" in table:
        proxy = _proxy(table["proxy"], f"{where}proxy")
    ca_file = None
    if "ca_file" in table:
        ca_file = _ca_file(table["ca_file"], f"{where}ca_file")
    limit = table.get("max_connections", DEFAULT_MAX_CONNECTIONS)
    if (isinstance(limit, bool) or not isinstance(limit, int)
            or not MIN_CONNECTIONS <= limit <= MAX_CONNECTIONS):  # fmt: skip
        shown = f"{limit!r}"[:100]
        raise ConfigError(f"{where}max_connections: must be a whole number from "
                          f"{MIN_CONNECTIONS} to {MAX_CONNECTIONS}, not {shown}")  # fmt: skip
    return Network(user_agent, proxy, ca_file, limit)


def _proxy(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a URL such as \"http://proxy:3128\", or \"\" for none")
    url = value.strip()
    if url == "":
        return ""
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"{where}: contains a space or control character")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ConfigError(f"{where}: not a valid URL: {redact_url(url)}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: must be an http:// or https:// URL with a host, not "
                          f"{redact_url(url)}")  # fmt: skip
    return url


def _ca_file(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be the path of a PEM file")
    path = os.path.expanduser(value.strip())
    try:
        _regular(path)
        ssl.create_default_context().load_verify_locations(cafile=path)
    except ssl.SSLError:  # an OSError too: first
        raise ConfigError(f"{where}: {path} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    return path


def parse_stream_headers(table: Mapping[str, Any], where: str) -> StreamHeaders:
    """A stream's ``headers`` and ``user_agent``; ``where`` ("FILE: stream N (path): ")
    starts every error."""
    user_agent = None
    if "user_agent" in table:
        user_agent = user_agent_value(table["user_agent"], where)
    raw = table.get("headers", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}headers: must be a table such as "
                          "{ Authorization = \"@env:TOKEN\" }")  # fmt: skip
    if len(raw) > MAX_HEADERS:
        raise ConfigError(f"{where}headers: more than {MAX_HEADERS} headers")
    headers = []
    seen: set[str] = set()
    for name, value in raw.items():
        shown = "".join(ch if ch.isprintable() else "?" for ch in str(name)[:64])
        if not name or not set(name) <= _TOKEN:
            raise ConfigError(f"{where}headers: {shown!r} is not a header name")
        if name.lower() in RESERVED:
            what = "use user_agent" if name.lower() == "user-agent" else "kithara_fs sets it"
            raise ConfigError(f"{where}headers: {name}: not allowed ({what})")
        if name.lower() in seen:
            raise ConfigError(f"{where}headers: {name}: given twice")
        seen.add(name.lower())
        headers.append((name, _header_value(value, f"{where}headers: {name}")))
    # In one order, so that two streams saying the same compare equal.
    return StreamHeaders(tuple(sorted(headers, key=lambda h: h[0].lower())), user_agent)


def _regular(path: str) -> None:
    """Refuse what is not a regular file: a FIFO would block the reader (the whole mount,
    at a reload) until someone writes to it."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file")


def _read_regular(path: str, limit: int) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.read(descriptor, limit)
    finally:
        os.close(descriptor)


def _header_value(value: Any, where: str) -> Secret:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string (the value, \"@file:PATH\" or "
                          "\"@env:NAME\")")  # fmt: skip
    origin = "the value"
    if value.startswith("@file:"):
        path = os.path.expanduser(value[len("@file:"):])
        origin = f"the text of {path}"
        try:
            data = _read_regular(path, MAX_HEADER_BYTES + 3)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
        try:
            value = data.decode("ascii").strip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: {origin} is not ASCII") from None
    elif value.startswith("@env:"):
        name = value[len("@env:"):]
        origin = f"environment variable {name}"
        found = os.environ.get(name)
        if not name or found is None:
            raise ConfigError(f"{where}: {origin} is not set")
        value = found
    elif value.startswith("@@"):
        value = value[1:]
    elif value.startswith("@"):
        raise ConfigError(f"{where}: starts with @ but is neither @file: nor @env: (write @@ "
                          "for a value that starts with @)")  # fmt: skip
    if not value.strip():
        raise ConfigError(f"{where}: {origin} is empty")
    if len(value.encode("utf-8", "replace")) > MAX_HEADER_BYTES:
        raise ConfigError(f"{where}: {origin} is longer than {MAX_HEADER_BYTES} bytes")
    # Visible ASCII, spaces and tabs only: a line break would start another header, and
    # h11 would quote a bad value in its error.
    if not all(ch == "\t" or 32 <= ord(ch) < 127 for ch in value):
        raise ConfigError(f"{where}: {origin} holds a line break, control character or "
                          "non-ASCII text")  # fmt: skip
    return Secret(value.strip())
