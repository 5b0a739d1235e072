"""The sans-IO Kademlia core: datagrams and ``now`` in; datagrams, results, deadline out.

The asyncio adapter (``p2pnode.dht.node``) only feeds ``datagram_received`` and
``handle_timer``, sends ``datagrams_to_send()`` and re-arms one timer at
``next_deadline()``. Time and randomness are parameters; nothing here reads a
clock or a socket. ``now`` is a monotonic clock (timers, tokens, rate limits);
records are judged at ``wall(now)`` (``now + wall_offset``, set by the adapter).

Invariants:
- A datagram whose sender id is not derived from its sender key is dropped.
- A reply is taken only for a pending request id, from the address asked, with
  the key expected, of the type that answers the request.
- No handler raises: a datagram that makes one fail is dropped and counted
  (``handler error``); a reply that makes its operation fail still completes its
  request (as a failure, so the operation moves on) and counts against the
  contact that sent it, as does a record in a reply that does not decode.
- A contact enters the routing table only after proving its key at its address
  (challenge-response: it signs our nonce with a context, see ``PONG_CONTEXT``)
  and only if it did not flag itself as a client. Unproven senders get answers.
- A reply to a request that does not echo our cookie for its key at its address
  (``addresses``) is at most ``AMPLIFICATION_FACTOR`` times the request, the
  challenge PING we may send it included (requesters pad when they hold none).
- A STORE is admitted only from a sender that proved its key: it signed our
  challenge at its address, or the STORE carries its proof over a token we
  handed out (``p2pnode.dht.proofs``). Others get ``UNPROVEN`` and a fresh token;
  our own STOREs are sent again once with the proof. Then the record is judged
  (``accept``). Requests and STOREs are rate-limited per source IP (/64 for IPv6).
  Serving a request is ``serving``; framing and sending our own ``sending``;
  judging records read from peers ``reading``.
- A STORED or DUPLICATE answer from a storer we have not proven counts only
  with its signed receipt (our request id is the nonce); then it is proven.
- Drops are counted by reason (``nat.drops.DropCounter``) and never raise.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from nat.drops import DropCounter
from p2pnode.dht.addresses import (
    AMPLIFICATION_FACTOR,
    PING_PAD_TO,
    UNVERIFIED_PAD_TO,
    AddressProofs,
)
from p2pnode.dht.admission import StoreAdmission
from p2pnode.dht.answers import PONG_CONTEXT, Answers, Peer
from p2pnode.dht.config import (
    DhtConfig,
    DhtStatistics,
    FindNodeResult,
    GetResult,
    OperationResult,
    PutResult,
)
from p2pnode.dht.contacts import ContactGate
from p2pnode.dht.keys import Address, Contact, node_id_of
from p2pnode.dht.lookup import LookupKind
from p2pnode.dht.maintenance import Maintenance
from p2pnode.dht.messages import (
    NONCE_BYTES,
    DhtDecodeError,
    ExtensionReply,
    Flags,
    Frame,
    Message,
    Nodes,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    Value,
    WireContact,
    decode_frame,
)
from p2pnode.dht.operations import (
    INTERNAL_OP,
    BootstrapOp,
    ExtensionOp,
    LookupOp,
    PingOp,
    StoreOp,
)
from p2pnode.dht.proofs import HeldTokens
from p2pnode.dht.reading import RecordReader
from p2pnode.dht.replies import match_reply, offered_token
from p2pnode.dht.requests import PendingRequests, Requester, SentRequest
from p2pnode.dht.routing import RoutingTable, TableHealth
from p2pnode.dht.sending import RequestSender
from p2pnode.dht.serving import Refusal, RequestServer, kind_of
from p2pnode.dht.storage import RecordStore
from p2pnode.identity import Identity
from p2pnode.records import Rejected, SignedRecord, accept

__all__ = [
    "AMPLIFICATION_FACTOR",
    "PING_PAD_TO",
    "PONG_CONTEXT",
    "UNVERIFIED_PAD_TO",
    "DhtCore",
    "OperationDone",
    "Peer",
    "Refusal",
]

logger = logging.getLogger(__name__)

MAX_OWN_RECORDS = 256
MAX_BOOTSTRAP_ADDRESSES = 64  # addresses pinged by one (re-)bootstrap
LATENCY_SAMPLES = 256  # recent lookups kept for the latency summary

T = TypeVar("T")
_CLIENT = int(Flags.CLIENT)
_PROVEN_YOU = int(Flags.PROVEN_YOU)


@dataclass(frozen=True, slots=True)
class OperationDone:
    """An operation started by ``get``/``put``/... finished with ``result``."""

    op_id: int
    result: OperationResult


class DhtCore:
    """One node's Kademlia state machine."""

    def __init__(
        self,
        identity: Identity,
        *,
        config: DhtConfig | None = None,
        rng: random.Random,
        now: float,
        bootstrap: Sequence[Address] = (),
        wall_offset: float = 0.0,
    ) -> None:
        self.identity = identity
        self.config = config or DhtConfig()
        self.own_id = identity.node_id
        self.wall_offset = wall_offset  # wall clock minus ``now``'s clock (records need it)
        self.diversity = self.config.diversity()
        self.table = RoutingTable(self.own_id, k=self.config.k, diversity=self.diversity)
        self.store = RecordStore(
            max_bytes=self.config.max_store_bytes, per_key_cap=self.config.per_key_cap
        )
        self.rng = rng
        self.bootstrap_addresses: list[Address] = list(bootstrap)
        self.saved_addresses: list[Address] = []  # saved contacts given to ``bootstrap``
        self._now = now
        self.requests = PendingRequests(
            rng,
            max_pending=self.config.max_pending_requests,
            rto_min=self.config.rpc_timeout_min,
            rto_max=self.config.rpc_timeout_max,
        )
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[OperationDone] = []
        self._next_op = 1
        self.reader = RecordReader()
        self.admission = StoreAdmission(identity, self.config, self.store, rng.randbytes(32))
        self.addresses = AddressProofs(self.admission.tokens)
        self.held_tokens = HeldTokens(identity, max_entries=4 * self.config.max_pending_requests)
        self.drops = DropCounter(logger, lambda: self._now)
        self.diversity.puzzle.drops = self.drops  # "id below difficulty" (dht/puzzle.py)
        self.read_rejects = self.reader.rejects
        self.rpcs: Counter[tuple[str, str]] = Counter()  # (message type, outcome) -> count
        self.lookup_latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.own_records: dict[bytes, SignedRecord] = {}
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.contacts = ContactGate(identity, self.table, self.addresses, self._ping_for_gate)
        self.sender = RequestSender(
            identity,
            client_mode=self.config.client_mode,
            requests=self.requests,
            held_tokens=self.held_tokens,
            addresses=self.addresses,
            contacts=self.contacts,
            drops=self.drops,
            rpcs=self.rpcs,
            send=lambda data, address: self._out.append((data, address)),
            wall=self.wall,
        )
        self.answers = Answers(
            identity,
            self.config,
            self.table,
            self.diversity,
            self.admission,
            self.store,
            self.drops,
        )
        self.server = RequestServer(
            identity,
            self.config,
            addresses=self.addresses,
            admission=self.admission,
            answers=self.answers,
            contacts=self.contacts,
            drops=self.drops,
            rpcs=self.rpcs,
            send=lambda data, address: self._out.append((data, address)),
            wall=self.wall,
        )
        self.maintenance = Maintenance(self, now)

    # ----------------------------------------------------------------- I/O side

    def wall(self, now: float) -> float:
        """The wall-clock time at ``now``: what records' issued/expiry times compare to."""
        return now + self.wall_offset

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain what the adapter must send (each item: bytes, destination)."""
        out, self._out = self._out, []
        self.datagrams_out += len(out)
        return out

    def events(self) -> list[OperationDone]:
        events, self._events = self._events, []
        return events

    def refusals(self) -> list[Refusal]:
        """Drain the abuse refusals since the last call (for the adapter's refusal log)."""
        refusals = list(self.server.refusals)
        self.server.refusals.clear()
        return refusals

    def next_deadline(self) -> float:
        """When ``handle_timer`` must run next (absolute, same clock as ``now``)."""
        deadline = self.requests.next_deadline()
        if deadline is None:
            return self.maintenance.next_run
        return min(deadline, self.maintenance.next_run)

    def datagram_received(self, data: bytes, address: Address, now: float) -> None:
        self._now = now
        self.datagrams_in += 1
        try:
            frame = decode_frame(data)
        except DhtDecodeError as error:
            self.drops.drop("undecodable", str(error))
            return
        if frame.sender_key == self.identity.public_key:
            self.drops.drop("own key")
            return
        if node_id_of(frame.sender_key) != frame.sender_id:
            self.drops.drop("sender id mismatch")
            return
        try:
            if isinstance(frame.message, Pong | Nodes | Value | StoreResult | ExtensionReply):
                self._on_reply(frame, address, now)
            else:
                self.server.serve(frame, address, len(data), now)
        except Exception as error:  # a bug or a hostile shape: never take the node down
            self.drops.drop("handler error", type(error).__name__)

    def handle_timer(self, now: float) -> None:
        self._now = now
        for request in self.requests.expired(now):
            self.rpcs[(kind_of(request.message), "timeout")] += 1
            if request.expected_key is not None:
                self.table.record_failure(node_id_of(request.expected_key), now)
            if request.owner is not None:
                self._tell_timeout(request.owner, request, now)
        if now >= self.maintenance.next_run:
            try:
                self.maintenance.run(now)
            except Exception as error:  # pragma: no cover - a bug; keep the node running
                self.drops.drop("maintenance error", type(error).__name__)

    def _tell_timeout(self, owner: Requester, request: SentRequest, now: float) -> None:
        try:
            owner.on_timeout(request, now)
        except Exception as error:  # pragma: no cover - a bug in an operation
            self.drops.drop("operation error", type(error).__name__)

    # ----------------------------------------------------------- public operations

    def _op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def get(self, key: bytes, now: float) -> int:
        """Start a value lookup; its ``GetResult`` arrives as an ``OperationDone``."""
        op_id = self._op_id()
        LookupOp(self, op_id, key, LookupKind.VALUE, now).start(now)
        return op_id

    def find_node(self, target: bytes, now: float) -> int:
        op_id = self._op_id()
        LookupOp(self, op_id, target, LookupKind.NODE, now).start(now)
        return op_id

    def put(self, record: SignedRecord, now: float) -> int:
        """Store ``record`` at the k closest nodes; ``PutResult`` says how many took it."""
        op_id = self._op_id()
        self.put_internal(op_id, record, now)
        return op_id

    def put_internal(self, op_id: int, record: SignedRecord, now: float) -> None:
        """``put`` under a given op id (INTERNAL_OP: nobody awaits it, e.g. republishing)."""
        previous = (
            self.own_records.get(record.key) if record.owner == self.identity.public_key else None
        )
        # The rule runs on local put too.
        verdict = accept(record, previous, record.key, self.wall(now))
        if isinstance(verdict, Rejected):
            self.finish(op_id, PutResult(record.key, 0, 0, ((verdict.reason.value, 1),), 0.0))
            return
        if record.owner == self.identity.public_key and (
            record.key in self.own_records or len(self.own_records) < MAX_OWN_RECORDS
        ):
            self.own_records[record.key] = record
            lifetime = record.expires_at - record.issued_at
            republish_at = record.issued_at + self.config.republish_fraction * lifetime
            self.maintenance.next_run = min(
                self.maintenance.next_run, max(now, republish_at - self.wall_offset)
            )
        LookupOp(self, op_id, record.key, LookupKind.NODE, now, record=record).start(now)

    def ping(self, address: Address, now: float, expected_key: bytes | None = None) -> int:
        op_id = self._op_id()
        PingOp(self, op_id, address).start(now, expected_key)
        return op_id

    def store_at(
        self,
        address: Address,
        key: bytes,
        encoded: bytes,
        now: float,
        expected_key: bytes | None = None,
    ) -> int:
        """Send one STORE of raw record bytes to one node; ``StoreReply`` has its verdict."""
        op_id = self._op_id()
        StoreOp(self, op_id, address, Store(key, encoded)).start(now, expected_key)
        return op_id

    def bootstrap(self, now: float, extra: Sequence[Address] = ()) -> int:
        """Ping the bootstrap addresses (and ``extra``, e.g. saved contacts), then self-lookup.

        ``extra`` is remembered: re-bootstrapping (``maintenance``) tries it too.
        """
        op_id = self._op_id()
        if extra:
            self.saved_addresses = list(dict.fromkeys(extra))[:MAX_BOOTSTRAP_ADDRESSES]
        op = BootstrapOp(self, op_id, self.rejoin_addresses())
        self.maintenance.track_join(op)
        op.start(now)
        return op_id

    def rejoin_addresses(self) -> list[Address]:
        """Where (re-)bootstrapping knocks: bootstrap addresses first, then saved contacts."""
        addresses = dict.fromkeys([*self.bootstrap_addresses, *self.saved_addresses])
        return list(addresses)[:MAX_BOOTSTRAP_ADDRESSES]

    def enter_client_mode(self) -> None:
        """Query only from now on (a later verdict found us behind NAT): our frames carry
        the client flag, so peers stop adding us, and STOREs are refused. Held records
        stay until they expire; only a restart leaves client mode."""
        self.config = replace(self.config, client_mode=True)
        self.admission.client_mode = True
        self.server.enter_client_mode()
        self.sender.enter_client_mode()

    def register_extension(
        self,
        code: int,
        decoder: Callable[[tuple[object, ...]], T],
        handler: Callable[[T, Peer, float], tuple[object, ...] | None],
    ) -> None:
        """Add an RPC without touching the core (``Answers.register_extension``)."""
        self.answers.register_extension(code, decoder, handler)

    def extension_request(
        self,
        address: Address,
        code: int,
        fields: tuple[object, ...],
        now: float,
        expected_key: bytes | None = None,
    ) -> int:
        op_id = self._op_id()
        ExtensionOp(self, op_id, address, code, fields).start(now, expected_key)
        return op_id

    @property
    def store_retries(self) -> int:
        """STOREs sent again with a proof after an UNPROVEN answer (``sending``)."""
        return self.sender.store_retries

    def health(self) -> TableHealth:
        return self.table.health()

    @property
    def healthy(self) -> bool:
        return len(self.table) >= self.config.healthy_contacts

    def statistics(self) -> DhtStatistics:
        health = self.table.health()
        latencies = sorted(self.lookup_latencies)

        def quantile(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

        return DhtStatistics(
            contacts=health.contacts,
            buckets_used=health.buckets_used,
            records=len(self.store),
            record_bytes=self.store.bytes_used,
            datagrams_in=self.datagrams_in,
            datagrams_out=self.datagrams_out,
            requests_sent=self.requests.sent,
            timeouts=self.requests.timeouts,
            drops=dict(self.drops.counts()),
            store_rejects=dict(self.store.rejects),
            read_rejects=dict(self.read_rejects),
            srtt=self.requests.srtt,
            store_retries=self.store_retries,
            rpcs={f"{kind}/{outcome}": count for (kind, outcome), count in self.rpcs.items()},
            replacements=health.replacements,
            pending_requests=len(self.requests),
            lookups=len(latencies),
            lookup_p50=quantile(0.5),
            lookup_p95=quantile(0.95),
            lookup_max=latencies[-1] if latencies else 0.0,
        )

    # -------------------------------------------------- OperationHost (for operations)

    def new_nonce(self) -> bytes:
        return self.rng.randbytes(NONCE_BYTES)

    def finish(self, op_id: int, result: OperationResult) -> None:
        if isinstance(result, GetResult | FindNodeResult):
            self.lookup_latencies.append(result.elapsed)
        if op_id != INTERNAL_OP:
            self._events.append(OperationDone(op_id, result))

    def send_request(
        self,
        address: Address,
        message: Message,
        *,
        expected_key: bytes | None,
        owner: Requester | None,
        now: float,
    ) -> bool:
        """Send one request; False if refused (too many pending)."""
        return self.sender.send(address, message, expected_key, owner, now, retried=False)

    def contacts_from_wire(self, contacts: Sequence[WireContact]) -> list[Contact]:
        own = self.identity.public_key
        return [
            Contact(node_id_of(c.public_key), c.public_key, c.address)
            for c in contacts
            if c.public_key != own
        ]

    def verify_record(self, encoded: bytes, key: bytes, now: float) -> SignedRecord | str:
        """Decode and accept a record a peer returned, or the reason it was refused.

        Signatures are checked once per encoding. A decoder that fails in any way
        (even other than ``RecordDecodeError``) means ``UNDECODABLE``, never a raise.
        """
        return self.reader.verify(encoded, key, self.wall(now))

    def penalize(self, contact: Contact, now: float) -> None:
        """``contact`` sent something malformed: count it like a timeout against it."""
        self.drops.drop("malformed reply content")
        self.table.record_failure(contact.node_id, now)

    def local_records(self, key: bytes, now: float) -> list[SignedRecord]:
        wall = self.wall(now)
        records = self.store.get(key, wall)
        own = self.own_records.get(key)
        if own is not None and own.expires_at > wall and own not in records:
            records.append(own)
        return records

    def store_locally(self, record: SignedRecord, now: float) -> bool:
        return self.store.offer(record, record.key, self.wall(now)).stored

    # --------------------------------------------------------------- replies

    def _on_reply(self, frame: Frame, address: Address, now: float) -> None:
        request = self.requests.get(frame.request_id)
        matched = match_reply(request, frame, address, self.identity.public_key, self.addresses)
        if isinstance(matched, str):
            self.drops.drop(matched)
            return
        assert request is not None
        message = frame.message
        receipted = matched.receipted
        # From here on the request is answered: it leaves the table before anything
        # else can fail, and its owner hears of it whatever happens below.
        self.requests.complete(frame.request_id, now)
        self.rpcs[(kind_of(request.message), "answered")] += 1
        token = offered_token(message)
        if token:
            proven_there = bool(frame.flags & _PROVEN_YOU)
            self.held_tokens.remember(
                address, frame.sender_key, token, now, proven_there=proven_there
            )
        sender = Contact(frame.sender_id, frame.sender_key, address)
        client = bool(frame.flags & _CLIENT)
        if isinstance(message, Pong):
            self.contacts.observed = message.observed
            self.contacts.proven_contact(sender, client, now)
        elif not client and self.contacts.reply_proves(frame, address):
            self.contacts.proven_contact(sender, client, now)  # a PONG folded into the reply
        else:
            if receipted:  # it signed our random request id at this address, as in a PONG
                self.addresses.prove(sender.public_key, address, now)
            self.contacts.seen(sender, client, now)
        if (
            isinstance(message, StoreResult)
            and message.status is StoreStatus.UNPROVEN
            and token
            and not request.retried
            and self.sender.retry_store(request, now)
        ):
            return  # the owner hears the answer to the proven STORE instead
        if request.owner is not None:
            try:
                request.owner.on_reply(request, frame, sender, now)
            except Exception as error:
                # The reply made the operation fail: it counts as no answer (the lookup
                # goes on without this contact) and against the contact.
                self.drops.drop("reply broke its operation", type(error).__name__)
                self.rpcs[(kind_of(request.message), "bad reply")] += 1
                self.table.record_failure(sender.node_id, now)
                self._tell_timeout(request.owner, request, now)

    def _ping_for_gate(
        self,
        address: Address,
        expected_key: bytes,
        done: Callable[[object, float], None],
        now: float,
    ) -> None:
        op = PingOp(self, INTERNAL_OP, address)
        op.done_callback = done
        op.start(now, expected_key)

    @property
    def observed(self) -> Address | None:
        """Our address as the last PONG saw it (what request proofs sign)."""
        return self.contacts.observed

    @observed.setter
    def observed(self, address: Address | None) -> None:
        self.contacts.observed = address
