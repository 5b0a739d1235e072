"""Presence watches held by a home: who wants to hear when a target attaches, changes or is lost.

A watch is a lease (``WATCH_LEASE`` seconds) that the watcher renews; the
renewal also keeps the watcher's NAT mapping towards this home open, so the
home's notifications get through. A watch names the watcher's key (proved by
its signature on the WATCH request) and the address notifications go to.

Bounded: at most ``max_per_target`` watchers per target, ``max_per_watcher``
targets per watcher key at this home and ``max_total`` watches in all; beyond
that ``add`` refuses (the home answers ``WATCH_LIMIT``). A renewal of an
existing watch is never refused for lack of room.

Refused watches are remembered too, in a second, smaller table
(``refused_table``: ``MAX_REFUSED_PER_TARGET`` watchers per target): a watcher
the target's allow-list refused keeps its lease (and its token) there, so when
the target allows it (a contact request accepted) the home moves it into the
watches (``admit``) and tells it the target's state at once, instead of the
watcher learning it only at its next renewal (up to 20 s later).

Sans-IO: ``now`` is a parameter; expiry is swept by the caller's timer.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "MAX_PER_TARGET",
    "MAX_PER_WATCHER",
    "MAX_REFUSED_PER_TARGET",
    "MAX_REFUSED_TOTAL",
    "MAX_TOTAL",
    "WATCH_LEASE",
    "WatchOutcome",
    "WatchTable",
    "Watcher",
    "refused_table",
]

WATCH_LEASE = 60.0  # seconds a watch lives without renewal
MAX_PER_TARGET = 256
MAX_PER_WATCHER = 512
MAX_TOTAL = 200_000
MAX_REFUSED_PER_TARGET = 32  # refused watchers remembered per target (admitted on allow)
MAX_REFUSED_TOTAL = 20_000  # refused watchers remembered in all (beyond: not remembered)

Address = tuple[str, int]


class WatchOutcome(enum.Enum):
    ADDED = "added"
    RENEWED = "renewed"
    TARGET_FULL = "too many watchers on this target"
    WATCHER_FULL = "too many targets for this watcher"
    TABLE_FULL = "this home holds its maximum of watches"


@dataclass(frozen=True, slots=True)
class Watcher:
    key: bytes
    address: Address
    expires_at: float
    token: bytes  # repeated in every notification of this watch


class WatchTable:
    """target key -> watcher key -> lease, with per-target, per-watcher and total bounds."""

    def __init__(
        self,
        *,
        lease: float = WATCH_LEASE,
        max_per_target: int = MAX_PER_TARGET,
        max_per_watcher: int = MAX_PER_WATCHER,
        max_total: int = MAX_TOTAL,
    ) -> None:
        self.lease = lease
        self.max_per_target = max_per_target
        self.max_per_watcher = max_per_watcher
        self.max_total = max_total
        self._by_target: dict[bytes, dict[bytes, Watcher]] = {}
        self._per_watcher: dict[bytes, int] = {}
        # (target, watcher) in renewal order, for sweeping expired leases in O(expired)
        self._order: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()

    def add(
        self, target: bytes, watcher: bytes, address: Address, now: float, token: bytes = b""
    ) -> WatchOutcome:
        """Add ``watcher``'s lease on ``target`` with ``token``, or renew it (the address
        follows the renewal; the token stays the one first given)."""
        watchers = self._by_target.get(target)
        entry = Watcher(watcher, address, now + self.lease, token)
        if watchers is not None and watcher in watchers:
            entry = Watcher(watcher, address, now + self.lease, watchers[watcher].token)
            watchers[watcher] = entry
            self._order[(target, watcher)] = entry.expires_at
            self._order.move_to_end((target, watcher))
            return WatchOutcome.RENEWED
        if len(self._order) >= self.max_total:
            return WatchOutcome.TABLE_FULL
        if watchers is not None and len(watchers) >= self.max_per_target:
            return WatchOutcome.TARGET_FULL
        if self._per_watcher.get(watcher, 0) >= self.max_per_watcher:
            return WatchOutcome.WATCHER_FULL
        self._by_target.setdefault(target, {})[watcher] = entry
        self._per_watcher[watcher] = self._per_watcher.get(watcher, 0) + 1
        self._order[(target, watcher)] = entry.expires_at
        return WatchOutcome.ADDED

    def get(self, target: bytes, watcher: bytes) -> Watcher | None:
        return self._by_target.get(target, {}).get(watcher)

    def remove(self, target: bytes, watcher: bytes) -> bool:
        watchers = self._by_target.get(target)
        if watchers is None or watcher not in watchers:
            return False
        del watchers[watcher]
        if not watchers:
            del self._by_target[target]
        remaining = self._per_watcher[watcher] - 1
        if remaining:
            self._per_watcher[watcher] = remaining
        else:
            del self._per_watcher[watcher]
        self._order.pop((target, watcher), None)
        return True

    def keep_only(self, target: bytes, allowed: frozenset[bytes]) -> int:
        """Drop the watchers of ``target`` not in ``allowed`` (its allow-list); how many."""
        watchers = self._by_target.get(target)
        if watchers is None:
            return 0
        refused = [key for key in watchers if key not in allowed]
        for key in refused:
            self.remove(target, key)
        return len(refused)

    def watchers(self, target: bytes, now: float) -> tuple[Watcher, ...]:
        """The live watchers of ``target``."""
        watchers = self._by_target.get(target)
        if watchers is None:
            return ()
        return tuple(w for w in watchers.values() if w.expires_at > now)

    def expire(self, now: float) -> int:
        """Forget leases that ran out; how many."""
        expired = 0
        while self._order:
            (target, watcher), expires_at = next(iter(self._order.items()))
            if expires_at > now:
                break
            self.remove(target, watcher)
            expired += 1
        return expired

    def next_expiry(self) -> float | None:
        if not self._order:
            return None
        return next(iter(self._order.values()))

    def count_for_watcher(self, watcher: bytes) -> int:
        return self._per_watcher.get(watcher, 0)

    def __len__(self) -> int:
        return len(self._order)

    def admit(
        self, refused: WatchTable, target: bytes, allowed: frozenset[bytes] | None, now: float
    ) -> tuple[Watcher, ...]:
        """Move ``target``'s live watchers in ``refused`` that ``allowed`` now lets in
        (None: anyone) into this table, each with its token and a fresh lease; the ones
        added (to be told the target's state now). One that finds no room here stays out."""
        admitted: list[Watcher] = []
        for watcher in refused.watchers(target, now):
            if allowed is not None and watcher.key not in allowed:
                continue
            refused.remove(target, watcher.key)
            outcome = self.add(target, watcher.key, watcher.address, now, watcher.token)
            entry = self.get(target, watcher.key)
            if outcome is WatchOutcome.ADDED and entry is not None:
                admitted.append(entry)
        return tuple(admitted)


def refused_table() -> WatchTable:
    """The table of refused watches a home keeps (see the module docstring)."""
    return WatchTable(
        max_per_target=MAX_REFUSED_PER_TARGET,
        max_per_watcher=MAX_PER_WATCHER,
        max_total=MAX_REFUSED_TOTAL,
    )
