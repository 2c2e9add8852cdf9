"""ICY metadata: a station's bytes split into audio and metadata, and the titles read out.

Owns :class:`IcyDemuxer`, which takes the bytes of an answer sent with ``icy-metaint: N``
(N audio bytes, one length byte L, L×16 bytes of metadata, NUL-padded; L = 0 means "no
change") in chunks of any size and hands back the audio bytes exactly and each metadata
block whole; and :func:`parse_metadata`, which reads ``StreamTitle`` and ``StreamUrl`` out
of a block the way stations really write them: titles are not escaped
(``StreamTitle='It's "Oh"; So';`` is real), the charset is UTF-8, else cp1252, and
Icecast's Latin-1 conversion leaves ``&#NNNN;`` entities for the characters it lacks.

It must never add, drop or reorder an audio byte, and never do I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Metadata intervals seen in the wild: Icecast 16000, Shoutcast 8192, some 32768. A larger
# one is a broken or hostile header, refused rather than trusted (the stream would then be
# read as audio, metadata blocks and all).
MAX_METAINT = 1024 * 1024
# A title or URL is cut to this many characters: it ends up in xattrs and file names.
MAX_VALUE = 1024

_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_]*)='")
_ENTITY = re.compile(r"&#(?:([0-9]{1,7})|[xX]([0-9a-fA-F]{1,6}));")


@dataclass(frozen=True)
class Metadata:
    """One metadata block as it arrived (NUL padding included), at an audio offset.

    Attributes:
        raw: the block's bytes.
        at: how many audio bytes of this connection came before it.
    """

    raw: bytes
    at: int


class IcyDemuxer:
    """Splits one connection's bytes into audio and metadata blocks.

    Feed it every chunk in order; :meth:`feed` returns the audio bytes of the chunk (joined)
    and the metadata blocks completed in it. A block cut off by a dropped connection is
    simply never completed: nothing of it reaches the audio.
    """

    def __init__(self, metaint: int) -> None:
        if not 0 < metaint <= MAX_METAINT:
            raise ValueError(f"icy-metaint {metaint} out of range")
        self.metaint = metaint
        self.audio_bytes = 0
        self._until_length = metaint  # audio bytes before the next length byte
        self._meta_left: int | None = None  # bytes of the block still to come
        self._meta = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, list[Metadata]]:
        audio = bytearray()
        blocks: list[Metadata] = []
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._meta_left is not None:
                take = min(self._meta_left, n - i)
                self._meta += view[i : i + take]
                i += take
                self._meta_left -= take
                if self._meta_left == 0:
                    blocks.append(Metadata(bytes(self._meta), self.audio_bytes + len(audio)))
                    self._meta_left = None
                    self._meta = bytearray()
                    self._until_length = self.metaint
            elif self._until_length > 0:
                take = min(self._until_length, n - i)
                audio += view[i : i + take]
                i += take
                self._until_length -= take
            else:
                length = view[i] * 16
                i += 1
                if length:
                    self._meta_left = length
                else:
                    self._until_length = self.metaint
        self.audio_bytes += len(audio)
        return bytes(audio), blocks


def decode_text(raw: bytes) -> str:
    """Metadata bytes as text: strict UTF-8, else cp1252 (Latin-1 for its five holes)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _entity(match: re.Match[str]) -> str:
    decimal, hexadecimal = match.groups()
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group(0)
    return chr(code)


def clean(value: str) -> str:
    """A value fit for one line of text: entities resolved, control characters as spaces."""
    value = _ENTITY.sub(_entity, value)
    value = "".join(ch if ch.isprintable() else " " for ch in value)
    return " ".join(value.split())[:MAX_VALUE]


def parse_metadata(raw: bytes) -> dict[str, str]:
    """The ``Key='value';`` pairs of a block (``StreamTitle``, ``StreamUrl``, ...), cleaned.

    A value ends at the first ``';`` that is followed by another ``Key='``, by NULs or by the
    end of the block, so quotes and semicolons inside a title survive.
    """
    text = decode_text(raw.strip(b"\0")).strip("\0 \r\n")
    pairs: dict[str, str] = {}
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        key = _KEY.match(text, position)
        if key is None:
            break
        start = key.end()
        end = _value_end(text, start)
        pairs.setdefault(key.group(1), clean(text[start:end]))
        position = end + 2
    return pairs


def _value_end(text: str, start: int) -> int:
    search = start
    while True:
        end = text.find("';", search)
        if end < 0:
            # No terminator: the value runs to the end (less a closing quote, if any).
            return len(text) - 1 if text.endswith("'") and len(text) - 1 >= start else len(text)
        rest = text[end + 2 :].lstrip()
        if not rest or rest.startswith("\0") or _KEY.match(rest):
            return end
        search = end + 1


def bitrate(value: str | None) -> int | None:
    """``icy-br`` as kbit/s: "128", or "128,128" as some servers send it; None if junk."""
    text = (value or "").split(",")[0].strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        return None
    return int(text) if 0 < int(text) < 100_000 else None


def metaint(value: str) -> int | None:
    """``icy-metaint`` as a byte count; None when absent or unusable.

    ASCII digits only, and few: "²" is a digit to ``str.isdigit()`` and not to ``int()``,
    and 5,000 digits are past what ``int()`` converts.
    """
    if not (value.isascii() and value.isdigit() and len(value) <= 7):
        return None
    number = int(value)
    return number if 0 < number <= MAX_METAINT else None
