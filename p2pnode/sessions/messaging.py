"""The peer's messaging service: drives ``ChatCore`` over an online path and mailboxes.

Transport-agnostic: the online path is an injected ``send_signal(peer, payload)``
(the connectivity layer's sealed signalling, or anything that returns True once
the peer's live node took the payload), and the directory lookups are injected
resolvers (prekey bundle, mailbox list). Mailboxes are reached with
``MailboxClient`` over TCP.

What it guarantees (the core's invariants plus):
- A text is attempted online first, else deposited at the recipient's mailboxes
  until ``MIN_COPIES`` acknowledge; either way it stays in the outbox until the
  recipient's delivered receipt, retried on the outbox's schedule.
- On ``attach`` the peer registers its mailbox list at each of its mailboxes and
  drains every current and former one, deleting by acknowledgement only what
  its store has committed.
- Every task is owned by ``run``'s TaskGroup; a failing mailbox is a failed
  attempt, never a crash.
- Our own mailboxes: with ``find_mailboxes`` the run loop keeps at least
  ``MIN_MAILBOXES`` (``refresh_mailboxes``: every ``refill_every`` seconds while
  short, else every ``republish_every``); a mailbox failing for ``GONE_AFTER`` is
  replaced, the pinned ones (the operator's) never; each change registers, is
  published at once and announced (``MailboxesChanged``) so the app persists it.
- One-time prekeys: a new session takes one from a mailbox of the peer
  (``TAKE_PREKEY``, signature checked) and falls back to the signed prekey alone
  when none is to be had, counted by reason (``opk_fallbacks``). Our own
  mailboxes are topped up to ``OPK_BATCH`` keys each when they report fewer than
  ``OPK_LOW_WATER`` (on ``attach`` and after every periodic drain).
- Peers ``withhold_receipts`` names (the app's blocked peers) get no delivered
  receipt, online or from a mailbox: the screen runs inside the receive step,
  before any receipt exists. Their mailbox copies are still acknowledged to the
  mailbox (deleted there, never fetched again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord
from p2pnode.sessions.chat import ChatCore, MessageStatus, Outgoing, ReceiveResult
from p2pnode.sessions.chat_message import BodyKind
from p2pnode.sessions.crypto import PrekeyBundle
from p2pnode.sessions.mailbox_choice import (
    FORMER_KEPT,
    MailboxHealth,
    choose_mailboxes,
    record_failure,
    record_success,
)
from p2pnode.sessions.mailbox_list import MIN_MAILBOXES, MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_service import MailboxClient, MailboxUnavailableError
from p2pnode.sessions.mailbox_wire import (
    MAX_DEPOSIT_ITEMS,
    MAX_FETCH_ITEMS,
    RegisterRequest,
    Status,
    sign_ack,
    sign_deposit,
    sign_fetch,
)
from p2pnode.sessions.outbox import MIN_COPIES, OutboxInput, RetryPolicy
from p2pnode.sessions.prekey_supply import take, top_up
from p2pnode.sessions.store import ChatStore, MessageRow, OutboxRow

__all__ = [
    "MAX_QUEUED_REPLIES",
    "FindMailboxes",
    "GapDetected",
    "MailboxesChanged",
    "MessageShown",
    "MessagingConfig",
    "MessagingEvent",
    "MessagingService",
    "MessagingStatistics",
    "PublishRecord",
    "ReceiptArrived",
    "ResolveBundle",
    "ResolveMailboxes",
    "SendSignal",
]

_LOG_EVERY = 60.0  # seconds between two log lines for one refusal reason
log = logging.getLogger(__name__)
MAX_QUEUED_REPLIES = 10_000  # receipts waiting to go out; beyond, dropped and counted

SendSignal = Callable[[bytes, bytes], Awaitable[bool]]
ResolveBundle = Callable[[bytes], Awaitable[PrekeyBundle | None]]
ResolveMailboxes = Callable[[bytes], Awaitable[tuple[MailboxEntry, ...]]]
PublishRecord = Callable[[SignedRecord], Awaitable[None]]
FindMailboxes = Callable[[], Awaitable[tuple[MailboxEntry, ...]]]  # supernodes offering it


async def _publish_nowhere(record: SignedRecord) -> None:
    """Default publisher: tests that hand bundles over directly need no DHT."""


@dataclass(frozen=True, slots=True)
class MessageShown:
    message: MessageRow
    request: bool  # from a peer not yet accepted


@dataclass(frozen=True, slots=True)
class ReceiptArrived:
    message_id: bytes
    kind: BodyKind


@dataclass(frozen=True, slots=True)
class GapDetected:
    peer: bytes
    expected_seq: int
    held_seq: int


@dataclass(frozen=True, slots=True)
class MailboxesChanged:
    """Our mailbox list changed: what we name now, and the former ones still drained
    (each with the time after which nothing of ours can be left there)."""

    mailboxes: tuple[MailboxEntry, ...]
    former: tuple[tuple[MailboxEntry, float], ...]


MessagingEvent = MessageShown | ReceiptArrived | GapDetected | MailboxesChanged


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    mailboxes: tuple[MailboxEntry, ...]  # ours, named in our MAILBOX_LIST record
    former_mailboxes: tuple[MailboxEntry, ...] = ()  # drained on attach, no longer named
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    drain_every: float = 60.0  # poll our mailboxes while attached
    idle_wake: float = 5.0  # longest sleep of the outbox pump
    republish_every: float = 3600.0  # prekey bundle (rotated when due) and mailbox list
    refill_every: float = 30.0  # look for mailboxes this often while we name too few
    pinned: tuple[MailboxEntry, ...] = ()  # the operator's: first, never replaced
    former_until: tuple[float, ...] = ()  # per former mailbox: drained until then (default ever)


@dataclass(frozen=True, slots=True)
class MessagingStatistics:
    outbox: int
    online_sent: int
    deposited: int
    deposit_refusals: int
    drained: int
    refused: int
    replies_dropped: int
    receipts_withheld: int = 0  # delivered receipts not sent to withheld (blocked) peers
    opk_sessions: int = 0  # sessions we opened with a one-time prekey from a mailbox
    opk_fallbacks: int = 0  # ... and on the signed prekey alone (none to be had)
    opk_uploaded: int = 0  # our one-time prekeys our mailboxes accepted
    opk_fallback_reasons: tuple[tuple[str, int], ...] = ()  # (reason, count), sorted
    refused_reasons: tuple[tuple[str, int], ...] = ()  # (reason, count), sorted


class MessagingService:
    """One peer's messaging: ``send``, ``deliver_online``, ``attach``, and ``run``."""

    def __init__(
        self,
        identity: Identity,
        seed: bytes,
        store_path: Path,
        config: MessagingConfig,
        *,
        send_signal: SendSignal,
        resolve_bundle: ResolveBundle,
        resolve_mailboxes: ResolveMailboxes,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        on_event: Callable[[MessagingEvent], None] = lambda event: None,
        publish: PublishRecord = _publish_nowhere,
        find_mailboxes: FindMailboxes | None = None,
        withhold_receipts: Callable[[bytes], bool] = lambda peer: False,
    ) -> None:
        self.identity = identity
        self.config = config
        self.clock = clock
        self.core = ChatCore(
            identity, seed, ChatStore(store_path), rng or random.SystemRandom(), config.policy
        )
        self._send_signal = send_signal
        self._resolve_bundle = resolve_bundle
        self._resolve_mailboxes = resolve_mailboxes
        self._on_event = on_event
        self._publish = publish
        self._find_mailboxes = find_mailboxes
        self._withhold = withhold_receipts
        self._withheld = 0
        self._mailboxes = config.mailboxes
        untils = config.former_until + (float("inf"),) * len(config.former_mailboxes)
        self._former: dict[bytes, tuple[MailboxEntry, float]] = {
            entry.key: (entry, until)
            for entry, until in zip(config.former_mailboxes, untils, strict=False)
        }
        self._health: dict[bytes, MailboxHealth] = {}
        self._choice_rng = random.Random()
        self._clients: dict[tuple[str, int], MailboxClient] = {}
        self._wake = asyncio.Event()
        self._reply_queue: asyncio.Queue[Outgoing] = asyncio.Queue(MAX_QUEUED_REPLIES)
        self._replies_dropped = 0
        self.refused_by_reason: Counter[str] = Counter()
        self.opk_fallback_reasons: Counter[str] = Counter()
        self._opk_sessions = self._opk_uploaded = 0
        self._logged_at: dict[str, float] = {}
        self._rid = 0
        self._online_sent = self._deposited = self._refusals = self._drained = self._refused = 0

    # public API
    async def send(self, peer: bytes, text: str) -> bytes:
        """Queue ``text`` to ``peer`` (committed before this returns); its message id."""
        bundle = one_time = None
        if not self.core.has_session(peer):
            bundle = await self._resolve_bundle(peer)
            if bundle is None:
                raise LookupError("no prekey bundle published for this peer")
            one_time = await self._take_prekey(peer)
        outgoing = self.core.compose(peer, text, self.clock(), bundle, one_time)
        self._wake.set()
        return outgoing.message_id

    async def deliver_online(self, payload: bytes) -> None:
        """An envelope arrived over the online path (its receipt goes out from ``run``)."""
        # receipts go out from run()'s reply sender: the transport's inbox is not held
        # up while they travel (an online receipt waits for the peer's home to confirm)
        self._handle(self.core.receive([payload], self.clock(), self._withhold), queue_replies=True)

    def status(self, message_id: bytes) -> MessageStatus:
        """Outbox state, mailbox copies held and receipts of one of our messages."""
        return self.core.status(message_id)

    async def read(self, peer: bytes, message_ids: tuple[bytes, ...]) -> int:
        """Tell ``peer`` these messages were shown to the person; how many were newly
        marked (counted before any await: a message arriving meanwhile is not one)."""
        before = self.core.unread().get(peer, 0)
        replies = self.core.read(peer, message_ids, self.clock())
        marked = before - self.core.unread().get(peer, 0)
        await self._send_replies(replies)
        return marked

    async def attach(self) -> int:
        """Register our mailbox list, publish nothing else, drain every mailbox, top up
        our one-time prekeys there; items drained."""
        await self.register()
        drained = await self.drain()
        await self.top_up_prekeys()
        return drained

    async def top_up_prekeys(self) -> int:
        """Ask each of our mailboxes which of our one-time prekeys it still holds; below
        ``OPK_LOW_WATER`` upload new ones up to ``OPK_BATCH``; keys uploaded."""
        uploaded = 0
        for entry in self._mailboxes:
            uploaded += await top_up(
                self.core, self._client(entry), entry.key, self._next_rid, self.clock
            )
        self._opk_uploaded += uploaded
        self.core.expire_one_time_prekeys(self._keys(), self.clock())
        return uploaded

    async def publish_records(self) -> None:
        """Publish our prekey bundle (rotating the signed prekey when due) and mailbox list."""
        now = self.clock()
        await self._publish(self.core.prekey_record(now))
        if self._mailboxes:  # a peer without mailboxes is reachable online only
            await self._publish(
                mailbox_list_record(self.identity, self._mailboxes, seq=int(now * 1000), now=now)
            )

    @property
    def mailboxes(self) -> tuple[MailboxEntry, ...]:
        """The mailboxes we name now (the app persists them for the next start)."""
        return self._mailboxes

    @property
    def former_mailboxes(self) -> tuple[tuple[MailboxEntry, float], ...]:
        """Mailboxes we no longer name but still drain, each with its end of draining."""
        return tuple(self._former.values())

    async def refresh_mailboxes(self) -> bool:
        """Replace mailboxes gone for a day and fill up to ``MIN_MAILBOXES`` with
        candidates; register at the new list and announce it; True when it changed."""
        if self._find_mailboxes is None:
            return False
        pinned = {m.key for m in self.config.pinned}
        now = self.clock()
        chosen = [m.key for m in self._mailboxes if m.key not in pinned]
        gone = any(self._health[key].gone(now) for key in chosen if key in self._health)
        if len(self._mailboxes) >= MIN_MAILBOXES and not gone and pinned <= self._keys():
            return False  # nothing to replace: no search (it costs DHT lookups and probes)
        candidates = await self._find_mailboxes()
        now = self.clock()
        choice = choose_mailboxes(
            self._mailboxes,
            candidates,
            self._health,
            now,
            self._choice_rng,
            pinned=self.config.pinned,
        )
        if not choice.changed:
            return False
        for entry in choice.dropped:
            self._former[entry.key] = (entry, now + FORMER_KEPT)
        for entry in choice.mailboxes:
            self._former.pop(entry.key, None)  # named again: current, not former
        self._mailboxes = choice.mailboxes
        await self.register()
        self._on_event(MailboxesChanged(self._mailboxes, self.former_mailboxes))
        return True

    def _keys(self) -> set[bytes]:
        return {m.key for m in self._mailboxes}

    async def register(self) -> None:
        """Ask each of our mailboxes to hold our mail (the signed list is the authorisation)."""
        if not self._mailboxes:
            return
        now = self.clock()
        record = mailbox_list_record(self.identity, self._mailboxes, seq=int(now * 1000), now=now)
        for entry in self._mailboxes:
            try:
                await self._client(entry).request(RegisterRequest(self._next_rid(), record.encoded))
            except MailboxUnavailableError:
                self._note(entry, ok=False)
                continue  # registered again on the next attach
            self._note(entry, ok=True)

    def _note(self, entry: MailboxEntry, *, ok: bool) -> None:
        if entry.key in {m.key for m in self._mailboxes}:
            health = self._health.get(entry.key, MailboxHealth())
            now = self.clock()
            self._health[entry.key] = (
                record_success(health, now) if ok else record_failure(health, now)
            )

    async def drain(self) -> int:
        now = self.clock()
        for key, (_, until) in list(self._former.items()):
            if until <= now:
                del self._former[key]  # past its retention: nothing of ours can be left
        total = 0
        former = tuple(entry for entry, _ in self._former.values())
        for entry in self._mailboxes + former:
            total += await self._drain_one(entry)
        return total

    async def run(self) -> None:
        """The outbox pump and the periodic drain, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pump())
            group.create_task(self._poll())
            group.create_task(self._republish())
            group.create_task(self._reply_sender())

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self.core.store.close()

    def statistics(self) -> MessagingStatistics:
        return MessagingStatistics(
            self.core.store.outbox_size(),
            self._online_sent,
            self._deposited,
            self._refusals,
            self._drained,
            self._refused,
            self._replies_dropped,
            self._withheld,
            self._opk_sessions,
            sum(self.opk_fallback_reasons.values()),
            self._opk_uploaded,
            tuple(sorted(self.opk_fallback_reasons.items())),
            tuple(sorted(self.refused_by_reason.items())),
        )

    # internals
    def _next_rid(self) -> int:
        self._rid = (self._rid + 1) % 2**32
        return self._rid

    def _client(self, entry: MailboxEntry) -> MailboxClient:
        key = (entry.host, entry.port)
        if key not in self._clients:
            self._clients[key] = MailboxClient(entry.host, entry.port)
        return self._clients[key]

    async def _take_prekey(self, peer: bytes) -> bytes | None:
        """One of ``peer``'s one-time prekeys (handed out once by one of its mailboxes),
        or None, counted by reason: the session then opens on the signed prekey."""
        entries = list(await self._resolve_mailboxes(peer))
        self._choice_rng.shuffle(entries)  # spread the takes over the peer's mailboxes
        outcome = await take(self.identity, peer, entries, self._client, self._next_rid, self.clock)
        if isinstance(outcome, bytes):
            self._opk_sessions += 1
            return outcome
        self.opk_fallback_reasons[outcome] += 1
        now = self.clock()
        if now - self._logged_at.get(f"opk-{outcome}", -_LOG_EVERY) >= _LOG_EVERY:
            self._logged_at[f"opk-{outcome}"] = now
            log.info("messaging: new session without a one-time prekey: %s", outcome)
        return None

    def _handle(self, result: ReceiveResult, *, queue_replies: bool) -> list[Outgoing]:
        """Emit the events; the replies are queued (returned empty) or returned to send."""
        self._refused += len(result.refused)
        self._withheld += result.withheld
        now = self.clock()
        for reason in result.refused:
            self.refused_by_reason[reason] += 1
            if now - self._logged_at.get(reason, -_LOG_EVERY) >= _LOG_EVERY:
                self._logged_at[reason] = now
                log.info(
                    "messaging: refused an envelope: %s (%d so far)",
                    reason,
                    self.refused_by_reason[reason],
                )
        requests = set(result.requests)
        for message in result.shown:
            self._on_event(MessageShown(message, message.peer in requests))
        for message_id, kind in result.receipts:
            self._on_event(ReceiptArrived(message_id, kind))
        for peer, expected, held in result.gaps:
            self._on_event(GapDetected(peer, expected, held))
        if not queue_replies:
            return list(result.replies)
        for reply in result.replies:
            if self._reply_queue.full():
                self._replies_dropped += 1  # the sender's outbox retry brings a new receipt
            else:
                self._reply_queue.put_nowait(reply)
        return []

    async def _reply_sender(self) -> None:
        while True:
            replies = [await self._reply_queue.get()]
            while not self._reply_queue.empty():
                replies.append(self._reply_queue.get_nowait())
            await self._send_replies(replies)

    async def _send_replies(self, replies: list[Outgoing]) -> None:
        """Receipts: online if the peer takes them, else one deposit round (best effort)."""
        by_peer: dict[bytes, list[bytes]] = {}
        for reply in replies:
            if not await self._try_online(reply.peer, reply.envelope):
                by_peer.setdefault(reply.peer, []).append(reply.envelope)
        for peer, envelopes in by_peer.items():
            await self._deposit(peer, envelopes)

    async def _try_online(self, peer: bytes, envelope: bytes) -> bool:
        try:
            accepted = await self._send_signal(peer, envelope)
        except (OSError, TimeoutError):
            return False
        if accepted:
            self._online_sent += 1
        return accepted

    async def _deposit(self, peer: bytes, envelopes: list[bytes]) -> list[int]:
        """Deposit at every mailbox of ``peer``; copies acknowledged per envelope."""
        copies = [0] * len(envelopes)
        entries = await self._resolve_mailboxes(peer)

        async def one(entry: MailboxEntry) -> None:
            client = self._client(entry)
            for start in range(0, len(envelopes), MAX_DEPOSIT_ITEMS):
                chunk = tuple(envelopes[start : start + MAX_DEPOSIT_ITEMS])
                request = sign_deposit(
                    self.identity, entry.key, self._next_rid(), peer, chunk, int(self.clock())
                )
                try:
                    response = await client.request(request)
                except MailboxUnavailableError:
                    return
                for offset, status in enumerate(response.statuses):
                    if status.stored:
                        copies[start + offset] += 1
                    else:
                        self._refusals += 1
                if response.status is Status.NOT_MAILBOX:
                    return

        async with asyncio.TaskGroup() as group:
            for entry in entries:
                group.create_task(one(entry))
        return copies

    async def _attempt(self, rows: list[OutboxRow]) -> None:
        by_peer: dict[bytes, list[OutboxRow]] = {}
        for row in rows:
            by_peer.setdefault(row.peer, []).append(row)
        for peer, peer_rows in by_peer.items():
            pending: list[OutboxRow] = []
            online = True
            for row in peer_rows:
                if online and await self._try_online(peer, row.envelope):
                    self.core.attempted(row, OutboxInput.ONLINE_ACCEPTED, 0, self.clock())
                else:
                    online = False  # the peer is not reachable now: the rest go to mailboxes
                    pending.append(row)
            if not pending:
                continue
            copies = await self._deposit(peer, [row.envelope for row in pending])
            now = self.clock()
            for row, held in zip(pending, copies, strict=True):
                if held >= MIN_COPIES:
                    self._deposited += 1
                    self.core.attempted(row, OutboxInput.DEPOSITED, held, now)
                else:
                    self.core.attempted(row, OutboxInput.ATTEMPT_FAILED, held, now)

    async def _pump(self) -> None:
        while True:
            self._wake.clear()
            rows = self.core.due(self.clock())
            if rows:
                await self._attempt(rows)
                continue
            deadline = self.core.outbox_deadline()
            delay = self.config.idle_wake
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - self.clock()))
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _republish(self) -> None:
        """Refresh our mailboxes (often while short of them), publish on every change
        and every ``republish_every`` seconds."""
        publish_at = -float("inf")
        short_rounds = 0  # searches in a row that left us short: 1 s, 2 s ... refill_every
        while True:
            changed = await self.refresh_mailboxes()
            now = self.clock()
            if changed or now >= publish_at:
                await self.publish_records()
                self.core.prune(now)
                publish_at = now + self.config.republish_every
            short = self._find_mailboxes is not None and len(self._mailboxes) < MIN_MAILBOXES
            short_rounds = short_rounds + 1 if short else 0
            wait = self.config.republish_every
            if short:
                wait = min(self.config.refill_every, 2.0 ** min(short_rounds - 1, 16))
            await asyncio.sleep(min(wait, max(0.0, publish_at - self.clock())))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.drain_every)
            await self.drain()
            await self.top_up_prekeys()

    async def _drain_one(self, entry: MailboxEntry) -> int:
        client = self._client(entry)
        total = 0
        while True:
            request = sign_fetch(
                self.identity, entry.key, self._next_rid(), int(self.clock()), MAX_FETCH_ITEMS
            )
            try:
                response = await client.request(request)
            except MailboxUnavailableError:
                self._note(entry, ok=False)
                return total
            self._note(entry, ok=True)
            if response.status is not Status.OK or not response.items:
                return total
            envelopes = [item.envelope for item in response.items]
            result = self.core.receive(envelopes, self.clock(), self._withhold)
            total += len(response.items)
            self._drained += len(response.items)
            # committed above: now the mailbox may forget them (refused ones are junk forever)
            ids = tuple(item.item_id for item in response.items)
            ack = sign_ack(self.identity, entry.key, self._next_rid(), int(self.clock()), ids)
            try:
                await client.request(ack)
            except MailboxUnavailableError:
                return total
            await self._send_replies(self._handle(result, queue_replies=False))
            if not response.more:
                return total
