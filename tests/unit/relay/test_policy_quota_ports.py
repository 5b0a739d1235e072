"""Peer address policy, token bucket, allocation counters and the port pool."""

from __future__ import annotations

import random

import pytest

from relay.policy import PeerAddressPolicy, parse_networks
from relay.ports import PortPool
from relay.quota import AllocationCounter, QuotaConfig, TokenBucket


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "not-an-ip",
    ],
)
def test_denied_by_default(ip: str) -> None:
    assert not PeerAddressPolicy().permits(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2001:4860::8888", "93.184.216.34"])
def test_public_allowed(ip: str) -> None:
    assert PeerAddressPolicy().permits(ip)


def test_allow_list_overrides_and_deny_list_adds() -> None:
    policy = PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"]))
    assert policy.permits("127.0.0.1") and not policy.permits("10.0.0.1")
    strict = PeerAddressPolicy(deny=parse_networks(["8.8.8.0/24"]))
    assert not strict.permits("8.8.8.8") and strict.permits("10.0.0.1")
    with pytest.raises(ValueError):
        parse_networks(["nonsense"])


def test_token_bucket_in_virtual_time() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0, now=0.0)
    assert bucket.take(500, 0.0)
    assert not bucket.take(1, 0.0)
    assert not bucket.take(200, 0.1)  # only 100 refilled
    assert bucket.take(200, 0.2)  # 200 refilled by now (100 + 100 left after the refusal)
    assert bucket.take(500, 100.0)  # refill is capped at the burst ...
    assert not bucket.take(1, 100.0)  # ... so nothing is left


def test_allocation_counter() -> None:
    config = QuotaConfig(max_allocations_per_identity=2, max_allocations_per_source_ip=3)
    counter = AllocationCounter()
    counter.add("alice", "1.1.1.1")
    assert not counter.would_exceed(config, "alice", "1.1.1.1")
    counter.add("alice", "1.1.1.1")
    assert counter.would_exceed(config, "alice", "2.2.2.2")  # identity cap
    assert not counter.would_exceed(config, "bob", "1.1.1.1")
    counter.add("bob", "1.1.1.1")
    assert counter.would_exceed(config, "carol", "1.1.1.1")  # source cap
    for name in ("alice", "alice", "bob"):
        counter.remove(name, "1.1.1.1")
    assert counter.identities() == 0


def test_quota_config_validates() -> None:
    with pytest.raises(ValueError, match="max_allocations"):
        QuotaConfig(max_allocations=0)
    with pytest.raises(ValueError, match="burst"):
        QuotaConfig(burst_seconds=0)


def test_port_pool() -> None:
    rng = random.Random(3)
    pool = PortPool(50000, 50009)
    taken = {pool.take(rng) for _ in range(10)}
    assert taken == set(range(50000, 50010))
    assert pool.take(rng) is None and len(pool) == pool.capacity == 10
    pool.release(50004)
    assert pool.take(rng, even=True) == 50004
    pool.release(50005)
    assert pool.take(rng, even=True) is None  # only an odd port is free
    assert pool.take(rng) == 50005
    with pytest.raises(ValueError):
        PortPool(10, 5)


def test_port_pool_even_ports_are_even() -> None:
    rng = random.Random(5)
    pool = PortPool(49152, 65535)
    assert all(
        port is not None and port % 2 == 0
        for port in (pool.take(rng, even=True) for _ in range(50))
    )
