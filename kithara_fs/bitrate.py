"""How many bytes one second of audio takes, read from the container's own headers.

Owns the small, pure parsers that turn a file's first bytes (and, for containers that keep
their index at the end, its last bytes) into a byte rate: WAV ``fmt`` byte rate, FLAC
STREAMINFO total samples, MP3 Xing/Info/VBRI frame counts (or the CBR frame bitrate), MP4
``mvhd`` duration, Ogg Vorbis/Opus final granule position. Read-ahead is sized in seconds of
audio, so this is what turns "30 s ahead" into bytes.

It must never do I/O, and never raise on hostile input: anything it does not understand is
"unknown" (None), and the caller falls back to a conservative default.
"""

from __future__ import annotations

import struct

# MPEG audio: kbit/s by [version is MPEG-1][layer][index]; layer III is what podcasts use,
# layers I/II are included because the table is tiny.
MP3_BITRATES = {
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}
MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
# Bytes of the head and tail the parsers want: enough for an ID3v2 tag with a small cover,
# the first MPEG frame, FLAC's first metadata block, and an MP4 moov at either end.
HEAD_BYTES = 256 * 1024
TAIL_BYTES = 128 * 1024


def bytes_per_second(head: bytes, tail: bytes, length: int) -> float | None:
    """The average byte rate of the file, or None if its headers do not tell."""
    try:
        duration = _duration(head, tail, length)
    except (struct.error, IndexError, ValueError, ZeroDivisionError):
        return None
    if duration is None or duration <= 0:
        return None
    return length / duration


def reads_the_end(head: bytes) -> bool:
    """Whether players of this container read the file's last bytes before they play.

    MP3 players look for ID3v1 and APE tags at the end, Ogg players read the last page for
    the duration, and an MP4 whose ``moov`` is not in the head keeps its index at the end.
    WAV, FLAC and anything unrecognised are played from the head alone.
    """
    if head[:4] in (b"RIFF", b"fLaC"):
        return False
    if head[:4] == b"OggS":
        return True
    if head[4:8] in (b"ftyp", b"moov", b"free", b"mdat", b"wide"):
        return b"moov" not in head
    if head[:3] == b"ID3":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # an MPEG frame


def _duration(head: bytes, tail: bytes, length: int) -> float | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav(head, length)
    if head[:4] == b"fLaC":
        return _flac(head)
    if head[:4] == b"OggS":
        return _ogg(head, tail)
    if head[4:8] in (b"ftyp", b"moov", b"free", b"mdat", b"wide"):
        return _mvhd(head) or _mvhd(tail)
    return _mp3(head, length)


def _wav(head: bytes, length: int) -> float | None:
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt ":
            byte_rate = struct.unpack_from("<I", head, pos + 16)[0]
            return length / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def _flac(head: bytes) -> float | None:
    # STREAMINFO is always the first metadata block: 20 bits of sample rate, then 3 + 5
    # bits of channels and sample size, then 36 bits of total samples.
    info = head[8:26]
    if len(info) < 18:
        return None
    packed = int.from_bytes(info[10:18], "big")
    rate = packed >> 44
    total = packed & ((1 << 36) - 1)
    return total / rate if rate and total else None


def _ogg(head: bytes, tail: bytes) -> float | None:
    if b"OpusHead" in head[:200]:
        rate, pre_skip = 48000, struct.unpack_from("<H", head, head.index(b"OpusHead") + 10)[0]
    elif b"\x01vorbis" in head[:200]:
        rate, pre_skip = struct.unpack_from("<I", head, head.index(b"\x01vorbis") + 12)[0], 0
    else:
        return None
    last = tail.rfind(b"OggS")
    if last < 0 or last + 14 > len(tail):
        return None
    granule = struct.unpack_from("<q", tail, last + 6)[0]
    return (granule - pre_skip) / rate if rate and granule > 0 else None


def _mvhd(data: bytes) -> float | None:
    at = data.find(b"mvhd")
    if at < 0 or at + 32 > len(data):
        return None
    if data[at + 4] == 1:
        timescale, duration = struct.unpack_from(">IQ", data, at + 4 + 4 + 16)
    else:
        timescale, duration = struct.unpack_from(">II", data, at + 4 + 4 + 8)
    return duration / timescale if timescale and duration else None


def _mp3(head: bytes, length: int) -> float | None:
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = head[6:10]
        start = 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])
    for pos in range(start, min(len(head) - 4, start + 64 * 1024)):
        if head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
            continue
        version = (head[pos + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        layer = 4 - ((head[pos + 1] >> 1) & 3)
        index, rate_index = head[pos + 2] >> 4, (head[pos + 2] >> 2) & 3
        if version == 1 or layer == 4 or index in (0, 15) or rate_index == 3:
            continue
        mpeg1 = version == 3
        kbps = MP3_BITRATES[(mpeg1, layer)][index]
        sample_rate = MP3_SAMPLE_RATES[version][rate_index]
        samples = 384 if layer == 1 else (1152 if mpeg1 or layer == 2 else 576)
        frames = _vbr_frames(head, pos)
        if frames:
            return frames * samples / sample_rate
        return (length - pos) * 8 / (kbps * 1000)
    return None


def _vbr_frames(head: bytes, frame: int) -> int | None:
    """Frame count from a Xing/Info or VBRI header inside the first frame, if present."""
    window = head[frame : frame + 200]
    for tag in (b"Xing", b"Info"):
        at = window.find(tag)
        if at >= 0 and len(window) >= at + 12:
            flags = struct.unpack_from(">I", window, at + 4)[0]
            if flags & 1:
                return int(struct.unpack_from(">I", window, at + 8)[0])
    at = window.find(b"VBRI")
    if at >= 0 and len(window) >= at + 18:
        return int(struct.unpack_from(">I", window, at + 14)[0])
    return None
