"""Many streams: size probes are bounded, and the file someone looks at goes first.

On a virtual clock (autojump) with an in-memory origin that takes one second per answer:
the figures are exact, and no timing of this machine enters them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from kithara_fs.cache import CacheStore
from kithara_fs.config import parse_config
from kithara_fs.engine.scheduler import Scheduler
from kithara_fs.errors import OriginError
from kithara_fs.net import HttpClient
from kithara_fs.net.answers import _translate
from kithara_fs.tree import FileNode, Registry
from kithara_fs.tree.background import PROBE_WORKERS

from .fakes import FakeOrigin

STREAMS = 200


class CountingOrigin(FakeOrigin):
    """Counts the requests in flight at once."""

    def __init__(self) -> None:
        super().__init__(b"x" * 10_000, latency=1.0)
        self.in_flight = 0
        self.most = 0

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super()._handle(request)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def many(tmp_path: Path) -> AsyncIterator[tuple[Registry, CountingOrigin]]:
    origin = CountingOrigin()
    settings = parse_config({
        "cache": {"dir": str(tmp_path)},
        "stream": [{"path": f"f/{i:04}.mp3", "url": f"http://origin.test/{i}"}
                   for i in range(STREAMS)],
    })  # fmt: skip
    async with HttpClient(transport=origin.transport()) as http, trio.open_nursery() as nursery:
        registry = Registry(settings, http, CacheStore(tmp_path), Scheduler(nursery), nursery)
        yield registry, origin
        nursery.cancel_scope.cancel()


def by_name(registry: Registry) -> list[FileNode]:
    return sorted(registry.files(), key=lambda node: node.name)


async def test_size_probes_are_bounded(
    many: tuple[Registry, CountingOrigin], autojump_clock: trio.testing.MockClock
) -> None:
    registry, origin = many
    start = trio.current_time()
    registry.start_background()
    while any(node.source.length is None for node in registry.files()):
        await trio.sleep(0.5)
    assert origin.most == PROBE_WORKERS, "never more probes in flight than workers"
    assert len(origin.requests) == STREAMS, "one probe a file, none retried"
    rounds = -(-STREAMS // PROBE_WORKERS)
    assert trio.current_time() - start == pytest.approx(rounds, abs=1)


async def test_the_file_looked_at_is_probed_first(
    many: tuple[Registry, CountingOrigin], autojump_clock: trio.testing.MockClock
) -> None:
    registry, _ = many
    registry.start_background()
    await trio.sleep(0.1)  # every probe is queued, the first 16 are in flight
    last = by_name(registry)[-1]
    start = trio.current_time()
    assert await registry.size(last) == 10_000
    # It waited for one slot (the first round) and its own answer: 2 s, not 13 rounds.
    assert trio.current_time() - start <= 2.0 + 0.1


def test_a_full_local_pool_is_not_retried() -> None:
    error = _translate("http://h/x", httpx.PoolTimeout("no connection"))
    assert isinstance(error, OriginError) and not error.retryable
    assert "own limit" in error.reason
