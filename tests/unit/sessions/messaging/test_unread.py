"""Unread counts kept by the node: read here once, read receipts once, old stores migrate.

Two real chat cores over SQLite in tmp_path, real crypto, no network: envelopes are
handed over directly (the online path's behaviour).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.sessions.chat import ChatCore
from p2pnode.sessions.chat_message import BodyKind
from p2pnode.sessions.prekeys import bundle_from_record
from p2pnode.sessions.store import MIGRATIONS, ChatStore

T0 = 1_800_000_000.0


def core(path: Path, seed: int) -> ChatCore:
    identity = Identity.generate(bytes([seed]) * 32)
    return ChatCore(identity, bytes([seed]) * 32, ChatStore(path), random.Random(seed))


def test_unread_survives_reopen_and_read_receipts_go_once(tmp_path: Path) -> None:
    alice, bob = core(tmp_path / "a.db", 5), core(tmp_path / "b.db", 6)
    alice_key, bob_key = alice.identity.public_key, bob.identity.public_key
    bundle = bundle_from_record(bob.prekey_record(T0))
    first = alice.compose(bob_key, "one", T0, bundle)
    second = alice.compose(bob_key, "two", T0)
    bob.receive([first.envelope, second.envelope], T0)
    assert bob.unread() == {alice_key: 2}
    assert alice.unread() == {}  # our own messages are never unread

    bob.store.close()
    bob = core(tmp_path / "b.db", 6)  # a restart (or a page reload) keeps the count
    assert bob.unread() == {alice_key: 2}

    receipts = bob.read(alice_key, (first.message_id,), T0)
    assert len(receipts) == 1 and bob.unread() == {alice_key: 1}
    assert bob.read(alice_key, (first.message_id,), T0) == []  # marked again: nothing sent
    assert bob.read(bob_key, (second.message_id,), T0) == []  # another peer's id: ignored
    assert bob.read(alice_key, (first.message_id, second.message_id), T0) != []
    assert bob.unread() == {}
    for reply in receipts:
        alice.receive([reply.envelope], T0)
    assert alice.status(first.message_id).read
    assert not alice.status(second.message_id).read  # its receipt was not handed over


def test_a_held_message_is_not_unread_until_shown(tmp_path: Path) -> None:
    alice, bob = core(tmp_path / "a.db", 7), core(tmp_path / "b.db", 8)
    alice_key, bob_key = alice.identity.public_key, bob.identity.public_key
    bundle = bundle_from_record(bob.prekey_record(T0))
    first = alice.compose(bob_key, "one", T0, bundle)
    second = alice.compose(bob_key, "two", T0)
    result = bob.receive([second.envelope], T0)
    assert result.gaps and bob.unread() == {}
    assert bob.read(alice_key, (second.message_id,), T0) == []  # held: cannot be read
    bob.receive([first.envelope], T0)
    assert bob.unread() == {alice_key: 2}


def test_a_version_2_store_counts_its_old_messages_read(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        for migration in MIGRATIONS[:2]:
            for statement in migration.split(";"):
                if statement.strip():
                    old.execute(statement)
        old.execute(
            "INSERT INTO messages (message_id, peer, direction, seq, prev_hash, hash, text, "
            "sent_at_ms, stored_at, shown, chain_ok, shown_order) "
            "VALUES (?, ?, 1, 1, ?, ?, 'old', 0, 0, 1, 1, 1)",
            (bytes(16), bytes(32), bytes(32), bytes(32)),
        )
        old.execute("PRAGMA user_version = 2")
    store = ChatStore(path)
    assert store.unread_counts() == {}  # no flood of badges after an upgrade
    assert [m.text for m in store.history(bytes(32))] == ["old"]
    assert int(BodyKind.READ) not in store.receipts(bytes(16))
