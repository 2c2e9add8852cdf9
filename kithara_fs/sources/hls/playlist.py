"""HLS playlists (RFC 8216): parsing, validation, and the names of the files a programme shows.

Owns turning playlist text into checked, immutable descriptions — a :class:`MasterPlaylist`
of variants, or a :class:`MediaPlaylist` of segments with their byte ranges, keys, IVs, init
sections and discontinuity parts — and the naming rules for the files of a programme folder
(``128k.ts``, ``en-256k.m4a``, ``best.ts``, ``128k.part2.ts``).

Parsing is done by the ``m3u8`` library; this module adds what it leaves to the caller: a
playlist must start with ``#EXTM3U``, durations must be finite and non-negative, byte ranges
bounded, every URI http(s), and only ``NONE`` and ``AES-128`` encryption are accepted. Any
violation is one :class:`~kithara_fs.errors.PlaylistError` line naming the cause.

It must never fetch anything or hold state: it describes what it is given.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import m3u8  # type: ignore[import-untyped]

from ...errors import PlaylistError

# A playlist larger than this is not a playlist: a day of 2 s segments is ~2 MiB of text.
MAX_PLAYLIST_BYTES = 4 * 1024 * 1024
# An AES-128 key is 16 bytes; anything much larger is not a key and is not read whole.
MAX_KEY_BYTES = 64
# One segment (or init section) larger than this is refused: a whole hour of 320 kbit/s
# audio is 144 MB, so a larger EXT-X-BYTERANGE is a broken or hostile playlist.
MAX_SEGMENT_BYTES = 1024**3
# Variants and renditions a master playlist may list: real ones have under 20; each is a
# playlist to fetch and a file to show, so hundreds would be a request storm.
MAX_VARIANTS = 64
# Segments the playlist may list: far beyond a day of 2 s segments, far below exhausting RAM.
MAX_SEGMENTS = 200_000
# EXT-X-TARGETDURATION beyond this is clamped: real programmes use 2-10 s (RFC 8216 §C
# suggests 6), and the value sets how long a live read waits (two of them) and how long a
# live playlist goes unreloaded, so a hostile 100000 must not hold a reader for days.
MAX_TARGET_DURATION = 15.0
AES_BLOCK = 16
_SCHEMES = ("http", "https")
_SAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes of a resource, starting at ``offset``."""

    offset: int
    length: int


@dataclass(frozen=True)
class Key:
    """An ``EXT-X-KEY`` with METHOD=AES-128 (the key's URI, and the IV if the tag gives one)."""

    uri: str
    iv: bytes | None


@dataclass(frozen=True)
class Resource:
    """Bytes a file is made of: a whole URL, or a byte range of one; maybe encrypted.

    Attributes:
        uri: absolute http(s) URL.
        byterange: the part of ``uri`` meant, or None for all of it.
        key: the AES-128 key that encrypts it, or None.
        iv: the CBC initialisation vector (from the tag, else the media sequence number).
    """

    uri: str
    byterange: ByteRange | None
    key: Key | None
    iv: bytes


@dataclass(frozen=True)
class Segment:
    """One media segment."""

    sequence: int
    duration: float
    media: Resource
    init: Resource | None
    # Segments with the same part number can be concatenated; a new part starts at every
    # EXT-X-DISCONTINUITY and at every change of the init section.
    part: int


@dataclass(frozen=True)
class MediaPlaylist:
    """A checked media playlist.

    Attributes:
        url: the URL it was fetched from (after redirects), the base of relative URIs.
        target_duration: EXT-X-TARGETDURATION in seconds (1 to MAX_TARGET_DURATION).
        segments: the segments in order.
        ended: EXT-X-ENDLIST is present (VOD, or a live programme that finished).
        fingerprint: a digest of the text, standing in for a version (an ETag).
    """

    url: str
    target_duration: float
    segments: tuple[Segment, ...]
    ended: bool
    fingerprint: str

    @property
    def first_sequence(self) -> int:
        return self.segments[0].sequence if self.segments else 0

    @property
    def next_sequence(self) -> int:
        """The sequence number the next segment appended to this playlist will have."""
        return self.segments[-1].sequence + 1 if self.segments else 0

    def segment(self, sequence: int) -> Segment | None:
        index = sequence - self.first_sequence
        return self.segments[index] if 0 <= index < len(self.segments) else None

    def parts(self) -> list[tuple[Segment, ...]]:
        """The segments split where they cannot be concatenated (discontinuities, new init)."""
        parts: list[list[Segment]] = []
        for segment in self.segments:
            if not parts or parts[-1][-1].part != segment.part:
                parts.append([])
            parts[-1].append(segment)
        return [tuple(p) for p in parts]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


@dataclass(frozen=True)
class Variant:
    """One entry of a master playlist: an ``EXT-X-STREAM-INF`` or an audio ``EXT-X-MEDIA``.

    Attributes:
        uri: absolute URL of its media playlist.
        bandwidth: peak bits per second (0 when the playlist does not say).
        codecs: the CODECS attribute, or "".
        label: a language/name prefix for audio renditions ("" for stream variants).
        rendition: True for an EXT-X-MEDIA audio rendition (never part of `auto`).
    """

    uri: str
    bandwidth: int
    codecs: str
    label: str = ""
    rendition: bool = False


@dataclass(frozen=True)
class MasterPlaylist:
    url: str
    variants: tuple[Variant, ...]


Playlist = MasterPlaylist | MediaPlaylist


def parse(text: bytes, url: str) -> Playlist:
    """Parse and check a playlist fetched from ``url``.

    Raises:
        PlaylistError: the text is not a usable HLS playlist; the message says why.
    """
    if len(text) > MAX_PLAYLIST_BYTES:
        raise PlaylistError(url, f"playlist larger than {MAX_PLAYLIST_BYTES} bytes")
    try:
        body = text.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlaylistError(url, "playlist is not UTF-8 text") from None
    if not body.lstrip().startswith("#EXTM3U"):
        raise PlaylistError(url, "not an HLS playlist (missing #EXTM3U)")
    try:
        parsed = m3u8.loads(body, uri=url)
    except Exception as exc:  # the library raises assorted types on malformed tags
        raise PlaylistError(url, f"malformed playlist: {exc}") from None
    if parsed.is_variant:
        return _master(parsed, url)
    return _media(parsed, url, hashlib.sha256(text).hexdigest()[:32])


def _master(parsed: m3u8.M3U8, url: str) -> MasterPlaylist:
    variants: list[Variant] = []
    for entry in parsed.playlists:
        info = entry.stream_info
        variants.append(
            Variant(
                uri=_checked_uri(entry, url),
                bandwidth=int(info.bandwidth or 0),
                codecs=info.codecs or "",
            )
        )
    for media in parsed.media:
        if (media.type or "").upper() == "AUDIO" and media.uri:
            label = "-".join(x for x in (media.language, media.name) if x) or "audio"
            variants.append(
                Variant(_checked_uri(media, url), 0, "", label, rendition=True)
            )
    if not variants:
        raise PlaylistError(url, "master playlist lists no variants")
    if len(variants) > MAX_VARIANTS:
        raise PlaylistError(url, f"master playlist lists {len(variants)} variants and "
                            f"renditions (at most {MAX_VARIANTS})")  # fmt: skip
    return MasterPlaylist(url, tuple(variants))


def _media(parsed: m3u8.M3U8, url: str, fingerprint: str) -> MediaPlaylist:
    if len(parsed.segments) > MAX_SEGMENTS:
        raise PlaylistError(url, f"more than {MAX_SEGMENTS} segments")
    sequence = int(parsed.media_sequence or 0)
    # RFC 8216 §4.3.3.2: a decimal-integer, at most 2**64 - 1 (it is also the AES IV).
    if not 0 <= sequence < 2**64:
        raise PlaylistError(url, f"EXT-X-MEDIA-SEQUENCE {sequence} is out of range")
    segments: list[Segment] = []
    part = 0
    previous_init: Resource | None = None
    # A byte range without an offset continues where the previous range of the same URI ended.
    range_ends: dict[str, int] = {}
    for index, seg in enumerate(parsed.segments):
        number = sequence + index
        duration = float(seg.duration or 0)
        if not math.isfinite(duration) or duration < 0:
            raise PlaylistError(url, f"segment {number}: invalid duration {seg.duration!r}")
        key = _key(seg.key, url)
        iv = _iv(seg.key, number, url)
        uri = _checked_uri(seg, url)
        media = Resource(uri, _byterange(seg.byterange, uri, range_ends, url), key, iv)
        init = None
        if seg.init_section is not None:
            init_uri = _checked_uri(seg.init_section, url)
            init_range = _byterange(seg.init_section.byterange, init_uri, {}, url)
            # RFC 8216 §4.3.2.5: an encrypted init section needs an explicit IV; compare
            # init sections by what they are, not by the segment that carries them.
            init_key = key if key is not None and key.iv is not None else None
            init_iv = init_key.iv if init_key is not None and init_key.iv else bytes(AES_BLOCK)
            init = Resource(init_uri, init_range, init_key, init_iv)
        if segments and (seg.discontinuity or init != previous_init):
            part += 1
        previous_init = init
        segments.append(Segment(number, duration, media, init, part))
    target = float(parsed.target_duration or 0)
    if not math.isfinite(target) or target < 0:
        raise PlaylistError(url, f"invalid EXT-X-TARGETDURATION {parsed.target_duration!r}")
    target = max(1.0, target or max((s.duration for s in segments), default=1.0))
    target = min(target, MAX_TARGET_DURATION)
    ended = bool(parsed.is_endlist)
    if ended and not segments:
        raise PlaylistError(url, "playlist has no segments")
    return MediaPlaylist(url, target, tuple(segments), ended, fingerprint)


def _checked_uri(entry: object, playlist: str) -> str:
    """The absolute http(s) URL of a playlist entry (a segment, variant, key, map…)."""
    try:
        # m3u8 joins the URI with the playlist's own URL here, which can raise on junk.
        found = getattr(entry, "absolute_uri", None)
        uri = found if isinstance(found, str) else None
        parts = urlsplit(uri) if uri is not None else None
        host = parts.hostname if parts is not None else None
    except ValueError as exc:
        raise PlaylistError(playlist, f"unusable URI: {exc}") from None
    if not uri or parts is None:
        raise PlaylistError(playlist, "entry without a URI")
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise PlaylistError(playlist, f"refusing {scheme or 'relative'!s}: URI (only http/https)")
    if not host:
        raise PlaylistError(playlist, "an entry's URI has no host")
    return uri


def _key(key: m3u8.Key | None, url: str) -> Key | None:
    if key is None:
        return None
    method = (key.method or "NONE").upper()
    if method == "NONE":
        return None
    if method != "AES-128":
        raise PlaylistError(url, f"encryption METHOD={method} is not supported (only AES-128)")
    uri = _checked_uri(key, url)
    return Key(uri, _parse_iv(key.iv, url) if key.iv else None)


def _iv(key: m3u8.Key | None, sequence: int, url: str) -> bytes:
    if key is not None and key.iv:
        return _parse_iv(key.iv, url)
    # RFC 8216 §5.2: without an IV attribute, the media sequence number is the IV.
    return sequence.to_bytes(AES_BLOCK, "big")


def _parse_iv(raw: str, url: str) -> bytes:
    text = raw.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        value = bytes.fromhex(text.rjust(32, "0"))
    except ValueError:
        raise PlaylistError(url, f"invalid IV {raw!r}") from None
    if len(value) != AES_BLOCK:
        raise PlaylistError(url, f"IV {raw!r} is not 128 bits")
    return value


def _byterange(
    raw: str | None, uri: str, range_ends: dict[str, int], url: str
) -> ByteRange | None:
    if not raw:
        return None
    length_text, _, offset_text = str(raw).partition("@")
    try:
        length = int(length_text)
        offset = int(offset_text) if offset_text else range_ends.get(uri, 0)
    except ValueError:
        raise PlaylistError(url, f"invalid EXT-X-BYTERANGE {raw!r}") from None
    if length <= 0 or offset < 0:
        raise PlaylistError(url, f"invalid EXT-X-BYTERANGE {raw!r}")
    if length > MAX_SEGMENT_BYTES:
        raise PlaylistError(url, f"EXT-X-BYTERANGE {raw!r} is larger than 1 GiB")
    range_ends[uri] = offset + length
    return ByteRange(offset, length)


# -- names ---------------------------------------------------------------------------------


def container_extension(media: MediaPlaylist, codecs: str = "") -> str:
    """The file extension for a media playlist's bytes: ``m4a``/``mp4``, ``aac`` or ``ts``."""
    first = media.segments[0] if media.segments else None
    if first is not None and first.init is not None:
        video = any(c.strip().startswith(("avc", "hvc", "hev", "vp0", "av01"))
                    for c in codecs.split(","))  # fmt: skip
        return "mp4" if video else "m4a"
    path = urlsplit(first.media.uri).path.lower() if first is not None else ""
    for ext in ("aac", "mp3", "ac3", "ec3"):
        if path.endswith("." + ext):
            return ext
    return "ts"


def variant_stem(variant: Variant) -> str:
    """A readable, filesystem-safe stem: ``128k``, ``en-stereo``, ``en-256k``."""
    parts = []
    if variant.label:
        parts.append(variant.label)
    if variant.bandwidth:
        parts.append(f"{round(variant.bandwidth / 1000)}k")
    return safe_name("-".join(parts) or "variant")


def safe_name(text: str) -> str:
    """Lower case letters, digits, '.', '_' and '-' only; never empty, never hidden."""
    name = _SAFE.sub("-", text.lower()).strip("-.")[:64]
    return name or "stream"


def unique(names: list[str]) -> list[str]:
    """Make names distinct by suffixing repeats: ``128k``, ``128k-2``."""
    used: set[str] = set()
    result = []
    for name in names:
        candidate, count = name, 1
        while candidate in used:
            count += 1
            candidate = f"{name}-{count}"
        used.add(candidate)
        result.append(candidate)
    return result
