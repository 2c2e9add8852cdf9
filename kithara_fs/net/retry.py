"""Retry pacing: how often and how patiently a transient failure is tried again.

Owns :class:`RetryPolicy` and :class:`Backoff` (exponential backoff with full jitter, a cap on
the time since the first failure, Retry-After honoured within bounds).

It must never judge whether a failure is worth retrying (the caller says so with
``OriginError.transient``), never sleep past the policy's bounds, and never touch httpx.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import trio

from ..errors import OriginError

# The package's name, as before net became a package: log lines keep their logger name.
log = logging.getLogger("kithara_fs.net")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    Six attempts with a 0.25 s base and a 4 s cap sleep roughly 8 s in the worst case:
    longer than an origin restart or a load balancer's failover. The attempts themselves
    take time too (a 10 s connect timeout, a 5 s stall, a honoured Retry-After), so the
    retries also end once ``max_elapsed`` has passed since the first failure: a dead origin
    surfaces as EIO before a blocking reader's budget (30 s by default) runs out.
    """

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 4.0
    # A Retry-After header is honoured up to this many seconds; longer would starve readers.
    max_retry_after: float = 10.0
    # No new attempt starts this long after the first failure of a run (see above).
    max_elapsed: float = 20.0


class Backoff:
    """Counts consecutive failures and sleeps between attempts (full jitter, AWS-style)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self._first_failure: float | None = None

    def reset(self) -> None:
        self.failures = 0
        self._first_failure = None

    async def pause(self, exc: OriginError, retry_after: float | None = None) -> None:
        """Record a failure; re-raise ``exc`` once the attempts or the time are spent, else
        sleep before the next attempt."""
        now = trio.current_time()
        if self._first_failure is None:
            self._first_failure = now
        self.failures += 1
        ceiling = min(self.policy.max_delay, self.policy.base_delay * 2**self.failures)
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.max_retry_after))
        late = now + delay - self._first_failure > self.policy.max_elapsed
        if self.failures >= self.policy.attempts or late:
            exc.exhausted = True
            raise exc
        log.info("retrying in %.2fs after: %s", delay, exc)
        await trio.sleep(delay)
