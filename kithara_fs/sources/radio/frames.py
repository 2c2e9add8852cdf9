"""Frame boundaries in an MPEG audio (MP2/MP3) or ADTS (AAC) stream, found as bytes go by.

Owns :class:`FrameWalker`, which follows a station's audio, finds the first frame whose
header is followed by another valid header (so a stray 0xFF in a tag is not taken for a
frame), then steps from header to header, resynchronising the same way when one is
missing (a reconnect lands mid-frame). It tells where the latest frame started, where the
next one will, and the stream's bitrate as its headers say. Stations are cut and rewound
at these boundaries, so a track file or a rewound reader starts on a whole frame.

It must never hold more than a few bytes of audio, and never do I/O.
"""

from __future__ import annotations

import re

from ...bitrate import MP3_BITRATES, MP3_SAMPLE_RATES

# kbit/s by (MPEG-1?, layer) and the header's 4-bit index; sample rates by version bits.
_BITRATES, _SAMPLE_RATES = MP3_BITRATES, MP3_SAMPLE_RATES
# Enough bytes to judge any header (ADTS needs 7).
HEADER = 7
# A frame is never longer than this (MPEG-1 layer II at 384 kbit/s and 32 kHz: 1728 bytes;
# an ADTS frame's 13-bit length: 8191), plus the next header that confirms it: more held
# back means the stream is not one of these.
MAX_FRAME = 8191 + HEADER
# Where a frame may start (searched in C, not byte by byte): 0xFF, three more sync bits, and
# a third byte whose top nibble is not 15 (a bad MPEG bitrate index; for ADTS, a reserved
# profile at the highest sampling rates), so a run of 0xFF bytes offers no candidate at all.
_SYNC = re.compile(rb"\xff[\xe0-\xff][\x00-\xef]")


def frame(header: bytes | memoryview) -> tuple[int, int, int] | None:
    """(length in bytes, bitrate in kbit/s or 0, a key that equal frames share), or None."""
    if len(header) < HEADER or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    b1, b2 = header[1], header[2]
    layer_bits = (b1 >> 1) & 3
    if layer_bits == 0:
        # ADTS: 12-bit sync, layer 00; the frame length is in the header.
        if b1 & 0xF0 != 0xF0 or (b2 >> 2) & 0xF > 12:
            return None
        length = ((header[3] & 3) << 11) | (header[4] << 3) | (header[5] >> 5)
        return (length, 0, (b1 & 0xF8) << 8 | b2 & 0xFC) if length >= HEADER else None
    version = (b1 >> 3) & 3
    index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if version == 1 or index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    kbps = _BITRATES[(mpeg1, layer)][index]
    sample_rate = _SAMPLE_RATES[version][rate_index]
    padding = (b2 >> 1) & 1
    if layer == 1:
        length = (12 * kbps * 1000 // sample_rate + padding) * 4
    elif layer == 3 and not mpeg1:
        length = 72 * kbps * 1000 // sample_rate + padding
    else:
        length = 144 * kbps * 1000 // sample_rate + padding
    return length, kbps, (b1 & 0xFE) << 8 | b2 & 0x0C


class FrameWalker:
    """Follows the frame boundaries of one continuous stream of audio bytes.

    Attributes:
        position: how many bytes it has been given.
        last_start: where the latest frame whose header was read starts (None: not in sync).
        next_start: where the frame after it starts (it may not have arrived yet).
        kbps: the bitrate the latest header gave (0 for ADTS and free format).
    """

    # Tracks may be cut at its boundaries.
    cuttable = True

    def __init__(self) -> None:
        self.position = 0
        self.last_start: int | None = None
        self.next_start: int | None = None
        self.kbps = 0
        self._key: int | None = None
        self._held = bytearray()  # the bytes from _held_at to position not yet judged
        self._held_at = 0

    @property
    def synced(self) -> bool:
        return self.next_start is not None

    def feed(self, data: bytes) -> None:
        self._held += data
        self.position += len(data)
        while True:
            if self.next_start is None:
                if not self._find_sync():
                    break
                continue
            offset = self.next_start - self._held_at
            if offset + HEADER > len(self._held):
                break
            found = frame(memoryview(self._held)[offset : offset + HEADER])
            if found is None or found[2] != self._key:
                # Lost: a reconnect, or damage. Search again just past the missing header.
                self.next_start = self.last_start = None
                self._drop_before(self._held_at + offset + 1)
                continue
            self.last_start = self.next_start
            self.next_start += found[0]
            self.kbps = found[1]
        if self.next_start is not None:
            # Out of sync, _find_sync already kept only what the search still needs.
            self._drop_before(self.next_start)

    def _find_sync(self) -> bool:
        held = self._held
        start = 0
        while True:
            match = _SYNC.search(held, start)
            at = -1 if match is None else match.start()
            if at < 0 or at + HEADER > len(held):
                # Nothing here, or too little to judge: keep only what may still start one.
                keep = at if at >= 0 else max(0, len(held) - 1)
                self._drop_before(self._held_at + keep)
                return False
            first = frame(memoryview(held)[at : at + HEADER])
            if first is not None:
                after = at + first[0]
                if after + HEADER > len(held):
                    if len(held) - at > MAX_FRAME:
                        start = at + 1
                        continue
                    self._drop_before(self._held_at + at)
                    return False  # wait for the second header
                second = frame(memoryview(held)[after : after + HEADER])
                if second is not None and second[2] == first[2]:
                    self._key = first[2]
                    self.last_start = None
                    self.next_start = self._held_at + at
                    return True
            start = at + 1

    def _drop_before(self, absolute: int) -> None:
        drop = min(absolute, self.position) - self._held_at
        if drop > 0:
            del self._held[:drop]
            self._held_at += drop
