"""The chat core of a peer: compose, receive, receipts and outbox steps, no I/O.

Every public method is one store transaction: what it decrypted or encrypted,
the ratchet state that advanced, the messages, receipts and outbox rows it
changed are committed together or not at all. Sending and fetching belong to
the asyncio service (``messaging.py``); this core only says what to send.

Invariants:
- Exactly-once display: a message id is stored once; an envelope already
  decrypted (its hash is remembered) is a duplicate, answered with a fresh
  delivered receipt and never shown again.
- Per-conversation order: incoming texts are shown in ``seq`` order; a later
  one waits for the missing ones and the result names the gap; each shown
  message's ``prev_hash`` is checked against the previous one (``chain_ok``).
- The outbox row of a message is deleted only by the recipient's delivered
  receipt (``OutboxInput.RECEIPT``), never by a mailbox's acknowledgement.
- Messages from peers we never accepted are stored as requests (``request``).
- One-time prekeys: each new key's private half is committed (X3DH state) and its
  mailbox noted (store) before the caller uploads it, so a mailbox never hands out
  a key we lost; the private half is deleted in the transaction that opens the
  session using it, or ``OPK_TAKEN_KEPT`` after it left its mailbox unused.
- A peer the caller withholds receipts from (``receive``'s ``withhold``: the app's
  blocked peers) gets no delivered receipt, not even for a duplicate, and none is
  encrypted for it (an unsent receipt would still advance our sending chain and
  open a gap of skipped keys at the peer).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord
from p2pnode.sessions.chat_message import (
    MAX_RECEIPT_IDS,
    Body,
    BodyKind,
    ChatDecodeError,
    Envelope,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    envelope_id,
    message_hash,
)
from p2pnode.sessions.crypto import (
    KeyAgreement,
    PrekeyBundle,
    RatchetSession,
    SessionError,
    SessionFailure,
    session_id_for,
)
from p2pnode.sessions.one_time_prekeys import (
    OPK_TAKEN_KEPT,
    OneTimePrekey,
    sign_one_time_prekey,
)
from p2pnode.sessions.outbox import (
    OutboxInput,
    OutboxState,
    RetryPolicy,
    retry_delay,
    transition,
)
from p2pnode.sessions.prekeys import needs_rotation, prekey_record
from p2pnode.sessions.store import ChatStore, Direction, MessageRow, OutboxRow

__all__ = [
    "MAX_OWN_ONE_TIME_PREKEYS",
    "MAX_SESSIONS_PER_PEER",
    "SEEN_ENVELOPES_KEPT",
    "ChatCore",
    "MessageStatus",
    "NeedBundleError",
    "Outgoing",
    "ReceiveResult",
]

MAX_SESSIONS_PER_PEER = 4  # simultaneous initiations leave two; a reinstall adds one
SEEN_ENVELOPES_KEPT = 90 * 24 * 3600  # past mailbox retention and any sane outbox retry
MAX_OWN_ONE_TIME_PREKEYS = 2000  # private halves held (at mailboxes + taken, awaited)


def _withhold_none(peer: bytes) -> bool:
    return False


class NeedBundleError(LookupError):
    """No session with this peer yet: fetch its prekey bundle and call again."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An envelope to send to ``peer`` now (the outbox keeps texts until receipted)."""

    peer: bytes
    envelope: bytes
    message_id: bytes


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """Where one of our messages is: in the outbox (state, mailbox copies) and receipts."""

    queued: bool  # still in the outbox: no delivered receipt yet
    state: OutboxState | None
    copies: int  # mailbox copies acknowledged (the sender's view)
    delivered: bool
    read: bool


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    shown: tuple[MessageRow, ...] = ()  # newly shown, in conversation order
    receipts: tuple[tuple[bytes, BodyKind], ...] = ()  # (message id, kind) received
    replies: tuple[Outgoing, ...] = ()  # receipts to send back
    refused: tuple[str, ...] = ()  # reasons, one per refused envelope
    duplicates: int = 0
    gaps: tuple[tuple[bytes, int, int], ...] = ()  # (peer, expected seq, first held seq)
    requests: tuple[bytes, ...] = ()  # peers not yet accepted who wrote
    withheld: int = 0  # delivered receipts not made: the peer is withheld (blocked)


class ChatCore:
    """One peer's messaging state over a ``ChatStore``; ``rng`` makes ids and jitter."""

    def __init__(
        self,
        identity: Identity,
        seed: bytes,
        store: ChatStore,
        rng: random.Random,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.identity = identity
        self.store = store
        self.rng = rng
        own = store.own_keys()
        if own is None:
            self._agreement = KeyAgreement.create(seed)
            self._prekey_created_at = 0
            self._prekey_seq = 0
        else:
            self._agreement = KeyAgreement.from_json(own[0])
            self._prekey_created_at, self._prekey_seq = own[1], own[2]

    # prekeys
    def prekey_record(self, now: float) -> SignedRecord:
        """Our PREKEY_BUNDLE record, rotating the signed prekey when it is due.

        Every call signs a fresh record with a larger ``seq`` (records.policy refuses
        a reused seq with other bytes), so republishing also renews the expiry.
        """
        with self.store.transaction():
            if self._prekey_created_at == 0 or needs_rotation(self._prekey_created_at, now):
                if self._prekey_created_at:
                    self._agreement.rotate_signed_prekey()
                self._prekey_created_at = int(now)
            self._prekey_seq = max(self._prekey_seq + 1, int(now))
            self._save_keys()
            return prekey_record(
                self.identity,
                self._agreement.bundle(),
                created_at=self._prekey_created_at,
                seq=self._prekey_seq,
                now=now,
            )

    def new_one_time_prekeys(
        self, mailbox: bytes, count: int, now: float
    ) -> tuple[OneTimePrekey, ...]:
        """Make up to ``count`` one-time prekeys for ``mailbox``, signed; committed (the
        private halves and where they go) before this returns, so upload them after.
        Fewer (maybe none) once ``MAX_OWN_ONE_TIME_PREKEYS`` are held."""
        with self.store.transaction():
            count = min(count, MAX_OWN_ONE_TIME_PREKEYS - self.store.one_time_prekey_count())
            if count <= 0:
                return ()
            before = set(self._agreement.bundle().one_time_prekeys)
            self._agreement.add_one_time_prekeys(count)
            fresh = tuple(p for p in self._agreement.bundle().one_time_prekeys if p not in before)
            self.store.add_one_time_prekeys(mailbox, fresh, now)
            self._save_keys()
        return tuple(sign_one_time_prekey(self.identity, public) for public in fresh)

    def one_time_prekeys_held(
        self, mailbox: bytes, held: set[bytes], now: float
    ) -> tuple[int, tuple[bytes, ...]]:
        """``mailbox`` reports the keys it holds for us: ours it no longer holds left it
        (taken). Returns how many of ours it holds, and the keys it holds that are not
        ours there (a lost or restored home): to retire, a session on them cannot open."""
        with self.store.transaction():
            ours = self.store.one_time_prekeys_at(mailbox)
            self.store.mark_one_time_prekeys_gone(tuple(ours - held), now)
            return len(ours & held), tuple(sorted(held - ours))

    def expire_one_time_prekeys(self, mailboxes: set[bytes], now: float) -> int:
        """Keys at mailboxes we no longer name count as gone; keys gone for
        ``OPK_TAKEN_KEPT`` are forgotten (private half deleted); how many forgotten."""
        with self.store.transaction():
            for mailbox in self.store.one_time_prekey_mailboxes() - mailboxes:
                self.store.mark_one_time_prekeys_gone(
                    tuple(self.store.one_time_prekeys_at(mailbox)), now
                )
            old = self.store.one_time_prekeys_gone_before(now - OPK_TAKEN_KEPT)
            for public in old:
                self._agreement.forget_one_time_prekey(public)
                self.store.delete_one_time_prekey(public)
            if old:
                self._save_keys()
        return len(old)

    def own_one_time_prekeys(self) -> frozenset[bytes]:
        """The one-time prekeys whose private half we still hold (not used, not expired)."""
        return frozenset(self._agreement.bundle().one_time_prekeys)

    def accept(self, peer: bytes, alias: str | None, now: float) -> None:
        """Move ``peer`` out of the requests folder (and name it, if ``alias``)."""
        with self.store.transaction():
            self.store.add_contact(peer, alias, True, now)

    def _save_keys(self) -> None:
        self.store.save_own_keys(
            self._agreement.to_json(), self._prekey_created_at, self._prekey_seq
        )

    # sending
    def has_session(self, peer: bytes) -> bool:
        return bool(self.store.sessions(peer))

    def compose(
        self,
        peer: bytes,
        text: str,
        now: float,
        bundle: PrekeyBundle | None = None,
        one_time_prekey: bytes | None = None,
    ) -> Outgoing:
        """Encrypt and queue a text; ``NeedBundleError`` if no session and no bundle.
        A new session uses ``one_time_prekey`` (taken from the peer's mailbox) if given."""
        message_id = self.rng.randbytes(16)
        with self.store.transaction():
            conversation = self.store.conversation(peer)
            body = Body(
                BodyKind.TEXT,
                message_id,
                conversation.next_seq,
                conversation.last_hash,
                int(now * 1000),
                text,
            )
            encoded = self._encrypt(peer, encode_body(body), now, bundle, one_time_prekey)
            digest = message_hash(body)
            fresh = self.store.insert_message(
                MessageRow(
                    message_id,
                    peer,
                    Direction.OUT,
                    body.seq,
                    body.prev_hash,
                    digest,
                    text,
                    body.sent_at_ms,
                    shown=True,
                    chain_ok=True,
                ),
                now,
            )
            if not fresh:  # a 128-bit random id repeated: the rng is broken, refuse to send
                raise RuntimeError("message id collision")
            self.store.save_conversation(
                type(conversation)(
                    peer, body.seq + 1, digest, conversation.shown_seq, conversation.shown_hash
                )
            )
            self.store.add_outbox(
                OutboxRow(
                    envelope_id(encoded), message_id, peer, encoded, OutboxState.QUEUED, 0, now, 0
                ),
                now,
            )
            self.store.add_contact(peer, None, True, now)  # writing to someone accepts them
        return Outgoing(peer, encoded, message_id)

    def _encrypt(
        self,
        peer: bytes,
        plaintext: bytes,
        now: float,
        bundle: PrekeyBundle | None,
        one_time_prekey: bytes | None = None,
    ) -> bytes:
        sessions = self.store.sessions(peer)
        if sessions:
            session = RatchetSession.from_json(sessions[0][1])
            header, ciphertext = session.encrypt(plaintext)
            init = session.pending_init
        else:
            if bundle is None or bundle.identity_key != peer:
                raise NeedBundleError("no session with this peer")
            session, init, header, ciphertext = RatchetSession.initiate(
                self._agreement, bundle, plaintext, one_time_prekey
            )
        self.store.save_session(peer, session.session_id, session.to_json(), now)
        envelope = Envelope(self.identity.public_key, peer, init, header, ciphertext)
        return encode_envelope(envelope)

    def read(self, peer: bytes, message_ids: tuple[bytes, ...], now: float) -> list[Outgoing]:
        """Mark ``peer``'s shown messages read here (the unread counts) and make read
        receipts for those newly marked: sent once, so a page that marks a conversation
        again on every refresh sends nothing twice (a lost receipt is only cosmetic)."""
        with self.store.transaction():
            newly = self.store.mark_read_here(peer, message_ids)
            if not newly:
                return []
            return self._receipts(peer, BodyKind.READ, tuple(newly), now)

    def unread(self) -> dict[bytes, int]:
        """Shown incoming messages the person has not read yet, per peer."""
        return self.store.unread_counts()

    def _receipts(
        self, peer: bytes, kind: BodyKind, ids: tuple[bytes, ...], now: float
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for start in range(0, len(ids), MAX_RECEIPT_IDS):
            chunk = ids[start : start + MAX_RECEIPT_IDS]
            body = Body(kind, self.rng.randbytes(16), 0, bytes(32), int(now * 1000), "", chunk)
            out.append(
                Outgoing(peer, self._encrypt(peer, encode_body(body), now, None), body.message_id)
            )
        return out

    # outbox
    def due(self, now: float) -> list[OutboxRow]:
        return self.store.due_outbox(now)

    def attempted(self, row: OutboxRow, event: OutboxInput, copies: int, now: float) -> None:
        """Record an attempt's outcome; unknown rows (receipted meanwhile) are ignored."""
        with self.store.transaction():
            current = self.store.outbox_for_message(row.message_id)
            if current is None:
                return
            state = current.state
            if state is not OutboxState.QUEUED:
                state = transition(state, OutboxInput.RETRY_DUE)
            state = transition(state, event)
            attempts = current.attempts + 1
            delay = retry_delay(state, attempts, self.rng, self.policy)
            self.store.update_outbox(
                current.envelope_id, state, attempts, now + delay, max(copies, current.copies)
            )

    def prune(self, now: float) -> int:
        """Forget envelope hashes older than ``SEEN_ENVELOPES_KEPT`` (bounds the table)."""
        with self.store.transaction():
            return self.store.prune_seen(now - SEEN_ENVELOPES_KEPT)

    def status(self, message_id: bytes) -> MessageStatus:
        row = self.store.outbox_for_message(message_id)
        receipts = self.store.receipts(message_id)
        return MessageStatus(
            queued=row is not None,
            state=None if row is None else row.state,
            copies=0 if row is None else row.copies,
            delivered=int(BodyKind.DELIVERED) in receipts,
            read=int(BodyKind.READ) in receipts,
        )

    def outbox_deadline(self) -> float | None:
        return self.store.next_outbox_deadline()

    # receiving
    def receive(
        self,
        envelopes: list[bytes],
        now: float,
        withhold: Callable[[bytes], bool] = _withhold_none,
    ) -> ReceiveResult:
        """Decrypt a batch (one transaction), show what is in order, answer with delivered
        receipts, except to peers ``withhold`` names (their messages are still stored, so
        a mailbox may forget its copies, but the sender never learns they arrived)."""
        shown: list[MessageRow] = []
        receipts: list[tuple[bytes, BodyKind]] = []
        refused: list[str] = []
        delivered: dict[bytes, list[bytes]] = {}
        touched: set[bytes] = set()
        requests: set[bytes] = set()
        duplicates = 0
        with self.store.transaction():
            for data in envelopes:
                eid = envelope_id(data)
                seen = self.store.seen_envelope(eid)
                if seen is not None:
                    duplicates += 1
                    if seen[1] != bytes(16):
                        delivered.setdefault(seen[0], []).append(seen[1])
                    continue
                try:
                    envelope = decode_envelope(data)
                    if envelope.recipient != self.identity.public_key:
                        raise ChatDecodeError("not addressed to us")
                    plaintext = self._decrypt(envelope, now)
                    body = decode_body(plaintext)
                except (ChatDecodeError, SessionError) as error:
                    reason = error.reason.value if isinstance(error, SessionError) else "malformed"
                    refused.append(reason)
                    continue
                peer = envelope.sender
                if body.kind is BodyKind.TEXT:
                    self.store.add_seen_envelope(eid, peer, body.message_id, now)
                    delivered.setdefault(peer, []).append(body.message_id)
                    if self.store.has_message(body.message_id):
                        duplicates += 1
                        continue
                    self.store.insert_message(
                        MessageRow(
                            body.message_id,
                            peer,
                            Direction.IN,
                            body.seq,
                            body.prev_hash,
                            message_hash(body),
                            body.text,
                            body.sent_at_ms,
                            False,
                            True,
                        ),
                        now,
                    )
                    touched.add(peer)
                    if not self.store.is_accepted(peer):
                        self.store.add_contact(peer, None, False, now)
                        requests.add(peer)
                else:
                    self.store.add_seen_envelope(eid, peer, bytes(16), now)
                    for message_id in body.receipt_ids:
                        if self.store.add_receipt(message_id, int(body.kind), now):
                            receipts.append((message_id, body.kind))
                        if body.kind is BodyKind.DELIVERED:
                            current = self.store.outbox_for_message(message_id)
                            if current is not None:
                                transition(current.state, OutboxInput.RECEIPT)
                                self.store.remove_outbox_for_message(message_id)
            gaps: list[tuple[bytes, int, int]] = []
            for peer in sorted(touched):
                newly, gap = self._show_in_order(peer)
                shown.extend(newly)
                if gap is not None:
                    gaps.append((peer, *gap))
            replies: list[Outgoing] = []
            withheld = 0
            for peer, ids in delivered.items():
                if withhold(peer):
                    withheld += len(ids)
                    continue
                replies.extend(self._receipts(peer, BodyKind.DELIVERED, tuple(ids), now))
        return ReceiveResult(
            tuple(shown),
            tuple(receipts),
            tuple(replies),
            tuple(refused),
            duplicates,
            tuple(gaps),
            tuple(sorted(requests)),
            withheld,
        )

    def _decrypt(self, envelope: Envelope, now: float) -> bytes:
        peer = envelope.sender
        sessions = self.store.sessions(peer)
        if envelope.init is not None:
            wanted = session_id_for(envelope.init)
            for session_id, state in sessions:
                if session_id == wanted:
                    session = RatchetSession.from_json(state)
                    plaintext = session.decrypt(envelope.header, envelope.ciphertext)
                    self.store.save_session(peer, session_id, session.to_json(), now)
                    return plaintext
            session, plaintext = RatchetSession.respond(
                self._agreement, envelope.init, envelope.header, envelope.ciphertext
            )
            for stale_id, _ in sessions[MAX_SESSIONS_PER_PEER - 1 :]:
                self.store.delete_session(peer, stale_id)  # least recently used go first
            if envelope.init.one_time_prekey is not None:  # used: deleted with this session
                self.store.delete_one_time_prekey(envelope.init.one_time_prekey)
                self._save_keys()
            self.store.save_session(peer, session.session_id, session.to_json(), now)
            return plaintext
        last_error = SessionError(SessionFailure.TAMPERED, "no session with this peer")
        for session_id, state in sessions:
            session = RatchetSession.from_json(state)
            try:
                plaintext = session.decrypt(envelope.header, envelope.ciphertext)
            except SessionError as error:
                last_error = error
                continue
            self.store.save_session(peer, session_id, session.to_json(), now)
            return plaintext
        raise last_error

    def _show_in_order(self, peer: bytes) -> tuple[list[MessageRow], tuple[int, int] | None]:
        conversation = self.store.conversation(peer)
        shown_seq, shown_hash = conversation.shown_seq, conversation.shown_hash
        newly: list[MessageRow] = []
        while True:
            row = self.store.incoming_by_seq(peer, shown_seq + 1)
            if row is None or row.shown:
                break
            chain_ok = row.prev_hash == shown_hash
            self.store.mark_shown(row.message_id, chain_ok)
            newly.append(
                MessageRow(
                    row.message_id,
                    row.peer,
                    row.direction,
                    row.seq,
                    row.prev_hash,
                    row.hash,
                    row.text,
                    row.sent_at_ms,
                    True,
                    chain_ok,
                )
            )
            shown_seq, shown_hash = row.seq, row.hash
        self.store.save_conversation(
            type(conversation)(
                peer, conversation.next_seq, conversation.last_hash, shown_seq, shown_hash
            )
        )
        waiting = self.store.unshown(peer)
        gap = None if not waiting else (shown_seq + 1, waiting[0].seq)
        return newly, gap
