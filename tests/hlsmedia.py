"""HLS programmes for the tests, made at test time with ffmpeg's hls muxer.

Every programme is a folder of files to serve (path → bytes) plus, per variant, the plain
segment bytes in order: the oracle is decoding their concatenation.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kithara_fs.demo.media import lavfi_signal

SEGMENT_SECONDS = 2
KEY = bytes(range(16))
FIXED_IV = bytes.fromhex("00112233445566778899aabbccddeeff")


@dataclass
class Programme:
    """Files to serve under one prefix, and the plain segments of each variant file."""

    files: dict[str, bytes] = field(default_factory=dict)
    # variant playlist path (relative) → plain bytes of init + segments, in order
    plain: dict[str, list[bytes]] = field(default_factory=dict)

    def serve(self, origin: object, prefix: str) -> None:
        for path, data in self.files.items():
            origin.add(f"{prefix}/{path}", data)  # type: ignore[attr-defined]


def _ffmpeg(args: list[str], cwd: Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], cwd=cwd, check=True,
                   timeout=120)  # fmt: skip


def _collect(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _plain_of(folder: Path, playlist: str) -> list[bytes]:
    """init + segments of a media playlist written by ffmpeg, read straight from disk."""
    base = (folder / playlist).parent
    pieces: list[bytes] = []
    for line in (folder / playlist).read_text().splitlines():
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', line)
        if init:
            pieces.append((base / init.group(1)).read_bytes())
        elif line and not line.startswith("#"):
            pieces.append((base / line).read_bytes())
    return pieces


def variants(out: Path, *, seconds: float, bitrates: list[str], fmp4: bool) -> Programme:
    """A master playlist with one AAC variant per bitrate (TS, or fMP4 with init sections)."""
    out.mkdir(parents=True)
    maps = [arg for _ in bitrates for arg in ("-map", "0:a")]
    rates = [arg for i, rate in enumerate(bitrates) for arg in (f"-b:a:{i}", rate)]
    kind = ["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4"] if fmp4 else []
    ext = "m4s" if fmp4 else "ts"
    _ffmpeg(["-f", "lavfi", "-i", lavfi_signal(seconds), *maps, "-c:a", "aac", *rates,
             "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod", *kind,
             "-master_pl_name", "master.m3u8",
             "-var_stream_map", " ".join(f"a:{i}" for i in range(len(bitrates))),
             "-hls_segment_filename", f"v%v/seg%d.{ext}", "v%v/index.m3u8"], out)  # fmt: skip
    programme = Programme(_collect(out))
    for i in range(len(bitrates)):
        programme.plain[f"v{i}/index.m3u8"] = _plain_of(out, f"v{i}/index.m3u8")
    return programme


def single(
    out: Path,
    *,
    seconds: float,
    byterange: bool = False,
    segment_seconds: int = SEGMENT_SECONDS,
    audio: tuple[str, ...] = (),
) -> Programme:
    """One media playlist of TS segments (or one TS file addressed with EXT-X-BYTERANGE)."""
    out.mkdir(parents=True)
    flags = ["-hls_flags", "single_file"] if byterange else [
        "-hls_segment_filename", "seg%d.ts"]  # fmt: skip
    _ffmpeg(["-f", "lavfi", "-i", lavfi_signal(seconds), *audio, "-c:a", "aac", "-b:a", "96k",
             "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
             *flags, "index.m3u8"], out)  # fmt: skip
    programme = Programme(_collect(out))
    if byterange:
        whole = (out / "index.ts").read_bytes()
        ranges = re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", (out / "index.m3u8").read_text())
        programme.plain["index.m3u8"] = [whole[int(o) : int(o) + int(n)] for n, o in ranges]
    else:
        programme.plain["index.m3u8"] = _plain_of(out, "index.m3u8")
    return programme


def encrypt(cipher_dir: Path, plain: Programme, *, iv_in_tag: bool) -> Programme:
    """The same single programme with every segment AES-128 encrypted (by openssl).

    With ``iv_in_tag`` the playlist names one IV; without, each segment's IV is its media
    sequence number (RFC 8216 §5.2), which the playlist leaves implicit.
    """
    cipher_dir.mkdir(parents=True)
    segments = plain.plain["index.m3u8"]
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]  # fmt: skip
    key_tag = '#EXT-X-KEY:METHOD=AES-128,URI="key.bin"'
    lines.append(key_tag + (f",IV=0x{FIXED_IV.hex()}" if iv_in_tag else ""))
    files = {"key.bin": KEY}
    for sequence, data in enumerate(segments):
        iv = FIXED_IV if iv_in_tag else sequence.to_bytes(16, "big")
        done = subprocess.run(
            ["openssl", "aes-128-cbc", "-K", KEY.hex(), "-iv", iv.hex()],
            input=data, capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        files[f"seg{sequence}.ts"] = done.stdout
        lines += ["#EXTINF:2.0,", f"seg{sequence}.ts"]
    lines.append("#EXT-X-ENDLIST")
    files["index.m3u8"] = ("\n".join(lines) + "\n").encode()
    return Programme(files, {"index.m3u8": list(segments)})


def media_playlist(segments: list[str], *, target: int, ended: bool,
                   discontinuity_before: int | None = None) -> bytes:
    """A media playlist listing ``segments`` (URIs), as a live origin would publish it."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0"]  # fmt: skip
    for index, uri in enumerate(segments):
        if index == discontinuity_before:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{target}.0,", uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()
