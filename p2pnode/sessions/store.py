"""The local message store: one SQLite file in the node's home.

Tables: contacts, conversations, messages, receipts, outbox, sessions, our
X3DH state, and where each of our one-time prekeys was uploaded. An incoming
message's ``read_here`` says the person here has seen it (the unread counts);
the ``receipts`` table holds the receipts peers sent us.
``PRAGMA user_version`` is the schema version; ``MIGRATIONS[i]`` takes version
``i`` to ``i + 1`` inside one transaction, so an old home opens with every table
it lacks and nothing it had is lost.

Invariants:
- WAL with ``synchronous=FULL``: ratchet state and the outbox must survive an
  OS crash too, since a lost ratchet update means a reused key.
- Every change that belongs together runs in one ``transaction()`` (``BEGIN
  IMMEDIATE`` ... ``COMMIT``): a message and the ratchet state its
  encryption or decryption advanced; an outbox row and the receipt that ends
  it. A crash between statements rolls back to the last whole step.
- Messages are unique by id: inserting a known id is a no-op that says so.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.sessions.outbox import OutboxState

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ChatStore",
    "Conversation",
    "Direction",
    "MessageRow",
    "OutboxRow",
]

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1
    """
    CREATE TABLE own_keys (id INTEGER PRIMARY KEY CHECK (id = 1), x3dh TEXT NOT NULL,
        prekey_created_at INTEGER NOT NULL, prekey_seq INTEGER NOT NULL);
    CREATE TABLE contacts (peer BLOB PRIMARY KEY, alias TEXT UNIQUE, accepted INTEGER NOT NULL,
        added_at INTEGER NOT NULL);
    CREATE TABLE sessions (peer BLOB NOT NULL, session_id BLOB NOT NULL, state TEXT NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY (peer, session_id));
    CREATE TABLE conversations (peer BLOB PRIMARY KEY, next_seq INTEGER NOT NULL,
        last_hash BLOB NOT NULL, shown_seq INTEGER NOT NULL, shown_hash BLOB NOT NULL);
    CREATE TABLE messages (message_id BLOB PRIMARY KEY, peer BLOB NOT NULL,
        direction INTEGER NOT NULL, seq INTEGER NOT NULL, prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL, text TEXT NOT NULL, sent_at_ms INTEGER NOT NULL,
        stored_at REAL NOT NULL, shown INTEGER NOT NULL DEFAULT 0,
        chain_ok INTEGER NOT NULL DEFAULT 1);
    CREATE INDEX messages_by_conversation ON messages (peer, direction, seq);
    CREATE TABLE receipts (message_id BLOB NOT NULL, kind INTEGER NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (message_id, kind));
    CREATE TABLE outbox (envelope_id BLOB PRIMARY KEY, message_id BLOB NOT NULL,
        peer BLOB NOT NULL, envelope BLOB NOT NULL, state INTEGER NOT NULL,
        attempts INTEGER NOT NULL, next_attempt REAL NOT NULL, copies INTEGER NOT NULL,
        created_at REAL NOT NULL);
    CREATE INDEX outbox_due ON outbox (next_attempt);
    CREATE INDEX outbox_by_message ON outbox (message_id);
    CREATE TABLE seen_envelopes (envelope_id BLOB PRIMARY KEY, message_id BLOB NOT NULL,
        peer BLOB NOT NULL, seen_at REAL NOT NULL);
    """,
    # 1 -> 2: history in the order messages were shown (a gap delays an incoming one),
    # not the order they were stored
    """
    ALTER TABLE messages ADD COLUMN shown_order INTEGER;
    UPDATE messages SET shown_order = rowid WHERE direction = 0 OR shown = 1;
    CREATE INDEX messages_by_shown_order ON messages (shown_order);
    """,
    # 2 -> 3: unread counts kept by the node (the app page reloads; the count must not reset).
    # Messages shown before this version count as read: no flood of old badges.
    """
    ALTER TABLE messages ADD COLUMN read_here INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET read_here = 1 WHERE direction = 1 AND shown = 1;
    """,
    # 3 -> 4: our one-time prekeys handed to mailboxes (the private halves live in the
    # X3DH state): which mailbox holds each, and when it left there (taken, or the
    # mailbox no longer named), so the private half is forgotten once no message can
    # still use it
    """
    CREATE TABLE one_time_prekeys (public BLOB PRIMARY KEY, mailbox BLOB NOT NULL,
        uploaded_at REAL NOT NULL, gone_at REAL);
    CREATE INDEX one_time_prekeys_by_mailbox ON one_time_prekeys (mailbox);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class Direction(enum.IntEnum):
    OUT = 0
    IN = 1


@dataclass(frozen=True, slots=True)
class Conversation:
    peer: bytes
    next_seq: int  # our next outgoing seq
    last_hash: bytes  # hash of our last outgoing text
    shown_seq: int  # highest incoming seq shown (contiguous)
    shown_hash: bytes  # hash of that message


@dataclass(frozen=True, slots=True)
class MessageRow:
    message_id: bytes
    peer: bytes
    direction: Direction
    seq: int
    prev_hash: bytes
    hash: bytes
    text: str
    sent_at_ms: int
    shown: bool
    chain_ok: bool


@dataclass(frozen=True, slots=True)
class OutboxRow:
    envelope_id: bytes
    message_id: bytes
    peer: bytes
    envelope: bytes
    state: OutboxState
    attempts: int
    next_attempt: float
    copies: int


class ChatStore:
    """Typed access to the store; callers group writes with ``transaction()``."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._depth = 0
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"store schema {version} is newer than this program's")
        for index in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in MIGRATIONS[index].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {index + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic step; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # own keys
    def own_keys(self) -> tuple[str, int, int] | None:
        row = self._db.execute(
            "SELECT x3dh, prekey_created_at, prekey_seq FROM own_keys WHERE id = 1"
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def save_own_keys(self, x3dh_json: str, prekey_created_at: int, prekey_seq: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO own_keys (id, x3dh, prekey_created_at, prekey_seq) "
            "VALUES (1, ?, ?, ?)",
            (x3dh_json, prekey_created_at, prekey_seq),
        )

    # one-time prekeys (the public halves; the private ones are in the X3DH state)
    def add_one_time_prekeys(self, mailbox: bytes, publics: tuple[bytes, ...], now: float) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO one_time_prekeys (public, mailbox, uploaded_at, gone_at) "
            "VALUES (?, ?, ?, NULL)",
            [(public, mailbox, now) for public in publics],
        )

    def one_time_prekeys_at(self, mailbox: bytes) -> set[bytes]:
        """Our keys uploaded to ``mailbox`` and not known to have left it."""
        rows = self._db.execute(
            "SELECT public FROM one_time_prekeys WHERE mailbox = ? AND gone_at IS NULL",
            (mailbox,),
        ).fetchall()
        return {bytes(row[0]) for row in rows}

    def one_time_prekey_mailboxes(self) -> set[bytes]:
        """Mailboxes that still hold keys of ours (as far as we know)."""
        rows = self._db.execute(
            "SELECT DISTINCT mailbox FROM one_time_prekeys WHERE gone_at IS NULL"
        ).fetchall()
        return {bytes(row[0]) for row in rows}

    def mark_one_time_prekeys_gone(self, publics: tuple[bytes, ...], now: float) -> None:
        self._db.executemany(
            "UPDATE one_time_prekeys SET gone_at = ? WHERE public = ? AND gone_at IS NULL",
            [(now, public) for public in publics],
        )

    def one_time_prekeys_gone_before(self, before: float) -> list[bytes]:
        rows = self._db.execute(
            "SELECT public FROM one_time_prekeys WHERE gone_at < ?", (before,)
        ).fetchall()
        return [bytes(row[0]) for row in rows]

    def delete_one_time_prekey(self, public: bytes) -> None:
        self._db.execute("DELETE FROM one_time_prekeys WHERE public = ?", (public,))

    def one_time_prekey_count(self) -> int:
        """Keys whose private half we still hold (at a mailbox, or taken and awaited)."""
        return int(self._db.execute("SELECT count(*) FROM one_time_prekeys").fetchone()[0])

    # contacts
    def add_contact(self, peer: bytes, alias: str | None, accepted: bool, now: float) -> None:
        self._db.execute(
            "INSERT INTO contacts (peer, alias, accepted, added_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (peer) DO UPDATE SET alias = coalesce(excluded.alias, alias), "
            "accepted = max(accepted, excluded.accepted)",
            (peer, alias, int(accepted), int(now)),
        )

    def contact_by_alias(self, alias: str) -> bytes | None:
        row = self._db.execute("SELECT peer FROM contacts WHERE alias = ?", (alias,)).fetchone()
        return None if row is None else bytes(row[0])

    def is_accepted(self, peer: bytes) -> bool:
        row = self._db.execute("SELECT accepted FROM contacts WHERE peer = ?", (peer,)).fetchone()
        return row is not None and bool(row[0])

    # sessions
    def sessions(self, peer: bytes) -> list[tuple[bytes, str]]:
        """(session id, state) of ``peer``'s sessions, most recently used first."""
        rows = self._db.execute(
            "SELECT session_id, state FROM sessions WHERE peer = ? ORDER BY updated_at DESC",
            (peer,),
        ).fetchall()
        return [(bytes(r[0]), str(r[1])) for r in rows]

    def save_session(self, peer: bytes, session_id: bytes, state: str, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sessions (peer, session_id, state, updated_at) "
            "VALUES (?, ?, ?, ?)",
            (peer, session_id, state, now),
        )

    def delete_session(self, peer: bytes, session_id: bytes) -> None:
        self._db.execute(
            "DELETE FROM sessions WHERE peer = ? AND session_id = ?", (peer, session_id)
        )

    # conversations
    def conversation(self, peer: bytes) -> Conversation:
        row = self._db.execute(
            "SELECT next_seq, last_hash, shown_seq, shown_hash FROM conversations WHERE peer = ?",
            (peer,),
        ).fetchone()
        if row is None:
            zero = bytes(32)
            return Conversation(peer, 1, zero, 0, zero)
        return Conversation(peer, int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]))

    def save_conversation(self, conversation: Conversation) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO conversations (peer, next_seq, last_hash, shown_seq, "
            "shown_hash) VALUES (?, ?, ?, ?, ?)",
            (
                conversation.peer,
                conversation.next_seq,
                conversation.last_hash,
                conversation.shown_seq,
                conversation.shown_hash,
            ),
        )

    # messages
    def insert_message(self, row: MessageRow, now: float) -> bool:
        """Store a message; False when its id is already known (a duplicate)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO messages (message_id, peer, direction, seq, prev_hash, hash, "
            "text, sent_at_ms, stored_at, shown, chain_ok, shown_order) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? THEN "
            "(SELECT coalesce(max(shown_order), 0) + 1 FROM messages) END)",
            (
                row.message_id,
                row.peer,
                int(row.direction),
                row.seq,
                row.prev_hash,
                row.hash,
                row.text,
                row.sent_at_ms,
                now,
                int(row.shown),
                int(row.chain_ok),
                int(row.shown),
            ),
        )
        return cursor.rowcount == 1

    def has_message(self, message_id: bytes) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        return row is not None

    def incoming_by_seq(self, peer: bytes, seq: int) -> MessageRow | None:
        row = self._db.execute(
            "SELECT message_id, peer, direction, seq, prev_hash, hash, text, sent_at_ms, shown, "
            "chain_ok FROM messages WHERE peer = ? AND direction = 1 AND seq = ?",
            (peer, seq),
        ).fetchone()
        return None if row is None else _message(row)

    def mark_shown(self, message_id: bytes, chain_ok: bool) -> None:
        self._db.execute(
            "UPDATE messages SET shown = 1, chain_ok = ?, "
            "shown_order = (SELECT coalesce(max(shown_order), 0) + 1 FROM messages) "
            "WHERE message_id = ?",
            (int(chain_ok), message_id),
        )

    def history(self, peer: bytes, limit: int = 1000) -> list[MessageRow]:
        """Shown incoming and all outgoing messages, in the order they were shown."""
        rows = self._db.execute(
            "SELECT message_id, peer, direction, seq, prev_hash, hash, text, sent_at_ms, shown, "
            "chain_ok FROM messages WHERE peer = ? AND shown_order IS NOT NULL "
            "ORDER BY shown_order LIMIT ?",
            (peer, limit),
        ).fetchall()
        return [_message(r) for r in rows]

    def mark_read_here(self, peer: bytes, message_ids: tuple[bytes, ...]) -> list[bytes]:
        """Mark ``peer``'s shown incoming messages read here; the ids newly marked (ids
        of other peers, of our own or of held messages, and repeats, are ignored)."""
        newly: list[bytes] = []
        for message_id in message_ids:
            cursor = self._db.execute(
                "UPDATE messages SET read_here = 1 WHERE message_id = ? AND peer = ? "
                "AND direction = 1 AND shown = 1 AND read_here = 0",
                (message_id, peer),
            )
            if cursor.rowcount == 1:
                newly.append(message_id)
        return newly

    def unread_counts(self) -> dict[bytes, int]:
        """Shown incoming messages not yet read here, per peer (peers with none left out)."""
        rows = self._db.execute(
            "SELECT peer, count(*) FROM messages WHERE direction = 1 AND shown = 1 "
            "AND read_here = 0 GROUP BY peer"
        ).fetchall()
        return {bytes(r[0]): int(r[1]) for r in rows}

    def unshown(self, peer: bytes) -> list[MessageRow]:
        rows = self._db.execute(
            "SELECT message_id, peer, direction, seq, prev_hash, hash, text, sent_at_ms, shown, "
            "chain_ok FROM messages WHERE peer = ? AND direction = 1 AND shown = 0 ORDER BY seq",
            (peer,),
        ).fetchall()
        return [_message(r) for r in rows]

    def seen_envelope(self, envelope_id: bytes) -> tuple[bytes, bytes] | None:
        """(peer, message id) of an envelope already decrypted, else None."""
        row = self._db.execute(
            "SELECT peer, message_id FROM seen_envelopes WHERE envelope_id = ?", (envelope_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def add_seen_envelope(
        self, envelope_id: bytes, peer: bytes, message_id: bytes, now: float
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO seen_envelopes (envelope_id, message_id, peer, seen_at) "
            "VALUES (?, ?, ?, ?)",
            (envelope_id, message_id, peer, now),
        )

    def prune_seen(self, before: float) -> int:
        cursor = self._db.execute("DELETE FROM seen_envelopes WHERE seen_at < ?", (before,))
        return cursor.rowcount

    # receipts
    def add_receipt(self, message_id: bytes, kind: int, now: float) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO receipts (message_id, kind, at) VALUES (?, ?, ?)",
            (message_id, kind, now),
        )
        return cursor.rowcount == 1

    def receipts(self, message_id: bytes) -> set[int]:
        rows = self._db.execute(
            "SELECT kind FROM receipts WHERE message_id = ?", (message_id,)
        ).fetchall()
        return {int(r[0]) for r in rows}

    # outbox
    def add_outbox(self, row: OutboxRow, now: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (envelope_id, message_id, peer, envelope, state, "
            "attempts, next_attempt, copies, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.envelope_id,
                row.message_id,
                row.peer,
                row.envelope,
                int(row.state),
                row.attempts,
                row.next_attempt,
                row.copies,
                now,
            ),
        )

    def update_outbox(
        self,
        envelope_id: bytes,
        state: OutboxState,
        attempts: int,
        next_attempt: float,
        copies: int,
    ) -> None:
        self._db.execute(
            "UPDATE outbox SET state = ?, attempts = ?, next_attempt = ?, copies = ? "
            "WHERE envelope_id = ?",
            (int(state), attempts, next_attempt, copies, envelope_id),
        )

    def remove_outbox_for_message(self, message_id: bytes) -> int:
        cursor = self._db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
        return cursor.rowcount

    def outbox_for_message(self, message_id: bytes) -> OutboxRow | None:
        row = self._db.execute(
            "SELECT envelope_id, message_id, peer, envelope, state, attempts, next_attempt, copies "
            "FROM outbox WHERE message_id = ?",
            (message_id,),
        ).fetchone()
        return None if row is None else _outbox(row)

    def due_outbox(self, now: float, limit: int = 256) -> list[OutboxRow]:
        rows = self._db.execute(
            "SELECT envelope_id, message_id, peer, envelope, state, attempts, next_attempt, copies "
            "FROM outbox WHERE next_attempt <= ? ORDER BY created_at, rowid LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_outbox(r) for r in rows]

    def next_outbox_deadline(self) -> float | None:
        row = self._db.execute("SELECT min(next_attempt) FROM outbox").fetchone()
        return None if row[0] is None else float(row[0])

    def outbox_size(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _message(row: Any) -> MessageRow:
    message_id, peer, direction, seq, prev_hash, hash_, text, sent_at_ms, shown, chain_ok = row
    return MessageRow(
        message_id=bytes(message_id),
        peer=bytes(peer),
        direction=Direction(direction),
        seq=int(seq),
        prev_hash=bytes(prev_hash),
        hash=bytes(hash_),
        text=str(text),
        sent_at_ms=int(sent_at_ms),
        shown=bool(shown),
        chain_ok=bool(chain_ok),
    )


def _outbox(row: Any) -> OutboxRow:
    envelope_id, message_id, peer, envelope, state, attempts, next_attempt, copies = row
    return OutboxRow(
        envelope_id=bytes(envelope_id),
        message_id=bytes(message_id),
        peer=bytes(peer),
        envelope=bytes(envelope),
        state=OutboxState(state),
        attempts=int(attempts),
        next_attempt=float(next_attempt),
        copies=int(copies),
    )
