"""Deadlines, and the change signal that waits against them.

Owns the two primitives every wait in kithara_fs uses: an absolute :class:`Deadline` fixed
once when a FUSE read arrives and passed down unchanged (so nested waits share one budget),
and a :class:`ChangeSignal` that wakes every waiter whenever the state it guards changes.

It must never poll: waits are event-driven, and a wait that hits its deadline simply returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Deadline:
    """An absolute point on trio's clock. ``Deadline.never()`` has no end."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(trio.current_time() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    def remaining(self) -> float:
        return max(0.0, self.at - trio.current_time())

    @property
    def expired(self) -> bool:
        return trio.current_time() >= self.at


class ChangeSignal:
    """Wakes all current waiters on :meth:`notify`.

    The usual lost-wakeup race cannot happen: a waiter checks its condition and then waits
    without a checkpoint in between, and :meth:`notify` swaps in a fresh Event, so a change
    that lands after the check still sets the Event that waiter holds.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        # An Event fires once; the next round of waiters needs a fresh one.
        self._event = trio.Event()

    async def wait(self, deadline: Deadline) -> bool:
        """Wait for the next change. Returns False if the deadline came first."""
        event = self._event
        with trio.move_on_at(deadline.at):
            await event.wait()
            return True
        return False
