"""How fast the link is, and so which variant an `auto` file fetches next.

Owns :class:`Throughput`: an estimate of the link's throughput from whole-segment downloads,
and the choice of variant for the next segment, with hysteresis so a link near a variant's
bitrate does not flap between two.

It must never fetch anything: it is told what downloads took.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .programme import VariantMedia

# Fraction of the estimated throughput a new variant's BANDWIDTH may use: ExoPlayer's
# default bandwidth fraction (AdaptiveTrackSelection) is the same 0.7, leaving room for
# throughput that fluctuates and for the playlist reloads of live programmes.
SAFETY = 0.7
# The variant playing now is kept while it needs at most this fraction of the estimate. The
# gap between 0.7 (to switch up) and 0.85 (to stay) is the hysteresis that keeps a link near
# a variant's bitrate from flapping between two variants every segment.
KEEP = 0.85
# Estimates are exponentially weighted averages of seconds per bit (harmonic, so one slow
# segment weighs as it should) with these weights; the lower of the two throughputs counts,
# so a drop is believed after one segment and a rise only after several (Shaka Player
# likewise takes the minimum of a fast and a slow average).
FAST_WEIGHT = 0.5
SLOW_WEIGHT = 0.2

class Throughput:
    """The link's throughput, estimated from whole-segment downloads (bits per second)."""

    def __init__(self) -> None:
        self._fast: float | None = None  # seconds per bit
        self._slow: float | None = None

    def sample(self, size: int, seconds: float) -> None:
        if size <= 0:
            return
        per_bit = max(seconds, 1e-6) / (size * 8)
        self._fast = per_bit if self._fast is None else _blend(self._fast, per_bit, FAST_WEIGHT)
        self._slow = per_bit if self._slow is None else _blend(self._slow, per_bit, SLOW_WEIGHT)

    @property
    def estimate(self) -> float | None:
        if self._fast is None or self._slow is None:
            return None
        return 1 / max(self._fast, self._slow)

    def choose(self, variants: Sequence[VariantMedia], current: int) -> int:
        """The index (into ``variants``, best first) of the variant for the next segment."""
        estimate = self.estimate
        if estimate is None:
            return current
        if variants[current].variant.bandwidth <= KEEP * estimate:
            better = [i for i in range(current)
                      if variants[i].variant.bandwidth <= SAFETY * estimate]  # fmt: skip
            return better[0] if better else current
        fitting = [i for i, v in enumerate(variants) if v.variant.bandwidth <= SAFETY * estimate]
        return fitting[0] if fitting else len(variants) - 1


def _blend(old: float, new: float, weight: float) -> float:
    return old * (1 - weight) + new * weight
