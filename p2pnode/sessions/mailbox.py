"""The mailbox core a supernode runs: holds sealed envelopes for peers that asked it to.

Request in, response out (``handle(request, now)``); no sockets, no clock. State
lives in SQLite (stdlib ``sqlite3``, WAL) so a restart keeps every acknowledged
deposit: a deposit is answered OK only after its transaction committed.

Invariants:
- A deposit is stored only for a recipient whose unexpired MAILBOX_LIST record
  names this mailbox (``REGISTER``), and only when signed by its sender for this
  mailbox; otherwise a refusal code, never a silent drop.
- Bounds: per recipient and per sender, count and bytes (``MailboxLimits``);
  an item over a bound is refused with the code naming it, the rest of the
  batch is judged on its own.
- Items are kept ``retention`` seconds (30 days by default), then ``expire``
  deletes them; the recipient deletes earlier by acknowledging (``ACK``).
- Deposits are idempotent: an envelope is named by its hash, so a retry of the
  same bytes is ``DUPLICATE`` (stored once, acknowledged again).
- One-time prekeys (``UPLOAD_PREKEYS``, ``TAKE_PREKEY``) live in the same file,
  only for owners it serves, each handed out once (``mailbox_prekeys.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from p2pnode.records.codec import RecordDecodeError, decode_record
from p2pnode.records.policy import Accepted, accept
from p2pnode.sessions.chat_message import (
    MAX_ENVELOPE_BYTES,
    ChatDecodeError,
    decode_envelope,
    envelope_id,
)
from p2pnode.sessions.mailbox_list import MailboxListDecodeError, mailboxes_from_record
from p2pnode.sessions.mailbox_prekeys import MailboxPrekeys
from p2pnode.sessions.mailbox_wire import (
    AckRequest,
    DepositRequest,
    FetchRequest,
    MailboxItem,
    MailboxResponse,
    RegisterRequest,
    Request,
    RequestKind,
    SignedRequest,
    Status,
    TakePrekeyRequest,
    UploadPrekeysRequest,
    signature_valid,
)
from p2pnode.sessions.one_time_prekeys import TakeLimits

__all__ = ["MailboxCore", "MailboxLimits", "MailboxStatistics"]

_DAY = 24 * 3600
_RECIPIENT = 0
_SENDER = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    recipient BLOB PRIMARY KEY, record BLOB NOT NULL, seq INTEGER NOT NULL,
    expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    recipient BLOB NOT NULL, item_id BLOB NOT NULL, sender BLOB NOT NULL,
    envelope BLOB NOT NULL, deposited_at INTEGER NOT NULL,
    PRIMARY KEY (recipient, item_id));
CREATE INDEX IF NOT EXISTS items_by_age ON items (deposited_at);
CREATE INDEX IF NOT EXISTS items_by_sender ON items (sender);
"""
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class MailboxLimits:
    """What one peer can make a mailbox hold."""

    recipient_count: int = 20_000
    recipient_bytes: int = 256 * 1024 * 1024
    sender_count: int = 5_000
    sender_bytes: int = 64 * 1024 * 1024
    retention: int = 30 * _DAY
    max_skew: int = 300  # seconds a signed request's timestamp may be off
    max_fetch_bytes: int = 2 * 1024 * 1024  # per FETCH response
    max_recipients: int = 100_000  # grants held (each costs a row and a record)


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    items: int
    bytes: int
    recipients: int
    refused: int
    prekeys: int = 0  # one-time prekeys held, all owners
    prekeys_handed_out: int = 0  # since start


class MailboxCore:
    """The mailbox of the supernode whose Ed25519 key is ``own_key``."""

    def __init__(
        self,
        own_key: bytes,
        path: Path | str,
        limits: MailboxLimits | None = None,
        *,
        synchronous: str = "NORMAL",
        take_limits: TakeLimits | None = None,
    ) -> None:
        self.own_key = own_key
        self.limits = limits or MailboxLimits()
        self.refused = 0
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process (the crash); FULL adds OS-crash safety
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )
        # Usage and grants live in memory, derived from the tables at start (one source of
        # truth, no counters to drift): a deposit costs BEGIN, INSERT, COMMIT.
        self._used: dict[tuple[bytes, int], tuple[int, int]] = {}
        self._pending: dict[tuple[bytes, int], tuple[int, int]] = {}
        for role, column in ((_RECIPIENT, "recipient"), (_SENDER, "sender")):
            rows = self._db.execute(
                f"SELECT {column}, count(*), sum(length(envelope)) FROM items GROUP BY {column}"  # noqa: S608 - column from a fixed pair
            ).fetchall()
            for party, count, size in rows:
                self._used[(bytes(party), role)] = (int(count), int(size))
        self._grants: dict[bytes, int] = {
            bytes(r): int(e)
            for r, e in self._db.execute("SELECT recipient, expires_at FROM grants")
        }
        self.prekeys = MailboxPrekeys(self._db, take_limits)

    def close(self) -> None:
        self._db.close()

    def handle(self, request: Request, now: float) -> MailboxResponse:
        """Answer one decoded request (the adapter decodes and encodes)."""
        match request:
            case RegisterRequest():
                return self._register(request, now)
            case DepositRequest():
                return self._deposit(request, now)
            case FetchRequest():
                return self._fetch(request, now)
            case AckRequest():
                return self._ack(request, now)
            case UploadPrekeysRequest() | TakePrekeyRequest():
                return self._prekey_request(request, now)

    def _refuse(self, kind: RequestKind, rid: int, status: Status) -> MailboxResponse:
        self.refused += 1
        return MailboxResponse(kind, rid, status)

    def _signed_and_fresh(self, request: SignedRequest, now: float) -> Status:
        if abs(request.ts - now) > self.limits.max_skew:
            return Status.STALE
        if not signature_valid(self.own_key, request):
            return Status.BAD_SIGNATURE
        return Status.OK

    def _register(self, request: RegisterRequest, now: float) -> MailboxResponse:
        kind = RequestKind.REGISTER
        try:
            record = decode_record(request.record)
            entries = mailboxes_from_record(record)
        except (RecordDecodeError, MailboxListDecodeError):
            return self._refuse(kind, request.rid, Status.BAD_RECORD)
        if not any(entry.key == self.own_key for entry in entries):
            return self._refuse(kind, request.rid, Status.BAD_RECORD)
        row = self._db.execute(
            "SELECT record FROM grants WHERE recipient = ?", (record.owner,)
        ).fetchone()
        stored = None
        if row is not None:
            try:
                stored = decode_record(row[0])
            except RecordDecodeError:
                stored = None
        if stored is None and len(self._grants) >= self.limits.max_recipients:
            return self._refuse(kind, request.rid, Status.BUSY)
        verdict = accept(record, stored, record.key, now)
        if not isinstance(verdict, Accepted):
            return self._refuse(kind, request.rid, Status.BAD_RECORD)
        self._db.execute(
            "INSERT OR REPLACE INTO grants (recipient, record, seq, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (record.owner, record.encoded, record.seq, record.expires_at),
        )
        self._grants[record.owner] = record.expires_at
        return MailboxResponse(kind, request.rid, Status.OK)

    def _prekey_request(
        self, request: UploadPrekeysRequest | TakePrekeyRequest, now: float
    ) -> MailboxResponse:
        """Signed and fresh, for an owner we serve; then the prekey store answers."""
        kind = (
            RequestKind.UPLOAD_PREKEYS
            if isinstance(request, UploadPrekeysRequest)
            else RequestKind.TAKE_PREKEY
        )
        check = self._signed_and_fresh(request, now)
        if check is not Status.OK:
            return self._refuse(kind, request.rid, check)
        if self._grants.get(request.owner, 0) <= now:
            return self._refuse(kind, request.rid, Status.NOT_MAILBOX)
        if isinstance(request, UploadPrekeysRequest):
            response = self.prekeys.upload(request, now)
        else:
            response = self.prekeys.take(request, now)
        if not response.status.stored:
            self.refused += 1
        return response

    def _usage(self, party: bytes, role: int) -> tuple[int, int]:
        count, size = self._used.get((party, role), (0, 0))
        pending_count, pending_size = self._pending.get((party, role), (0, 0))
        return count + pending_count, size + pending_size

    def _add_usage(self, party: bytes, role: int, count: int, size: int) -> None:
        """Record a change in this transaction; ``_commit`` applies it, a rollback drops it."""
        old_count, old_size = self._pending.get((party, role), (0, 0))
        self._pending[(party, role)] = (old_count + count, old_size + size)

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._pending.clear()

    def _commit(self) -> None:
        self._db.execute("COMMIT")
        for key, (count, size) in self._pending.items():
            old_count, old_size = self._used.get(key, (0, 0))
            if old_count + count <= 0:
                self._used.pop(key, None)
            else:
                self._used[key] = (old_count + count, old_size + size)
        self._pending.clear()

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")
        self._pending.clear()

    def _quota_status(
        self, r_usage: tuple[int, int], s_usage: tuple[int, int], size: int
    ) -> Status:
        limits = self.limits
        if r_usage[0] + 1 > limits.recipient_count:
            return Status.RECIPIENT_FULL_COUNT
        if r_usage[1] + size > limits.recipient_bytes:
            return Status.RECIPIENT_FULL_BYTES
        if s_usage[0] + 1 > limits.sender_count:
            return Status.SENDER_FULL_COUNT
        if s_usage[1] + size > limits.sender_bytes:
            return Status.SENDER_FULL_BYTES
        return Status.OK

    def _deposit(self, request: DepositRequest, now: float) -> MailboxResponse:
        kind = RequestKind.DEPOSIT
        check = self._signed_and_fresh(request, now)
        if check is not Status.OK:
            return self._refuse(kind, request.rid, check)
        if self._grants.get(request.recipient, 0) <= now:
            return self._refuse(kind, request.rid, Status.NOT_MAILBOX)
        statuses: list[Status] = []
        self._begin()
        try:
            r_usage = self._usage(request.recipient, _RECIPIENT)
            s_usage = self._usage(request.sender, _SENDER)
            for envelope in request.envelopes:
                item_id = envelope_id(envelope)
                status = self._judge(request, envelope, item_id, r_usage, s_usage)
                if status is Status.OK:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO items (recipient, item_id, sender, envelope, "
                        "deposited_at) VALUES (?, ?, ?, ?, ?)",
                        (request.recipient, item_id, request.sender, envelope, int(now)),
                    )
                    if cursor.rowcount == 0:
                        status = Status.DUPLICATE
                    else:
                        size = len(envelope)
                        r_usage = (r_usage[0] + 1, r_usage[1] + size)
                        s_usage = (s_usage[0] + 1, s_usage[1] + size)
                        self._add_usage(request.recipient, _RECIPIENT, 1, size)
                        self._add_usage(request.sender, _SENDER, 1, size)
                if not status.stored:
                    self.refused += 1
                statuses.append(status)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        overall = next((s for s in statuses if not s.stored), Status.OK)
        return MailboxResponse(kind, request.rid, overall, statuses=tuple(statuses))

    def _judge(
        self,
        request: DepositRequest,
        envelope: bytes,
        item_id: bytes,
        r_usage: tuple[int, int],
        s_usage: tuple[int, int],
    ) -> Status:
        """OK to insert (the INSERT itself tells a duplicate), or why not."""
        if len(envelope) > MAX_ENVELOPE_BYTES:
            return Status.TOO_LARGE
        try:
            decoded = decode_envelope(envelope)
        except ChatDecodeError:
            return Status.MALFORMED
        if decoded.recipient != request.recipient or decoded.sender != request.sender:
            return Status.MALFORMED
        status = self._quota_status(r_usage, s_usage, len(envelope))
        if status is not Status.OK:  # full, but a retry of what we hold is still "held"
            exists = self._db.execute(
                "SELECT 1 FROM items WHERE recipient = ? AND item_id = ?",
                (request.recipient, item_id),
            ).fetchone()
            if exists is not None:
                return Status.DUPLICATE
        return status

    def _fetch(self, request: FetchRequest, now: float) -> MailboxResponse:
        kind = RequestKind.FETCH
        check = self._signed_and_fresh(request, now)
        if check is not Status.OK:
            return self._refuse(kind, request.rid, check)
        rows = self._db.execute(
            "SELECT item_id, envelope, deposited_at FROM items WHERE recipient = ? "
            "ORDER BY deposited_at, rowid LIMIT ?",
            (request.recipient, request.limit + 1),
        ).fetchall()
        items: list[MailboxItem] = []
        total = 0
        for item_id, envelope, deposited_at in rows[: request.limit]:
            if items and total + len(envelope) > self.limits.max_fetch_bytes:
                break
            total += len(envelope)
            items.append(MailboxItem(item_id, envelope, deposited_at))
        more = len(rows) > len(items)
        return MailboxResponse(kind, request.rid, Status.OK, items=tuple(items), more=more)

    def _delete(self, recipient: bytes, item_ids: tuple[bytes, ...]) -> int:
        deleted = 0
        for item_id in item_ids:
            row = self._db.execute(
                "DELETE FROM items WHERE recipient = ? AND item_id = ? RETURNING sender, "
                "length(envelope)",
                (recipient, item_id),
            ).fetchone()
            if row is not None:
                deleted += 1
                self._add_usage(recipient, _RECIPIENT, -1, -int(row[1]))
                self._add_usage(row[0], _SENDER, -1, -int(row[1]))
        return deleted

    def _ack(self, request: AckRequest, now: float) -> MailboxResponse:
        kind = RequestKind.ACK
        check = self._signed_and_fresh(request, now)
        if check is not Status.OK:
            return self._refuse(kind, request.rid, check)
        self._begin()
        try:
            self._delete(request.recipient, request.item_ids)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return MailboxResponse(kind, request.rid, Status.OK)

    def expire(self, now: float) -> int:
        """Delete items older than the retention and lapsed grants; returns items deleted."""
        cutoff = int(now) - self.limits.retention
        self._begin()
        try:
            rows = self._db.execute(
                "SELECT recipient, item_id FROM items WHERE deposited_at < ?", (cutoff,)
            ).fetchall()
            deleted = 0
            for recipient, item_id in rows:
                deleted += self._delete(recipient, (item_id,))
            self._db.execute("DELETE FROM grants WHERE expires_at <= ?", (int(now),))
            self.prekeys.forget_lapsed({r for r, e in self._grants.items() if e > now})
            self._commit()
        except BaseException:
            self._rollback()
            raise
        self._grants = {r: e for r, e in self._grants.items() if e > now}
        return deleted

    def held_for(self, recipient: bytes) -> int:
        """How many items wait for ``recipient``."""
        row = self._db.execute(
            "SELECT count(*) FROM items WHERE recipient = ?", (recipient,)
        ).fetchone()
        return int(row[0])

    def statistics(self) -> MailboxStatistics:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(envelope)), 0), count(DISTINCT recipient) "
            "FROM items"
        ).fetchone()
        return MailboxStatistics(
            int(row[0]),
            int(row[1]),
            int(row[2]),
            self.refused,
            self.prekeys.count(),
            self.prekeys.handed_out,
        )
