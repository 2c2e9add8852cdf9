"""Benchmark kithara_fs against httpdirfs and rclone mount, side by side, on one origin.

Usage: ``.venv/bin/python bench/run.py [--quick]`` (``./dev bench`` runs bench/setup.sh first).

Owns the whole run: generating (once) and caching the test WAV under bench/.media, the local
disk baseline, starting the shaped loopback origin, mounting each filesystem in turn on its
own folder of the origin (same bytes, same links), running every measurement, and writing
the results: a table on stdout, the results section of bench/README.md (between the marker
lines) and the raw numbers as JSON under bench/results/.

Must never: leave a mount or a process behind (every mount is unmounted in ``finally``, and
Ctrl-C/SIGTERM take that path), signal anything it did not start, use any address but
127.0.0.1, or assert on timings — missed targets are reported in the table, not raised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hls
import scale
from mounts import MOUNTS, KitharaMount, Mount, PassthroughMount, dpkg_version, missing_tools
from shaped_origin import Shape, ShapedOrigin
from table import Row, render_hls, render_scale, render_table, rows_for, verdict
from workloads import (
    READ_SIZE,
    curl_range,
    curl_whole,
    drop_page_cache,
    ffmpeg_seek,
    first_bytes_latency,
    median,
    over_fetch,
    playback,
    random_reads,
    seek_offsets,
    sequential_read,
)

from kithara_fs.demo import media

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
START_MARK = "<!-- results:start -->"
END_MARK = "<!-- results:end -->"

# 44.1 kHz × 2 channels × 16 bit: the WAV's exact byte rate (1411.2 kbit/s).
WAV_BYTE_RATE = 176_400
# The playback link, from the issue: 3× the bitrate, 50 ms added before every response.
PLAY_SHAPE = Shape(delay=0.050, rate=3 * WAV_BYTE_RATE)
# Every other measurement: a fast home/office link, 20 ms added per request, 500 Mbit/s
# shared by all of a filesystem's connections. Fast enough that the filesystems, not the
# link, limit cold throughput; slow enough that per-request round trips and over-fetch cost
# something, as they do on a real network.
NET_SHAPE = Shape(delay=0.020, rate=500_000_000 // 8)
# The LAN: the loopback origin as it is, no delay and no cap, where per-request costs show.
LAN_SHAPE = Shape(delay=0.0, rate=None)
LINKS = {"lan": LAN_SHAPE, "network": NET_SHAPE}
LINK_TITLES = {
    "lan": "LAN link (no added delay, no cap), with curl and a pyfuse3 passthrough as ceilings",
    "network": "Network link (20 ms per request, 500 Mbit/s shared)",
}
# ffmpeg -ss: the demo formats, each a never-read file per filesystem, seeking to the middle.
SEEK_FORMATS = ["cbr.mp3", "vbr.mp3", "aac.m4a", "flac.flac", "vorbis.ogg", "opus.opus",
                "wav.wav"]  # fmt: skip
SEEK_MEDIA_SECS = 600
SEEK_POSITION = 300
STALL_THRESHOLD = 0.200
PLAYER_BUFFER_SECS = 3.0
SEEK_THINK = 0.2  # seconds between random reads: a player decodes a little, then seeks again
# Random reads go backwards at least this far apart, so no read is served by what an earlier
# one fetched: httpdirfs's 8 MiB segments are the largest unit any of the three fetches
# behind-or-around a read (forward read-ahead never covers an earlier offset).
SEEK_SPACING = 8 * 1024 * 1024 + 64 * 1024
# Keep clear of the first and last MiB, which players (and kithara_fs) probe on open.
SEEK_MARGIN = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    duration: int  # seconds of WAV; 1190 s ≈ 210 MB
    ttfb_reps: int
    cold_reps: int
    warm_reps: int
    seek_count: int
    play_secs: float
    scale: tuple[int, ...]  # stream counts for bench/scale.py


FULL = Plan(duration=1190, ttfb_reps=5, cold_reps=2, warm_reps=5, seek_count=20, play_secs=60,
            scale=(1000, 10000))  # fmt: skip
QUICK = Plan(duration=600, ttfb_reps=3, cold_reps=1, warm_reps=3, seek_count=20, play_secs=20,
             scale=(200, 2000))  # fmt: skip


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    try:
        fs_type = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(BENCH)],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        fs_type = " on ".join(fs_type.split()) or "unknown"
    except OSError:
        fs_type = "unknown"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "kithara_fs": KitharaMount.version(),
        "httpdirfs": MOUNTS[1].version(),
        "rclone": MOUNTS[2].version(),
        "fuse3": dpkg_version("fuse3"),
        "curl": _first_line(["curl", "--version"]),
        "ffmpeg": _first_line(["ffmpeg", "-version"]),
        "disk_fs": fs_type,
    }


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return f"{command[0]} (not found)"
    return " ".join(out.splitlines()[0].split()[:3]) if out else command[0]


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


# -- measurements ----------------------------------------------------------------------------


def local_baseline(wav: Path, plan: Plan) -> dict[str, Any]:
    size = wav.stat().st_size
    dropped = drop_page_cache()
    cold = sequential_read(wav, size) if dropped else None
    warm = [sequential_read(wav, size) for _ in range(plan.warm_reps + 1)][1:]
    return {
        "cold_bps": cold,
        "cold_dropped_caches": dropped,
        "warm_bps": warm,
        "warm_bps_median": median(warm),
    }


def names_for(plan: Plan, link: str) -> list[str]:
    names = [f"ttfb{i}.wav" for i in range(1, plan.ttfb_reps + 1)]
    names += [f"seq{i}.wav" for i in range(1, plan.cold_reps + 1)]
    names += ["seek.wav", *(f"ss-{fmt}" for fmt in SEEK_FORMATS)]
    return [*names, "play.wav"] if link == "network" else names


def _origin_bytes(origin: ShapedOrigin, folder: str, names: list[str]) -> int:
    return sum(r.body_bytes for n in names for r in origin.requests_for(f"/{folder}/{n}"))


def measure_fs(
    mount: Mount, origin: ShapedOrigin, folder: str, link: str, wav: Path, plan: Plan,
    offsets: list[int],
) -> dict[str, Any]:  # fmt: skip
    """Every measurement on one mounted filesystem, in a fixed order.

    Each phase reads its own never-read files. If the filesystem process dies during a
    phase, the phase is recorded as failed (with the end of the log), the filesystem is
    mounted again on the same cache folder and the next phase goes on, so one crash costs
    one row, not the whole column. Cached re-reads are measured on the LAN link only (the
    link plays no part in them), playback on the network run only (it has its own link).
    """
    size = wav.stat().st_size
    local_files = isinstance(mount, PassthroughMount)
    out: dict[str, Any] = {
        "name": mount.name,
        "declared_readahead": mount.declared_readahead,
        "crashes": [],
        "phase_errors": {},
        "peak_rss": None,
    }

    def quiet() -> None:
        # httpdirfs 1.2.5 can abort when a file is closed while a segment download of it is
        # still running (upstream issue #174, "Cache_free: could not destroy w_lock"); after
        # a whole-file read nothing should be in flight, so waiting costs the others nothing.
        origin.wait_idle(10)

    def ttfb() -> None:
        say(f"{mount.name}/{link}: open + first 64 KiB ×{plan.ttfb_reps}")
        names = [f"ttfb{i}.wav" for i in range(1, plan.ttfb_reps + 1)]
        out["ttfb_s"] = [first_bytes_latency(mount.path(n)) for n in names]
        if not local_files:
            origin.wait_idle(30)  # what the opens started counts too
            out["ttfb_over_fetch"] = _origin_bytes(origin, folder, names) / (
                len(names) * READ_SIZE
            )

    def seeks() -> None:
        say(f"{mount.name}/{link}: {len(offsets)} cold 64 KiB reads at random offsets")
        out["seek_offsets"] = offsets
        out["seek_s"] = random_reads(mount.path("seek.wav"), offsets, SEEK_THINK)
        if local_files:
            return
        # Let read-ahead that the reads started finish, so every byte they caused is counted.
        out["seek_origin_idle"] = origin.wait_idle(30)
        seek_log = origin.requests_for(f"/{folder}/seek.wav")
        out["seek_requests"] = [asdict(r) for r in seek_log]
        of = over_fetch(seek_log, [(o, READ_SIZE) for o in offsets], mount.declared_readahead, size)
        out["seek_over_fetch"] = asdict(of) | {
            "ratio": of.ratio,
            "ratio_excl_readahead": of.ratio_excl_readahead,
        }

    def cold() -> None:
        if local_files:
            return
        speeds: list[float] = []
        over: list[float] = []
        for i in range(1, plan.cold_reps + 1):
            say(f"{mount.name}/{link}: cold sequential read {i}/{plan.cold_reps}")
            speeds.append(sequential_read(mount.path(f"seq{i}.wav"), size, quiet))
            origin.wait_idle(30)
            over.append(_origin_bytes(origin, folder, [f"seq{i}.wav"]) / size)
            if i == 1:
                out["seq_requests"] = [
                    asdict(r) for r in origin.requests_for(f"/{folder}/seq1.wav")
                ]
            out["cold_bps"] = speeds
            out["seq_over_fetch"] = over

    def warm() -> None:
        if link != "lan":
            return
        say(f"{mount.name}/{link}: cached re-reads, 1 + {plan.warm_reps}")
        # The cold reads just wrote ~400 MB into this filesystem's cache: write it out first,
        # for every filesystem alike, so its write-back does not share the CPUs with the
        # re-reads (it moved kithara_fs's figure by a third from run to run here).
        os.sync()
        if not local_files:
            out["reread_bps"] = sequential_read(mount.path("seq1.wav"), size, quiet)
        # Each re-read is paired with a read of the same bytes from local disk right after
        # it, so the machine state is the same for both (page-cache copy speed drifts here).
        fs_speeds: list[float] = []
        local_speeds: list[float] = []
        for _ in range(plan.warm_reps):
            fs_speeds.append(sequential_read(mount.path("seq1.wav"), size, quiet))
            local_speeds.append(sequential_read(wav, size))
        out["warm_bps"] = fs_speeds
        out["warm_local_bps"] = local_speeds

    def ffmpeg() -> None:
        say(f"{mount.name}/{link}: ffmpeg -ss {SEEK_POSITION} on {len(SEEK_FORMATS)} formats")
        out["ffmpeg_ss_s"] = {
            fmt: ffmpeg_seek(str(mount.path(f"ss-{fmt}")), SEEK_POSITION) for fmt in SEEK_FORMATS
        }

    def play() -> None:
        if link != "network" or local_files:
            return
        say(f"{mount.name}/{link}: real-time playback, {plan.play_secs:.0f} s")
        pb = playback(mount.path("play.wav"), WAV_BYTE_RATE, plan.play_secs, PLAYER_BUFFER_SECS)
        out["playback"] = asdict(pb) | {"stalls_over_200ms": pb.stalls_over(STALL_THRESHOLD)}

    def note_rss() -> None:
        rss = mount.peak_rss()
        if rss is not None:
            out["peak_rss"] = max(out["peak_rss"] or 0, rss)

    phases = [("ttfb", ttfb), ("seeks", seeks), ("cold", cold), ("warm", warm),
              ("ffmpeg", ffmpeg), ("play", play)]  # fmt: skip
    for name, phase in phases:
        if name == "warm" and "cold_bps" not in out and not local_files:
            out["phase_errors"][name] = "skipped: the cold read did not complete"
            continue
        try:
            phase()
        except OSError as exc:
            alive = mount.proc is not None and mount.proc.poll() is None
            if alive and os.path.ismount(mount.mountpoint):
                out["phase_errors"][name] = str(exc)
                say(f"{mount.name}: {name} failed: {exc}")
                continue
            tail = mount.log_tail(12)
            out["crashes"].append({"phase": name, "error": str(exc), "log_tail": tail})
            out["phase_errors"][name] = f"filesystem process died: {exc}"
            say(f"{mount.name}: process died during {name} ({exc}); mounting it again")
            note_rss()
            mount.stop()
            mount.start()
        note_rss()
    return out


def measure_curl(
    origin: ShapedOrigin, folder: str, link: str, size: int, plan: Plan, offsets: list[int]
) -> dict[str, Any]:
    """The network's ceiling: the same reads made by curl (one process per request) and
    ffmpeg -ss made by ffmpeg reading the URL itself."""
    say(f"curl/{link}: ranged GETs, whole-file downloads, ffmpeg on the URLs")
    url = origin.url
    ttfb = [curl_range(url(f"/{folder}/ttfb{i}.wav"), 0) for i in range(1, plan.ttfb_reps + 1)]
    seeks = [curl_range(url(f"/{folder}/seek.wav"), offset) for offset in offsets]
    cold = [curl_whole(url(f"/{folder}/seq{i}.wav"), size) for i in range(1, plan.cold_reps + 1)]
    ffmpeg = {fmt: ffmpeg_seek(url(f"/{folder}/ss-{fmt}"), SEEK_POSITION) for fmt in SEEK_FORMATS}
    return {
        # The ceiling: the whole curl command, process start included.
        "curl": {"ttfb_s": [w for w, _ in ttfb], "seek_s": [w for w, _ in seeks],
                 "cold_bps": [w for w, _ in cold], "ffmpeg_ss_s": ffmpeg},
        # curl's own time_total: the request alone, the network's real ceiling.
        "curl transfer": {"ttfb_s": [o for _, o in ttfb], "seek_s": [o for _, o in seeks],
                          "cold_bps": [o for _, o in cold]},
    }  # fmt: skip


# -- the README section ----------------------------------------------------------------------


def _curl_start_ms(results: dict[str, Any]) -> float | None:
    """What starting curl adds to a ranged GET: its wall time less its own time_total."""
    fs = results["links"].get("lan", {}).get("filesystems", {})
    try:
        return (median(fs["curl"]["ttfb_s"]) - median(fs["curl transfer"]["ttfb_s"])) * 1000
    except (KeyError, ValueError):
        return None


def _curl_start_note(results: dict[str, Any]) -> str:
    start = _curl_start_ms(results)
    return f" (starting curl cost {start:.1f} ms here). " if start is not None else ". "


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    cond = results["conditions"]
    parts: list[str] = []
    for link, title in LINK_TITLES.items():
        if link not in results["links"]:
            continue
        rows = [Row(**r) for r in results["links"][link]["table"]]
        parts += [f"### {title}", "", *render_table(rows), "", f"**{verdict(rows)}**", ""]
    hls_links = [link for link in LINK_TITLES if "hls" in results["links"].get(link, {})]
    if hls_links:
        parts += render_hls({link: results["links"][link]["hls"] for link in hls_links})
    if results.get("scale"):
        parts += ["### Scale (LAN, 64 KiB files, folders of 1,000)", "",
                  *render_scale(results["scale"]), ""]  # fmt: skip
    notes = [
        f"Run: {m['date']}, `{cond['command']}`"
        + (" — **quick mode: smaller file, fewer repeats; not a Done-when run**"
           if cond["quick"] else "") + ".",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, kernel {m['kernel']}, "
        f"{m['os']}, Python {m['python']}; disk filesystem {m['disk_fs']}.",
        f"Versions: {m['kithara_fs']}; {m['httpdirfs']}; {m['rclone']}; fuse3 {m['fuse3']}; "
        f"{m['curl']}; {m['ffmpeg']}.",
        f"File: {cond['file_mb']:.1f} MB WAV ({cond['duration_s']} s, 1411.2 kbit/s); "
        f"`ffmpeg -ss {SEEK_POSITION}` on {SEEK_MEDIA_SECS} s files in "
        f"{', '.join(SEEK_FORMATS)}, decoding 1 s.",
        f"Links: LAN — no added delay, no cap; network — {cond['net_delay_ms']:.0f} ms "
        f"added per request, {cond['net_mbit']:.0f} Mbit/s shared; playback (network run "
        f"only) — {cond['play_delay_ms']:.0f} ms, {cond['play_kbit']:.0f} kbit/s (3× the "
        f"bitrate), {cond['play_secs']:.0f} s played, {PLAYER_BUFFER_SECS:.0f} s buffer.",
        f"Medians of {cond['ttfb_reps']} (open + first 64 KiB), {cond['cold_reps']} (cold) "
        f"and {cond['warm_reps']} (cached) reads; {cond['seek_count']} random offsets. "
        "curl starts one process per request: the *curl* column includes that, *curl "
        "transfer* is curl's own time_total"
        + _curl_start_note(results)
        + 
        "The passthrough serves the same files from local disk, hot in the page cache: "
        "the cost of FUSE through Python and nothing else. local disk: cold "
        + ("after dropping the page cache" if results["local"]["cold_dropped_caches"]
           else "not measured (needs root)")
        + "; cached: a local read of the same bytes right after each of kithara_fs's.",
        "Ratios are kithara_fs ÷ that column (lower is better for times, bytes and RSS; "
        "higher for throughput).",
        "Declared read-ahead (left out of the network table's second over-fetch row): "
        "kithara_fs its `readahead_seconds` × the WAV's byte rate "
        f"({results['declared_readahead'].get('kithara_fs', 0) / 1e6:.1f} MB), rclone "
        "`--buffer-size` (16.8 MB), httpdirfs none (its 8 MB segments count).",
    ]  # fmt: skip
    for link, data in results["links"].items():
        for name, fs in data["filesystems"].items():
            for crash in fs.get("crashes", []):
                last = next((ln for ln in crash["log_tail"] if "Fatal" in ln or "panic" in ln),
                            "")  # fmt: skip
                notes.append(f"{name} ({link}) crashed during the {crash['phase']} phase"
                             + (f" (`{last.strip()}`)" if last else "")
                             + "; it was mounted again on the same cache and the run went on.")
            for phase, error in fs.get("phase_errors", {}).items():
                if not error.startswith("filesystem process died"):
                    notes.append(f"{name} ({link}): {phase} phase failed: {error}")
        warnings = data.get("warnings", {})
        if any(warnings.values()):
            notes.append(f"Log warnings ({link}): " + "; ".join(
                f"{k}: {len(v)} line(s)" for k, v in warnings.items() if v) + " (see JSON).")
        if data.get("errors"):
            notes.append(f"Errors ({link}): "
                         + "; ".join(f"{k}: {v}" for k, v in data["errors"].items()))
    return "\n".join([*parts, *(f"- {n}" for n in notes)])


def write_readme(section: str) -> None:
    text = README.read_text() if README.exists() else ""
    block = f"{START_MARK}\n{section}\n{END_MARK}"
    if START_MARK in text and END_MARK in text:
        before = text.split(START_MARK, 1)[0]
        after = text.split(END_MARK, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    README.write_text(text)


# -- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    missing = missing_tools()
    if missing:
        say("missing: " + ", ".join(missing) + " (run bench/setup.sh)")
        return 2
    # Byte-compile the package first, as pip does when it installs one: with
    # PYTHONDONTWRITEBYTECODE set (as on this machine) every mount would otherwise compile
    # every module again, ~0.1 s of each start-up that no installed copy pays.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(BENCH.parent / "kithara_fs")],
                   check=False, capture_output=True)  # fmt: skip
    say(f"preparing a {plan.duration} s WAV and {SEEK_MEDIA_SECS} s files of "
        f"{len(SEEK_FORMATS)} formats under bench/.media (generated once)")  # fmt: skip
    wav = media.generate(BENCH / ".media" / f"{plan.duration}s", plan.duration, ["wav.wav"])[
        "wav.wav"
    ].resolve()
    seek_media = media.generate(BENCH / ".media" / f"{SEEK_MEDIA_SECS}s", SEEK_MEDIA_SECS,
                                SEEK_FORMATS)  # fmt: skip
    size = wav.stat().st_size
    offsets = seek_offsets(size, plan.seek_count, SEEK_SPACING, SEEK_MARGIN)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = BENCH / "results"
    log_dir = out_dir / f"logs-{stamp}"
    workdir = Path(tempfile.mkdtemp(prefix="kfs-bench-", dir=args.workdir))
    links = [link for link in LINKS if not args.link or link in args.link]
    results: dict[str, Any] = {
        "machine": machine(),
        "conditions": {
            "command": "bench/run.py" + (" --quick" if args.quick else ""),
            "quick": args.quick,
            "file_mb": size / 1e6,
            "file_bytes": size,
            "duration_s": plan.duration,
            "net_delay_ms": NET_SHAPE.delay * 1000,
            "net_mbit": (NET_SHAPE.rate or 0) * 8 / 1e6,
            "play_delay_ms": PLAY_SHAPE.delay * 1000,
            "play_kbit": (PLAY_SHAPE.rate or 0) * 8 / 1000,
            "play_secs": plan.play_secs,
            "ttfb_reps": plan.ttfb_reps,
            "cold_reps": plan.cold_reps,
            "warm_reps": plan.warm_reps,
            "seek_count": len(offsets),
            "workdir": str(workdir),
            "logs": str(log_dir),
        },
        "links": {},
        "declared_readahead": {},
    }
    say("local disk baseline")
    results["local"] = local_baseline(wav, plan)

    local_of = {"seek.wav": wav, **{f"ss-{f}": p.resolve() for f, p in seek_media.items()}}
    files: dict[str, Path] = {}
    shapes: dict[str, Shape] = {}
    folders = [cls.name.replace("_", "") for cls in MOUNTS] + ["curl"]
    for link in links:
        for folder in folders:
            for name in names_for(plan, link):
                path = f"/{folder}-{link}/{name}"
                files[path] = local_of.get(name, wav)
                shapes[path] = PLAY_SHAPE if name == "play.wav" else LINKS[link]
    hls_files = hls.programme(BENCH / ".media") if not args.only else {}
    for link in links:
        for name, local in hls_files.items():
            files[f"/hls-{link}/{name}"] = local
            shapes[f"/hls-{link}/{name}"] = LINKS[link]
    origin = ShapedOrigin(files, shapes)
    try:
        origin.start()
        for link in links:
            data: dict[str, Any] = {"filesystems": {}, "warnings": {}, "errors": {}}
            results["links"][link] = data
            names = names_for(plan, link)
            mounts: list[type[Mount]] = [*MOUNTS, *([PassthroughMount] if link == "lan" else [])]
            for cls in mounts:
                if args.only and cls.name not in args.only:
                    continue
                folder = f"{cls.name.replace('_', '')}-{link}"
                urls = {n: origin.url(f"/{folder}/{n}") for n in names}
                if cls is PassthroughMount:
                    locals_ = {n: local_of.get(n, wav) for n in names}
                    mount: Mount = PassthroughMount(workdir, "", urls, log_dir, locals_)
                else:
                    mount = cls(workdir / link, origin.url(f"/{folder}/"), urls, log_dir / link)
                say(f"mounting {cls.name} on the {link} link")
                try:
                    mount.start()
                    data["filesystems"][cls.name] = measure_fs(
                        mount, origin, folder, link, wav, plan, offsets
                    )
                    results["declared_readahead"][cls.name] = mount.declared_readahead
                except (OSError, RuntimeError) as exc:
                    say(f"{cls.name} failed: {exc}")
                    data["errors"][cls.name] = str(exc)
                finally:
                    code = mount.stop()
                    data["warnings"][cls.name] = mount.warnings()
                    if cls.name in data["filesystems"]:
                        data["filesystems"][cls.name]["exit_code"] = code
                    # Free the disk: the caches hold a few hundred MB per filesystem.
                    shutil.rmtree(mount.cache_dir, ignore_errors=True)
            if not args.only or "curl" in args.only:
                try:
                    data["filesystems"] |= measure_curl(
                        origin, f"curl-{link}", link, size, plan, offsets
                    )
                except OSError as exc:
                    data["errors"]["curl"] = str(exc)
            data["table"] = [
                asdict(r) for r in rows_for(link, data["filesystems"], results["local"])
            ]
            if hls_files:
                say(f"HLS on the {link} link: fresh mounts, ffmpeg and streamlink")
                try:
                    data["hls"] = hls.measure(origin, f"hls-{link}", workdir)
                except (OSError, subprocess.SubprocessError) as exc:
                    data["errors"]["hls"] = str(exc)
        if not args.only and not args.link:
            origin.stop()  # the scale runs bring their own origin; free the CPU for them
            results["scale"] = []
            for count in plan.scale:
                say(f"scale: {count:,} streams (mount, first ls -lR, offline remount)")
                results["scale"].append(scale.measure(count, workdir, 0.0))
    finally:
        origin.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    section = render(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    if args.only or args.link:
        say("--only/--link: bench/README.md left as it was")
    else:
        write_readme(section)
    print(section)
    say(f"raw numbers: {json_path.relative_to(BENCH.parent)}")
    errors = [e for d in results["links"].values() for e in d["errors"].values()]
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller file, fewer repeats, 20 s playback (a smoke test)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[*(m.name for m in MOUNTS), PassthroughMount.name, "curl"],
        help="measure only this filesystem (repeatable; the README is not rewritten)",
    )
    parser.add_argument(
        "--link",
        action="append",
        choices=list(LINKS),
        help="measure only on this link (repeatable; the README is not rewritten)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where mount points and caches go (default: system temp dir)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.monotonic()
    try:
        code = run(args)
    except (KeyboardInterrupt, Interrupted):
        say("interrupted; every mount was unmounted")
        return 130
    say(f"finished in {time.monotonic() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
