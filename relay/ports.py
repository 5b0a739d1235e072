"""Which UDP port a new relayed address gets: random within the operator's range.

RFC 8656 §7.2: "the server SHOULD choose the relayed transport address ...
randomly" (port prediction helps attackers hijack permissions) and, for
EVEN-PORT, an even port. The pool is the hard capacity limit: when it is empty
the server answers 508 (Insufficient Capacity). Randomness is injected.
"""

from __future__ import annotations

import random

__all__ = ["DEFAULT_PORT_RANGE", "PortPool"]

# RFC 8656 §7.2: "the range 49152 - 65535 ... the Dynamic and/or Private Port range".
DEFAULT_PORT_RANGE = (49152, 65535)
RANDOM_PROBES = 16


class PortPool:
    """Ports handed out and not yet released; ``take`` is O(1) expected while the pool is sparse."""

    __slots__ = ("_high", "_in_use", "_low")

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        self._low = low
        self._high = high
        self._in_use: set[int] = set()

    def take(self, rng: random.Random, *, even: bool = False) -> int | None:
        """A free port chosen at random (even if asked), or None when the range is full."""
        low, high = self._low, self._high
        for _ in range(RANDOM_PROBES):
            port = rng.randint(low, high)
            if even:
                port &= ~1
                if port < low:
                    continue
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        start = rng.randint(low, high)
        span = high - low + 1
        for step in range(span):
            port = low + (start - low + step) % span
            if (even and port & 1) or port in self._in_use:
                continue
            self._in_use.add(port)
            return port
        return None

    def release(self, port: int) -> None:
        self._in_use.discard(port)

    def __len__(self) -> int:
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        return self._high - self._low + 1
