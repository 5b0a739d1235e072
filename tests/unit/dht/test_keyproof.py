"""Key proofs inside requests and replies: what they bind, and that joins need few PINGs."""

from __future__ import annotations

from collections import Counter

from p2pnode.dht.config import DhtConfig
from p2pnode.dht.keyproof import (
    PROOF_SLOT,
    RequestProofs,
    reply_proof_valid,
    request_proof_valid,
    sign_reply_proof,
    sign_request_proof,
)
from p2pnode.dht.messages import decode_frame
from p2pnode.identity import Identity
from tests.unit.dht.memnet import MemNet

SENDER = Identity.generate(b"s" * 32)
RECEIVER = Identity.generate(b"r" * 32)
OTHER = Identity.generate(b"o" * 32)
HERE = ("192.0.2.1", 4000)
WALL = 1_700_000_000.0


def test_request_proof_binds_receiver_address_and_time() -> None:
    proof = sign_request_proof(SENDER, RECEIVER.public_key, HERE, WALL)
    valid = request_proof_valid
    assert valid(SENDER.public_key, proof, RECEIVER.public_key, HERE, WALL)
    assert valid(SENDER.public_key, proof, RECEIVER.public_key, HERE, WALL + PROOF_SLOT)
    assert not valid(SENDER.public_key, proof, RECEIVER.public_key, HERE, WALL + 3 * PROOF_SLOT)
    assert not valid(SENDER.public_key, proof, OTHER.public_key, HERE, WALL)  # another receiver
    assert not valid(SENDER.public_key, proof, RECEIVER.public_key, ("192.0.2.1", 4001), WALL)
    assert not valid(OTHER.public_key, proof, RECEIVER.public_key, HERE, WALL)  # another key


def test_reply_proof_binds_request_id_and_requester() -> None:
    proof = sign_reply_proof(SENDER, b"12345678", RECEIVER.public_key)
    assert reply_proof_valid(SENDER.public_key, proof, b"12345678", RECEIVER.public_key)
    assert not reply_proof_valid(SENDER.public_key, proof, b"12345679", RECEIVER.public_key)
    assert not reply_proof_valid(SENDER.public_key, proof, b"12345678", OTHER.public_key)


def test_request_proofs_are_signed_once_per_receiver_and_slot() -> None:
    proofs = RequestProofs(SENDER, max_entries=2)
    first = proofs.proof(RECEIVER.public_key, HERE, WALL)
    assert proofs.proof(RECEIVER.public_key, HERE, WALL + 1) is first
    assert proofs.proof(RECEIVER.public_key, ("192.0.2.9", 1), WALL) != first


def test_a_join_proves_keys_inside_lookups_not_with_pings() -> None:
    """Before key proofs a join challenged most contacts it met (PING/PONG both ways:
    half of its ~600 datagrams at N=200); now only the bootstrap PING and liveness
    checks remain, and the joiner still lands in the tables of the nodes it met."""
    net = MemNet(seed=3)
    config = DhtConfig()
    first = net.add(config=config)
    nodes = [first] + [net.add(config=config, bootstrap=[first[0]]) for _ in range(59)]
    for start in range(1, len(nodes), 10):
        for a, c in nodes[start : start + 10]:
            net.wait(a, c.bootstrap(net.now), limit=60)
    address, joiner = net.add(config=config, bootstrap=[first[0]])
    kinds: Counter[str] = Counter()

    def tap(data: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
        if address in (source, destination):
            kinds[type(decode_frame(data).message).__name__] += 1

    net.tap = tap
    op = joiner.bootstrap(net.now)
    net.wait(address, op, limit=60)
    net.run_until(lambda: False, limit=3)
    assert kinds["FindNode"] >= 10
    assert kinds["Ping"] <= 6, kinds
    knowing = sum(joiner.own_id in core.table for _, core in nodes)
    assert knowing >= config.k
    assert len(joiner.table) >= config.k
