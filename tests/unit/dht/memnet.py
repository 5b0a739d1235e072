"""Sans-IO DHT cores wired in memory, in virtual time: a datagram takes ``latency`` s.

Each node gets its own IP in its own /24 unless a test asks otherwise: rate limits
are per IP, and routing tables and lookups limit contacts per address and per network.

Its 10.x addresses stand for public ones, but its keys are instant
(``Identity.generate``): every core runs at ``id_difficulty`` (default 0, the
id puzzle off) whatever its config says; puzzle tests pass a difficulty and
ground identities.

Bounded: ``run_until`` stops after a step count and a virtual-time limit.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable, Iterable

from p2pnode.dht.config import DhtConfig, OperationResult
from p2pnode.dht.keys import Address
from p2pnode.dht.protocol import DhtCore
from p2pnode.identity import Identity

__all__ = ["MemNet"]


class MemNet:
    def __init__(
        self,
        *,
        latency: float = 0.001,
        seed: int = 1,
        loss: float = 0.0,
        jitter: float = 0.0,
        id_difficulty: int = 0,
    ) -> None:
        """``loss``: fraction of datagrams dropped; ``jitter``: up to this much extra
        latency each, drawn per datagram (reorders them). Both seeded."""
        self.now = 1_700_000_000.0
        self.latency = latency
        self.loss = loss
        self.jitter = jitter
        self.delivered = 0  # datagrams handed to a live core
        self.id_difficulty = id_difficulty
        self.rng = random.Random(seed)
        self._link = random.Random(seed + 1)
        self.cores: dict[Address, DhtCore] = {}
        self.down: set[Address] = set()
        self.queue: list[tuple[float, int, bytes, Address, Address]] = []
        self.results: dict[tuple[Address, int], OperationResult] = {}
        self.tap: Callable[[bytes, Address, Address], None] | None = None
        self._seq = 0
        self._deadlines: dict[Address, float] = {}
        self._timers: list[tuple[float, Address]] = []

    def add(
        self,
        *,
        config: DhtConfig | None = None,
        bootstrap: list[Address] | None = None,
        identity: Identity | None = None,
        host: str | None = None,
    ) -> tuple[Address, DhtCore]:
        """A core at its own IP (10.x.y.1, its own /24), or at ``host`` (may be shared)."""
        n = len(self.cores)
        address = (host or f"10.{n // 256 % 256}.{n % 256}.1", 1000 + n)
        core = DhtCore(
            identity or Identity.generate(self.rng.randbytes(32)),
            config=dataclasses.replace(config or DhtConfig(), id_difficulty=self.id_difficulty),
            rng=random.Random(self.rng.random()),
            now=self.now,
            bootstrap=bootstrap or [],
        )
        self.cores[address] = core
        return address, core

    def inject(self, data: bytes, source: Address, destination: Address) -> None:
        if self.loss and self._link.random() < self.loss:
            return
        self._seq += 1
        delay = self.latency + (self._link.random() * self.jitter if self.jitter else 0.0)
        heapq.heappush(self.queue, (self.now + delay, self._seq, data, source, destination))

    def _flush(self, address: Address, core: DhtCore) -> None:
        for data, destination in core.datagrams_to_send():
            if self.tap is not None:
                self.tap(data, address, destination)
            self.inject(data, address, destination)
        for event in core.events():
            self.results[(address, event.op_id)] = event.result

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        limit: float = 30.0,
        max_steps: int = 2_000_000,
        touched: Iterable[Address] | None = None,
    ) -> None:
        """Deliver datagrams and fire timers until ``done()`` or ``limit`` virtual seconds.

        Cores the caller fed directly (``core.get(...)`` and the like) must be flushed
        first: all of them (``touched`` None, O(N)), or only those named in ``touched``.
        """
        end = self.now + limit
        # Each core's next deadline, in a heap with lazy deletion (kept between calls):
        # only a core that was just fed (datagram or timer) can have moved its deadline,
        # so a step costs O(log N), not a scan of every core.
        deadlines = self._deadlines
        timers = self._timers

        def rearm(address: Address, core: DhtCore) -> None:
            deadline = core.next_deadline()
            if deadlines.get(address) != deadline:
                deadlines[address] = deadline
                heapq.heappush(timers, (deadline, address))

        fed = self.cores.keys() if touched is None else touched
        for address in fed:
            core = self.cores[address]
            self._flush(address, core)
            if address not in self.down:
                rearm(address, core)
        for _ in range(max_steps):
            if done():
                return
            while timers and deadlines.get(timers[0][1]) != timers[0][0]:
                heapq.heappop(timers)  # superseded by a later rearm
            deadline = timers[0][0] if timers else end
            if self.queue and self.queue[0][0] <= deadline:
                when, _, data, source, destination = heapq.heappop(self.queue)
                self.now = max(self.now, when)
                receiver = self.cores.get(destination)
                if receiver is not None and destination not in self.down:
                    self.delivered += 1
                    receiver.datagram_received(data, source, self.now)
                    self._flush(destination, receiver)
                    rearm(destination, receiver)
                continue
            if deadline > end:
                self.now = end
                return
            self.now = max(self.now, deadline)
            while timers and timers[0][0] <= self.now:
                when, address = heapq.heappop(timers)
                if deadlines.get(address) != when:
                    continue
                del deadlines[address]
                if address in self.down:
                    continue
                core = self.cores[address]
                core.handle_timer(self.now)
                self._flush(address, core)
                rearm(address, core)
        raise AssertionError("run_until: step limit reached")

    def wait(self, address: Address, op_id: int, *, limit: float = 30.0) -> OperationResult:
        """Run until the operation ``op_id`` just started at ``address`` finishes."""
        self.run_until(lambda: (address, op_id) in self.results, limit=limit, touched=(address,))
        assert (address, op_id) in self.results, "operation did not finish in virtual time"
        return self.results.pop((address, op_id))
