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

from mounts import MOUNTS, KitharaMount, Mount, dpkg_version, missing_tools
from shaped_origin import Shape, ShapedOrigin
from workloads import (
    READ_SIZE,
    drop_page_cache,
    first_bytes_latency,
    median,
    over_fetch,
    percentile,
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
STALL_THRESHOLD = 0.200
PLAYER_BUFFER_SECS = 3.0
SEEK_THINK = 0.2  # seconds between random reads: a player decodes a little, then seeks again
# Random reads go backwards at least this far apart, so no read is served by what an earlier
# one fetched: httpdirfs's 8 MiB segments are the largest unit any of the three fetches
# behind-or-around a read (forward read-ahead never covers an earlier offset).
SEEK_SPACING = 8 * 1024 * 1024 + 64 * 1024
# Keep clear of the first and last MiB, which players (and kithara_fs) probe on open.
SEEK_MARGIN = 1024 * 1024
WARM_TARGET = 0.80


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    duration: int  # seconds of WAV; 1190 s ≈ 210 MB
    ttfb_reps: int
    cold_reps: int
    warm_reps: int
    seek_count: int
    play_secs: float


FULL = Plan(duration=1190, ttfb_reps=5, cold_reps=2, warm_reps=5, seek_count=20, play_secs=60)
QUICK = Plan(duration=600, ttfb_reps=3, cold_reps=1, warm_reps=3, seek_count=20, play_secs=20)


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
        "disk_fs": fs_type,
    }


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


def names_for(plan: Plan) -> list[str]:
    names = [f"ttfb{i}.wav" for i in range(1, plan.ttfb_reps + 1)]
    names += [f"seq{i}.wav" for i in range(1, plan.cold_reps + 1)]
    return [*names, "seek.wav", "play.wav"]


def measure_fs(
    mount: Mount, origin: ShapedOrigin, folder: str, wav: Path, plan: Plan, offsets: list[int]
) -> dict[str, Any]:
    """Every measurement on one mounted filesystem, in a fixed order.

    Each phase reads its own never-read files. If the filesystem process dies during a
    phase, the phase is recorded as failed (with the end of the log), the filesystem is
    mounted again on the same cache folder and the next phase goes on, so one crash costs
    one row, not the whole column.
    """
    size = wav.stat().st_size
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
        say(f"{mount.name}: time to first 64 KiB ×{plan.ttfb_reps}")
        out["ttfb_s"] = [
            first_bytes_latency(mount.path(f"ttfb{i}.wav")) for i in range(1, plan.ttfb_reps + 1)
        ]

    def seeks() -> None:
        say(f"{mount.name}: {len(offsets)} cold 64 KiB reads at random offsets")
        out["seek_offsets"] = offsets
        out["seek_s"] = random_reads(mount.path("seek.wav"), offsets, SEEK_THINK)
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
        speeds: list[float] = []
        over: list[float] = []
        for i in range(1, plan.cold_reps + 1):
            say(f"{mount.name}: cold sequential read {i}/{plan.cold_reps} ({size / 1e6:.0f} MB)")
            speeds.append(sequential_read(mount.path(f"seq{i}.wav"), size, quiet))
            origin.wait_idle(30)
            fetched = sum(r.body_bytes for r in origin.requests_for(f"/{folder}/seq{i}.wav"))
            over.append(fetched / size)
            if i == 1:
                out["seq_requests"] = [
                    asdict(r) for r in origin.requests_for(f"/{folder}/seq1.wav")
                ]
            out["cold_bps"] = speeds
            out["seq_over_fetch"] = over

    def warm() -> None:
        say(f"{mount.name}: warm sequential read, 1 + {plan.warm_reps}")
        before = sum(r.body_bytes for r in origin.requests_for(f"/{folder}/seq1.wav"))
        # The first re-read after the cold read is reported on its own: a filesystem may
        # only then move the file into the kernel page cache (kithara_fs does). "Warm" is
        # the steady state after it, as for local disk, where one read is discarded too.
        out["reread_bps"] = sequential_read(mount.path("seq1.wav"), size, quiet)
        # Each warm read is paired with a read of the same bytes from local disk right after
        # it, so both sides of the 80 % target see the same machine state (page-cache copy
        # speed drifted by ±20 % between runs here).
        fs_speeds: list[float] = []
        local_speeds: list[float] = []
        for _ in range(plan.warm_reps):
            fs_speeds.append(sequential_read(mount.path("seq1.wav"), size, quiet))
            local_speeds.append(sequential_read(wav, size))
        out["warm_bps"] = fs_speeds
        out["warm_local_bps"] = local_speeds
        after = sum(r.body_bytes for r in origin.requests_for(f"/{folder}/seq1.wav"))
        out["warm_origin_bytes"] = after - before

    def play() -> None:
        say(f"{mount.name}: real-time playback, {plan.play_secs:.0f} s")
        pb = playback(mount.path("play.wav"), WAV_BYTE_RATE, plan.play_secs, PLAYER_BUFFER_SECS)
        out["playback"] = asdict(pb) | {"stalls_over_200ms": pb.stalls_over(STALL_THRESHOLD)}

    def note_rss() -> None:
        rss = mount.peak_rss()
        if rss is not None:
            out["peak_rss"] = max(out["peak_rss"] or 0, rss)

    phases = [("ttfb", ttfb), ("seeks", seeks), ("cold", cold), ("warm", warm), ("play", play)]
    for name, phase in phases:
        if name == "warm" and "cold_bps" not in out:
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


# -- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    unit: str
    better: str  # "lower" or "higher"
    values: dict[str, float | None]  # fs name (and "local") -> value
    target: str = ""
    met: bool | None = None  # None: no target on this row
    ratio: bool = True  # show kithara ÷ peer


def summarise(results: dict[str, Any]) -> list[Row]:
    fs = results["filesystems"]
    local = results["local"]
    names = [m.name for m in MOUNTS]
    peers = names[1:]
    kfs = names[0]

    def per(fn: Any) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for n in names:
            try:
                values[n] = fn(fs[n])
            except (KeyError, TypeError, ValueError):
                values[n] = None  # not measured: the filesystem or that phase failed
        return values

    mb = 1e6
    # The warm target compares kithara_fs with the local reads paired with its own warm
    # reads; the start-of-run baseline is the fallback.
    paired = fs.get(kfs, {}).get("warm_local_bps")
    paired_local_warm = median(paired) if paired else local["warm_bps_median"]
    rows = [
        Row(
            "time to first 64 KiB after open, cold (median)",
            "ms",
            "lower",
            per(lambda r: median(r["ttfb_s"]) * 1000),
        ),
        Row(
            "cold sequential throughput (median)",
            "MB/s",
            "higher",
            per(lambda r: median(r["cold_bps"]) / mb)
            | {"local": (local["cold_bps"] or 0) / mb if local["cold_bps"] else None},
            target="≥ best peer",
        ),
        Row(
            "first re-read after the cold read",
            "MB/s",
            "higher",
            per(lambda r: r["reread_bps"] / mb),
        ),
        Row(
            "warm sequential throughput (median)",
            "MB/s",
            "higher",
            per(lambda r: median(r["warm_bps"]) / mb) | {"local": paired_local_warm / mb},
            target=f"≥ {WARM_TARGET:.0%} of local disk",
        ),
        Row(
            "cold random 64 KiB read latency, median",
            "ms",
            "lower",
            per(lambda r: median(r["seek_s"]) * 1000),
            target="≤ best peer",
        ),
        Row(
            "cold random 64 KiB read latency, p90",
            "ms",
            "lower",
            per(lambda r: percentile(r["seek_s"], 90) * 1000),
            target="≤ best peer",
        ),
        Row(
            "playback: startup delay (open → first chunk)",
            "ms",
            "lower",
            per(lambda r: r["playback"]["startup"] * 1000),
        ),
        Row(
            "playback: stalls > 200 ms",
            "count",
            "lower",
            per(lambda r: r["playback"]["stalls_over_200ms"]),
            target="0",
        ),
        Row(
            "playback: total stalled time",
            "s",
            "lower",
            per(lambda r: sum(r["playback"]["stalls"])),
        ),
        Row(
            "over-fetch, random reads (all bytes)",
            "×",
            "lower",
            per(lambda r: r["seek_over_fetch"]["ratio"]),
        ),
        Row(
            "over-fetch, random reads, excl. declared read-ahead",
            "×",
            "lower",
            per(lambda r: r["seek_over_fetch"]["ratio_excl_readahead"]),
            target="≤ 1.25",
        ),
        Row(
            "over-fetch, cold sequential read",
            "×",
            "lower",
            per(lambda r: median(r["seq_over_fetch"])),
        ),
        Row(
            "peak RSS of the filesystem process",
            "MiB",
            "lower",
            per(lambda r: (r["peak_rss"] or 0) / 2**20 if r["peak_rss"] else None),
        ),
    ]

    def best_peer(row: Row) -> float | None:
        vals = [v for p in peers if (v := row.values.get(p)) is not None]
        if not vals:
            return None
        return min(vals) if row.better == "lower" else max(vals)

    for row in rows:
        mine = row.values.get(kfs)
        if not row.target or mine is None:
            continue
        if row.target == "0":
            row.met = mine == 0
        elif row.target.startswith("≤ 1.25"):
            row.met = mine <= 1.25
        elif row.target.startswith("≥") and "local" in row.target:
            loc = row.values.get("local")
            row.met = loc is not None and mine >= WARM_TARGET * loc
        elif "best peer" in row.target:
            best = best_peer(row)
            if best is not None:
                row.met = mine <= best if row.better == "lower" else mine >= best
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "×":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    if b == 0:
        return "—" if a == 0 else "∞"
    return f"{a / b:.2f}"


def render(results: dict[str, Any], rows: list[Row]) -> str:
    names = [m.name for m in MOUNTS]
    kfs, peers = names[0], names[1:]
    m = results["machine"]
    cond = results["conditions"]
    head = [
        "metric",
        "unit",
        *names,
        "local disk",
        *(f"{kfs} ÷ {p}" for p in peers),
        "target (kithara_fs)",
        "met?",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.metric, row.unit]
        cells += [_fmt(row.values.get(n), row.unit) for n in names]
        cells.append(_fmt(row.values.get("local"), row.unit))
        cells += [_ratio(row.values.get(kfs), row.values.get(p)) for p in peers]
        cells.append(row.target or "—")
        if row.met is None:
            cells.append("**no data**" if row.target else "—")
        else:
            cells.append("**yes**" if row.met else "**MISSED**")
        lines.append("| " + " | ".join(cells) + " |")
    missed = [r.metric for r in rows if r.met is False]
    unknown = [r.metric for r in rows if r.target and r.met is None]
    parts = []
    if missed:
        parts.append("Missed targets: " + "; ".join(missed) + ".")
    if unknown:
        parts.append("Not measured: " + "; ".join(unknown) + ".")
    summary = " ".join(parts) or "All Done-when targets met."
    notes = [
        f"Run: {m['date']}, `{cond['command']}`"
        + (
            " — **quick mode: smaller file and shorter playback; not a Done-when run**"
            if cond["quick"]
            else ""
        )
        + ".",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, kernel {m['kernel']}, "
        f"{m['os']}, Python {m['python']}; disk filesystem {m['disk_fs']}.",
        f"Versions: {m['kithara_fs']}; {m['httpdirfs']}; {m['rclone']}; fuse3 {m['fuse3']}.",
        f"File: {cond['file_mb']:.1f} MB WAV ({cond['duration_s']} s, 1411.2 kbit/s). "
        f"Link for all but playback: {cond['net_delay_ms']:.0f} ms added per request, "
        f"{cond['net_mbit']:.0f} Mbit/s shared. Playback link: "
        f"{cond['play_delay_ms']:.0f} ms, {cond['play_kbit']:.0f} kbit/s (3× the bitrate), "
        f"{cond['play_secs']:.0f} s played, {PLAYER_BUFFER_SECS:.0f} s player buffer.",
        f"Medians of {cond['ttfb_reps']} (first 64 KiB), {cond['cold_reps']} (cold) and "
        f"{cond['warm_reps']} (warm) reads; {cond['seek_count']} random offsets. Local cold "
        + (
            "after dropping the page cache."
            if results["local"]["cold_dropped_caches"]
            else "not measured (could not drop the page cache; needs root)."
        )
        + " Local warm: each warm read of kithara_fs is followed by a local read of the same "
        "bytes, and the target uses the median of those (start-of-run local baseline: "
        f"{results['local']['warm_bps_median'] / 1e6:.0f} MB/s).",
        "Ratios are kithara_fs ÷ peer (for latency, RSS and over-fetch lower is better; "
        "for throughput higher is better).",
        "Declared read-ahead excluded from over-fetch: "
        + ", ".join(
            f"{n} {fs['declared_readahead'] / 1e6:.1f} MB"
            for n, fs in results["filesystems"].items()
        )
        + " after each read (kithara_fs: its read-ahead in seconds × the WAV's byte rate; "
        "rclone: --buffer-size; httpdirfs has none — its 8 MB segments count as over-fetch).",
    ]
    for name, fs in results["filesystems"].items():
        for crash in fs.get("crashes", []):
            last = next((ln for ln in crash["log_tail"] if "Fatal" in ln or "panic" in ln), "")
            notes.append(
                f"{name} crashed during the {crash['phase']} phase"
                + (f" (`{last.strip()}`)" if last else "")
                + "; it was mounted again on the same cache and the run went on."
            )
        for phase, error in fs.get("phase_errors", {}).items():
            if not error.startswith("filesystem process died"):
                notes.append(f"{name}: {phase} phase failed: {error}")
    warnings = results.get("warnings", {})
    if any(warnings.values()):
        notes.append(
            "Log warnings: "
            + "; ".join(f"{k}: {len(v)} line(s)" for k, v in warnings.items() if v)
            + " (see JSON)."
        )
    if results.get("errors"):
        notes.append("Errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()))
    return "\n".join([*lines, "", f"**{summary}**", "", *(f"- {n}" for n in notes)])


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
    say(f"preparing a {plan.duration} s WAV under bench/.media (generated once)")
    wav = media.generate(BENCH / ".media" / f"{plan.duration}s", plan.duration, ["wav.wav"])[
        "wav.wav"
    ].resolve()
    size = wav.stat().st_size
    offsets = seek_offsets(size, plan.seek_count, SEEK_SPACING, SEEK_MARGIN)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = BENCH / "results"
    log_dir = out_dir / f"logs-{stamp}"
    workdir = Path(tempfile.mkdtemp(prefix="kfs-bench-", dir=args.workdir))
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
        "filesystems": {},
        "warnings": {},
        "errors": {},
    }
    say("local disk baseline")
    results["local"] = local_baseline(wav, plan)

    folders = {cls.name: cls.name.replace("_", "") for cls in MOUNTS}
    names = names_for(plan)
    files: dict[str, Path] = {}
    shapes: dict[str, Shape] = {}
    for folder in folders.values():
        for name in names:
            files[f"/{folder}/{name}"] = wav
            shapes[f"/{folder}/{name}"] = PLAY_SHAPE if name == "play.wav" else NET_SHAPE
    origin = ShapedOrigin(files, shapes)
    try:
        origin.start()
        for cls in MOUNTS:
            if args.only and cls.name not in args.only:
                continue
            folder = folders[cls.name]
            urls = {n: origin.url(f"/{folder}/{n}") for n in names}
            mount = cls(workdir, origin.url(f"/{folder}/"), urls, log_dir)
            say(f"mounting {cls.name}")
            try:
                mount.start()
                results["filesystems"][cls.name] = measure_fs(
                    mount, origin, folder, wav, plan, offsets
                )
            except (OSError, RuntimeError) as exc:
                say(f"{cls.name} failed: {exc}")
                results["errors"][cls.name] = str(exc)
            finally:
                code = mount.stop()
                results["warnings"][cls.name] = mount.warnings()
                if cls.name in results["filesystems"]:
                    results["filesystems"][cls.name]["exit_code"] = code
                # Free the disk: the caches hold a few hundred MB per filesystem.
                shutil.rmtree(mount.cache_dir, ignore_errors=True)
    finally:
        origin.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = summarise(results)
    results["table"] = [asdict(r) for r in rows]
    section = render(results, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    if args.only:
        say("--only: bench/README.md left as it was")
    else:
        write_readme(section)
    print(section)
    say(f"raw numbers: {json_path.relative_to(BENCH.parent)}; README updated")
    return 1 if results["errors"] else 0


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
        choices=[m.name for m in MOUNTS],
        help="measure only this filesystem (repeatable; the README is not rewritten)",
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
