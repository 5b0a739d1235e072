"""The one token bucket (nat.ratelimit): refill, bound, clock steps, keys.

STUN, ENUM DNS, the DHT and the connectivity home all use it (the DHT's own copy
was replaced 1:1 after a hypothesis comparison showed identical decisions)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.ratelimit import RateLimit, SourceRateLimiter, TokenBuckets, source_of


def test_refill_burst_and_cost() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(rate=10, burst=2, max_sources=3)
    assert [buckets.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert buckets.allow("a", 0.1)  # one token back after 0.1 s at 10/s
    assert not buckets.allow("a", 0.1)
    assert not buckets.allow("b", 0.0, cost=3.0)  # more than the burst: never
    assert buckets.allow("b", 0.0, cost=2.0)


def test_table_is_bounded_and_forgets_least_recent() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(rate=1, burst=1, max_sources=3)
    assert buckets.allow("a", 0.0)
    for key in "bcd":
        buckets.allow(key, 0.0)
    assert len(buckets) == 3
    assert buckets.allow("a", 0.0)  # "a" was forgotten: it starts with a full bucket again
    assert not buckets.allow("d", 0.0)  # "d" was kept and is empty


def test_clock_stepping_back_refills_nothing() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(rate=100, burst=1)
    assert buckets.allow("a", 10.0)
    assert not buckets.allow("a", 5.0)
    assert not buckets.allow("a", 5.0)


def test_bad_settings_refused() -> None:
    for rate, burst, size in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError):
            TokenBuckets[str](rate, burst, max_sources=size)
    with pytest.raises(ValueError):
        RateLimit(1.0, 0.5)
    limiter = SourceRateLimiter(RateLimit(1.0, 2.0), max_sources=2)
    assert limiter.allow("192.0.2.1", 0.0) and limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)


def test_source_of() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_of("fe80::1%eth0") == "fe80::/64"
    assert source_of("::ffff:192.0.2.9") == "192.0.2.9"
    assert source_of("not:an:address") == "not:an:address"


_events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.floats(min_value=-1.0, max_value=3.0, allow_nan=False),
        st.sampled_from([0.5, 1.0, 2.0]),
    ),
    max_size=60,
)


@given(
    st.floats(min_value=0.1, max_value=50.0),
    st.floats(min_value=0.5, max_value=8.0),
    st.integers(min_value=1, max_value=4),
    _events,
)
def test_spending_is_bounded_by_burst_plus_refill(
    rate: float, burst: float, size: int, events: list[tuple[str, float, float]]
) -> None:
    """Per key, what was spent never exceeds the burst plus what the elapsed time refilled
    (a forgotten key may start afresh, so the bound is checked only while the table holds
    every key), and the table never holds more than ``max_sources`` keys."""
    buckets: TokenBuckets[str] = TokenBuckets(rate, burst, max_sources=size)
    spent: dict[str, float] = {}
    forward = 0.0  # time only counted when the clock moves forwards
    now = 0.0
    seen: set[str] = set()
    for key, step, cost in events:
        now += step
        forward += max(0.0, step)
        seen.add(key)
        if buckets.allow(key, now, cost):
            spent[key] = spent.get(key, 0.0) + cost
        assert len(buckets) <= size
        if len(seen) <= size:
            assert spent.get(key, 0.0) <= burst + rate * forward + 1e-9


@given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=2**64 - 1))
def test_one_key_per_ipv6_slash_64(address: ipaddress.IPv6Address, low: int) -> None:
    sibling = ipaddress.IPv6Address(int(address) >> 64 << 64 | low)
    if address.ipv4_mapped is not None or sibling.ipv4_mapped is not None:
        return  # those count as their IPv4 address (test_source_of)
    assert source_of(str(address)) == source_of(str(sibling))
    assert source_of(str(address)).endswith("/64")
