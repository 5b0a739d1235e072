"""Per-client token buckets for UDP answers (a small response rate limiter, cf. BIND RRL).

UDP source addresses can be forged, so a flood "from" a victim must not turn
us into an amplifier aimed at it. The table of buckets is bounded: when full,
the least recently seen client is forgotten (it then starts with a full bucket,
which only ever errs towards answering).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ClientRateLimiter"]


class ClientRateLimiter:
    """``allow(client, now)`` spends one token of ``client``'s bucket if it has one."""

    def __init__(self, rate: float, burst: float, max_clients: int) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate > 0, burst >= 1 and max_clients >= 1 required")
        self._rate = rate
        self._burst = burst
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str, now: float) -> bool:
        held = self._buckets.get(client)
        if held is None:
            if len(self._buckets) >= self._max_clients:
                self._buckets.popitem(last=False)
            tokens = self._burst
        else:
            tokens, last = held
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            self._buckets.move_to_end(client)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True

    def __len__(self) -> int:
        return len(self._buckets)
