"""One media clock per event loop: every phone leg and track of every bridged call on one timer.

Why: a bridged call has two 20 ms streams; with a timer (or a ``wait_for``
task) per stream and call, the loop wakes 100 times per second per call at
random phases. The clock wakes every :data:`TICK` while anything is
registered, polls every registered leg (pacing to the phone, DTMF timeouts,
direct RTP to the peer) and releases every track whose frame is due.

Invariant: one leg raising never stops the clock for the others (it is
dropped and counted in ``failed``); the timer stops when nothing is
registered and nobody waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import weakref
from typing import Protocol

__all__ = ["TICK", "MediaClock", "Ticking"]

_LOG = logging.getLogger(__name__)
TICK = 0.01  # seconds between the media clock's ticks (a 20 ms frame is never > 5 ms late)


class Ticking(Protocol):
    """Something the clock polls every tick."""

    def tick(self, now: float) -> None: ...


class MediaClock:
    """One timer for every phone leg and track of an event loop.

    Why: a call has two 20 ms streams; with a timer (or ``wait_for`` task) per
    stream and call, the loop wakes 100 times per second per call at random
    phases. The clock wakes every :data:`TICK` while anything is registered,
    polls every leg (pacing, DTMF) and releases every track whose frame is due.
    """

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self._tick = tick
        self._legs: dict[Ticking, None] = {}  # insertion-ordered set
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.ticks = 0
        self.failed = 0  # legs dropped because their tick raised

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> MediaClock:
        """The clock shared by everything on ``loop``."""
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def time(self) -> float:
        return self._loop.time()

    def add(self, leg: Ticking) -> None:
        self._legs[leg] = None
        self._arm()

    def discard(self, leg: Ticking) -> None:
        self._legs.pop(leg, None)

    def wait_until(self, when: float) -> asyncio.Future[None]:
        """A future done at the first tick at or after ``when`` (minus half a tick)."""
        future: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (when, next(self._order), future))
        self._arm()
        return future

    def _arm(self) -> None:
        if self._handle is None and (self._legs or self._waiters):
            self._next = max(self._next + self._tick, self._loop.time())
            self._handle = self._loop.call_at(self._next, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.ticks += 1
        now = self._loop.time()
        try:
            for leg in list(self._legs):
                try:
                    leg.tick(now)
                except Exception as error:  # one broken leg never stops every call's clock
                    self._legs.pop(leg, None)
                    self.failed += 1
                    _LOG.warning("media clock: a phone leg failed: %s", type(error).__name__)
            due = now + self._tick / 2
            waiters = self._waiters
            while waiters and waiters[0][0] <= due:
                future = heapq.heappop(waiters)[2]
                if not future.done():  # a cancelled recv() leaves its future behind
                    future.set_result(None)
        finally:
            self._arm()
