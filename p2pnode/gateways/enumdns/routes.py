"""Routes for numbers, kept fresh from the DHT in the background for the DNS hot path.

The DNS core asks ``route_nowait``: it never waits. A missing number is queued
for a bounded pool of workers that ask the directory; the server may wait a
bounded time for it (``wait``). A known route is refreshed in the background
once it is ``REFRESH_FRACTION`` of its TTL old, while it is still served.
Invariants:
- A route is never served older than ``positive_ttl`` (an absence: older than
  ``negative_ttl``), counted from when the lookup that found it STARTED. Past
  that it is PENDING (the server waits for the refresh, then SERVFAIL), never a
  stale route: a verifier's revocation, or an owner's change, reaches callers
  within the TTL (issue 10, finding 5; it used to be served stale past it).
  ``DEFAULT_ROUTE_TTL`` plus the core's 2 s encoded-answer cache equals the
  default 60 s NAPTR TTL the gateway hands out.
- At most ``max_entries`` numbers are held and at most ``queue_size`` waiting
  for a lookup; beyond that new numbers get ``PENDING`` and, after the bounded
  wait, SERVFAIL (the PBX retries or falls back to the PSTN).
- At most ``concurrency`` DHT lookups run at once, each bounded by ``timeout``.
- A failed lookup never turns into "no such number": it is ``FAILED``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pnode.directory.trust import Route

__all__ = ["DEFAULT_ROUTE_TTL", "REFRESH_FRACTION", "RouteCache", "RouteLookup", "RouteStatus"]

DEFAULT_ROUTE_TTL = 58.0  # + the core's 2 s answer cache = GatewayConfig.answer_ttl (60 s)
REFRESH_FRACTION = 0.75  # a queried route is looked up again once this old (of its TTL)

_log = logging.getLogger(__name__)


class RouteStatus(enum.Enum):
    ABSENT = "absent"  # looked up: no trusted record and no toll-free rule
    PENDING = "pending"  # not known yet; a lookup is queued or running
    FAILED = "failed"  # the last lookup failed and nothing older is known


RouteLookup = Callable[[str], Awaitable[Route | None]]


@dataclass(slots=True)
class _Entry:
    value: Route | RouteStatus
    fetched_at: float  # when the lookup that produced it started
    failed: bool = False
    retry_at: float = 0.0  # after a failed refresh: no new lookup before this


class RouteCache:
    """Numbers -> routes, fetched through ``lookup`` (e.g. ``Directory.route``)."""

    def __init__(
        self,
        lookup: RouteLookup,
        clock: Callable[[], float],
        *,
        positive_ttl: float = DEFAULT_ROUTE_TTL,
        negative_ttl: float = 15.0,
        failure_retry: float = 5.0,
        max_entries: int = 100_000,
        queue_size: int = 1024,
        concurrency: int = 8,
        timeout: float = 3.0,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._positive_ttl = positive_ttl
        self._negative_ttl = negative_ttl
        self._failure_retry = failure_retry
        self._max_entries = max_entries
        self._concurrency = concurrency
        self._timeout = timeout
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._queued: set[str] = set()
        self._done: dict[str, asyncio.Event] = {}
        self.lookups = 0
        self.failures = 0

    @property
    def positive_ttl(self) -> float:
        """The most a route is ever served, counted from the start of its lookup."""
        return self._positive_ttl

    def route_nowait(self, number: str, now: float) -> Route | RouteStatus:
        """What we know about ``number`` now; schedules a refresh when missing or ageing."""
        entry = self._entries.get(number)
        if entry is None:
            self._schedule(number)
            return RouteStatus.PENDING
        age = now - entry.fetched_at
        if entry.failed:
            if age >= self._failure_retry:
                self._schedule(number)
            return entry.value
        ttl = self._ttl(entry)
        if age >= ttl * REFRESH_FRACTION and now >= entry.retry_at:
            self._schedule(number)
        if age >= ttl:
            return RouteStatus.PENDING  # never past its TTL: revocations take effect within it
        return entry.value

    def _ttl(self, entry: _Entry) -> float:
        return self._negative_ttl if entry.value is RouteStatus.ABSENT else self._positive_ttl

    def _schedule(self, number: str) -> None:
        if number in self._queued:
            return
        try:
            self._queue.put_nowait(number)
        except asyncio.QueueFull:
            return  # bounded: the caller sees PENDING and answers SERVFAIL after its wait
        self._queued.add(number)

    async def wait(self, number: str) -> None:
        """Until ``number``'s pending lookup ends (callers bound it with ``asyncio.timeout``)."""
        if number not in self._queued:
            return
        await self._done.setdefault(number, asyncio.Event()).wait()

    async def run(self) -> None:
        """The bounded worker pool; runs until cancelled (owned by the server's TaskGroup)."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._concurrency):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            number = await self._queue.get()
            try:
                await self._refresh(number)
            finally:
                self._queued.discard(number)
                event = self._done.pop(number, None)
                if event is not None:
                    event.set()

    async def _refresh(self, number: str) -> None:
        self.lookups += 1
        started = self._clock()  # the answer is at most as fresh as the lookup's start
        try:
            async with asyncio.timeout(self._timeout):
                route = await self._lookup(number)
        except (TimeoutError, OSError, ValueError) as error:
            self.failures += 1
            _log.debug("route lookup for %s failed: %s", number, type(error).__name__)
            now = self._clock()
            old = self._entries.get(number)
            if old is not None and not old.failed and now - old.fetched_at < self._ttl(old):
                old.retry_at = now + self._failure_retry  # still within its TTL: retry later
                return
            self._store(number, _Entry(RouteStatus.FAILED, now, failed=True))
            return
        value: Route | RouteStatus = RouteStatus.ABSENT if route is None else route
        self._store(number, _Entry(value, started))

    def _store(self, number: str, entry: _Entry) -> None:
        self._entries[number] = entry
        self._entries.move_to_end(number)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
