"""The chat core and outbox in virtual time: order, gaps, dedupe, receipts, crash at every step.

Two real cores, three real mailbox cores (SQLite in tmp_path), real crypto; the
"network" is these tests calling ``MailboxCore.handle`` with signed requests.
A crash is simulated by dropping a core and reopening it from its database.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from p2pnode.identity import Identity
from p2pnode.sessions.chat import (
    MAX_SESSIONS_PER_PEER,
    SEEN_ENVELOPES_KEPT,
    ChatCore,
    NeedBundleError,
)
from p2pnode.sessions.chat_message import decode_envelope, encode_envelope
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_wire import RegisterRequest, sign_ack, sign_deposit, sign_fetch
from p2pnode.sessions.outbox import (
    MIN_COPIES,
    TRANSITIONS,
    OutboxError,
    OutboxInput,
    OutboxState,
    transition,
)
from p2pnode.sessions.prekeys import ROTATE_AFTER, bundle_from_record
from p2pnode.sessions.store import MIGRATIONS, SCHEMA_VERSION, ChatStore

T0 = 1_800_000_000.0
SEED_A, SEED_B = bytes([3]) * 32, bytes([4]) * 32


class Peer:
    def __init__(self, seed: bytes, path: Path, rng_seed: int) -> None:
        self.seed, self.path = seed, path
        self.identity = Identity.generate(seed)
        self.rng = random.Random(rng_seed)
        self.shown: list[str] = []  # texts shown, in the order a test drained them
        self.open()

    def open(self) -> None:
        self.core = ChatCore(self.identity, self.seed, ChatStore(self.path), self.rng)

    def crash(self) -> None:
        self.core.store.close()
        self.open()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Peer, Peer, list[MailboxCore]]:
    alice = Peer(SEED_A, tmp_path / "alice.db", 1)
    bob = Peer(SEED_B, tmp_path / "bob.db", 2)
    mailboxes = [
        MailboxCore(Identity.generate(bytes([10 + i]) * 32).public_key, tmp_path / f"m{i}.db")
        for i in range(3)
    ]
    entries = tuple(MailboxEntry(m.own_key, "127.0.0.1", 1000 + i) for i, m in enumerate(mailboxes))
    record = mailbox_list_record(bob.identity, entries, seq=1, now=T0)
    for mailbox in mailboxes:
        assert mailbox.handle(RegisterRequest(1, record.encoded), T0).status.stored
    return alice, bob, mailboxes


def deposit_due(
    alice: Peer, bob: Peer, mailboxes: list[MailboxCore], now: float, up: set[int]
) -> None:
    for row in alice.core.due(now):
        copies = 0
        for index, mailbox in enumerate(mailboxes):
            if index not in up:
                continue
            request = sign_deposit(
                alice.identity, mailbox.own_key, 1, row.peer, (row.envelope,), int(now)
            )
            if mailbox.handle(request, now).statuses[0].stored:
                copies += 1
        event = OutboxInput.DEPOSITED if copies >= MIN_COPIES else OutboxInput.ATTEMPT_FAILED
        alice.core.attempted(row, event, copies, now)


def drain(bob: Peer, mailboxes: list[MailboxCore], now: float, up: set[int]) -> list[bytes]:
    """Bob fetches from every mailbox, receives, acks; returns the receipts to send."""
    replies: list[bytes] = []
    for index, mailbox in enumerate(mailboxes):
        if index not in up:
            continue
        fetched = mailbox.handle(sign_fetch(bob.identity, mailbox.own_key, 1, int(now), 256), now)
        result = bob.core.receive([item.envelope for item in fetched.items], now)
        bob.shown.extend(m.text for m in result.shown)
        replies.extend(o.envelope for o in result.replies)
        ids = tuple(item.item_id for item in fetched.items)
        mailbox.handle(sign_ack(bob.identity, mailbox.own_key, 2, int(now), ids), now)
    return replies


def open_session(alice: Peer, bob: Peer) -> None:
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    alice.core.compose(bob.identity.public_key, "m0", T0, bundle)


def test_schema_version_and_reopen(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "s.db")
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    assert ChatStore(tmp_path / "s.db").schema_version == SCHEMA_VERSION


def test_needs_bundle_without_session(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, _ = world
    with pytest.raises(NeedBundleError):
        alice.core.compose(bob.identity.public_key, "hi", T0)


def test_out_of_order_shown_in_order_with_gap(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    sent = [alice.core.compose(bob.identity.public_key, f"m{i}", T0, bundle) for i in range(5)]
    result = bob.core.receive([sent[3].envelope, sent[1].envelope], T0)
    first_replies = result.replies
    assert result.shown == ()
    assert result.gaps == ((alice.identity.public_key, 1, 2),)
    assert result.requests == (alice.identity.public_key,)  # a stranger: a request
    result = bob.core.receive([sent[0].envelope, sent[4].envelope, sent[2].envelope], T0)
    assert [m.text for m in result.shown] == ["m0", "m1", "m2", "m3", "m4"]
    assert all(m.chain_ok for m in result.shown)
    again = bob.core.receive([sent[2].envelope], T0)  # replayed: not shown, receipted again
    assert again.shown == () and again.duplicates == 1 and len(again.replies) == 1
    # the receipts empty alice's outbox; a receipt replayed changes nothing
    assert alice.core.store.outbox_size() == 5
    for reply in first_replies + result.replies:
        alice.core.receive([reply.envelope], T0)
    assert alice.core.store.outbox_size() == 0
    assert alice.core.receive([result.replies[0].envelope], T0).duplicates == 1


def test_forged_and_tampered_envelopes_refused(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    first = alice.core.compose(bob.identity.public_key, "real", T0, bundle)
    bob.core.receive([first.envelope], T0)
    mallory = Peer(bytes([9]) * 32, alice.path.with_name("mallory.db"), 5)
    forged = mallory.core.compose(bob.identity.public_key, "fake", T0, bundle)
    # mallory claims to be alice: the ratchet's associated data binds the real identities
    envelope = decode_envelope(forged.envelope)
    claimed = type(envelope)(
        alice.identity.public_key, envelope.recipient, None, envelope.header, envelope.ciphertext
    )
    result = bob.core.receive([encode_envelope(claimed), b"junk"], T0)
    assert result.shown == () and result.refused == ("tampered", "malformed")
    second = decode_envelope(alice.core.compose(bob.identity.public_key, "two", T0).envelope)
    flipped = type(second)(
        second.sender,
        second.recipient,
        second.init,
        second.header,
        second.ciphertext[:-1] + b"\x00",
    )
    assert bob.core.receive([encode_envelope(flipped)], T0).refused == ("tampered",)


def test_outbox_table_defines_every_pair_or_refuses() -> None:
    for state in OutboxState:
        for event in OutboxInput:
            if (state, event) in TRANSITIONS:
                assert transition(state, event) in OutboxState
            else:
                with pytest.raises(OutboxError):
                    transition(state, event)


STEPS = 12


def run_with_crash(world: tuple[Peer, Peer, list[MailboxCore]], crash_at: int, who: str) -> None:
    alice, bob, mailboxes = world
    bob.shown = []
    open_session(alice, bob)
    texts = ["m0"] + [f"m{i}" for i in range(1, 6)]
    for text in texts[1:]:
        alice.core.compose(bob.identity.public_key, text, T0)
    now = T0
    up = {0, 1, 2}
    step = 0

    def maybe_crash() -> None:
        nonlocal step
        if step == crash_at:
            (alice if who == "alice" else bob).crash()
        step += 1

    for _ in range(40):
        maybe_crash()
        deposit_due(alice, bob, mailboxes, now, up)
        maybe_crash()
        replies = drain(bob, mailboxes, now, up)
        maybe_crash()
        if step % 3 != 1:  # some receipts are lost on the way: the outbox must retry
            alice.core.receive(replies, now)
        maybe_crash()
        if alice.core.store.outbox_size() == 0 and all(
            m.held_for(bob.identity.public_key) == 0 for m in mailboxes
        ):
            break
        deadline = alice.core.outbox_deadline()
        now = max(now + 1, deadline if deadline is not None else now)
    assert bob.shown == texts  # every message once, in order
    assert alice.core.store.outbox_size() == 0
    assert all(m.held_for(bob.identity.public_key) == 0 for m in mailboxes)


@pytest.mark.parametrize("who", ["alice", "bob"])
@pytest.mark.parametrize("crash_at", range(STEPS))
def test_crash_at_every_step_loses_and_duplicates_nothing(
    world: tuple[Peer, Peer, list[MailboxCore]], crash_at: int, who: str
) -> None:
    run_with_crash(world, crash_at, who)


def test_mailbox_down_still_two_copies(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, mailboxes = world
    bob.shown = []
    open_session(alice, bob)
    deposit_due(alice, bob, mailboxes, T0, {0, 2})
    row = alice.core.store.due_outbox(T0 + 10**9)[0]
    assert row.state is OutboxState.HELD and row.copies == 2
    deposit_due(alice, bob, mailboxes, T0 + 1, {0, 2})
    alice.core.receive(drain(bob, mailboxes, T0 + 2, {0, 1, 2}), T0 + 2)
    assert bob.shown == ["m0"]
    assert alice.core.store.outbox_size() == 0


class CrashError(Exception):
    """The process died here."""


class _DyingConnection:
    """Forwards to the real connection and dies at the n-th statement, mid-transaction."""

    def __init__(self, real: sqlite3.Connection, countdown: int) -> None:
        self.real, self.countdown = real, countdown

    def execute(self, sql: str, *args: Any) -> object:
        if self.countdown <= 0:  # dead: not even the ROLLBACK runs; close() discards the rest
            raise CrashError
        self.countdown -= 1
        if self.countdown == 0:
            raise CrashError
        return self.real.execute(sql, *args)

    def close(self) -> None:
        self.real.close()


def _die_after(peer: Peer, statements: int) -> _DyingConnection:
    store = peer.core.store
    dying = _DyingConnection(store._db, statements)
    store._db = dying  # type: ignore[assignment]
    return dying


@pytest.mark.parametrize("statements", range(1, 40, 2))
def test_crash_inside_a_transaction_rolls_back_whole(
    world: tuple[Peer, Peer, list[MailboxCore]], statements: int
) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    sent = [alice.core.compose(bob.identity.public_key, "m0", T0, bundle)]
    dying = _die_after(alice, statements)
    try:
        sent.append(alice.core.compose(bob.identity.public_key, "m1", T0))
    except CrashError:
        alice.crash()
        sent.append(alice.core.compose(bob.identity.public_key, "m1", T0))  # the user retries
    dying.countdown = 10**9  # survived: disarm
    assert alice.core.store.outbox_size() == 2  # message, outbox row and session: all or nothing
    envelopes = [s.envelope for s in sent]
    dying = _die_after(bob, statements)
    try:
        result = bob.core.receive(envelopes, T0)
    except CrashError:
        bob.crash()
        result = bob.core.receive(envelopes, T0)  # the mailbox still holds them
    dying.countdown = 10**9
    assert [m.text for m in result.shown] == ["m0", "m1"]
    assert bob.core.receive(envelopes, T0).shown == ()
    assert (
        bob.core.receive([alice.core.compose(bob.identity.public_key, "m2", T0).envelope], T0)
        .shown[0]
        .text
        == "m2"
    )


def test_signed_prekey_rotates_on_schedule_and_old_one_answers_a_period(
    world: tuple[Peer, Peer, list[MailboxCore]],
) -> None:
    alice, bob, _ = world
    first = bob.core.prekey_record(T0)
    renewed = bob.core.prekey_record(T0 + 3600)  # not due: same key, fresh record
    assert renewed.seq > first.seq
    assert bundle_from_record(renewed) == bundle_from_record(first)
    later = T0 + ROTATE_AFTER
    second = bob.core.prekey_record(later)
    assert second.seq > renewed.seq
    assert bundle_from_record(second).signed_prekey != bundle_from_record(first).signed_prekey
    bob.crash()  # rotation state survives a restart
    third = bob.core.prekey_record(later + 1)
    assert bundle_from_record(third) == bundle_from_record(second) and third.seq > second.seq
    # alice still holds the old bundle: bob answers it until the next rotation
    sent = alice.core.compose(
        bob.identity.public_key, "old bundle", later, bundle_from_record(first)
    )
    assert [m.text for m in bob.core.receive([sent.envelope], later).shown] == ["old bundle"]


def test_accepting_a_request_names_the_contact(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    sent = alice.core.compose(bob.identity.public_key, "hi", T0, bundle)
    assert bob.core.receive([sent.envelope], T0).requests == (alice.identity.public_key,)
    bob.core.accept(alice.identity.public_key, "alice", T0)
    assert bob.core.store.contact_by_alias("alice") == alice.identity.public_key
    again = alice.core.compose(bob.identity.public_key, "again", T0)
    assert bob.core.receive([again.envelope], T0).requests == ()


def test_a_reinstalled_sender_opens_new_sessions_and_old_ones_are_evicted(
    world: tuple[Peer, Peer, list[MailboxCore]],
) -> None:
    _, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    for install in range(MAX_SESSIONS_PER_PEER + 2):  # alice loses her store each time
        fresh = Peer(SEED_A, bob.path.with_name(f"alice{install}.db"), 30 + install)
        sent = fresh.core.compose(bob.identity.public_key, f"install {install}", T0, bundle)
        assert bob.core.receive([sent.envelope], T0).refused == ()
    assert len(bob.core.store.sessions(fresh.identity.public_key)) == MAX_SESSIONS_PER_PEER


def test_seen_envelopes_are_pruned_after_their_window(
    world: tuple[Peer, Peer, list[MailboxCore]],
) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    sent = alice.core.compose(bob.identity.public_key, "hi", T0, bundle)
    bob.core.receive([sent.envelope], T0)
    assert bob.core.prune(T0 + SEEN_ENVELOPES_KEPT - 1) == 0
    assert bob.core.prune(T0 + SEEN_ENVELOPES_KEPT + 1) == 1
    # the message id still dedupes: the same envelope is refused by the ratchet, not shown
    assert bob.core.receive([sent.envelope], T0).shown == ()


def test_status_tells_copies_then_receipts(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, mailboxes = world
    bob.shown = []
    open_session(alice, bob)
    message_id = alice.core.due(T0)[0].message_id
    deposit_due(alice, bob, mailboxes, T0, {0, 1, 2})
    status = alice.core.status(message_id)
    assert status.queued and status.state is OutboxState.HELD and status.copies == 3
    alice.core.receive(drain(bob, mailboxes, T0, {0, 1, 2}), T0)
    status = alice.core.status(message_id)
    assert not status.queued and status.delivered and not status.read
    for reply in bob.core.read(alice.identity.public_key, (message_id,), T0):
        alice.core.receive([reply.envelope], T0)
    assert alice.core.status(message_id).read


def test_recipient_crash_between_commit_and_ack(
    world: tuple[Peer, Peer, list[MailboxCore]],
) -> None:
    """The mailbox keeps what was not acknowledged; the second drain shows nothing twice."""
    alice, bob, mailboxes = world
    bob.shown = []
    open_session(alice, bob)
    alice.core.compose(bob.identity.public_key, "m1", T0)
    deposit_due(alice, bob, mailboxes, T0, {0, 1, 2})
    fetched = mailboxes[0].handle(
        sign_fetch(bob.identity, mailboxes[0].own_key, 1, int(T0), 256), T0
    )
    first = bob.core.receive([item.envelope for item in fetched.items], T0)
    assert [m.text for m in first.shown] == ["m0", "m1"]
    bob.crash()  # before the ACK and before the receipts left
    replies = drain(bob, mailboxes, T0 + 1, {0, 1, 2})
    assert bob.shown == []  # nothing shown again
    alice.core.receive(replies, T0 + 1)  # the receipts are made again from the duplicates
    assert alice.core.store.outbox_size() == 0
    assert all(m.held_for(bob.identity.public_key) == 0 for m in mailboxes)


def test_a_version_1_store_migrates_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # a home written by schema version 1
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                old.execute(statement)
        old.execute(
            "INSERT INTO messages (message_id, peer, direction, seq, prev_hash, hash, text, "
            "sent_at_ms, stored_at, shown, chain_ok) VALUES (?, ?, 0, 1, ?, ?, 'kept', 0, 0, 1, 1)",
            (bytes(16), bytes(32), bytes(32), bytes(32)),
        )
        old.execute("PRAGMA user_version = 1")
    store = ChatStore(path)
    assert store.schema_version == SCHEMA_VERSION == 4
    assert [m.text for m in store.history(bytes(32))] == ["kept"]


def test_history_is_in_shown_order(world: tuple[Peer, Peer, list[MailboxCore]]) -> None:
    alice, bob, _ = world
    bundle = bundle_from_record(bob.core.prekey_record(T0))
    first = alice.core.compose(bob.identity.public_key, "first", T0, bundle)
    second = alice.core.compose(bob.identity.public_key, "second", T0)
    bob.core.receive([second.envelope], T0)  # stored first, shown only after "first"
    reply = bob.core.compose(alice.identity.public_key, "reply", T0)
    bob.core.receive([first.envelope], T0)
    texts = [m.text for m in bob.core.store.history(alice.identity.public_key)]
    assert texts == ["reply", "first", "second"]
    assert reply.message_id in {
        m.message_id for m in bob.core.store.history(alice.identity.public_key)
    }
