"""The runtime supervises services: order, restart with backoff, disable, drain, events."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from p2pnode.app.node import (
    MAX_SUBSCRIBERS,
    SUBSCRIBER_QUEUE,
    Node,
    NodeStartError,
    RestartPolicy,
)
from p2pnode.app.service import (
    DrainingService,
    RunningService,
    Service,
    ServiceState,
    ServiceStateChanged,
    event_json,
)


def synchronous(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def until(node: Node, condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, re-checked after each event the node publishes."""
    with node.subscribe() as queue:
        while not condition():
            await queue.get()


def state_of(node: Node, name: str) -> ServiceState:
    return {s.name: s.state for s in node.status()}[name]


FAST = RestartPolicy(initial_backoff=0.01, max_backoff=0.02, max_failures=3, stable_after=60.0)


@dataclass(frozen=True)
class Counts:
    starts: int
    stops: int


class Plain:
    """A service without a life of its own; records the order of calls in ``log``."""

    def __init__(self, name: str, log: list[str], *, fail_start: int = 0) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.starts = 0
        self.stops = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_start:
            raise OSError("address in use")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.stops += 1
        self.log.append(f"stop {self.name}")

    def statistics(self) -> Counts:
        return Counts(self.starts, self.stops)


class Crashing(Plain):
    """Its run() raises ``crashes`` times, then runs until cancelled."""

    def __init__(self, name: str, log: list[str], crashes: int) -> None:
        super().__init__(name, log)
        self.crashes = crashes
        self.healthy = asyncio.Event()

    async def run(self) -> None:
        if self.starts <= self.crashes:
            raise RuntimeError(f"crash {self.starts}")
        self.healthy.set()
        await asyncio.Event().wait()


class Draining(Plain):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name, log)
        self.drained_with: float | None = None

    async def drain(self, limit: float) -> None:
        self.drained_with = limit
        self.log.append(f"drain {self.name}")


def test_services_conform_structurally() -> None:
    log: list[str] = []
    assert isinstance(Plain("a", log), Service)
    assert not isinstance(Plain("a", log), RunningService)
    assert isinstance(Crashing("b", log, 0), RunningService)
    assert isinstance(Draining("c", log), DrainingService)


async def _run_until(node: Node, condition: asyncio.Event | None = None) -> asyncio.Event:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(node.run(stop))
        if condition is not None:
            async with asyncio.timeout(10):
                await condition.wait()
        else:
            await asyncio.sleep(0.05)
        stop.set()
    return stop


@synchronous
async def test_start_in_order_stop_in_reverse_drain_first() -> None:
    log: list[str] = []
    node = Node([Plain("dht", log), Draining("relay", log), Plain("enum", log)], drain_limit=7.0)
    await _run_until(node)
    assert log == [
        "start dht",
        "start relay",
        "start enum",
        "drain relay",
        "stop enum",
        "stop relay",
        "stop dht",
    ]
    relay = node.service("relay")
    assert isinstance(relay, Draining) and relay.drained_with == 7.0
    assert {s.state for s in node.status()} == {ServiceState.STOPPED}


@synchronous
async def test_a_crashing_service_is_restarted_and_reported_the_others_keep_running() -> None:
    log: list[str] = []
    crashing = Crashing("flaky", log, crashes=2)
    node = Node([Plain("dht", log), crashing], policy=FAST)
    events: list[object] = []
    stop = asyncio.Event()

    async def collect() -> None:
        with node.subscribe() as queue:
            while True:
                events.append(await queue.get())

    async with asyncio.TaskGroup() as tasks:
        collector = tasks.create_task(collect())
        await asyncio.sleep(0)
        tasks.create_task(node.run(stop))
        async with asyncio.timeout(10):
            await crashing.healthy.wait()
        flaky = dict((s.name, s) for s in node.status())["flaky"]
        dht = dict((s.name, s) for s in node.status())["dht"]
        assert flaky.state is ServiceState.RUNNING
        assert flaky.restarts == 2 and flaky.failures == 2
        assert dht.state is ServiceState.RUNNING and dht.restarts == 0
        stop.set()
        await asyncio.sleep(0.05)
        collector.cancel()
    changes = [e for e in events if isinstance(e, ServiceStateChanged) and e.service == "flaky"]
    states = [e.state for e in changes]
    assert states.count(ServiceState.FAILED) == 2
    assert states.count(ServiceState.RESTARTING) == 2
    assert "crash 1" in changes[states.index(ServiceState.FAILED)].reason
    assert crashing.stops == 3  # every failed run released, and the last at the end


@synchronous
async def test_a_service_failing_too_often_is_disabled_and_the_node_stays_up() -> None:
    log: list[str] = []
    hopeless = Crashing("hopeless", log, crashes=10**6)
    node = Node([Plain("dht", log), hopeless], policy=FAST)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(node.run(stop))
        async with asyncio.timeout(10):
            await until(node, lambda: state_of(node, "hopeless") is ServiceState.DISABLED)
        assert state_of(node, "dht") is ServiceState.RUNNING
        stop.set()
    assert hopeless.starts == FAST.max_failures


@synchronous
async def test_a_required_service_failing_its_first_start_stops_the_node() -> None:
    log: list[str] = []
    node = Node([Plain("stun", log), Plain("dht", log, fail_start=1)], required=["dht"])
    with pytest.raises(NodeStartError, match="dht: start failed: address in use"):
        await node.run(asyncio.Event())
    assert log == ["start stun", "stop stun"]


@synchronous
async def test_an_optional_service_failing_its_start_is_retried() -> None:
    log: list[str] = []
    late = Plain("enum", log, fail_start=1)
    node = Node([Plain("dht", log), late], policy=FAST)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(node.run(stop))
        async with asyncio.timeout(10):
            await until(node, lambda: "start enum" in log)
        stop.set()
    assert late.starts == 2


def test_backoff_doubles_up_to_the_limit() -> None:
    policy = RestartPolicy(initial_backoff=1.0, max_backoff=5.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Sample:
    colour: Colour
    key: bytes
    pairs: tuple[tuple[str, int], ...]


def test_events_serialize_with_their_type() -> None:
    data = event_json(Sample(Colour.RED, b"\x01\xff", (("a", 1),)))
    assert data == {"type": "Sample", "colour": "red", "key": "01ff", "pairs": [["a", 1]]}
    json.dumps(data)
    changed = event_json(ServiceStateChanged("dht", ServiceState.FAILED, "boom", 1))
    assert changed["type"] == "ServiceStateChanged" and changed["state"] == "failed"


@synchronous
async def test_event_subscribers_are_bounded_and_a_slow_one_loses_the_oldest() -> None:
    node = Node()
    with contextlib.ExitStack() as stack:
        queues = [stack.enter_context(node.subscribe()) for _ in range(MAX_SUBSCRIBERS)]
        assert not node.can_subscribe()
        with pytest.raises(RuntimeError), node.subscribe():
            pass
        for n in range(SUBSCRIBER_QUEUE + 5):
            node.emit(n)
        assert queues[0].qsize() == SUBSCRIBER_QUEUE
        assert queues[0].get_nowait() == 5  # the five oldest were dropped
        assert node.statistics().events_dropped == 5 * MAX_SUBSCRIBERS
    assert node.can_subscribe()
