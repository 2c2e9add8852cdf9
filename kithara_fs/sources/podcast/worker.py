"""Parsing a feed in a process of its own, bounded in CPU time, memory and wall time.

Owns :func:`parse_apart`, which the listing calls, and the worker's ``main`` it runs
(``python -I -c …``, isolated): the feed's URL and bytes on stdin, the
channel as JSON on stdout. A feed is a stranger's document, and feedparser's cost is not
linear in every shape of it: an element with 40,000 attributes took 34 s of CPU (the
standard library's SAX looks each one up by a linear scan), and 32 MiB of tiny elements
would take minutes (measured here). In a thread, that held the GIL and slowed every read of
the mount, and could not be stopped at unmount. A process is stopped when it runs over,
leaves the mount's memory alone, and is killed on cancellation.

It must never fetch anything; the worker writes nothing but its answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from .channel import Channel, from_json, parse, to_json

# A feed of 20,000 episodes (28 MiB) took 16 s of CPU and 230 MiB here.
MAX_CPU_SECONDS = 120
MAX_MEMORY = 2 << 30
MAX_WALL_SECONDS = 180.0
# Feeds parsed at once, per mount (each takes a core while it runs).
PARALLEL = 2
# The worker's exit status when it ran out of CPU time.
OVER_CPU = 86
# Where this package lies (the worker appends it to its path), and what the worker runs.
_ROOT = str(Path(__file__).resolve().parents[3])
_RUN = ("import sys; sys.path.append(sys.argv.pop(1)); "
        "from kithara_fs.sources.podcast.worker import main; sys.exit(main())")


async def parse_apart(
    body: bytes, base: str, limiter: trio.CapacityLimiter, cpu_seconds: int = MAX_CPU_SECONDS
) -> Channel:
    """:func:`~.channel.parse` in a worker process, stopped after ``cpu_seconds`` of CPU.

    Raises:
        ValueError: it is not a feed, or it cost more than a feed may (said which).
    """
    async with limiter:
        # The URL goes on stdin, not in argv: it may carry credentials, and argv is public.
        # Isolated (-I): no environment (proxy credentials stay out of it), no current
        # directory or user site on the path; this package is found where it lies.
        with trio.move_on_after(MAX_WALL_SECONDS) as waited:
            done = await trio.run_process(
                [sys.executable, "-I", "-c", _RUN, _ROOT, str(cpu_seconds)],
                stdin=base.encode() + b"\n" + body, capture_stdout=True,
                capture_stderr=True, check=False, env={},
            )  # fmt: skip
    if waited.cancelled_caught:
        raise ValueError(f"parsing the feed took over {MAX_WALL_SECONDS:.0f} s (refused)")
    if done.returncode != 0:
        if done.returncode < 0 or done.returncode == OVER_CPU:  # SIGXCPU's exit, SIGKILL
            raise ValueError(f"parsing the feed took more than a feed may (signal "
                             f"{-done.returncode}; at most {cpu_seconds} s of CPU)")
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise ValueError(f"the feed could not be parsed ({last[:200]})")
    # Off the event loop too: 20,000 episodes are 30 MB of JSON.
    return await trio.to_thread.run_sync(_read_answer, done.stdout)


def _read_answer(output: bytes) -> Channel:
    try:
        answer: dict[str, Any] = json.loads(output)
        if "error" in answer:
            raise ValueError(str(answer["error"]))
        return from_json(answer)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the feed parser answered nonsense ({type(exc).__name__})") from None


def _limit(which: int, soft: int, hard: int) -> None:
    """Lower a limit of this process; one already lower (ulimit, systemd) stays."""
    import resource

    current_soft, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    if current_soft != resource.RLIM_INFINITY:
        soft = min(soft, current_soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(which, (min(soft, hard), hard))


def main() -> int:
    import resource  # the worker's own limits, set before it reads a byte

    cpu = int(sys.argv[1]) if len(sys.argv) > 1 else MAX_CPU_SECONDS
    # Past the CPU limit, exit at once: SIGXCPU's default would dump core, and a core holds
    # the feed's URL (credentials and all).
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(OVER_CPU))
    _limit(resource.RLIMIT_CORE, 0, 0)
    _limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    _limit(resource.RLIMIT_AS, MAX_MEMORY, MAX_MEMORY)
    data = sys.stdin.buffer.read()
    base, _, body = data.partition(b"\n")
    try:
        answer = to_json(parse(body, base.decode()))
    except ValueError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": f"parsing the feed took more than {MAX_MEMORY >> 30} GiB (refused)"}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
