"""The configuration file: TOML in, frozen and validated settings out.

Owns the schema of the user's streams file, every default (with the reason for it) and the
wording of configuration errors: one line naming the file, the stream and the field.

Keys common to every stream are checked here; a kind's own keys are handed to that kind's
check (``sources/kinds.py``), so a new kind brings its keys with it.

It must never touch the network, the cache or FUSE; validation is purely about the text.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .net.scoped import StreamHeaders
from .netconfig import NETWORK_KEYS, STREAM_KEYS, Network, parse_network, parse_stream_headers
from .sources import kinds
from .sources.base import Kind
from .units import parse_size

# Players block in read() while bytes download. Thirty seconds rides out a slow origin or a
# congested link without a player ever seeing EAGAIN, yet still ends a read on a dead origin
# within the time a person waits before giving up (DESIGN.md §2: "tens of seconds").
DEFAULT_READ_TIMEOUT = 30.0
# `ls` must not hang on a slow origin: a file whose size is not cached yet is probed for at
# most this long before getattr answers with size 0 (the probe keeps going in the background).
DEFAULT_METADATA_TIMEOUT = 5.0
# Seconds of audio kept downloaded ahead of a sequential reader: rides out a 30 s network
# hiccup without a stall, yet pulls only ~1 MB of a 256 kbit/s stream beyond what is heard.
DEFAULT_READAHEAD_SECONDS = 30.0
# The cache's bound when the config names none: room for a few albums of lossless audio or
# days of podcasts, small next to today's disks (issue: "default 2 GiB").
DEFAULT_MAX_SIZE = 2 * 1024**3
SUPPORTED_SCHEMES = ("http", "https")
# Names the mount generates itself: a playlist in every folder, its status folder at the root.
# The playlist is hidden: players that open a folder (mpv, VLC) skip dot files, so they play
# each file once instead of each file and then the playlist again.
PLAYLIST_NAME = ".index.m3u8"
CONTROL_DIR = ".kithara"
# No timeout or read-ahead may exceed a day: a larger value is a typo, and an infinite or NaN
# one would make every read wait forever or fail (NaN compares false with everything).
MAX_SECONDS = 86400.0
# A cache bound beyond 1 PiB is a typo (and "inf" must not become an OverflowError).
MAX_CACHE_SIZE = 1024**5


def default_cache_dir() -> Path:
    """The XDG cache home (``$XDG_CACHE_HOME`` or ``~/.cache``) plus ``kithara-fs``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kithara-fs"


@dataclass(frozen=True)
class StreamConfig:
    """One ``[[stream]]`` table.

    Attributes:
        path: the mount-relative path, already split into its parts.
        url: the http(s) URL of the audio file.
        pin: download it whole in the background and never evict it.
        readahead_seconds: this stream's read-ahead, overriding the mount's.
        kind: the name of its kind in the kinds table ("file", "hls", ...).
        options: the kind's own keys as the kind's check returned them, as sorted pairs
            (so that two configs compare equal when they say the same).
        requests: what its requests carry beyond the mount's (``headers``, ``user_agent``).
    """

    path: tuple[str, ...]
    url: str
    pin: bool = False
    readahead_seconds: float | None = None
    kind: str = kinds.DEFAULT
    options: tuple[tuple[str, Any], ...] = ()
    requests: StreamHeaders = StreamHeaders()

    @property
    def display_path(self) -> str:
        return "/".join(self.path)

    @property
    def option_map(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration.

    Attributes:
        source: the file it was read from (for messages).
        cache_dir: where cached bytes and their index live.
        max_size: the cache's bound in bytes; least recently used streams are evicted.
        read_timeout: seconds a blocking read may wait for bytes before EAGAIN.
        metadata_timeout: seconds getattr waits for an unknown size.
        readahead_seconds: seconds of audio downloaded ahead of a sequential reader.
        mountpoint: where to mount when the command line names no mount point.
        streams: the streams, in file order.
        user_agent: the User-Agent of every request (None: kithara_fs's own).
        network: the whole ``[network]`` table (proxy, CA file, connection limit).
    """

    source: str
    cache_dir: Path
    max_size: int
    read_timeout: float
    metadata_timeout: float
    readahead_seconds: float
    mountpoint: Path | None
    streams: tuple[StreamConfig, ...]
    user_agent: str | None = None
    network: Network = Network()


_TOP_KEYS = {"cache", "mount", "network", "stream"}
_CACHE_KEYS = {"dir", "max_size"}
_MOUNT_KEYS = {"read_timeout", "metadata_timeout", "readahead_seconds", "mountpoint"}
_STREAM_KEYS = {"path", "url", "pin", "readahead_seconds", "kind", *STREAM_KEYS}


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a config file.

    Raises:
        ConfigError: with a one-line message naming the file, stream and field.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text") from exc
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a 4301-digit number
        raise ConfigError(f"{name}: invalid TOML: {exc}") from exc
    return parse_config(data, source=name)


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Settings:
    """Validate an already-parsed TOML document (see :func:`load_config`)."""
    _reject_unknown(data, _TOP_KEYS, source, "")
    cache = _table(data, "cache", source)
    _reject_unknown(cache, _CACHE_KEYS, source, "[cache] ")
    mount = _table(data, "mount", source)
    _reject_unknown(mount, _MOUNT_KEYS, source, "[mount] ")
    network = _table(data, "network", source)
    _reject_unknown(network, NETWORK_KEYS, source, "[network] ")
    network_options = parse_network(network, f"{source}: [network] ")

    cache_dir = default_cache_dir()
    if "dir" in cache:
        raw = cache["dir"]
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{source}: [cache] dir: must be a non-empty string")
        cache_dir = Path(os.path.expanduser(raw))
    max_size = parse_size(cache.get("max_size", DEFAULT_MAX_SIZE), f"{source}: [cache] max_size",
                          MAX_CACHE_SIZE)  # fmt: skip

    read_timeout = _positive_number(mount, "read_timeout", DEFAULT_READ_TIMEOUT, source)
    metadata_timeout = _positive_number(
        mount, "metadata_timeout", DEFAULT_METADATA_TIMEOUT, source
    )
    readahead_seconds = _positive_number(
        mount, "readahead_seconds", DEFAULT_READAHEAD_SECONDS, source
    )

    mountpoint = None
    if "mountpoint" in mount:
        raw = mount["mountpoint"]
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{source}: [mount] mountpoint: must be a non-empty string")
        mountpoint = Path(os.path.expanduser(raw))

    raw_streams = data.get("stream", [])
    if not isinstance(raw_streams, list):
        raise ConfigError(f"{source}: stream: use [[stream]] tables (an array of tables)")
    streams = tuple(_parse_stream(i, s, source) for i, s in enumerate(raw_streams, start=1))
    _check_tree(streams, source)
    return Settings(
        source=source,
        cache_dir=cache_dir,
        max_size=max_size,
        read_timeout=read_timeout,
        metadata_timeout=metadata_timeout,
        readahead_seconds=readahead_seconds,
        mountpoint=mountpoint,
        streams=streams,
        user_agent=network_options.user_agent,
        network=network_options,
    )


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: must be a table ([{key}])")
    return value


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{source}: {where}unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _positive_number(
    table: Mapping[str, Any], key: str, default: float, source: str, where: str = "[mount] "
) -> float:
    if key not in table:
        return default
    value = table[key]
    # bool is an int in Python; `read_timeout = true` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: {where}{key}: must be a positive number, not {value!r}")
    # Compared before float(): a huge int would overflow it. `not 0 < x <= max` is also
    # true for NaN, which every comparison calls false.
    if not 0 < value <= MAX_SECONDS:
        raise ConfigError(f"{source}: {where}{key}: must be a positive number of seconds up to "
                          f"{MAX_SECONDS:.0f}, not {value!r}")  # fmt: skip
    return float(value)


def _stream_label(index: int, table: Mapping[str, Any]) -> str:
    path = table.get("path")
    if not isinstance(path, str) or not path:
        return f"stream {index}"
    # The message stays one line, whatever the path holds: control characters are escaped.
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in path[:200])
    return f"stream {index} ({shown})"


def _parse_stream(index: int, table: Any, source: str) -> StreamConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: stream {index}: must be a table")
    label = _stream_label(index, table)
    kind_keys = {key for name in kinds.names() for key in _kind(name).keys}
    _reject_unknown(table, _STREAM_KEYS | kind_keys, source, f"{label}: ")
    for key in ("path", "url"):
        if key not in table:
            raise ConfigError(f"{source}: {label}: {key}: missing")
        if not isinstance(table[key], str) or not table[key].strip():
            raise ConfigError(f"{source}: {label}: {key}: must be a non-empty string")
    pin = table.get("pin", False)
    if not isinstance(pin, bool):
        raise ConfigError(f"{source}: {label}: pin: must be true or false")
    readahead = None
    if "readahead_seconds" in table:
        readahead = _positive_number(table, "readahead_seconds", 0, source, f"{label}: ")
    path = _parse_path(table["path"], f"{source}: {label}: path")
    url = _parse_url(table["url"], f"{source}: {label}: url")
    name = table.get("kind")
    if name is None:
        kind = kinds.for_url(url)
    elif not isinstance(name, str) or kinds.find(name) is None:
        raise ConfigError(f"{source}: {label}: kind: must be one of {', '.join(kinds.names())}, "
                          f"not {name!r}")  # fmt: skip
    else:
        kind = _kind(name)
    if pin and not kind.pinnable:
        raise ConfigError(f"{source}: {label}: pin: not supported for {kind.noun}s")
    # A key common to every stream (user_agent) may also be a kind's own: not foreign.
    foreign = sorted(set(table) & (kind_keys - kind.keys - _STREAM_KEYS))
    if foreign:
        raise ConfigError(f"{source}: {label}: {foreign[0]}: not a key of {kind.name!r} streams")
    own = {key: table[key] for key in kind.keys if key in table}
    options = kind.check(own, f"{source}: {label}: ")
    requests = parse_stream_headers(table, f"{source}: {label}: ")
    return StreamConfig(
        path=path,
        url=url,
        pin=pin,
        readahead_seconds=readahead,
        kind=kind.name,
        options=tuple(sorted(options.items())),
        requests=requests,
    )


def _kind(name: str) -> Kind:
    kind = kinds.find(name)
    assert kind is not None, name
    return kind


def _parse_path(raw: str, where: str) -> tuple[str, ...]:
    if raw.startswith("/"):
        raise ConfigError(f"{where}: must be relative to the mount point, not {raw!r}")
    if "\\" in raw or any(ord(ch) < 32 for ch in raw):
        raise ConfigError(f"{where}: contains a backslash or control character")
    parts = raw.split("/")
    if parts[0] == CONTROL_DIR:
        raise ConfigError(f"{where}: {CONTROL_DIR!r} is reserved for the mount's status")
    if PLAYLIST_NAME in parts:
        raise ConfigError(f"{where}: {PLAYLIST_NAME!r} is reserved for generated playlists")
    for part in parts:
        if part == "":
            raise ConfigError(f"{where}: empty path part in {raw!r}")
        if part in (".", ".."):
            raise ConfigError(f"{where}: {part!r} is not allowed in {raw!r}")
        if len(part.encode()) > 255:
            raise ConfigError(f"{where}: a path part is longer than 255 bytes")
    return tuple(PurePosixPath(raw).parts)


def _parse_url(raw: str, where: str) -> str:
    url = raw.strip()
    # urlsplit silently drops tabs, newlines and leading control characters, so a URL that
    # parses fine could still carry them onto the wire: refuse them outright.
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"{where}: contains a space or control character")
    try:
        parts = urlsplit(url)
        port = parts.port  # parsing the port validates it
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid URL: {exc}") from exc
    del port
    if parts.scheme.lower() not in SUPPORTED_SCHEMES:
        shown = parts.scheme or "(none)"
        raise ConfigError(f"{where}: scheme {shown!r} is not supported (use http or https)")
    if not parts.hostname:
        raise ConfigError(f"{where}: has no host")
    return url


def _check_tree(streams: tuple[StreamConfig, ...], source: str) -> None:
    """Reject duplicate paths and a path used both as a file and as a folder."""
    files: dict[tuple[str, ...], int] = {}
    folders: dict[tuple[str, ...], int] = {}
    # Streams of one URL share its source, so they must ask for it in the same way.
    asked: dict[str, tuple[int, object]] = {}
    for index, stream in enumerate(streams, start=1):
        said = (tuple((n.lower(), v) for n, v in stream.requests.headers),
                stream.requests.user_agent)  # fmt: skip
        first, before = asked.setdefault(stream.url, (index, said))
        if before != said:
            raise ConfigError(f"{source}: stream {index} ({stream.display_path}): headers: "
                              f"stream {first} names the same URL with other headers or "
                              "user_agent; give both the same")  # fmt: skip
        label = f"{source}: stream {index} ({stream.display_path}): path"
        if stream.path in files:
            raise ConfigError(f"{label}: duplicate of stream {files[stream.path]}")
        if stream.path in folders:
            raise ConfigError(
                f"{label}: is a folder of stream {folders[stream.path]} and cannot also be a file"
            )
        for depth in range(1, len(stream.path)):
            prefix = stream.path[:depth]
            if prefix in files:
                what = _kind(streams[files[prefix] - 1].kind).noun
                raise ConfigError(
                    f"{label}: {'/'.join(prefix)!r} is the {what} of stream {files[prefix]}"
                    " and cannot hold other streams"
                )
            folders.setdefault(prefix, index)
        files[stream.path] = index
