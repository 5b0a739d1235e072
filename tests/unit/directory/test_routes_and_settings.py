"""The gateway's route cache (bounded, never blocking), the rate limiter, the settings file."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from nat.ratelimit import TokenBuckets
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.settings import SettingsError, parse_settings
from p2pnode.directory.trust import Route
from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig
from p2pnode.gateways.enumdns.routes import RouteCache, RouteStatus
from p2pnode.identity import Identity

NUMBER = "+18009359935"
ROUTE = Route(NUMBER, (sip_directive("sip:a@b.example"),), "verified")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookups:
    """A scripted directory: answers, absences, failures; counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answer: Route | Exception | None = ROUTE
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, number: str) -> Route | None:
        self.calls.append(number)
        await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_missing_then_known_then_refreshed_before_its_ttl() -> None:
    async def scenario() -> None:
        clock, lookups = Clock(), Lookups()
        cache = RouteCache(lookups, clock, positive_ttl=60)
        worker = asyncio.create_task(cache.run())
        try:
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.PENDING
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.PENDING
            async with asyncio.timeout(2):
                await cache.wait(NUMBER)
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            assert lookups.calls == [NUMBER]  # the two misses were one lookup
            clock.now += 30
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            await settle()
            assert lookups.calls == [NUMBER]  # young: no refresh
            clock.now += 16  # 46 s: past REFRESH_FRACTION of the TTL
            lookups.answer = None
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE  # served while refreshing
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.ABSENT
            clock.now += 10_000
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.PENDING  # too old to serve
        finally:
            worker.cancel()

    run(scenario())


def test_a_revoked_route_is_never_served_past_its_ttl() -> None:
    """Issue 10 finding 5: a route revoked in the DHT was served for 66 s by a gateway
    answering with a 60 s TTL (stale-while-revalidate past the TTL). However slow or
    failing the refresh, no route is served older than the TTL."""

    async def scenario() -> None:
        clock, lookups = Clock(), Lookups()
        cache = RouteCache(lookups, clock, positive_ttl=60)
        worker = asyncio.create_task(cache.run())
        try:
            cache.route_nowait(NUMBER, clock.now)
            await settle()
            fetched = clock.now
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            lookups.gate.clear()  # the DHT stops answering (or an attacker stalls it)
            lookups.answer = None  # and the verifier has revoked the owner meanwhile
            served = []
            for second in range(1, 80):
                clock.now = fetched + second
                if cache.route_nowait(NUMBER, clock.now) == ROUTE:
                    served.append(second)
                await settle()
            assert served and max(served) < 60
            lookups.gate.set()  # the stalled lookup ends: its answer is dated at its start
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) is not ROUTE
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.ABSENT
        finally:
            worker.cancel()

    run(scenario())


def test_failures_are_not_absences() -> None:
    async def scenario() -> None:
        clock, lookups = Clock(), Lookups()
        cache = RouteCache(lookups, clock, positive_ttl=60, failure_retry=5)
        worker = asyncio.create_task(cache.run())
        try:
            lookups.answer = TimeoutError("dht down")
            cache.route_nowait(NUMBER, clock.now)
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.FAILED
            assert len(lookups.calls) == 1  # no retry before failure_retry
            lookups.answer = ROUTE
            clock.now += 5
            cache.route_nowait(NUMBER, clock.now)
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            # a failed refresh inside the TTL keeps serving the known route, retried later
            clock.now += 46
            lookups.answer = OSError("unreachable")
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) == ROUTE
            calls = len(lookups.calls)
            cache.route_nowait(NUMBER, clock.now + 1)
            await settle()
            assert len(lookups.calls) == calls
            # past the TTL with the DHT still down: FAILED (SERVFAIL), not the old route
            clock.now += 20
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.PENDING
            await settle()
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.FAILED
        finally:
            worker.cancel()

    run(scenario())


def test_queue_and_concurrency_are_bounded() -> None:
    async def scenario() -> None:
        clock, lookups = Clock(), Lookups()
        lookups.gate.clear()  # every lookup hangs until released
        cache = RouteCache(lookups, clock, queue_size=4, concurrency=2, timeout=30)
        worker = asyncio.create_task(cache.run())
        try:
            numbers = [f"+1800555{i:04d}" for i in range(20)]
            for number in numbers:
                assert cache.route_nowait(number, clock.now) is RouteStatus.PENDING
            await settle()
            assert len(lookups.calls) == 2  # only `concurrency` at once
            lookups.gate.set()
            await settle()
            assert len(lookups.calls) <= 2 + 4  # the rest were refused, not queued
            assert len(cache) == len(lookups.calls)
        finally:
            worker.cancel()

    run(scenario())


def test_lookup_timeout_is_bounded() -> None:
    async def scenario() -> None:
        clock, lookups = Clock(), Lookups()
        lookups.gate.clear()
        cache = RouteCache(lookups, clock, timeout=0.05)
        worker = asyncio.create_task(cache.run())
        try:
            cache.route_nowait(NUMBER, clock.now)
            async with asyncio.timeout(2):
                await cache.wait(NUMBER)
            assert cache.route_nowait(NUMBER, clock.now) is RouteStatus.FAILED
        finally:
            worker.cancel()

    run(scenario())


def test_rate_limiter_refills_and_is_bounded() -> None:
    limiter = TokenBuckets[str](rate=10, burst=2, max_sources=3)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("a", 0.1)  # one token back after 0.1 s at 10/s
    for client in "bcde":
        limiter.allow(client, 0.1)
    assert len(limiter) == 3
    with pytest.raises(ValueError):
        TokenBuckets[str](rate=0, burst=1, max_sources=1)


def test_settings() -> None:
    verifier = Identity.generate(bytes(32))
    settings = parse_settings(
        f'country = "us"\ntrust = ["{verifier.peer_id}"]\n'
        'tollfree_file = "/etc/tf.txt"\nbootstrap = ["127.0.0.1:4000"]\n'
    )
    assert settings.country == "US"
    assert settings.trust == frozenset({verifier.public_key})
    assert settings.bootstrap == ("127.0.0.1:4000",)
    bad_settings = (
        'country = "USA"',
        'country = "ZZ"',
        "country = 1",
        'trust = ["nope"]',
        "trust = 3",
        "color = 1",
        "x =",
    )
    for bad in bad_settings:
        with pytest.raises(SettingsError):
            parse_settings(bad)


def test_the_gateway_refuses_a_route_cache_longer_than_its_answer_ttl() -> None:
    """The route cache plus the answer cache must fit in the TTL the gateway hands out,
    or a revoked route would outlive it in our answers (issue 10 finding 5)."""

    async def scenario() -> None:
        lookups = Lookups()
        config = GatewayConfig()
        assert RouteCache(lookups, Clock()).positive_ttl == config.route_ttl
        routes = RouteCache(lookups, Clock())
        core = EnumDnsCore(config, routes.route_nowait)
        EnumDnsServer(core, RouteCache(lookups, Clock()))  # the defaults fit
        with pytest.raises(ValueError, match="answer TTL"):
            EnumDnsServer(core, RouteCache(lookups, Clock(), positive_ttl=60))
        short = EnumDnsCore(replace(config, answer_ttl=30), routes.route_nowait)
        with pytest.raises(ValueError, match="answer TTL"):
            EnumDnsServer(short, RouteCache(lookups, Clock()))
        EnumDnsServer(short, RouteCache(lookups, Clock(), positive_ttl=short.config.route_ttl))

    run(scenario())
