"""The results tables: one per link, from the raw numbers run.py collected.

Owns turning ``results["links"][link]`` into rows (a value per filesystem and per ceiling),
judging kithara_fs's Done-when targets on each row, and rendering the Markdown that goes
between the results markers of bench/README.md.

Must never measure anything, or hide a missing number: a value that was not measured is
"—", and a target without the numbers it needs is "no data", not "yes".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workloads import median, percentile

KFS = "kithara_fs"
PEERS = ["httpdirfs", "rclone"]
CEILINGS = ["curl", "curl transfer", "passthrough"]
COLUMNS = [KFS, *PEERS, *CEILINGS, "local"]
HEADINGS = {"local": "local disk"}
WARM_TARGET = 0.80
RSS_TARGET_MIB = 80


@dataclass
class Row:
    metric: str
    unit: str
    better: str  # "lower" or "higher"
    values: dict[str, float | None]  # column -> value
    target: str = ""
    met: bool | None = None  # None: no target on this row, or no data for it


Check = Callable[[dict[str, float | None]], bool | None]


def _vs(column: str, factor: float, better: str) -> Check:
    def check(values: dict[str, float | None]) -> bool | None:
        mine, theirs = values.get(KFS), values.get(column)
        if mine is None or theirs is None:
            return None
        return mine <= factor * theirs if better == "lower" else mine >= factor * theirs

    return check


def _best_peer(better: str) -> Check:
    def check(values: dict[str, float | None]) -> bool | None:
        mine = values.get(KFS)
        peers = [v for p in PEERS if (v := values.get(p)) is not None]
        if mine is None or not peers:
            return None
        return mine <= min(peers) if better == "lower" else mine >= max(peers)

    return check


def _at_most(limit: float) -> Check:
    def check(values: dict[str, float | None]) -> bool | None:
        mine = values.get(KFS)
        return None if mine is None else mine <= limit

    return check


def rows_for(link: str, measured: dict[str, Any], local: dict[str, Any]) -> list[Row]:
    """The rows of one link's table, with kithara_fs's targets judged."""
    lan = link == "lan"

    def per(fn: Callable[[dict[str, Any]], float]) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for name in COLUMNS:
            try:
                values[name] = fn(measured[name])
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                values[name] = None  # not measured there, or the phase failed
        return values

    mb = 1e6
    spec: list[tuple[str, str, str, Callable[[dict[str, Any]], float], str, Check | None]] = [
        ("open + first 64 KiB, cold (median)", "ms", "lower",
         lambda r: median(r["ttfb_s"]) * 1000,
         "≤ 2× curl" if lan else "", _vs("curl", 2, "lower") if lan else None),
        ("bytes fetched per byte read, at open", "×", "lower",
         lambda r: r["ttfb_over_fetch"], "≤ 3" if lan else "", _at_most(3) if lan else None),
        ("random 64 KiB read, cold (median)", "ms", "lower",
         lambda r: median(r["seek_s"]) * 1000,
         "≤ 2× curl" if lan else "≤ best peer",
         _vs("curl", 2, "lower") if lan else _best_peer("lower")),
        ("random 64 KiB read, cold (p90)", "ms", "lower",
         lambda r: percentile(r["seek_s"], 90) * 1000,
         "" if lan else "≤ best peer", None if lan else _best_peer("lower")),
        ("bytes fetched per byte read, random reads", "×", "lower",
         lambda r: r["seek_over_fetch"]["ratio"], "≤ 1.25" if lan else "",
         _at_most(1.25) if lan else None),
        ("same, excluding declared read-ahead", "×", "lower",
         lambda r: r["seek_over_fetch"]["ratio_excl_readahead"], "" if lan else "≤ 1.25",
         None if lan else _at_most(1.25)),
        ("cold sequential `dd bs=128k` (median)", "MB/s", "higher",
         lambda r: median(r["cold_bps"]) / mb, "≥ best peer", _best_peer("higher")),
        ("bytes fetched per byte read, cold sequential", "×", "lower",
         lambda r: median(r["seq_over_fetch"]), "", None),
        ("first re-read of a cached file", "MB/s", "higher",
         lambda r: r["reread_bps"] / mb, "", None),
        ("cached re-reads (median)", "MB/s", "higher",
         lambda r: median(r["warm_bps"]) / mb,
         f"≥ {WARM_TARGET:.1f}× passthrough" if lan else "",
         _vs("passthrough", WARM_TARGET, "higher") if lan else None),
        ("`ffmpeg -ss 300`, 7 formats (median)", "s", "lower",
         lambda r: median(list(r["ffmpeg_ss_s"].values())),
         "≤ 1.25× rclone" if lan else "", _vs("rclone", 1.25, "lower") if lan else None),
        ("`ffmpeg -ss 300`, slowest format", "s", "lower",
         lambda r: max(r["ffmpeg_ss_s"].values()), "", None),
    ]  # fmt: skip
    if not lan:
        spec += [
            ("playback: startup (open → first chunk)", "ms", "lower",
             lambda r: r["playback"]["startup"] * 1000, "", None),
            ("playback: stalls > 200 ms", "count", "lower",
             lambda r: r["playback"]["stalls_over_200ms"], "0", _at_most(0)),
            ("playback: total stalled time", "s", "lower",
             lambda r: sum(r["playback"]["stalls"]), "", None),
        ]  # fmt: skip
    spec.append(
        ("peak RSS of the filesystem process", "MiB", "lower",
         lambda r: r["peak_rss"] / 2**20, f"< {RSS_TARGET_MIB}", _at_most(RSS_TARGET_MIB))
    )  # fmt: skip
    rows = []
    for metric, unit, better, fn, target, check in spec:
        values = per(fn)
        if metric.startswith("cold sequential") and local.get("cold_bps"):
            values["local"] = local["cold_bps"] / mb
        if metric.startswith("cached re-reads") and measured.get(KFS, {}).get("warm_local_bps"):
            values["local"] = median(measured[KFS]["warm_local_bps"]) / mb
        rows.append(Row(metric, unit, better, values, target,
                        check(values) if check else None))  # fmt: skip
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


def render_table(rows: list[Row]) -> list[str]:
    shown = [c for c in COLUMNS if any(r.values.get(c) is not None for r in rows)]
    others = [c for c in shown if c not in (KFS, "local")]
    head = ["metric", "unit", *(HEADINGS.get(c, c) for c in shown),
            *(f"÷ {c}" for c in others), "target", "met?"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.metric, row.unit, *(_fmt(row.values.get(c), row.unit) for c in shown)]
        cells += [_ratio(row.values.get(KFS), row.values.get(c)) for c in others]
        cells.append(row.target or "—")
        if row.met is None:
            cells.append("**no data**" if row.target else "—")
        else:
            cells.append("**yes**" if row.met else "**MISSED**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(rows: list[Row]) -> str:
    missed = [r.metric for r in rows if r.met is False]
    unknown = [r.metric for r in rows if r.target and r.met is None]
    parts = []
    if missed:
        parts.append("Missed: " + "; ".join(missed) + ".")
    if unknown:
        parts.append("Not measured: " + "; ".join(unknown) + ".")
    return " ".join(parts) or "All targets on this link met."


SCALE_FACTOR_LIMIT = 12
SCALE_OFFLINE_LIMIT_S = 5.0
SCALE_RSS_LIMIT_MIB = 200


def render_scale(rows: list[dict[str, Any]]) -> list[str]:
    """The scale table (bench/scale.py's figures) and its targets, judged on the last row
    against the first."""
    lines = [
        "| streams | mount | first `ls -lR` | sizes shown | offline remount `ls -lR` | "
        "offline sizes | RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['streams']:,} | {r['mount_s']:.2f} s | {r['ls_s']:.2f} s | "
            f"{r['sized']:,} / {r['listed']:,} | {r['offline_ls_s']:.2f} s | "
            f"{r['offline_sized']:,} | {r['rss_mib']:.0f} MiB |"
        )
    if len(rows) < 2:
        return lines
    first, last = rows[0], rows[-1]
    factor = last["streams"] / first["streams"]
    mount_x, ls_x = last["mount_s"] / first["mount_s"], last["ls_s"] / first["ls_s"]
    checks = [
        (f"mount time grows {mount_x:.1f}× for {factor:.0f}× the streams",
         mount_x <= SCALE_FACTOR_LIMIT * factor / 10),
        (f"first `ls -lR` grows {ls_x:.1f}×", ls_x <= SCALE_FACTOR_LIMIT * factor / 10),
        ("every first `ls -lR` shows every size",
         all(r["sized"] == r["listed"] == r["streams"] for r in rows)),
        (f"offline `ls -lR` of {last['streams']:,} in {last['offline_ls_s']:.2f} s, every size",
         last["offline_ls_s"] < SCALE_OFFLINE_LIMIT_S
         and last["offline_sized"] == last["streams"]),
        (f"RSS {last['rss_mib']:.0f} MiB", last["rss_mib"] < SCALE_RSS_LIMIT_MIB),
    ]  # fmt: skip
    lines.append("")
    lines += [f"- {text}: **{'yes' if ok else 'MISSED'}**" for text, ok in checks]
    return lines


HLS_TARGET = 2.0


def render_hls(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The HLS table: per link, kithara_fs against ffmpeg and streamlink on the playlist;
    the target is the 20 ms link's first 64 KiB within 2x streamlink's (else ffmpeg's)."""
    from hls import SECONDS, SEEK_TO

    lines = [
        f"### HLS: a {SECONDS // 60}-minute programme of 600 segments, from a fresh start", "",
        "| link | metric | kithara_fs | ffmpeg on the playlist | streamlink | ÷ ffmpeg | "
        "÷ streamlink | target | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for link, data in figures.items():
        for key, metric in (("first_64k_s", "first 64 KiB (s)"),
                            ("ffmpeg_ss_s", f"`ffmpeg -ss {SEEK_TO}` (s)")):  # fmt: skip
            values = {c: (median(v[key]) if v.get(key) else None) for c, v in data.items()}
            mine, ff, sl = values.get(KFS), values.get("ffmpeg"), values.get("streamlink")
            target, met = "—", "—"
            if link == "network" and key == "first_64k_s":
                peer, name = (sl, "streamlink") if sl is not None else (ff, "ffmpeg")
                target = f"≤ {HLS_TARGET:.0f}× {name}"
                if mine is not None and peer is not None:
                    met = "**yes**" if mine <= HLS_TARGET * peer else "**MISSED**"
                else:
                    met = "**no data**"
            lines.append(f"| {link} | {metric} | {_fmt(mine, 's')} | {_fmt(ff, 's')} | "
                         f"{_fmt(sl, 's')} | {_ratio(mine, ff)} | {_ratio(mine, sl)} | "
                         f"{target} | {met} |")  # fmt: skip
    lines.append("")
    return lines
