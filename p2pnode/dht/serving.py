"""Serving one request: rate limit, amplification budget, the answer, its frame.

The request half of the core (``protocol`` dispatches datagrams here); what the
answer says comes from ``answers`` (PING, FIND_NODE, FIND_VALUE, extensions) and
``admission`` (STORE). This module decides whether and how much we answer.

Invariants:
- Requests are rate-limited per source IP (``nat.ratelimit.source_of``: IPv4
  address, IPv6 /64) before anything is decoded further or answered.
- A reply that would exceed the budget (``addresses.reply_budget``: the
  amplification bound for senders that did not echo our cookie) is not sent.
- Abuse refusals (rate limit, a STORE whose proof of key fails or that is
  rate-limited) are queued as ``Refusal`` for the adapter's fail2ban-style log
  (``nat.logsafe.RefusalLog``); the queue is bounded, the oldest go first. A
  first STORE without a proof is the normal handshake (UNPROVEN + token), not a
  refusal: honest peers do it on first contact.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from nat.drops import DropCounter
from nat.ratelimit import TokenBuckets, source_of
from p2pnode.dht.addresses import AddressProofs
from p2pnode.dht.admission import StoreAdmission
from p2pnode.dht.answers import Answers
from p2pnode.dht.config import DhtConfig
from p2pnode.dht.contacts import ContactGate
from p2pnode.dht.keys import Address, Contact
from p2pnode.dht.messages import (
    DhtDecodeError,
    Flags,
    Frame,
    Message,
    Store,
    StoreResult,
    encode_frame,
)
from p2pnode.identity import Identity

__all__ = ["MAX_QUEUED_REFUSALS", "STORE_REFUSALS", "Refusal", "RequestServer", "kind_of"]

MAX_QUEUED_REFUSALS = 256  # refusals kept for the adapter between two drains
STORE_REFUSALS = frozenset({"rate-limited", "bad-proof"})  # STORE reasons that are abuse

_CLIENT = int(Flags.CLIENT)
_VERIFIED_YOU = int(Flags.VERIFIED_YOU)
_PROVE = int(Flags.PROVE)
_PROVEN_YOU = int(Flags.PROVEN_YOU)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One abuse refusal: ``what`` was refused to ``address`` because of ``reason``."""

    what: str  # "dht-request" or "dht-store"
    reason: str
    address: Address


def kind_of(message: Message) -> str:
    """The message type's name as the RPC counters use it (``findvalue``, ``store``...)."""
    return type(message).__name__.lower()


class RequestServer:
    """Answers requests within the rate limit and the amplification budget."""

    def __init__(
        self,
        identity: Identity,
        config: DhtConfig,
        *,
        addresses: AddressProofs,
        admission: StoreAdmission,
        answers: Answers,
        contacts: ContactGate,
        drops: DropCounter,
        rpcs: Counter[tuple[str, str]],
        send: Callable[[bytes, Address], None],
        wall: Callable[[float], float],
    ) -> None:
        self.identity = identity
        self._flags = _CLIENT if config.client_mode else 0
        self._limits: TokenBuckets[str] = TokenBuckets(config.request_rate, config.request_burst)
        self._addresses = addresses
        self._admission = admission
        self._answers = answers
        self._contacts = contacts
        self._drops = drops
        self._rpcs = rpcs
        self._send = send
        self._wall = wall
        self.refusals: deque[Refusal] = deque(maxlen=MAX_QUEUED_REFUSALS)

    def enter_client_mode(self) -> None:
        """Answer as a client from now on (``DhtCore.enter_client_mode``)."""
        self._flags = _CLIENT

    def serve(self, frame: Frame, address: Address, size: int, now: float) -> None:
        """Answer one request datagram of ``size`` bytes (its frame decoded and checked)."""
        if not self._limits.allow(source_of(address[0]), now):
            self._drops.drop("rate limited")
            self.refusals.append(Refusal("dht-request", "rate-limited", address))
            return
        kind = kind_of(frame.message)
        receives = self._addresses.receives_at(frame.cookie, frame.sender_key, address, now)
        budget = self._addresses.reply_budget(receives, size)
        client = bool(frame.flags & _CLIENT)
        sender = Contact(frame.sender_id, frame.sender_key, address)
        reply: Message | None
        try:
            reply = self._answer(
                frame.message,
                sender,
                client,
                budget,
                frame.request_id,
                now,
                receipt=bool(frame.flags & _PROVE),
            )
        except DhtDecodeError as error:
            self._drops.drop("bad extension request", str(error))
            self._rpcs[(kind, "refused")] += 1
            return
        if isinstance(reply, StoreResult) and reply.reason in STORE_REFUSALS:
            self.refusals.append(Refusal("dht-store", reply.reason, address))
        if not client:
            # Before the reply, so that it can say PROVEN_YOU: the put this lookup may
            # be part of then sends its STOREs here without a proof to sign.
            self._contacts.check_request_proof(frame, sender, now, self._wall(now))
        if reply is not None:
            self._reply(frame, reply, sender, receives, budget, kind)
        self._contacts.seen(sender, client, now)

    def _reply(
        self,
        frame: Frame,
        reply: Message,
        sender: Contact,
        receives: bool,
        budget: int,
        kind: str,
    ) -> None:
        flags = self._flags | (_VERIFIED_YOU if receives else 0)
        if not self._flags and self._addresses.proven(sender.public_key, sender.address):
            flags |= _PROVEN_YOU  # its STOREs here need no proof: it may spare the signature
        key_proof = b""
        # A STORE's PROVE asks for a receipt (``admission``), which proves our key too.
        if frame.flags & _PROVE and not self._flags and not isinstance(reply, StoreResult):
            key_proof = self._contacts.sign_reply(
                self.identity, frame.request_id, sender.public_key
            )
        reply_frame = Frame(
            reply,
            frame.request_id,
            self.identity.public_key,
            self.identity.node_id,
            flags,
            b"",
            key_proof,
        )
        data = encode_frame(reply_frame)
        if len(data) > budget:
            self._drops.drop("reply larger than the amplification budget")
            self._rpcs[(kind, "over budget")] += 1
        else:
            self._send(data, sender.address)
            self._rpcs[(kind, "served")] += 1

    def _answer(
        self,
        message: Message,
        sender: Contact,
        client: bool,
        budget: int,
        request_id: bytes,
        now: float,
        *,
        receipt: bool = True,
    ) -> Message | None:
        """The reply to one request (``answers``); STOREs may prove their sender.

        ``receipt``: the STORE asked for a signed receipt (``Flags.PROVE``).
        """
        proven = self._addresses.proven(sender.public_key, sender.address)
        if isinstance(message, Store):
            result, newly_proven = self._admission.answer(
                message, sender, request_id, proven, now, self._wall(now), receipt=receipt
            )
            if newly_proven:  # it signed the token we sent to this address: a challenge
                self._addresses.prove(sender.public_key, sender.address, now)
            return result
        return self._answers.answer(message, sender, client, proven, budget, now, self._wall(now))
