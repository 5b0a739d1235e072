"""Store tokens, proofs and receipts on their own: validity window, binding, bounds."""

from __future__ import annotations

from p2pnode.dht.messages import Store
from p2pnode.dht.proofs import (
    TOKEN_SLOT,
    TOKEN_USE_WITHIN,
    HeldTokens,
    StoreTokens,
    receipt_valid,
    sign_receipt,
    store_proof_valid,
)
from p2pnode.identity import Identity

ALICE = Identity.generate(b"a" * 32)
BOB = Identity.generate(b"b" * 32)
HOME = ("192.0.2.1", 4000)


def test_a_token_lives_one_to_two_slots_and_names_key_and_address() -> None:
    tokens = StoreTokens(b"s" * 32)
    for issued in (0.0, TOKEN_SLOT - 0.001, 1234.5):
        token = tokens.issue(ALICE.public_key, HOME, issued)
        assert tokens.valid(token, ALICE.public_key, HOME, issued + TOKEN_SLOT - 0.001)
        assert not tokens.valid(token, ALICE.public_key, HOME, issued + 2 * TOKEN_SLOT)
        assert not tokens.valid(token, BOB.public_key, HOME, issued)
        assert not tokens.valid(token, ALICE.public_key, ("192.0.2.1", 4001), issued)
        assert not tokens.valid(token, ALICE.public_key, ("192.0.2.2", 4000), issued)
        assert not StoreTokens(b"t" * 32).valid(token, ALICE.public_key, HOME, issued)
    assert not tokens.valid(b"", ALICE.public_key, HOME, 0.0)


def test_held_tokens_prove_towards_their_issuer_only_while_fresh() -> None:
    held = HeldTokens(ALICE, max_entries=2)
    plain = Store(b"k" * 20, b"record")
    held.remember(HOME, BOB.public_key, b"t" * 16, 100.0)
    proven = held.prove(plain, HOME, BOB.public_key, 100.0 + TOKEN_USE_WITHIN)
    assert proven.token == b"t" * 16 and proven.key == plain.key
    assert store_proof_valid(ALICE.public_key, proven.proof, proven.token, BOB.public_key)
    assert not store_proof_valid(BOB.public_key, proven.proof, proven.token, BOB.public_key)
    assert not store_proof_valid(ALICE.public_key, proven.proof, proven.token, ALICE.public_key)
    assert not store_proof_valid(ALICE.public_key, proven.proof, b"u" * 16, BOB.public_key)
    assert held.prove(plain, HOME, BOB.public_key, 100.0 + TOKEN_USE_WITHIN + 1) == plain
    assert held.prove(plain, HOME, ALICE.public_key, 100.0) == plain  # another key there now
    assert held.prove(plain, ("192.0.2.9", 1), None, 100.0) == plain
    held.remember(("192.0.2.2", 1), BOB.public_key, b"u" * 16, 101.0)
    held.remember(("192.0.2.3", 1), BOB.public_key, b"v" * 16, 102.0)
    assert len(held) == 2 and held.prove(plain, HOME, None, 103.0) == plain  # oldest forgotten


def test_a_receipt_binds_request_putter_record_and_status() -> None:
    receipt = sign_receipt(BOB, b"r" * 8, ALICE.public_key, b"k" * 20, b"record", 0)
    args = (b"r" * 8, ALICE.public_key, b"k" * 20, b"record", 0)
    assert receipt_valid(BOB.public_key, receipt, *args)
    assert not receipt_valid(ALICE.public_key, receipt, *args)
    assert not receipt_valid(BOB.public_key, receipt, b"x" * 8, *args[1:])
    assert not receipt_valid(BOB.public_key, receipt, *args[:3], b"other", 0)
    assert not receipt_valid(BOB.public_key, receipt, *args[:4], 1)
