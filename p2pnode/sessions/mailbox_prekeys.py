"""The mailbox's one-time prekey store: uploads by owners, each key handed out once.

Part of ``MailboxCore`` (it shares the core's SQLite connection, so an upload or a
take is one transaction next to the deposits): request in, response out, ``now``
passed in. The mailbox's own signature and freshness checks run before these
handlers (``MailboxCore._signed_and_fresh``).

Invariants:
- Hand-out-once: a take selects and deletes one row inside ``BEGIN IMMEDIATE``
  and answers only after the commit, so two takers never get the same key, and a
  key answered is gone from disk (a restart cannot hand it out again).
- Only an owner the mailbox serves (an unexpired grant: ``REGISTER``) may upload,
  and keys are taken only from such an owner; every uploaded key must carry the
  owner's signature (``BAD_SIGNATURE`` per key otherwise).
- Bounds: at most ``OPK_MAX_PER_OWNER`` keys per owner (``PREKEYS_FULL`` per key
  beyond), ``MAX_UPLOAD_PREKEYS`` per request (the decoder), and the take rate
  (``TakeRateLimiter``: ``RATE_LIMITED``). A requester may not take its own keys.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from p2pnode.sessions.mailbox_wire import (
    MailboxResponse,
    RequestKind,
    Status,
    TakePrekeyRequest,
    UploadPrekeysRequest,
)
from p2pnode.sessions.one_time_prekeys import (
    OPK_MAX_PER_OWNER,
    OneTimePrekey,
    TakeLimits,
    TakeRateLimiter,
    TakeVerdict,
    one_time_prekey_valid,
)

__all__ = ["PREKEY_SCHEMA", "MailboxPrekeys"]

PREKEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS prekeys (
    owner BLOB NOT NULL, public BLOB NOT NULL, signature BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL, PRIMARY KEY (owner, public));
"""


class MailboxPrekeys:
    """One-time prekeys held by one mailbox (``db`` is the mailbox core's connection)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        limits: TakeLimits | None = None,
        max_per_owner: int = OPK_MAX_PER_OWNER,
    ) -> None:
        self._db = db
        self._db.executescript(PREKEY_SCHEMA)
        self.rate = TakeRateLimiter(limits)
        self.max_per_owner = max_per_owner
        self.handed_out = 0
        self.refused: Counter[TakeVerdict | Status] = Counter()

    def held(self, owner: bytes) -> tuple[OneTimePrekey, ...]:
        rows = self._db.execute(
            "SELECT public, signature FROM prekeys WHERE owner = ? ORDER BY uploaded_at, rowid",
            (owner,),
        ).fetchall()
        return tuple(OneTimePrekey(bytes(p), bytes(s)) for p, s in rows)

    def upload(self, request: UploadPrekeysRequest, now: float) -> MailboxResponse:
        """Delete the retired keys, store the new ones (one status each); answer every
        key still held."""
        kind = RequestKind.UPLOAD_PREKEYS
        statuses: list[Status] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "DELETE FROM prekeys WHERE owner = ? AND public = ?",
                [(request.owner, public) for public in request.retired],
            )
            count = int(
                self._db.execute(
                    "SELECT count(*) FROM prekeys WHERE owner = ?", (request.owner,)
                ).fetchone()[0]
            )
            for prekey in request.prekeys:
                if not one_time_prekey_valid(request.owner, prekey):
                    statuses.append(Status.BAD_SIGNATURE)
                    continue
                if count >= self.max_per_owner:
                    statuses.append(Status.PREKEYS_FULL)
                    continue
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO prekeys (owner, public, signature, uploaded_at) "
                    "VALUES (?, ?, ?, ?)",
                    (request.owner, prekey.public, prekey.signature, int(now)),
                )
                if cursor.rowcount == 0:
                    statuses.append(Status.DUPLICATE)
                else:
                    count += 1
                    statuses.append(Status.OK)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        overall = next((s for s in statuses if not s.stored), Status.OK)
        if overall is not Status.OK:
            self.refused[overall] += 1
        return MailboxResponse(
            kind, request.rid, overall, statuses=tuple(statuses), prekeys=self.held(request.owner)
        )

    def take(self, request: TakePrekeyRequest, now: float) -> MailboxResponse:
        """Hand one of the owner's keys to this requester, once, and delete it."""
        kind = RequestKind.TAKE_PREKEY
        if request.requester == request.owner:
            return self._refuse(request.rid, Status.MALFORMED)
        verdict = self.rate.check(request.requester, request.owner, now)
        if verdict is not TakeVerdict.ALLOWED:
            self.refused[verdict] += 1
            return MailboxResponse(kind, request.rid, Status.RATE_LIMITED)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT public, signature FROM prekeys WHERE owner = ? "
                "ORDER BY uploaded_at, rowid LIMIT 1",
                (request.owner,),
            ).fetchone()
            if row is not None:
                self._db.execute(
                    "DELETE FROM prekeys WHERE owner = ? AND public = ?", (request.owner, row[0])
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if row is None:
            return self._refuse(request.rid, Status.NO_PREKEYS)
        self.rate.record(request.requester, request.owner, now)
        self.handed_out += 1
        prekey = OneTimePrekey(bytes(row[0]), bytes(row[1]))
        return MailboxResponse(kind, request.rid, Status.OK, prekeys=(prekey,))

    def _refuse(self, rid: int, status: Status) -> MailboxResponse:
        self.refused[status] += 1
        return MailboxResponse(RequestKind.TAKE_PREKEY, rid, status)

    def forget_lapsed(self, live_owners: set[bytes]) -> int:
        """Delete the keys of owners no longer served (their grant lapsed); how many.

        Runs inside the core's ``expire`` transaction."""
        owners = [
            bytes(o) for (o,) in self._db.execute("SELECT DISTINCT owner FROM prekeys").fetchall()
        ]
        deleted = 0
        for owner in owners:
            if owner not in live_owners:
                deleted += self._db.execute(
                    "DELETE FROM prekeys WHERE owner = ?", (owner,)
                ).rowcount
        return deleted

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM prekeys").fetchone()[0])
