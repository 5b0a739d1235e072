"""``Node``: the runtime that hosts a node's services, supervises them and publishes events.

One ``Node`` owns every service (``p2pnode.app.service`` states the contract)
under one ``asyncio.TaskGroup``: one supervisor task per service. A service
that raises is reported (its status, a log line, a ``ServiceStateChanged``
event, the metrics) and restarted after an exponential backoff; after
``max_failures`` failures in a row it is disabled. It never takes the node
down: only a *required* service failing its first start does (``p2pnode run``
then exits with "cannot listen ..."), because a node without its DHT socket is
not a node.

Life: ``run(stop)`` starts the services in order (the DHT first: later ones
use it), supervises them until ``stop`` is set, then drains the services that
can (``drain(limit)``: a relay lets its allocations finish, up to the
configured limit) and stops all of them in reverse order.

Events: ``emit(event)`` fans a frozen dataclass out to every subscriber
(bounded queues: a slow WebSocket client loses the oldest events, counted,
never blocks the node).

The old hand-wired ``P2PNode`` lives in ``p2pnode.app.peer``; it is re-exported
here for the tests that import it from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from p2pnode.app.peer import DHT_STATE_FILE, P2PNode, RoleOptions
from p2pnode.app.service import (
    DrainingService,
    NodeStopping,
    RunningService,
    Service,
    ServiceState,
    ServiceStateChanged,
    ServiceStatus,
)

__all__ = [
    "DHT_STATE_FILE",
    "MAX_SUBSCRIBERS",
    "SUBSCRIBER_QUEUE",
    "Node",
    "NodeStartError",
    "NodeStatistics",
    "P2PNode",
    "RestartPolicy",
    "RoleOptions",
]

logger = logging.getLogger(__name__)

MAX_SUBSCRIBERS = 64  # event streams at once (WebSocket clients)
SUBSCRIBER_QUEUE = 256  # events held per subscriber before the oldest are dropped


class NodeStartError(RuntimeError):
    """A required service could not start (e.g. the DHT socket cannot be bound)."""

    def __init__(self, service: str, error: BaseException) -> None:
        super().__init__(f"{service}: {error}")
        self.service = service
        self.error = error


@dataclass(frozen=True)
class RestartPolicy:
    """How a failed service comes back: backoff doubling from ``initial_backoff`` up to
    ``max_backoff``; disabled after ``max_failures`` in a row; a run longer than
    ``stable_after`` forgets earlier failures."""

    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    max_failures: int = 5
    stable_after: float = 60.0

    def backoff(self, failures: int) -> float:
        return float(min(self.max_backoff, self.initial_backoff * 2 ** max(failures - 1, 0)))


@dataclass(frozen=True)
class NodeStatistics:
    uptime: float
    services: tuple[ServiceStatus, ...]
    events_published: int
    events_dropped: int  # events a slow subscriber lost


class _Slot:
    """The runtime's book-keeping for one service (mutable, private)."""

    def __init__(self, service: Service, required: bool, now: float) -> None:
        self.service = service
        self.required = required
        self.state = ServiceState.STOPPED
        self.reason = "not started"
        self.since = now
        self.failures = 0
        self.restarts = 0
        self.started = False  # start() returned and stop() is still owed

    def status(self) -> ServiceStatus:
        return ServiceStatus(
            self.service.name, self.state, self.reason, self.since, self.failures, self.restarts
        )


class Node:
    """Hosts ``services`` (started in this order, stopped in reverse)."""

    def __init__(
        self,
        services: Sequence[Service] = (),
        *,
        required: Sequence[str] = (),
        policy: RestartPolicy | None = None,
        drain_limit: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique: {names}")
        self.policy = policy or RestartPolicy()
        self.drain_limit = drain_limit
        self._clock = clock
        self._started_at = 0.0
        self._slots = {s.name: _Slot(s, s.name in required, 0.0) for s in services}
        self._subscribers: list[asyncio.Queue[object]] = []
        self._published = 0
        self._dropped = 0
        self._stop: asyncio.Event | None = None
        self.running = False
        self.ready = asyncio.Event()  # set once every service had its first start

    def add(self, service: Service, *, required: bool = False) -> None:
        """Host one more service (before ``run``), started after those added before."""
        if self.running:
            raise RuntimeError("services are added before the node runs")
        if service.name in self._slots:
            raise ValueError(f"a service named {service.name!r} exists already")
        self._slots[service.name] = _Slot(service, required, 0.0)

    # ------------------------------------------------------------------ queries

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def service(self, name: str) -> Service:
        return self._slots[name].service

    def services(self) -> tuple[Service, ...]:
        return tuple(slot.service for slot in self._slots.values())

    def status(self) -> tuple[ServiceStatus, ...]:
        return tuple(slot.status() for slot in self._slots.values())

    def statistics(self) -> NodeStatistics:
        uptime = self.now() - self._started_at if self.running else 0.0
        return NodeStatistics(uptime, self.status(), self._published, self._dropped)

    # ------------------------------------------------------------------- events

    def emit(self, event: object) -> None:
        """Publish ``event`` to every subscriber; never blocks, never raises."""
        self._published += 1
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self._dropped += 1
            queue.put_nowait(event)

    def can_subscribe(self) -> bool:
        return len(self._subscribers) < MAX_SUBSCRIBERS

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[object]]:
        """A queue receiving every event published while the block runs."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise RuntimeError(f"at most {MAX_SUBSCRIBERS} event subscribers")
        queue: asyncio.Queue[object] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.append(queue)
        try:
            yield queue
        finally:
            self._subscribers.remove(queue)

    def request_stop(self, reason: str) -> None:
        """Ask ``run`` to drain and stop (signal handlers, the control API)."""
        if self._stop is not None and not self._stop.is_set():
            self.emit(NodeStopping(reason))
            self._stop.set()

    # --------------------------------------------------------------------- life

    def _set(self, slot: _Slot, state: ServiceState, reason: str) -> None:
        slot.state = state
        slot.reason = reason
        slot.since = self.now()
        level = (
            logging.WARNING
            if state in (ServiceState.FAILED, ServiceState.DISABLED)
            else (logging.INFO)
        )
        logger.log(level, "service=%s state=%s reason=%s", slot.service.name, state.value, reason)
        self.emit(ServiceStateChanged(slot.service.name, state, reason, slot.failures))

    async def _start(self, slot: _Slot) -> bool:
        self._set(slot, ServiceState.STARTING, "starting")
        try:
            await slot.service.start()
        except Exception as error:
            await self._fail(slot, f"start failed: {error}")
            return False
        slot.started = True
        self._set(
            slot,
            ServiceState.RUNNING,
            "started" if not slot.restarts else f"started again (restart {slot.restarts})",
        )
        return True

    async def _release(self, slot: _Slot) -> None:
        if not slot.started:
            return
        slot.started = False
        try:
            await slot.service.stop()
        except Exception as error:  # stopping must never stop the others from stopping
            logger.warning("service=%s stop failed: %s", slot.service.name, error)

    async def _fail(self, slot: _Slot, reason: str) -> None:
        slot.failures += 1
        await self._release(slot)
        self._set(slot, ServiceState.FAILED, reason)
        if slot.failures >= self.policy.max_failures:
            self._set(slot, ServiceState.DISABLED, f"{slot.failures} failures in a row: {reason}")

    async def run(self, stop: asyncio.Event) -> None:
        """Start, supervise until ``stop`` is set, drain, stop. Raises ``NodeStartError``
        (after stopping what had started) when a required service cannot start."""
        self._stop = stop
        self._started_at = self.now()
        self.running = True
        try:
            for slot in self._slots.values():
                if not await self._start(slot) and slot.required:
                    raise NodeStartError(slot.service.name, RuntimeError(slot.reason))
            self.ready.set()
            async with asyncio.TaskGroup() as tasks:
                supervisors = [
                    tasks.create_task(self._supervise(slot, stop), name=f"service:{name}")
                    for name, slot in self._slots.items()
                ]
                await stop.wait()
                await self._drain()
                for task in supervisors:
                    task.cancel()
        finally:
            for slot in reversed(self._slots.values()):
                if slot.started:
                    await self._release(slot)
                    self._set(slot, ServiceState.STOPPED, "node stopped")
            self.running = False

    async def _drain(self) -> None:
        draining = [
            slot
            for slot in self._slots.values()
            if slot.started and isinstance(slot.service, DrainingService)
        ]
        if not draining:
            return
        for slot in draining:
            self._set(slot, ServiceState.DRAINING, f"draining (up to {self.drain_limit:g} s)")

        async def one(slot: _Slot) -> None:
            service = slot.service
            assert isinstance(service, DrainingService)
            try:
                async with asyncio.timeout(self.drain_limit + 1.0):
                    await service.drain(self.drain_limit)
            except Exception as error:  # TimeoutError included: stop it anyway
                logger.warning("service=%s drain ended: %s", service.name, error or "timeout")

        async with asyncio.TaskGroup() as tasks:
            for slot in draining:
                tasks.create_task(one(slot))

    async def _wait(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep ``seconds`` unless ``stop`` is set first; True if stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
        return stop.is_set()

    async def _supervise(self, slot: _Slot, stop: asyncio.Event) -> None:
        """One service's life: run it, and when it ends or fails, restart it with backoff."""
        service = slot.service
        while not stop.is_set() and slot.state is not ServiceState.DISABLED:
            if not slot.started:
                delay = self.policy.backoff(slot.failures)
                if await self._wait(stop, delay):
                    return
                slot.restarts += 1
                self._set(slot, ServiceState.RESTARTING, f"restart {slot.restarts}")
                if not await self._start(slot):
                    continue
            began = self.now()
            try:
                if isinstance(service, RunningService):
                    await service.run()
                    reason = "its run() returned"
                else:
                    await stop.wait()
                    return
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
            if stop.is_set():
                return
            if self.now() - began >= self.policy.stable_after:
                slot.failures = 0
            await self._fail(slot, reason)
