"""The id puzzle (S/Kademlia's static puzzle, ``p2pnode.dht.puzzle``): the check, the
grinding, and each place a contact enters, in virtual time at non-loopback addresses.

Scaled down: the network here asks ``BITS`` = 6 puzzle bits (64 key generations per
honest node instead of 65,536), so every honest identity is ground in the test.
"""

from __future__ import annotations

import hashlib
import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.drops import DropCounter
from p2pnode.dht.config import DhtConfig, FindNodeResult, PutResult
from p2pnode.dht.keyproof import sign_reply_proof
from p2pnode.dht.keys import Contact
from p2pnode.dht.lookup import Lookup, LookupKind
from p2pnode.dht.messages import Frame, Nodes
from p2pnode.dht.puzzle import REFUSAL, Puzzle, exempt_host, id_meets, own_id_problem
from p2pnode.dht.routing import OfferOutcome, RoutingTable
from p2pnode.identity import PUZZLE_PERSON, Identity, puzzle_bits
from p2pnode.records import RecordKind, sign_record
from tests.unit.dht.memnet import MemNet
from tests.unit.dht.sybils import join

BITS = 6
NOW = 1_700_000_000.0


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


def ground(seed: int, bits: int = BITS) -> Identity:
    """A server identity meeting ``bits``, reproducible from ``seed``."""
    return Identity.generate_meeting(bits, seeds=seeded(seed).randbytes)


def unground(seed: int, bits: int = BITS) -> Identity:
    """An identity whose id lacks ``bits`` puzzle bits (what ``Identity.generate`` gives
    31 times out of 32 at 5 bits), reproducible from ``seed``."""
    rng = seeded(seed)
    while True:
        identity = Identity.generate(rng.randbytes(32))
        if not id_meets(identity.node_id, bits):
            return identity


def contact_of(identity: Identity, host: str) -> Contact:
    return Contact(identity.node_id, identity.public_key, (host, 4000))


# ------------------------------------------------------------------ the check


@given(st.binary(min_size=20, max_size=20), st.integers(0, 16))
def test_id_meets_counts_leading_zero_bits_of_its_own_hash(node_id: bytes, bits: int) -> None:
    digest = hashlib.blake2b(node_id, digest_size=8, person=PUZZLE_PERSON).digest()
    value = int.from_bytes(digest, "big")
    assert id_meets(node_id, bits) == (value >> (64 - bits) == 0 if bits else True)
    assert puzzle_bits(node_id) == 64 - value.bit_length()
    if id_meets(node_id, bits) and bits:
        assert id_meets(node_id, bits - 1)  # more bits is more work, never less


def test_the_puzzle_hash_is_not_the_node_id_hash() -> None:
    """Its own person: an id's puzzle bits are not its own leading bits (else every id
    near the all-zero key would be free)."""
    ids = [Identity.generate(seeded(n).randbytes(32)).node_id for n in range(400)]
    assert any(id_meets(i, 4) != (int.from_bytes(i, "big") >> 156 == 0) for i in ids)


def test_generate_meeting_grinds_and_reports_progress() -> None:
    calls: list[int] = []
    identity = Identity.generate_meeting(13, progress=calls.append, seeds=seeded(3).randbytes)
    assert id_meets(identity.node_id, 13)
    assert puzzle_bits(identity.node_id) >= 13
    # 2**13 tries on average: progress came every 4096 tries, increasing.
    assert calls == sorted(calls) and all(c % 4096 == 0 for c in calls)
    with pytest.raises(ValueError):
        Identity.generate_meeting(65)


def test_loopback_is_exempt_unless_asked() -> None:
    weak = unground(1)
    for host in ("127.0.0.1", "127.5.0.9", "::1", "::ffff:127.0.0.1"):
        assert exempt_host(host, False) and not exempt_host(host, True)
        assert Puzzle(BITS).meets(contact_of(weak, host))
        assert not Puzzle(BITS, loopback=True).meets(contact_of(weak, host))
    for host in ("10.0.0.1", "0.0.0.0", "192.0.2.1", "2001:db8::1"):
        assert not exempt_host(host, False)
        assert not Puzzle(BITS).meets(contact_of(weak, host))
    assert Puzzle(0).meets(contact_of(weak, "10.0.0.1"))  # 0: the check is off


def test_refusals_are_counted_by_reason() -> None:
    drops = DropCounter(logging.getLogger("test"), lambda: 0.0)
    puzzle = Puzzle(BITS)
    puzzle.drops = drops
    assert puzzle.admit(contact_of(ground(1), "10.0.0.1"))
    assert not puzzle.admit(contact_of(unground(2), "10.0.0.2"))
    assert not puzzle.admit(contact_of(unground(3), "10.0.0.3"))
    assert puzzle.refused == 2 and drops.counts() == {REFUSAL: 2}


def test_difficulty_is_validated() -> None:
    with pytest.raises(ValueError):
        DhtConfig(id_difficulty=33)
    with pytest.raises(ValueError):
        DhtConfig(id_difficulty=-1)
    assert DhtConfig().id_difficulty == 16 and not DhtConfig().puzzle_loopback


def test_own_id_problem_names_the_fix() -> None:
    weak, strong = unground(4), ground(4)
    problem = own_id_problem(weak.node_id, BITS, "0.0.0.0", loopback=False)
    assert problem is not None and "p2pnode init --replace" in problem and "client" in problem
    assert own_id_problem(strong.node_id, BITS, "10.1.2.3", loopback=False) is None
    assert own_id_problem(weak.node_id, BITS, "127.0.0.1", loopback=False) is None
    assert own_id_problem(weak.node_id, BITS, "127.0.0.1", loopback=True) is not None


# ------------------------------------------------------- where contacts enter


def test_the_routing_table_refuses_an_unground_id() -> None:
    config = DhtConfig(id_difficulty=BITS)
    table = RoutingTable(bytes(20), k=20, diversity=config.diversity())
    strong, weak = contact_of(ground(5), "10.0.0.5"), contact_of(unground(5), "10.0.0.6")
    assert table.wants(weak.node_id, weak) is False  # no key proof checked for it
    assert table.offer(weak, 0.0).outcome is OfferOutcome.BELOW_DIFFICULTY
    assert table.offer(strong, 0.0).outcome is OfferOutcome.ADDED
    assert weak.node_id not in table and strong.node_id in table
    assert table.diversity is not None and table.diversity.puzzle.refused == 1
    loopback = contact_of(unground(6), "127.0.0.1")
    assert table.offer(loopback, 0.0).outcome is OfferOutcome.ADDED


def test_a_lookup_never_queries_nor_returns_an_unground_id() -> None:
    """Replies name unground ids nearer the target than anyone: never asked, never in the
    k closest (so never a put's storer); the ground ones beyond them are."""
    config = DhtConfig(id_difficulty=BITS)
    target = bytes(20)
    weak = [contact_of(unground(100 + n), f"10.9.{n}.1") for n in range(10)]
    strong = [contact_of(ground(200 + n), f"10.8.{n}.1") for n in range(10)]
    lookup = Lookup(
        target,
        LookupKind.NODE,
        own_id=b"\xff" * 20,
        k=5,
        alpha=3,
        quorum=3,
        seeds=strong[:3],
        diversity=config.diversity(),
    )
    asked: set[bytes] = set()
    for _ in range(100):
        picked = lookup.next_queries()
        if not picked:
            break
        for contact in picked:
            asked.add(contact.node_id)
            lookup.on_reply(contact.node_id, [*weak, *strong], has_value=False)
    assert lookup.done
    weak_ids = {c.node_id for c in weak}
    assert not asked & weak_ids
    result = lookup.closest_answered()
    assert len(result) == 5 and not {c.node_id for c in result} & weak_ids
    # The control: with the check off the weak ids are taken like any other.
    off = Lookup(
        target,
        LookupKind.NODE,
        own_id=b"\xff" * 20,
        k=5,
        alpha=3,
        quorum=3,
        seeds=[*weak, *strong],
        diversity=DhtConfig(id_difficulty=0).diversity(),
    )
    assert {c.node_id for c in off.next_queries()} & weak_ids


def test_unground_servers_stay_out_of_tables_ground_ones_get_in() -> None:
    """Joining sends requests (and proves keys in them and in replies): a request's sender
    and a reply's are both gated. Unground servers at non-loopback addresses join and
    make lookups; nobody keeps them, each refusal is counted; a ground one is kept."""
    net = MemNet(seed=11, id_difficulty=BITS)
    net.now = NOW
    first = net.add(identity=ground(1000))
    honest = [first] + [
        net.add(identity=ground(1000 + n), bootstrap=[first[0]]) for n in range(1, 12)
    ]
    join(net, honest[1:])
    weak = [net.add(identity=unground(300 + n), bootstrap=[first[0]]) for n in range(3)]
    late = net.add(identity=ground(400), bootstrap=[first[0]])
    join(net, [*weak, late])
    for address, core in honest[:4]:
        net.wait(address, core.find_node(core.own_id, net.now))
    weak_ids = {core.own_id for _, core in weak}
    for _, core in honest:
        assert not weak_ids & {c.node_id for c in core.table.contacts()}
    assert sum(late[1].own_id in core.table for _, core in honest) >= 6
    refused = sum(core.drops.counts().get(REFUSAL, 0) for _, core in honest)
    assert refused > 0
    # The unground nodes still query: their own lookups reach the honest nodes.
    address, core = weak[0]
    result = net.wait(address, core.find_node(honest[5][1].own_id, net.now))
    assert isinstance(result, FindNodeResult) and honest[5][1].own_id in {
        c.node_id for c in result.contacts
    }


def test_a_put_from_an_unground_node_is_stored_but_its_sender_is_not_kept() -> None:
    """STORE admission judges the record, not the id (clients put too): an unground
    server's put lands on the ground k closest, and none of them keeps the putter."""
    net = MemNet(seed=12, id_difficulty=BITS)
    net.now = NOW
    first = net.add(identity=ground(2000))
    honest = [first] + [
        net.add(identity=ground(2000 + n), bootstrap=[first[0]]) for n in range(1, 12)
    ]
    join(net, honest[1:])
    address, weak = net.add(identity=unground(2100), bootstrap=[first[0]])
    join(net, [(address, weak)])
    record = sign_record(weak.identity, RecordKind.PRESENCE, "weak", b"x", seq=1, now=NOW, ttl=600)
    put = net.wait(address, weak.put(record, net.now))
    assert isinstance(put, PutResult)
    held = sum(bool(core.store.get(record.key, net.now)) for _, core in honest)
    assert held == len(honest) and put.stored == held + 1  # the putter holds its own
    assert all(weak.own_id not in core.table for _, core in honest)


def test_no_key_proof_of_an_unground_replier_is_checked() -> None:
    """A reply's key proof (a PONG folded into it) counts only from a ground id: an
    unground replier's valid signature is not even verified."""
    net = MemNet(seed=13, id_difficulty=BITS)
    _, core = net.add(identity=ground(3000))
    request_id = bytes(range(8))
    for replier, counts in ((unground(3001), False), (ground(3001), True)):
        proof = sign_reply_proof(replier, request_id, core.identity.public_key)
        frame = Frame(
            Nodes(()), request_id, replier.public_key, replier.node_id, 0, key_proof=proof
        )
        assert core.contacts.reply_proves(frame, ("10.7.0.1", 4000)) is counts
