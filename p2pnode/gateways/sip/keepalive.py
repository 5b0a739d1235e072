"""OPTIONS keep-alives to registered devices, and unregistering the silent ones.

Why: a phone behind NAT is reachable only while its NAT keeps the mapping
its REGISTER opened (often 30-60 s for UDP). The gateway sends an OPTIONS to
each binding's source every ``interval`` seconds (~25 s, under the shortest
common UDP mapping lifetime); any response, even 404 or 405, proves the path
works. ``max_missed`` pings in a row without a response (the client
transaction timed out) mean the device is gone: the caller removes the binding.

Sans-IO: ``due(now)`` says whom to ping, the caller runs the OPTIONS client
transactions (built by :func:`options_ping`) and reports ``answered`` or
``missed``. Bounded by ``max_targets``.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from p2pnode.gateways.sip.headers import Uri
from p2pnode.gateways.sip.message import Header, SipRequest
from p2pnode.gateways.sip.transaction import MAGIC_COOKIE, Address

__all__ = [
    "KEEPALIVE_INTERVAL",
    "MAX_MISSED",
    "MAX_TARGETS",
    "NatKeepalive",
    "PingTarget",
    "options_ping",
]

KEEPALIVE_INTERVAL = 25.0
MAX_MISSED = 2
MAX_TARGETS = 100_000


@dataclass(frozen=True, slots=True)
class PingTarget:
    username: str
    contact: Uri
    source: Address  # the binding's path: where its REGISTER came from
    reliable: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.username, str(self.contact))


@dataclass(slots=True)
class _Watch:
    target: PingTarget
    next_ping: float
    missed: int = 0


class NatKeepalive:
    """Which bindings to ping when, and which have gone silent."""

    def __init__(
        self,
        *,
        interval: float = KEEPALIVE_INTERVAL,
        max_missed: int = MAX_MISSED,
        max_targets: int = MAX_TARGETS,
    ) -> None:
        self.interval = interval
        self.max_missed = max_missed
        self.max_targets = max_targets
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._watches)

    def watch(self, target: PingTarget, now: float) -> bool:
        """Start (or refresh after a re-REGISTER) pinging ``target``; False when full."""
        existing = self._watches.get(target.key)
        if existing is None and len(self._watches) >= self.max_targets:
            return False
        watch = _Watch(target, now + self.interval)
        self._watches[target.key] = watch
        heapq.heappush(self._heap, (watch.next_ping, next(self._order), target.key))
        return True

    def unwatch(self, key: tuple[str, str]) -> None:
        self._watches.pop(key, None)

    def next_deadline(self) -> float | None:
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _current(self, entry: tuple[float, int, tuple[str, str]]) -> bool:
        watch = self._watches.get(entry[2])
        return watch is not None and watch.next_ping == entry[0]

    def due(self, now: float) -> list[PingTarget]:
        """Targets to ping now; each is rescheduled ``interval`` later."""
        targets: list[PingTarget] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if not self._current(entry):
                continue
            watch = self._watches[entry[2]]
            targets.append(watch.target)
            watch.next_ping = now + self.interval
            heapq.heappush(self._heap, (watch.next_ping, next(self._order), entry[2]))
        return targets

    def answered(self, key: tuple[str, str]) -> None:
        watch = self._watches.get(key)
        if watch is not None:
            watch.missed = 0

    def missed(self, key: tuple[str, str]) -> bool:
        """One ping went unanswered; True when the binding should be removed (and unwatched)."""
        watch = self._watches.get(key)
        if watch is None:
            return False
        watch.missed += 1
        if watch.missed < self.max_missed:
            return False
        del self._watches[key]
        return True


def options_ping(
    target: PingTarget,
    *,
    via: str,
    from_uri: str,
    branch_id: str,
    call_id: str,
    tag: str,
) -> SipRequest:
    """The OPTIONS that probes ``target`` (Request-URI: its Contact; sent to its source)."""
    headers = (
        Header("Via", f"{via};branch={MAGIC_COOKIE}{branch_id};rport"),
        Header("Max-Forwards", "70"),
        Header("From", f"<{from_uri}>;tag={tag}"),
        Header("To", f"<{target.contact}>"),
        Header("Call-ID", call_id),
        Header("CSeq", "1 OPTIONS"),
        Header("Content-Length", "0"),
    )
    return SipRequest.build("OPTIONS", target.contact, headers, b"")
