"""Finding 3 of issue 10: an eclipse of one key by ground ids from one address or one /24.

Twenty identities whose node ids share 12 leading bits with a key (about 82,000
key generations, ground once per run) join an honest network in virtual time. They
behave as the finding's attacker did: to any FIND_NODE / FIND_VALUE they name only
each other and hold no records; to any STORE they answer STORED with a valid
signed receipt and keep nothing. Each honest node and reader limits contacts per
address and per network (``p2pnode.dht.diversity``), so a record stored before
stays findable and a put afterwards lands on honest nodes. The same network with
the limits lifted is the control: there the attack must work, or this test proves
nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import pytest

from p2pnode.dht.config import DhtConfig, GetResult, PutResult
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record
from tests.unit.dht.memnet import MemNet
from tests.unit.dht.sybils import add_sybils, grind, join

HONEST = 40
SYBILS = 20
SHARED_BITS = 12
READERS = 10
OWNER_SEED = b"eclipse-owner".ljust(32, b"\x00")
NOW = 1_700_000_000.0


def the_record(seq: int) -> SignedRecord:
    owner = Identity.generate(OWNER_SEED)
    return sign_record(owner, RecordKind.PRESENCE, "target", b"honest", seq=seq, now=NOW, ttl=7200)


@functools.cache
def ground_identities() -> tuple[Identity, ...]:
    """``SYBILS`` identities whose node ids share ``SHARED_BITS`` leading bits with the key."""
    return grind(the_record(1).key, SYBILS, SHARED_BITS)


def run_attack(sybil_hosts: list[str], config: DhtConfig) -> tuple[int, int, int, int]:
    """(readers finding the old record, readers finding the new one, honest holders of
    the new one, sybils among the nodes the put reported as holding it)."""
    net = MemNet(seed=7)
    net.now = NOW
    first = net.add(config=config)
    honest = [first] + [net.add(config=config, bootstrap=[first[0]]) for _ in range(HONEST - 1)]
    join(net, honest[1:])
    old = the_record(1)
    owner_address, owner = honest[1]
    put = net.wait(owner_address, owner.put(old, net.now))
    assert isinstance(put, PutResult) and put.stored >= config.k // 2

    sybils = add_sybils(net, ground_identities(), sybil_hosts, config, first[0])
    # The honest nodes meet the crowd the way a network does: lookups near the key.
    for address, core in honest[::4]:
        net.wait(address, core.find_node(old.key, net.now))

    def readers_finding(record: SignedRecord) -> int:
        found = 0
        for address, core in honest[-READERS:]:
            result = net.wait(address, core.get(record.key, net.now))
            assert isinstance(result, GetResult)
            found += any(r.encoded == record.encoded for r in result.records)
        return found

    old_found = readers_finding(old)
    new = the_record(2)
    stores_before = [core.rpcs[("store", "served")] for _, core in sybils]
    put = net.wait(owner_address, owner.put(new, net.now))
    assert isinstance(put, PutResult)
    holders = sum(
        any(r.encoded == new.encoded for r in core.store.get(new.key, net.now))
        for _, core in honest
    )
    sybil_stores = sum(
        core.rpcs[("store", "served")] > before
        for (_, core), before in zip(sybils, stores_before, strict=True)
    )
    return old_found, readers_finding(new), holders, sybil_stores


def one_address() -> list[str]:
    return ["10.250.0.1"] * SYBILS


def one_network() -> list[str]:
    return [f"10.250.0.{i + 1}" for i in range(SYBILS)]


@pytest.mark.slow
@pytest.mark.parametrize("hosts", [one_address, one_network], ids=["one-address", "one-/24"])
def test_ground_ids_from_one_place_do_not_eclipse_a_key(hosts: Callable[[], list[str]]) -> None:
    config = DhtConfig()
    old_found, new_found, holders, sybil_stores = run_attack(hosts(), config)
    assert old_found == READERS
    assert new_found == READERS
    assert holders >= config.k - config.max_per_network  # the put landed on honest nodes
    assert sybil_stores <= config.max_per_network


@pytest.mark.slow
def test_control_without_diversity_the_crowd_eclipses_the_key() -> None:
    """The same attack with the limits lifted works, so the test above can fail."""
    lifted = dataclasses.replace(DhtConfig(), max_per_address=1000, max_per_network=1000)
    _, new_found, holders, sybil_stores = run_attack(one_network(), lifted)
    assert new_found < READERS
    assert holders < lifted.k // 2
    assert sybil_stores > lifted.k // 2
