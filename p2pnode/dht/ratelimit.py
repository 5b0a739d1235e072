"""Per-source token buckets: a peer gets a steady rate and a burst, nothing more.

Invariant: the map of sources is bounded (``max_sources``); when full the
least recently active source is forgotten, which can only make us more
generous to it, never hold more state.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["TokenBuckets"]

K = TypeVar("K")


class TokenBuckets(Generic[K]):
    """``rate`` tokens per second up to ``burst``, one bucket per source key."""

    def __init__(self, rate: float, burst: float, *, max_sources: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()

    def allow(self, source: K, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``source`` if it has them."""
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[source] = (tokens, now)
        self._buckets.move_to_end(source)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
