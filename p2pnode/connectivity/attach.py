"""The home side of the home protocol (sans-IO): attach sessions, forwarding, watches.

A supernode runs one ``HomeCore``. Peers behind NAT attach to it and keep the
session (and their NAT mapping) alive with keepalives; anyone may hand it a
sealed envelope for an attached peer, which it forwards at once over the
session and answers DELIVERED (the peer acknowledged), NOT_ATTACHED or
NO_ANSWER. Watchers lease watches on attached (or absent) targets and hear
NOTIFY when a target attaches, changes presence or is lost.

Attach (why a stateless challenge): HELLO gets a nonce that is an HMAC of the
source address and the current 30 s period under a secret only this home
knows, so HELLO floods cost no state; ATTACH must echo a nonce of the current
or previous period and sign (context, home key, nonce, peer key, keepalive)
with the peer's key. The home then holds one small fixed-size session: key,
address, token, keepalive, last seen, presence (at most 200 bytes). A session
not refreshed within its keepalive plus ``grace`` is lost; expiry is swept in
O(expired) through one-second buckets.

Invariants:
- Everything a peer can make us hold is bounded: sessions (``max_attached``,
  refused with FULL), deliveries in flight (total and per recipient, BUSY),
  watches (``WatchTable``), rate-limit buckets (``TokenBuckets``).
- The home learns of an envelope only its recipient key, its size and the
  sender's address; it never opens one.
- Bad datagrams are dropped and counted by reason; nothing a peer sends raises.
- ``now`` and randomness are parameters: no clock, no socket, no asyncio here.

What both sides agree on (the signed statements, ``HomeConfig``, the events and
``HomeStatistics``) is ``home_terms``, re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nat.drops import DropCounter
from nat.ratelimit import TokenBuckets, source_of
from p2pnode.connectivity.envelope import EnvelopeDecodeError, envelope_recipient
from p2pnode.connectivity.home_terms import (
    ATTACH_CONTEXT,
    WATCH_CONTEXT,
    Address,
    HomeConfig,
    HomeEvent,
    HomeStatistics,
    LocalDelivery,
    PeerAttached,
    PeerDetached,
    Random,
    attach_signed_bytes,
    watch_signed_bytes,
)
from p2pnode.connectivity.homewire import (
    NONCE_BYTES,
    TOKEN_BYTES,
    TXID_BYTES,
    Attach,
    Attached,
    Challenge,
    Code,
    Datagram,
    Deliver,
    DeliverAck,
    Detach,
    Hello,
    HomeMessage,
    HomeWireDecodeError,
    Keepalive,
    KeepaliveAck,
    Notify,
    Send,
    SendResult,
    SetAck,
    SetState,
    Watch,
    Watched,
    decode_message,
    encode_message,
)
from p2pnode.connectivity.watch import WatchOutcome, WatchTable, refused_table
from p2pnode.identity import verify_signature

__all__ = [  # the terms are re-exported: they lived here first (home_terms)
    "ATTACH_CONTEXT",
    "WATCH_CONTEXT",
    "HomeConfig",
    "HomeCore",
    "HomeStatistics",
    "LocalDelivery",
    "PeerAttached",
    "PeerDetached",
    "attach_signed_bytes",
    "watch_signed_bytes",
]

logger = logging.getLogger(__name__)


class _Session:
    """One attached peer: a fixed set of small fields (see benchmarks/attach_capacity.py)."""

    __slots__ = ("address", "deadline", "keepalive", "key", "presence", "token")

    def __init__(
        self, key: bytes, address: Address, token: bytes, keepalive: float, deadline: float
    ) -> None:
        self.key = key
        self.address = address
        self.token = token
        self.keepalive = keepalive
        self.deadline = deadline
        self.presence = b""


@dataclass(slots=True)
class _Pending:
    sender: Address
    txid: bytes
    recipient: bytes
    envelope: bytes
    retransmit_at: float
    give_up_at: float


class HomeCore:
    """The supernode's side of the home protocol for one UDP socket."""

    def __init__(
        self,
        home_key: bytes,
        *,
        secret: bytes,
        random: Random,
        now: float,
        config: HomeConfig | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the challenge secret must be at least 16 bytes")
        self.home_key = home_key
        self.config = config or HomeConfig()
        self._secret = secret
        self._random = random
        self._now = now
        self._sessions: dict[bytes, _Session] = {}
        self._by_token: dict[bytes, _Session] = {}
        self._buckets: dict[int, list[bytes]] = {}  # deadline second -> keys to check then
        self._swept_to = int(now)
        self._allow: dict[bytes, frozenset[bytes]] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._pending_keys: set[tuple[Address, bytes]] = set()
        self._pending_per_recipient: dict[bytes, int] = {}
        self.watches = WatchTable()
        self.refused_watches = refused_table()  # watch.py: admitted when the target allows
        self._send_limit: TokenBuckets[str] = TokenBuckets(
            self.config.send_rate, self.config.send_burst, max_sources=65_536
        )
        self._recipient_limit: TokenBuckets[bytes] = TokenBuckets(
            self.config.recipient_rate, self.config.recipient_burst, max_sources=65_536
        )
        self._control_limit: TokenBuckets[str] = TokenBuckets(
            self.config.control_rate, self.config.control_burst, max_sources=65_536
        )
        self._notify_seq = 0
        self._own_presence = b""
        self._events: list[HomeEvent] = []
        self._out: list[Datagram] = []
        self.drops = DropCounter(logger, lambda: self._now)
        self._refused: dict[Code, int] = {}
        self._counts = {"forwarded": 0, "delivered": 0, "not_attached": 0, "no_answer": 0}
        self._counts.update(renewed=0, admitted=0)

    # -- inputs ------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> list[Datagram]:
        """Handle one datagram; returns the datagrams to send."""
        self._now = now
        try:
            message = decode_message(data)
        except HomeWireDecodeError as error:
            self.drops.drop("undecodable", str(error))
            return self._flush()
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self.drops.drop("not a request to a home", type(message).__name__)
        else:
            handler(self, message, source)
        return self._flush()

    def tick(self, now: float) -> list[Datagram]:
        """Run the timers due at ``now``: lost sessions, delivery retries, watch leases."""
        self._now = now
        self._sweep_sessions(now)
        self._run_pending(now)
        self.watches.expire(now)
        self.refused_watches.expire(now)
        return self._flush()

    def next_deadline(self) -> float:
        """When ``tick`` next has work (at least once a second while anyone is attached)."""
        times = [float(self._swept_to + 1)] if self._sessions else []
        times.extend(p.retransmit_at for p in self._pending.values())
        watch = self.watches.next_expiry()
        if watch is not None:
            times.append(watch)
        return min(times) if times else self._now + 60.0

    def set_own_state(
        self, presence: bytes, allow: tuple[bytes, ...] | None, now: float
    ) -> list[Datagram]:
        """This home's own presence and allow-list (a public node is its own home)."""
        self._now = now
        if allow is None:
            self._allow.pop(self.home_key, None)
        else:
            self._allow[self.home_key] = frozenset(allow)
            self._restrict(self.home_key, self._allow[self.home_key])
        if presence != self._own_presence:
            self._own_presence = presence
            self._notify(self.home_key, attached=True, presence=presence)
        self._admit(self.home_key, presence)
        return self._flush()

    def close_own(self, now: float) -> list[Datagram]:
        """This home is going away: its own watchers hear it is offline."""
        self._now = now
        self._notify(self.home_key, attached=False, presence=b"")
        return self._flush()

    def drain_events(self) -> list[HomeEvent]:
        events, self._events = self._events, []
        return events

    # -- queries -----------------------------------------------------------------

    def is_attached(self, key: bytes) -> bool:
        return key in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def statistics(self) -> HomeStatistics:
        return HomeStatistics(
            attached=len(self._sessions),
            pending=len(self._pending),
            watches=len(self.watches),
            forwarded=self._counts["forwarded"],
            delivered=self._counts["delivered"],
            not_attached=self._counts["not_attached"],
            no_answer=self._counts["no_answer"],
            watches_renewed=self._counts["renewed"],
            watches_admitted=self._counts["admitted"],
            refused=tuple(sorted((code.name, n) for code, n in self._refused.items())),
            dropped=tuple(sorted(self.drops.counts().items())),
        )

    # -- handlers ----------------------------------------------------------------

    def _nonce(self, source: Address, period: int) -> bytes:
        material = f"{period}|{source[0]}|{source[1]}".encode()
        return hmac.new(self._secret, material, hashlib.sha256).digest()[:NONCE_BYTES]

    def _period(self) -> int:
        return int(self._now // self.config.challenge_period)

    def _control_allowed(self, source: Address) -> bool:
        if self._control_limit.allow(source_of(source[0]), self._now):
            return True
        self._refuse(Code.RATE_LIMITED)
        return False

    def _hello(self, message: Hello, source: Address) -> None:
        if not self._control_allowed(source):
            return  # silence: a flood gets no amplification
        nonce = self._nonce(source, self._period())
        self._send(Challenge(message.txid, nonce, self.home_key), source)

    def _attach(self, message: Attach, source: Address) -> None:
        if not self._control_allowed(source):
            return
        period = self._period()
        fresh = any(
            hmac.compare_digest(message.nonce, self._nonce(source, p)) for p in (period, period - 1)
        )
        signed = attach_signed_bytes(
            self.home_key, message.nonce, message.peer_key, message.keepalive_ms
        )
        if not fresh or not verify_signature(message.peer_key, signed, message.signature):
            self._answer_attach(message.txid, Code.UNPROVEN, source)
            return
        existing = self._sessions.get(message.peer_key)
        if existing is None and len(self._sessions) >= self.config.max_attached:
            self._answer_attach(message.txid, Code.FULL, source)
            return
        keepalive = min(
            max(message.keepalive_ms / 1000, self.config.min_keepalive), self.config.max_keepalive
        )
        if existing is not None:  # re-attach (our answer was lost, or its address changed)
            del self._by_token[existing.token]
        token = self._random(TOKEN_BYTES)
        session = _Session(message.peer_key, source, token, keepalive, 0.0)
        if existing is not None:
            session.presence = existing.presence
        self._sessions[message.peer_key] = session
        self._by_token[token] = session
        self._refresh(session, source)
        self._send(Attached(message.txid, Code.OK, token, int(keepalive * 1000), source), source)
        if existing is None:
            self._events.append(PeerAttached(message.peer_key, source))
            self._notify(message.peer_key, attached=True, presence=session.presence)

    def _answer_attach(self, txid: bytes, code: Code, source: Address) -> None:
        self._refuse(code)
        self._send(Attached(txid, code, bytes(TOKEN_BYTES), 0, source), source)

    def _keepalive(self, message: Keepalive, source: Address) -> None:
        session = self._by_token.get(message.token)
        if session is None:
            self._send(KeepaliveAck(message.token, Code.UNKNOWN_SESSION), source)
            return
        self._refresh(session, source)
        self._send(KeepaliveAck(message.token, Code.OK), source)

    def _detach(self, message: Detach, source: Address) -> None:
        session = self._by_token.get(message.token)
        if session is not None:
            self._end(session, "detached")

    def _set(self, message: SetState, source: Address) -> None:
        session = self._by_token.get(message.token)
        if session is None:
            self._send(SetAck(message.txid, Code.UNKNOWN_SESSION), source)
            return
        self._refresh(session, source)
        if message.allow is None:
            self._allow.pop(session.key, None)
        else:
            allowed = frozenset(message.allow)
            self._allow[session.key] = allowed
            self._restrict(session.key, allowed)
        changed = message.presence != session.presence
        session.presence = message.presence
        self._send(SetAck(message.txid, Code.OK), source)
        if changed:
            self._notify(session.key, attached=True, presence=session.presence)
        self._admit(session.key, session.presence)

    def _send_envelope(self, message: Send, source: Address) -> None:
        try:
            recipient = envelope_recipient(message.envelope)
        except EnvelopeDecodeError:  # too short to be sealed (the decoder bounds the length)
            self._result(message.txid, Code.BAD_REQUEST, source)
            return
        if (source, message.txid) in self._pending_keys:
            return  # a retransmission of a delivery in flight: its answer will come
        if not self._send_limit.allow(source_of(source[0]), self._now):
            self._result(message.txid, Code.RATE_LIMITED, source)
            return
        if not self._recipient_limit.allow(recipient, self._now):
            self._result(message.txid, Code.RATE_LIMITED, source)
            return
        if recipient == self.home_key:
            self._events.append(LocalDelivery(message.envelope, source))
            self._counts["delivered"] += 1
            self._send(SendResult(message.txid, Code.OK), source)
            return
        session = self._sessions.get(recipient)
        if session is None:
            self._counts["not_attached"] += 1
            self._send(SendResult(message.txid, Code.NOT_ATTACHED), source)
            return
        in_flight = self._pending_per_recipient.get(recipient, 0)
        if (
            len(self._pending) >= self.config.max_pending
            or in_flight >= self.config.max_pending_per_recipient
        ):
            self._result(message.txid, Code.BUSY, source)
            return
        deliver_id = self._random(TXID_BYTES)
        while deliver_id in self._pending:
            deliver_id = self._random(TXID_BYTES)
        self._pending[deliver_id] = _Pending(
            source,
            message.txid,
            recipient,
            message.envelope,
            self._now + self.config.deliver_retransmit,
            self._now + self.config.deliver_timeout,
        )
        self._pending_keys.add((source, message.txid))
        self._pending_per_recipient[recipient] = in_flight + 1
        self._counts["forwarded"] += 1
        self._send(Deliver(deliver_id, message.envelope), session.address)

    def _deliver_ack(self, message: DeliverAck, source: Address) -> None:
        pending = self._pending.get(message.deliver_id)
        if pending is None:
            return  # a duplicate ack, or one for a delivery we gave up on
        session = self._sessions.get(pending.recipient)
        if session is None or session.address != source:
            self.drops.drop("delivery ack from elsewhere")
            return
        self._finish(message.deliver_id, pending, Code.OK)

    def _watch(self, message: Watch, source: Address) -> None:
        if not self._control_allowed(source):
            return
        if abs(message.timestamp - self._now) > self.config.watch_skew or not verify_signature(
            message.watcher_key,
            watch_signed_bytes(self.home_key, message.target_key, message.timestamp),
            message.signature,
        ):
            self._answer_watch(message, Code.UNPROVEN, source)
            return
        allowed = self._allow.get(message.target_key)
        if allowed is not None and message.watcher_key not in allowed:
            # remembered with a token for its lease: told at once if the target allows it
            target, watcher = message.target_key, message.watcher_key
            self.refused_watches.add(target, watcher, source, self._now, self._random(TOKEN_BYTES))
            refused = self.refused_watches.get(target, watcher)
            token = refused.token if refused is not None else bytes(TOKEN_BYTES)
            self._answer_watch(message, Code.FORBIDDEN, source, token)
            return
        outcome = self.watches.add(
            message.target_key, message.watcher_key, source, self._now, self._random(TOKEN_BYTES)
        )
        self._counts["renewed"] += outcome is WatchOutcome.RENEWED
        if outcome in (WatchOutcome.ADDED, WatchOutcome.RENEWED):
            watch = self.watches.get(message.target_key, message.watcher_key)
            token = watch.token if watch is not None else bytes(TOKEN_BYTES)
            self._answer_watch(message, Code.OK, source, token)
        else:
            self._answer_watch(message, Code.WATCH_LIMIT, source)

    def _answer_watch(
        self, message: Watch, code: Code, source: Address, token: bytes = bytes(TOKEN_BYTES)
    ) -> None:
        if code is not Code.OK:
            self._refuse(code)
        attached, presence = False, b""
        if code is Code.OK and message.target_key == self.home_key:
            attached, presence = True, self._own_presence
        elif code is Code.OK and (session := self._sessions.get(message.target_key)) is not None:
            attached, presence = True, session.presence
        self._send(
            Watched(message.txid, code, message.target_key, attached, presence, token), source
        )

    # -- internals ---------------------------------------------------------------

    def _refresh(self, session: _Session, source: Address) -> None:
        session.address = source
        session.deadline = self._now + session.keepalive + self.config.grace
        self._buckets.setdefault(int(session.deadline) + 1, []).append(session.key)

    def _end(self, session: _Session, reason: str) -> None:
        del self._sessions[session.key]
        del self._by_token[session.token]
        self._allow.pop(session.key, None)
        self._events.append(PeerDetached(session.key, reason))
        self._notify(session.key, attached=False, presence=b"")

    def _sweep_sessions(self, now: float) -> None:
        while self._swept_to < int(now):
            self._swept_to += 1
            for key in self._buckets.pop(self._swept_to, ()):
                session = self._sessions.get(key)
                if session is not None and session.deadline <= now:
                    self._end(session, "timed out")

    def _run_pending(self, now: float) -> None:
        for deliver_id, pending in list(self._pending.items()):
            if pending.give_up_at <= now:
                self._finish(deliver_id, pending, Code.NO_ANSWER)
            elif pending.retransmit_at <= now:
                session = self._sessions.get(pending.recipient)
                if session is None:
                    self._finish(deliver_id, pending, Code.NOT_ATTACHED)
                    continue
                pending.retransmit_at = now + self.config.deliver_retransmit
                self._send(Deliver(deliver_id, pending.envelope), session.address)

    def _finish(self, deliver_id: bytes, pending: _Pending, code: Code) -> None:
        del self._pending[deliver_id]
        self._pending_keys.discard((pending.sender, pending.txid))
        left = self._pending_per_recipient[pending.recipient] - 1
        if left:
            self._pending_per_recipient[pending.recipient] = left
        else:
            del self._pending_per_recipient[pending.recipient]
        if code is Code.OK:
            self._counts["delivered"] += 1
        elif code is Code.NO_ANSWER:
            self._counts["no_answer"] += 1
        else:
            self._counts["not_attached"] += 1
        self._send(SendResult(pending.txid, code), pending.sender)

    def _restrict(self, target: bytes, allowed: frozenset[bytes]) -> None:
        """Apply ``target``'s new allow-list: each watcher it drops hears "not attached"
        now (else it would show the last presence until its watch is renewed)."""
        for watcher in self.watches.watchers(target, self._now):
            if watcher.key not in allowed:
                self._notify_seq += 1
                notify = Notify(target, False, b"", self._notify_seq, watcher.token)
                self._out.append(Datagram(encode_message(notify), watcher.address))
                self.refused_watches.add(
                    target, watcher.key, watcher.address, self._now, watcher.token
                )
        self.watches.keep_only(target, allowed)

    def _admit(self, target: bytes, presence: bytes) -> None:
        """Refused watchers of ``target`` that its allow-list now lets in hear it is attached
        at once (they would otherwise wait for their renewal)."""
        allowed = self._allow.get(target)
        for watcher in self.watches.admit(self.refused_watches, target, allowed, self._now):
            self._counts["admitted"] += 1
            self._notify_seq += 1
            notify = Notify(target, True, presence, self._notify_seq, watcher.token)
            self._out.append(Datagram(encode_message(notify), watcher.address))

    def _notify(self, target: bytes, *, attached: bool, presence: bytes) -> None:
        watchers = self.watches.watchers(target, self._now)
        if not watchers:
            return
        self._notify_seq += 1
        for watcher in watchers:
            notify = Notify(target, attached, presence, self._notify_seq, watcher.token)
            self._out.append(Datagram(encode_message(notify), watcher.address))

    def _result(self, txid: bytes, code: Code, source: Address) -> None:
        self._refuse(code)
        self._send(SendResult(txid, code), source)

    def _refuse(self, code: Code) -> None:
        self._refused[code] = self._refused.get(code, 0) + 1

    def _send(self, message: HomeMessage, address: Address) -> None:
        self._out.append(Datagram(encode_message(message), address))

    def _flush(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out


# The requests a home serves: an explicit table keyed by the decoded message's class (so
# each handler gets exactly its type), never dispatch by a name a peer chose.
_HANDLERS: dict[type, Callable[[HomeCore, Any, Address], None]] = {
    Hello: HomeCore._hello,
    Attach: HomeCore._attach,
    Keepalive: HomeCore._keepalive,
    Detach: HomeCore._detach,
    SetState: HomeCore._set,
    Send: HomeCore._send_envelope,
    DeliverAck: HomeCore._deliver_ack,
    Watch: HomeCore._watch,
}
