"""The receiver's replay window for sealed envelopes: each (sender, id) is accepted once.

An envelope carries a fresh random id and the sender's timestamp (both under
the sender's signature). The window accepts an envelope only when

- its timestamp is within ``window`` seconds behind our clock and at most
  ``skew`` seconds ahead of it (older ones could have been forgotten), and
- its (sender, id) has not been accepted before.

Bounded: at most ``capacity`` ids are remembered. When full, the oldest is
forgotten and the *floor* rises to its timestamp: from then on nothing older
than the floor is accepted, so forgetting never re-opens a replay. Under a
flood the window narrows (honest, timely envelopes still pass); it widens back
as the remembered ids age out.

Sans-IO: ``now`` is a parameter; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_SKEW", "DEFAULT_WINDOW", "ReplayVerdict", "ReplayWindow"]

DEFAULT_WINDOW = 120.0  # seconds an envelope stays acceptable after it was sealed
DEFAULT_SKEW = 30.0  # seconds a sender's clock may run ahead of ours
DEFAULT_CAPACITY = 65_536  # ids remembered (~100 bytes each)


class ReplayVerdict(enum.Enum):
    FRESH = "fresh"
    REPLAYED = "replayed"
    TOO_OLD = "too old"
    FUTURE = "from the future"


class ReplayWindow:
    """Remembers accepted (sender, id) pairs until they are too old to matter."""

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        skew: float = DEFAULT_SKEW,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if window <= 0 or skew < 0 or capacity < 1:
            raise ValueError("window > 0, skew >= 0 and capacity >= 1")
        self.window = window
        self.skew = skew
        self.capacity = capacity
        # (sender, id) -> timestamp, in insertion order (close to timestamp order)
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = float("-inf")

    def check(
        self, sender: bytes, envelope_id: bytes, timestamp: float, now: float
    ) -> ReplayVerdict:
        """Accept (and remember) or refuse one envelope."""
        self._expire(now)
        if timestamp > now + self.skew:
            return ReplayVerdict.FUTURE
        if timestamp < now - self.window or timestamp <= self._floor:
            return ReplayVerdict.TOO_OLD
        key = sender + envelope_id
        if key in self._seen:
            return ReplayVerdict.REPLAYED
        if len(self._seen) >= self.capacity:
            _, forgotten = self._seen.popitem(last=False)
            self._floor = max(self._floor, forgotten)
            if timestamp <= self._floor:
                return ReplayVerdict.TOO_OLD
        self._seen[key] = timestamp
        return ReplayVerdict.FRESH

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._seen:
            key, timestamp = next(iter(self._seen.items()))
            if timestamp >= horizon:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def floor(self) -> float:
        """Nothing at or below this timestamp is accepted (``-inf`` until the window filled)."""
        return self._floor
