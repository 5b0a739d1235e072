"""Per-source token buckets: a source gets a steady rate and a burst, nothing more.

A *source* is a host, not a socket (``source_of``): an IPv4 address, or the /64
of an IPv6 address (one customer's prefix, RFC 6177), so a host sending from
many ports or many addresses of its prefix shares one bucket.

Invariant: the map of sources is bounded (``max_sources``); when full the
least recently active source is forgotten, which can only make us more
generous to it, never hold more state.
"""

from __future__ import annotations

import functools
import socket
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["TokenBuckets", "source_of"]

K = TypeVar("K")

_IPV4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96 (RFC 4291 section 2.5.5.2)


@functools.lru_cache(maxsize=4096)
def source_of(host: str) -> str:
    """The rate-limit key of ``host``: the IPv4 address itself, or ``<prefix>::/64`` for IPv6.

    IPv4-mapped IPv6 addresses count as their IPv4 address; a zone (``%eth0``) is
    ignored. A host that is not an IP literal is its own key.
    """
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except (OSError, ValueError):
        return host
    if packed.startswith(_IPV4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


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
        # A clock stepped back (wall time) refills nothing rather than draining every bucket.
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
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
