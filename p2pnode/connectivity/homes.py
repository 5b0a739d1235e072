"""The peer side of the home protocol (sans-IO): two homes kept, envelopes sent, watches held.

A node behind NAT keeps ``wanted`` (two) home supernodes. What this core reports
(its events) and its configuration are :mod:`homes_events`'s, re-exported here. Each home slot is a
small state machine written as a table (``homeslot.py``); an undefined (state,
input) pair raises ``TransitionError``, which the datagram boundary counts as a
drop.

A home that stops answering is declared LOST ``keepalive_timeout`` seconds
after the keepalive it did not answer; the slot is refilled at once from the
candidates (a lost home is retried only after ``failure_backoff``), and
``HomesChanged`` tells the service to republish the CONTACT record.

Sending: an envelope goes to the recipient's first home; DELIVERED ends it;
NOT_ATTACHED, NO_ANSWER, BUSY, RATE_LIMITED or silence for ``send_timeout``
move on to the next home; after the last one ``SendDone(delivered=False)``.

Watching: a WATCH (signed by us, for that home) to each of the target's homes,
renewed every ``watch_refresh`` seconds and never less often than our
keepalives: the renewal is what keeps our NAT mapping towards those homes open
for their NOTIFY datagrams.

Bounded: candidates, sends in flight and watches have named maxima. ``now``,
randomness and signing are parameters: no clock, socket or asyncio here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nat.drops import DropCounter
from p2pnode.connectivity.attach import attach_signed_bytes, watch_signed_bytes
from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.homes_events import (
    Delivered,
    HomeAttached,
    HomeLost,
    HomesChanged,
    NeedCandidates,
    PeerConfig,
    PeerEvent,
    PresenceNotice,
    SendDone,
)
from p2pnode.connectivity.homeslot import (
    DEFAULT_KEEPALIVE,
    MIN_KEEPALIVE,
    TRANSITIONS,
    HomeSlot,
    SlotInput,
    SlotState,
    TransitionError,
    keepalive_for_lifetime,
)
from p2pnode.connectivity.homewire import (
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

__all__ = [
    "DEFAULT_KEEPALIVE",
    "TRANSITIONS",
    "Delivered",
    "HomeAttached",
    "HomeLost",
    "HomesChanged",
    "NeedCandidates",
    "PeerConfig",
    "PeerCore",
    "PresenceNotice",
    "SendDone",
    "SlotInput",
    "SlotState",
    "TransitionError",
    "keepalive_for_lifetime",
]

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 16
MAX_SENDS = 256
MAX_WATCHES = 1024
SET_RETRIES = 4  # quick resends of an unacknowledged SET before it rides on keepalives

Address = tuple[str, int]
Random = Callable[[int], bytes]
Sign = Callable[[bytes], bytes]


@dataclass(slots=True)
class _Outgoing:
    envelope: bytes
    homes: tuple[Address, ...]
    index: int
    txid: bytes
    retry_at: float
    give_up_at: float
    attempts: list[tuple[Address, str]] = field(default_factory=list)


@dataclass(slots=True)
class _WatchLease:
    homes: tuple[HomeEntry, ...]
    refresh_at: float
    txids: dict[Address, bytes] = field(default_factory=dict)  # last WATCH sent to each home
    tokens: dict[Address, bytes] = field(default_factory=dict)  # each home's watch token


class PeerCore:
    """A peer's home slots, outgoing envelopes and watches on one UDP socket."""

    def __init__(
        self,
        own_key: bytes,
        *,
        sign: Sign,
        random: Random,
        now: float,
        config: PeerConfig | None = None,
    ) -> None:
        self.own_key = own_key
        self.config = config or PeerConfig()
        self._sign = sign
        self._random = random
        self._now = now
        self._candidates: list[HomeEntry] = []
        self._backoff: dict[bytes, float] = {}  # home key -> not before
        self._slots: list[HomeSlot] = []
        self._sends: dict[int, _Outgoing] = {}
        self._send_by_txid: dict[bytes, int] = {}
        self._next_handle = 1
        self._watches: dict[bytes, _WatchLease] = {}
        # A renewal keeps our NAT binding towards the target's homes, exactly as a
        # keepalive does towards ours: as often as our keepalives at least.
        self._watch_refresh = min(self.config.watch_refresh, self.config.keepalive)
        self._presence = b""
        self._allow: tuple[bytes, ...] | None = None
        self._asked_candidates = False
        self._closed = False
        self._events: list[PeerEvent] = []
        self._out: list[Datagram] = []
        self.drops = DropCounter(logger, lambda: self._now)

    # -- commands ----------------------------------------------------------------

    def offer_candidates(self, candidates: Sequence[HomeEntry], now: float) -> list[Datagram]:
        """Supernodes we may attach to, best first (replaces the previous list)."""
        self._now = now
        self._candidates = [c for c in candidates if c.key != self.own_key][:MAX_CANDIDATES]
        self._asked_candidates = False
        self._fill()
        return self._flush()

    def set_state(
        self, presence: bytes, allow: tuple[bytes, ...] | None, now: float
    ) -> list[Datagram]:
        """Our presence payload and watch allow-list (None: anyone), pushed to every home."""
        self._now = now
        self._presence, self._allow = presence, allow
        for slot in self._slots:
            if slot.state in (SlotState.ATTACHED, SlotState.CHECKING):
                self._push_state(slot)
        return self._flush()

    def send(
        self, envelope: bytes, homes: Sequence[Address], now: float
    ) -> tuple[int, list[Datagram]]:
        """Hand ``envelope`` to the first of ``homes`` that delivers it; ``SendDone`` ends it."""
        self._now = now
        if len(self._sends) >= MAX_SENDS:
            raise OverflowError(f"more than {MAX_SENDS} envelopes in flight")
        handle = self._next_handle
        self._next_handle += 1
        outgoing = _Outgoing(envelope, tuple(homes), -1, b"", now, now)
        self._sends[handle] = outgoing
        self._next_home(handle, outgoing)
        return handle, self._flush()

    def watch(self, target: bytes, homes: Sequence[HomeEntry], now: float) -> list[Datagram]:
        """Watch ``target`` at ``homes`` (its CONTACT's homes); renewed until ``unwatch``."""
        self._now = now
        if target not in self._watches and len(self._watches) >= MAX_WATCHES:
            raise OverflowError(f"more than {MAX_WATCHES} watches")
        lease = _WatchLease(tuple(homes), now + self._watch_refresh)
        previous = self._watches.get(target)
        if previous is not None:  # homes we keep watching keep their tokens
            kept = {home.signal for home in homes}
            lease.tokens = {a: t for a, t in previous.tokens.items() if a in kept}
        self._watches[target] = lease
        self._send_watch(target, lease)
        return self._flush()

    def unwatch(self, target: bytes) -> None:
        self._watches.pop(target, None)

    def close(self, now: float) -> list[Datagram]:
        """Detach from every home (graceful: watchers hear it at once)."""
        self._now = now
        self._closed = True
        for slot in self._slots:
            if slot.state in (SlotState.ATTACHED, SlotState.CHECKING):
                self._emit(Detach(slot.token), slot.home.signal)
        self._slots.clear()
        return self._flush()

    # -- inputs ------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> list[Datagram]:
        self._now = now
        try:
            message = decode_message(data)
        except HomeWireDecodeError as error:
            self.drops.drop("undecodable", str(error))
            return self._flush()
        try:
            self._dispatch(message, source)
        except TransitionError as error:
            self.drops.drop("unexpected in state", str(error))
        return self._flush()

    def tick(self, now: float) -> list[Datagram]:
        self._now = now
        for slot in list(self._slots):
            self._slot_timer(slot, now)
        for handle, outgoing in list(self._sends.items()):
            if outgoing.give_up_at <= now:
                outgoing.attempts.append((outgoing.homes[outgoing.index], "no answer"))
                self._next_home(handle, outgoing)
            elif outgoing.retry_at <= now:
                outgoing.retry_at = now + self.config.retransmit
                self._emit(Send(outgoing.txid, outgoing.envelope), outgoing.homes[outgoing.index])
        for target, lease in self._watches.items():
            if lease.refresh_at <= now:
                lease.refresh_at = now + self._watch_refresh
                self._send_watch(target, lease)
        self._fill()
        return self._flush()

    def next_deadline(self) -> float:
        times: list[float] = []
        for slot in self._slots:
            times.append(slot.retry_at)
            if slot.set_txid is not None:
                times.append(slot.set_retry_at)
            if slot.state is not SlotState.ATTACHED:
                times.append(slot.give_up_at)
        for outgoing in self._sends.values():
            times.extend((outgoing.retry_at, outgoing.give_up_at))
        times.extend(lease.refresh_at for lease in self._watches.values())
        if len(self._slots) < self.config.wanted and self._backoff:
            times.append(min(self._backoff.values()))
        return min(times) if times else self._now + 60.0

    def drain_events(self) -> list[PeerEvent]:
        events, self._events = self._events, []
        return events

    # -- queries -----------------------------------------------------------------

    def homes(self) -> tuple[HomeEntry, ...]:
        """The homes we are attached to now."""
        return tuple(
            s.home for s in self._slots if s.state in (SlotState.ATTACHED, SlotState.CHECKING)
        )

    def slot_states(self) -> tuple[tuple[bytes, SlotState], ...]:
        return tuple((s.home.key, s.state) for s in self._slots)

    # -- slots -------------------------------------------------------------------

    def _fill(self) -> None:
        if self._closed:
            return
        in_use = {slot.home.key for slot in self._slots}
        for key in [k for k, until in self._backoff.items() if until <= self._now]:
            del self._backoff[key]
        while len(self._slots) < self.config.wanted:
            choice = next(
                (c for c in self._candidates if c.key not in in_use and c.key not in self._backoff),
                None,
            )
            if choice is None:
                if not self._asked_candidates:
                    self._asked_candidates = True
                    self._events.append(NeedCandidates())
                return
            in_use.add(choice.key)
            self._start_slot(choice)

    def _start_slot(self, home: HomeEntry) -> None:
        slot = HomeSlot(
            home,
            SlotState.HELLO,
            self._random(TXID_BYTES),
            self._now,
            self._now + self.config.retransmit,
            self._now + self.config.attach_timeout,
        )
        self._slots.append(slot)
        self._emit(Hello(slot.txid), home.signal)

    def _restart_slot(self, slot: HomeSlot) -> None:
        """The home forgot our session: attach again from HELLO (state already HELLO)."""
        was_attached = slot.token != b""
        slot.txid = self._random(TXID_BYTES)
        slot.token = b""
        slot.retry_at = self._now + self.config.retransmit
        slot.give_up_at = self._now + self.config.attach_timeout
        self._emit(Hello(slot.txid), slot.home.signal)
        if was_attached:
            self._events.append(HomesChanged(self.homes()))

    def _lose(self, slot: HomeSlot, reason: str) -> None:
        was_attached = slot.token != b""
        self._slots.remove(slot)
        self._backoff[slot.home.key] = self._now + self.config.failure_backoff
        self._events.append(HomeLost(slot.home, reason))
        if was_attached:
            self._events.append(HomesChanged(self.homes()))
        self._fill()

    def _slot_timer(self, slot: HomeSlot, now: float) -> None:
        if slot.set_txid is not None and slot.set_retry_at <= now and slot.token:
            # An unacknowledged presence/allow-list update: resent a few times at the
            # retransmit interval (watchers should hear a change within seconds), then
            # only along with keepalives.
            slot.set_tries += 1
            slot.set_retry_at = (
                now + self.config.retransmit if slot.set_tries < SET_RETRIES else float("inf")
            )
            self._emit(
                SetState(slot.set_txid, slot.token, self._presence, self._allow), slot.home.signal
            )
        if slot.state is SlotState.ATTACHED:
            if slot.retry_at <= now:  # keepalive due
                slot.fire(SlotInput.KEEPALIVE_DUE)
                slot.give_up_at = now + self.config.keepalive_timeout
                slot.retry_at = now + self.config.retransmit * 2
                self._emit(Keepalive(slot.token), slot.home.signal)
                if slot.set_txid is not None:  # an unacknowledged update rides along
                    self._emit(
                        SetState(slot.set_txid, slot.token, self._presence, self._allow),
                        slot.home.signal,
                    )
            return
        if slot.give_up_at <= now:
            slot.fire(SlotInput.TIMEOUT)
            self._lose(slot, f"no answer in state {_state_before_loss(slot)}")
            return
        if slot.retry_at <= now:
            slot.fire(SlotInput.RETRY)
            slot.retry_at = now + self.config.retransmit * (
                2 if slot.state is SlotState.CHECKING else 1
            )
            self._retransmit(slot)

    def _retransmit(self, slot: HomeSlot) -> None:
        if slot.state is SlotState.HELLO:
            self._emit(Hello(slot.txid), slot.home.signal)
        elif slot.state is SlotState.ATTACHING:
            self._emit(self._attach_message(slot), slot.home.signal)
        elif slot.state is SlotState.CHECKING:
            self._emit(Keepalive(slot.token), slot.home.signal)

    def _attach_message(self, slot: HomeSlot) -> Attach:
        keepalive_ms = int(self.config.keepalive * 1000)
        signed = attach_signed_bytes(slot.home.key, slot.nonce, self.own_key, keepalive_ms)
        return Attach(slot.txid, self.own_key, slot.nonce, keepalive_ms, self._sign(signed))

    def _push_state(self, slot: HomeSlot) -> None:
        slot.set_txid = self._random(TXID_BYTES)
        slot.set_tries = 0
        slot.set_retry_at = self._now + self.config.retransmit
        self._emit(
            SetState(slot.set_txid, slot.token, self._presence, self._allow), slot.home.signal
        )

    def _slot_at(self, source: Address) -> HomeSlot | None:
        return next((s for s in self._slots if s.home.signal == source), None)

    # -- dispatch ----------------------------------------------------------------

    def _dispatch(self, message: HomeMessage, source: Address) -> None:
        match message:
            case Challenge():
                self._on_challenge(message, source)
            case Attached():
                self._on_attached(message, source)
            case KeepaliveAck():
                self._on_keepalive_ack(message, source)
            case SetAck():
                slot = self._slot_at(source)
                if slot is not None and slot.set_txid == message.txid:
                    slot.set_txid = None
            case SendResult():
                self._on_send_result(message, source)
            case Deliver():
                self._on_deliver(message, source)
            case Watched():
                self._on_watched(message, source)
            case Notify():
                self._on_notify(message, source)
            case _:
                self.drops.drop("not an answer to a peer", type(message).__name__)

    def _on_challenge(self, message: Challenge, source: Address) -> None:
        slot = self._slot_at(source)
        if slot is None or message.txid != slot.txid or message.home_key != slot.home.key:
            self.drops.drop("challenge not ours")
            return
        slot.fire(SlotInput.CHALLENGE)
        slot.nonce = message.nonce
        slot.retry_at = self._now + self.config.retransmit
        self._emit(self._attach_message(slot), source)

    def _on_attached(self, message: Attached, source: Address) -> None:
        slot = self._slot_at(source)
        if slot is None or message.txid != slot.txid or slot.state is not SlotState.ATTACHING:
            self.drops.drop("attach answer not ours")
            return
        if message.code is not Code.OK:
            slot.fire(SlotInput.REFUSED)
            self._lose(slot, f"refused: {message.code.name}")
            return
        slot.fire(SlotInput.ATTACHED_OK)
        slot.token = message.token
        slot.keepalive = max(message.keepalive_ms / 1000, MIN_KEEPALIVE)
        slot.retry_at = self._now + slot.keepalive
        self._events.append(HomeAttached(slot.home, message.observed, slot.keepalive))
        self._events.append(HomesChanged(self.homes()))
        if self._presence or self._allow is not None:
            self._push_state(slot)

    def _on_keepalive_ack(self, message: KeepaliveAck, source: Address) -> None:
        slot = self._slot_at(source)
        if slot is None or not slot.token or message.token != slot.token:
            self.drops.drop("keepalive ack not ours")
            return
        if message.code is Code.OK:
            slot.fire(SlotInput.ACK_OK)
            slot.retry_at = self._now + slot.keepalive
            return
        slot.fire(SlotInput.ACK_UNKNOWN)
        self._restart_slot(slot)

    def _on_deliver(self, message: Deliver, source: Address) -> None:
        slot = self._slot_at(source)
        if slot is None or slot.state not in (SlotState.ATTACHED, SlotState.CHECKING):
            self.drops.drop("delivery from a stranger")
            return
        self._emit(DeliverAck(message.deliver_id), source)
        self._events.append(Delivered(message.envelope, slot.home))

    def _on_watched(self, message: Watched, source: Address) -> None:
        lease = self._watches.get(message.target_key)
        if lease is None or lease.txids.get(source) != message.txid:
            self.drops.drop("watch answer not ours")
            return
        if message.code is Code.OK or (message.code is Code.FORBIDDEN and any(message.token)):
            # refused with a token: the home tells us with it once the target allows us
            lease.tokens[source] = message.token
        notice = PresenceNotice(
            message.target_key, source, message.code, message.attached, message.presence
        )
        self._events.append(notice)

    def _on_notify(self, message: Notify, source: Address) -> None:
        lease = self._watches.get(message.target_key)
        token = lease.tokens.get(source) if lease is not None else None
        if token is None or message.token != token:
            self.drops.drop("notification not ours")
            return
        notice = PresenceNotice(
            message.target_key, source, Code.OK, message.attached, message.presence
        )
        self._events.append(notice)

    # -- sends -------------------------------------------------------------------

    def _next_home(self, handle: int, outgoing: _Outgoing) -> None:
        self._send_by_txid.pop(outgoing.txid, None)
        outgoing.index += 1
        if outgoing.index >= len(outgoing.homes):
            del self._sends[handle]
            self._events.append(SendDone(handle, False, None, tuple(outgoing.attempts)))
            return
        outgoing.txid = self._random(TXID_BYTES)
        outgoing.retry_at = self._now + self.config.retransmit
        outgoing.give_up_at = self._now + self.config.send_timeout
        self._send_by_txid[outgoing.txid] = handle
        self._emit(Send(outgoing.txid, outgoing.envelope), outgoing.homes[outgoing.index])

    def _on_send_result(self, message: SendResult, source: Address) -> None:
        handle = self._send_by_txid.get(message.txid)
        outgoing = self._sends.get(handle) if handle is not None else None
        if handle is None or outgoing is None or outgoing.homes[outgoing.index] != source:
            self.drops.drop("send result not ours")
            return
        outgoing.attempts.append((source, message.code.name.lower()))
        if message.code is Code.OK:
            del self._send_by_txid[message.txid]
            del self._sends[handle]
            self._events.append(SendDone(handle, True, source, tuple(outgoing.attempts)))
        elif message.code is Code.TOO_LARGE:
            outgoing.index = len(outgoing.homes) - 1  # no home will take it
            self._next_home(handle, outgoing)
        else:
            self._next_home(handle, outgoing)

    # -- watches -----------------------------------------------------------------

    def _send_watch(self, target: bytes, lease: _WatchLease) -> None:
        timestamp = int(self._now)
        for home in lease.homes:
            signature = self._sign(watch_signed_bytes(home.key, target, timestamp))
            watch = Watch(self._random(TXID_BYTES), self.own_key, target, timestamp, signature)
            lease.txids[home.signal] = watch.txid
            self._emit(watch, home.signal)

    # -- output ------------------------------------------------------------------

    def _emit(self, message: HomeMessage, address: Address) -> None:
        self._out.append(Datagram(encode_message(message), address))

    def _flush(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out


def _state_before_loss(slot: HomeSlot) -> str:
    return "after keepalive" if slot.token else "while attaching"
