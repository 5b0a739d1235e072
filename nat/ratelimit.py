"""Per-source token buckets with a bounded table, the clock passed in.

Why: a STUN server answers anyone, so without a limit it is a free reflector
and a CPU sink. One bucket per source IP (not per port: a flood changes ports
for free); the table holds at most ``max_sources`` buckets, evicting the least
recently seen, so a spoofed-source flood cannot make us hold unbounded state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["MAX_TRACKED_SOURCES", "RateLimit", "SourceRateLimiter"]

MAX_TRACKED_SOURCES = 4096


@dataclass(frozen=True)
class RateLimit:
    """``rate`` tokens per second refill, at most ``burst`` saved up."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")


class SourceRateLimiter:
    """``allow(source, now)`` spends one token of that source's bucket if it has one."""

    def __init__(self, limit: RateLimit, *, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self._limit = limit
        self._max_sources = max_sources
        # source -> (tokens, time of last refill); order = least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self._limit.burst, now))
        tokens = min(self._limit.burst, tokens + max(0.0, now - last) * self._limit.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
