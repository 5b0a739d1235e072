"""Keyed token buckets with a bounded table, the clock passed in: the one rate limiter.

Why: a STUN server answers anyone, a DNS gateway too, a DHT node stores for
anyone; without a limit each is a free reflector and a CPU sink. One bucket per
*source* (``source_of``: an IPv4 address, or the /64 of an IPv6 address, since a
flood changes ports and addresses of its prefix for free); the table holds at
most ``max_sources`` buckets, evicting the least recently seen, so a
spoofed-source flood cannot make us hold unbounded state (a forgotten source
starts again with a full bucket, which only ever errs towards answering).

Time comes in as ``now`` (a monotonic clock in the adapters); a clock that goes
backwards refills nothing rather than draining every bucket. This is the one
token bucket of the code base (STUN, ENUM DNS, and the DHT's 1:1 replacement:
``TokenBuckets(rate, burst, max_sources=...)`` with ``allow(key, now, cost)``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MAX_TRACKED_SOURCES", "RateLimit", "SourceRateLimiter", "TokenBuckets", "source_of"]

MAX_TRACKED_SOURCES = 4096

K = TypeVar("K")


@functools.lru_cache(maxsize=4096)
def source_of(host: str) -> str:
    """The rate-limit key of ``host``: the IPv4 address itself, or ``<prefix>::/64`` for IPv6.

    IPv4-mapped IPv6 addresses count as their IPv4 address; a zone (``%eth0``) is
    ignored. A host that is not an IP literal is its own key.
    """
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    prefix = ipaddress.IPv6Address(int(address) >> 64 << 64)
    return f"{prefix}/64"


class TokenBuckets(Generic[K]):
    """``rate`` tokens per second refill up to ``burst``, one bucket per key."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(
        self, rate: float, burst: float, *, max_sources: int = MAX_TRACKED_SOURCES
    ) -> None:
        if rate <= 0 or burst <= 0 or max_sources < 1:
            raise ValueError("rate > 0, burst > 0 and max_sources >= 1 required")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        # key -> (tokens, time of last refill); order = least recently seen first
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()

    def allow(self, source: K, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``source``'s bucket if it has them."""
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class RateLimit:
    """``rate`` tokens per second refill, at most ``burst`` saved up (operator setting)."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")


class SourceRateLimiter(TokenBuckets[str]):
    """``TokenBuckets`` keyed by source IP, built from a ``RateLimit``."""

    __slots__ = ()

    def __init__(self, limit: RateLimit, *, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        super().__init__(limit.rate, limit.burst, max_sources=max_sources)
