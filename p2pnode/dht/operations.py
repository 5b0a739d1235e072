"""Multi-RPC operations driven by the core: lookups, get, put, ping, bootstrap.

Each operation owns the requests it sent (the core calls back ``on_reply`` /
``on_timeout``) and reports one result through ``host.finish``. They hold no
sockets and read no clock: ``now`` comes in with every call.

Invariants:
- A get returns only records that passed ``accept`` here, the newest per owner
  (an older or equivocating copy from a stale or lying node never wins).
- A put reports how many nodes answered STORED (or DUPLICATE): 0 if none did.
- Replies that arrive after an operation finished are ignored.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from p2pnode.dht.config import (
    BootstrapResult,
    DhtConfig,
    ExtensionResult,
    FindNodeResult,
    GetResult,
    OperationResult,
    PingResult,
    PutResult,
    StoreReply,
)
from p2pnode.dht.disjoint import DisjointLookup, make_lookup
from p2pnode.dht.keys import (
    ID_BITS,
    Address,
    Contact,
    bucket_index,
    node_id_of,
    random_id_in_bucket,
)
from p2pnode.dht.lookup import Lookup, LookupKind
from p2pnode.dht.messages import (
    ExtensionReply,
    ExtensionRequest,
    FindNode,
    FindValue,
    Frame,
    Message,
    Nodes,
    Ping,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    Value,
    WireContact,
)
from p2pnode.dht.requests import Requester, SentRequest
from p2pnode.dht.routing import RoutingTable
from p2pnode.records import SignedRecord, supersedes

__all__ = [
    "INTERNAL_OP",
    "JOIN_REFRESH_CONCURRENCY",
    "MAX_JOIN_REFRESHES",
    "MAX_PAGES",
    "REFRESH_WIDTH",
    "SECOND_LOOKUP_WIDTH",
    "BootstrapOp",
    "ExtensionOp",
    "LookupOp",
    "OperationHost",
    "PingOp",
    "Requester",
    "SentRequest",
    "StoreOp",
]

INTERNAL_OP = 0  # op id of operations nobody awaits (challenges, refreshes, republishing)
MAX_PAGES = 4  # extra FIND_VALUE pages per node for a crowded contested key
JOIN_REFRESH_CONCURRENCY = 3  # bucket-refresh lookups at once during a join
MAX_JOIN_REFRESHES = 32  # buckets refreshed by one join: enough for 2**32 nodes
# A join's refresh lookup settles on this many nodes, not k: it only has to put us in
# that subtree's tables and a few of its nodes in ours (the bucket fills from there as
# they talk to us). The second self-lookup looks only for neighbours that joined with
# us. In memnet at N=200: 593 datagrams per join before key proofs (keyproof), 318
# with them, 122 with widths 4 and 8, 91 with 2 and 4 (test_join's checks all hold).
REFRESH_WIDTH = 2
SECOND_LOOKUP_WIDTH = 4
SELF_LOOKUP_WIDTH: int | None = None  # the first self-lookup: k


class OperationHost(Protocol):
    """What operations need from the core."""

    config: DhtConfig
    table: RoutingTable
    own_id: bytes
    rng: random.Random

    def send_request(
        self,
        address: Address,
        message: Message,
        *,
        expected_key: bytes | None,
        owner: Requester | None,
        now: float,
    ) -> bool: ...

    def new_nonce(self) -> bytes: ...

    def contacts_from_wire(self, contacts: Sequence[WireContact]) -> list[Contact]: ...

    def verify_record(self, encoded: bytes, key: bytes, now: float) -> SignedRecord | str: ...

    def penalize(self, contact: Contact, now: float) -> None: ...

    def local_records(self, key: bytes, now: float) -> list[SignedRecord]: ...

    def store_locally(self, record: SignedRecord, now: float) -> bool: ...

    def finish(self, op_id: int, result: OperationResult) -> None: ...


def _newest(best: dict[bytes, SignedRecord], record: SignedRecord) -> None:
    current = best.get(record.owner)
    if current is None or supersedes(record, current):  # equal seq: greater bytes win
        best[record.owner] = record


class LookupOp:
    """FIND_NODE / FIND_VALUE lookup; optionally followed by STOREs (a put)."""

    def __init__(
        self,
        host: OperationHost,
        op_id: int,
        target: bytes,
        kind: LookupKind,
        now: float,
        *,
        record: SignedRecord | None = None,
        then: Callable[[FindNodeResult, float], None] | None = None,
        width: int | None = None,
    ) -> None:
        self.host = host
        self.op_id = op_id
        self.target = target
        self.record = record
        self.then = then
        self.started = now
        self.finished = False
        config = host.config
        # Gets take disjoint paths (``dht/disjoint.py``), and puts with ``disjoint_puts``
        # (they then store at each path's k closest); joins and refreshes one.
        disjoint = kind is LookupKind.VALUE or (record is not None and config.disjoint_puts)
        self.lookup: Lookup | DisjointLookup = make_lookup(
            target,
            kind,
            own_id=host.own_id,
            k=width or config.k,
            alpha=config.alpha,
            quorum=config.quorum,
            seeds=host.table.closest(target, config.k),
            paths=config.disjoint_paths if disjoint else 1,
            diversity=host.table.diversity,
        )
        self.best: dict[bytes, SignedRecord] = {}
        self.seen: set[bytes] = set()
        self.rejected = 0
        self.pages_in_flight = 0
        self.pages_sent: Counter[bytes] = Counter()
        self.storing = False
        self.store_pending = 0
        self.stored = 0
        self.store_contacted = 0
        self.store_rejects: Counter[str] = Counter()
        if kind is LookupKind.VALUE:
            for local in host.local_records(target, now):
                self.seen.add(local.encoded)
                _newest(self.best, local)

    def start(self, now: float) -> None:
        self._pump(now)

    def _message(self, offset: int = 0) -> Message:
        if self.lookup.kind is LookupKind.VALUE:
            return FindValue(self.target, offset)
        return FindNode(self.target)

    def _pump(self, now: float) -> None:
        if self.storing or self.finished:
            return
        for contact in self.lookup.next_queries():
            sent = self.host.send_request(
                contact.address,
                self._message(),
                expected_key=contact.public_key,
                owner=self,
                now=now,
            )
            if not sent:
                self.lookup.on_failure(contact.node_id)
        if self.lookup.done and not self.pages_in_flight:
            self._lookup_done(now)

    def on_reply(self, request: SentRequest, frame: Frame, sender: Contact, now: float) -> None:
        if self.finished:
            return
        message = frame.message
        if self.storing:
            if isinstance(message, StoreResult):
                self._store_answered(message, now)
            return
        is_page = isinstance(request.message, FindValue) and request.message.offset > 0
        if is_page:
            self.pages_in_flight -= 1
        if isinstance(message, Value) and isinstance(request.message, FindValue):
            found = self._take_records(message.records, sender, now)
            offset = request.message.offset
            more = offset + len(message.records) < message.total and message.records
            if more and self.pages_sent[sender.node_id] < MAX_PAGES:
                self.pages_sent[sender.node_id] += 1
                if self.host.send_request(
                    sender.address,
                    self._message(offset + len(message.records)),
                    expected_key=sender.public_key,
                    owner=self,
                    now=now,
                ):
                    self.pages_in_flight += 1
            if not is_page:
                contacts = self.host.contacts_from_wire(message.contacts)
                self.lookup.on_reply(sender.node_id, contacts, has_value=found)
        elif isinstance(message, Nodes) and not is_page:
            contacts = self.host.contacts_from_wire(message.contacts)
            self.lookup.on_reply(sender.node_id, contacts, has_value=False)
        self._pump(now)

    def _take_records(self, encoded_records: Sequence[bytes], sender: Contact, now: float) -> bool:
        found = False
        penalized = False
        for encoded in encoded_records:
            if encoded in self.seen:
                found = True
                continue
            self.seen.add(encoded)
            record = self.host.verify_record(encoded, self.target, self.started)
            if isinstance(record, str):
                self.rejected += 1
                if record == "undecodable" and not penalized:
                    penalized = True  # junk is no honest node's mistake: it counts against it
                    self.host.penalize(sender, now)
                continue
            found = True
            _newest(self.best, record)
        return found

    def on_timeout(self, request: SentRequest, now: float) -> None:
        if self.finished:
            return
        if self.storing:
            if isinstance(request.message, Store):
                self._store_answered(None, now)
            return
        if isinstance(request.message, FindValue) and request.message.offset > 0:
            self.pages_in_flight -= 1
        elif request.expected_key is not None:
            self.lookup.on_failure(node_id_of(request.expected_key))
        self._pump(now)

    def _lookup_done(self, now: float) -> None:
        lookup = self.lookup
        if self.record is not None:
            self._start_store(now)
            return
        if lookup.kind is LookupKind.VALUE:
            records = tuple(sorted(self.best.values(), key=lambda r: (-r.seq, r.owner)))
            self._finish(
                GetResult(
                    key=self.target,
                    records=records,
                    hops=lookup.hops,
                    queries=lookup.queries,
                    holders=lookup.value_holders,
                    rejected=self.rejected,
                    elapsed=now - self.started,
                ),
                now,
            )
            return
        result = FindNodeResult(
            target=self.target,
            contacts=tuple(lookup.closest_answered()),
            hops=lookup.hops,
            queries=lookup.queries,
            elapsed=now - self.started,
        )
        self._finish(result, now)

    def _start_store(self, now: float) -> None:
        assert self.record is not None
        self.storing = True
        closest = self.lookup.closest_answered()
        k = self.host.config.k
        targets = closest
        if isinstance(self.lookup, DisjointLookup):
            targets = self.lookup.closest_answered_per_path()
        if not self.host.config.client_mode:
            own = int.from_bytes(self.host.own_id, "big")
            target = self.lookup.target_int
            farthest = closest[-1].id_int ^ target if closest else 0
            if (len(closest) < k or own ^ target < farthest) and self.host.store_locally(
                self.record, now
            ):
                self.stored += 1
        message = Store(self.target, self.record.encoded)
        for contact in targets:
            if self.host.send_request(
                contact.address,
                message,
                expected_key=contact.public_key,
                owner=self,
                now=now,
            ):
                self.store_pending += 1
                self.store_contacted += 1
        if not self.store_pending:
            self._put_done(now)

    def _store_answered(self, message: StoreResult | None, now: float) -> None:
        self.store_pending -= 1
        if message is not None:
            if message.status in (StoreStatus.STORED, StoreStatus.DUPLICATE):
                self.stored += 1
            else:
                self.store_rejects[message.reason or "unknown"] += 1
        if self.store_pending <= 0:
            self._put_done(now)

    def _put_done(self, now: float) -> None:
        self._finish(
            PutResult(
                key=self.target,
                stored=self.stored,
                contacted=self.store_contacted,
                rejected=tuple(sorted(self.store_rejects.items())),
                elapsed=now - self.started,
            ),
            now,
        )

    def _finish(self, result: OperationResult, now: float) -> None:
        self.finished = True
        if self.then is not None and isinstance(result, FindNodeResult):
            self.then(result, now)
        self.host.finish(self.op_id, result)


class PingOp:
    """One PING: the core checks the PONG's signature before we ever see it."""

    def __init__(self, host: OperationHost, op_id: int, address: Address) -> None:
        self.host = host
        self.op_id = op_id
        self.address = address
        self.done_callback: Callable[[PingResult, float], None] | None = None

    def start(self, now: float, expected_key: bytes | None = None) -> None:
        if not self.host.send_request(
            self.address,
            Ping(self.host.new_nonce()),
            expected_key=expected_key,
            owner=self,
            now=now,
        ):
            self._done(PingResult(self.address, None, None, None), now)

    def on_reply(self, request: SentRequest, frame: Frame, sender: Contact, now: float) -> None:
        message = frame.message
        if isinstance(message, Pong):
            result = PingResult(self.address, sender, message.observed, now - request.sent_at)
            self._done(result, now)

    def on_timeout(self, request: SentRequest, now: float) -> None:
        self._done(PingResult(self.address, None, None, None), now)

    def _done(self, result: PingResult, now: float) -> None:
        if self.done_callback is not None:
            self.done_callback(result, now)
        self.host.finish(self.op_id, result)


class StoreOp:
    """One STORE to one node (replication, tools, the demo's attacker); no lookup."""

    def __init__(self, host: OperationHost, op_id: int, address: Address, store: Store) -> None:
        self.host = host
        self.op_id = op_id
        self.address = address
        self.store = store

    def start(self, now: float, expected_key: bytes | None = None) -> None:
        if not self.host.send_request(
            self.address, self.store, expected_key=expected_key, owner=self, now=now
        ):
            self.host.finish(self.op_id, StoreReply(self.address, None, "not sent", ""))

    def on_reply(self, request: SentRequest, frame: Frame, sender: Contact, now: float) -> None:
        message = frame.message
        if isinstance(message, StoreResult):
            reply = StoreReply(self.address, message.status, message.reason, message.detail)
            self.host.finish(self.op_id, reply)

    def on_timeout(self, request: SentRequest, now: float) -> None:
        self.host.finish(self.op_id, StoreReply(self.address, None, "timeout", ""))


class ExtensionOp:
    """One request of a registered extension type; the reply fields come back raw."""

    def __init__(
        self,
        host: OperationHost,
        op_id: int,
        address: Address,
        code: int,
        fields: tuple[object, ...],
    ) -> None:
        self.host = host
        self.op_id = op_id
        self.address = address
        self.code = code
        self.fields = fields

    def start(self, now: float, expected_key: bytes | None = None) -> None:
        if not self.host.send_request(
            self.address,
            ExtensionRequest(self.code, self.fields),
            expected_key=expected_key,
            owner=self,
            now=now,
        ):
            self.host.finish(self.op_id, ExtensionResult(self.address, self.code, None))

    def on_reply(self, request: SentRequest, frame: Frame, sender: Contact, now: float) -> None:
        message = frame.message
        if isinstance(message, ExtensionReply) and message.code == self.code:
            self.host.finish(self.op_id, ExtensionResult(self.address, self.code, message.fields))

    def on_timeout(self, request: SentRequest, now: float) -> None:
        self.host.finish(self.op_id, ExtensionResult(self.address, self.code, None))


class _JoinStage(enum.Enum):
    PINGING = "pinging"  # the bootstrap addresses
    LOOKING = "looking"  # up our own id
    REFRESHING = "refreshing"  # the buckets beyond the closest neighbour
    LOOKING_AGAIN = "looking again"  # up our own id, for neighbours that joined with us
    DONE = "done"


class BootstrapOp:
    """Join: ping the bootstrap addresses, look ourselves up, then refresh the far buckets.

    Kademlia section 2.3: "u performs a node lookup for its own node ID. Finally, u
    refreshes all k-buckets further away than its closest neighbor." The self-lookup
    fills the buckets near us (those nearer than the k-th closest node it found need
    no refresh: it asked every node there); without the refreshes a node knows little of the
    sibling subtrees and, worse, they never learn of it, so lookups for keys there
    can converge on the k closest nodes of a neighbouring subtree. At most
    ``JOIN_REFRESH_CONCURRENCY`` refresh lookups run at once, ``MAX_JOIN_REFRESHES``
    in all (about log2 N in a network of N nodes); each touches its bucket, so the
    idle-time refresh (``maintenance``) does not repeat it for an interval. Nothing
    is sent once the join is done. Client-mode nodes skip the refreshes: no table
    would keep them, and short-lived CLI commands join as clients. After the
    refreshes, a second self-lookup finds neighbours that joined at the same time.
    Refresh lookups settle on ``REFRESH_WIDTH`` nodes and the second self-lookup on
    ``SECOND_LOOKUP_WIDTH``, not k: that is most of what makes a join cheap.
    """

    def __init__(self, host: OperationHost, op_id: int, addresses: Sequence[Address]) -> None:
        self.host = host
        self.op_id = op_id
        self.addresses = list(addresses)
        self.waiting = 0
        self.answered = 0
        self.refresh_queue: list[int] = []  # bucket indices, the farthest last (popped first)
        self.refreshing = 0
        self.refreshed = 0
        self.stage = _JoinStage.PINGING
        self.done_callback: Callable[[float], None] | None = None

    def start(self, now: float) -> None:
        self.waiting = len(self.addresses)
        if not self.addresses:
            self._lookup(now)
            return
        for address in self.addresses:
            ping = PingOp(self.host, INTERNAL_OP, address)
            ping.done_callback = self._pinged
            ping.start(now)

    def _pinged(self, result: PingResult, now: float) -> None:
        self.waiting -= 1
        if result.contact is not None:
            self.answered += 1
        if self.waiting == 0:
            self._lookup(now)

    def _lookup(self, now: float) -> None:
        self.stage = _JoinStage.LOOKING
        op = LookupOp(
            self.host,
            INTERNAL_OP,
            self.host.own_id,
            LookupKind.NODE,
            now,
            then=self._looked,
            width=SELF_LOOKUP_WIDTH,
        )
        op.start(now)

    def _looked(self, result: FindNodeResult, now: float) -> None:
        self.stage = _JoinStage.REFRESHING
        if not self.host.config.client_mode:
            self.refresh_queue = list(range(self._first_far_bucket(result), ID_BITS))
        self._refresh_next(now)

    def _first_far_bucket(self, result: FindNodeResult) -> int:
        """The nearest bucket the join must refresh.

        Section 2.3 refreshes every bucket farther than the closest neighbour's. A
        bucket nearer than the k-th closest node the self-lookup found needs none: every
        node in its range is nearer than that node, so the lookup asked it already (it
        knows us, we know it). That spares about log2(k) lookups per join.
        """
        own = self.host.table.own_int
        found = [bucket_index(own, c.id_int) for c in result.contacts]
        # The table too: the nearest node's PONG may still be on its way.
        nearest = min([*found[:1], *self.host.table.used_buckets()[:1]], default=ID_BITS - 1)
        first = max(nearest + 1, found[-1] if found else 0)
        return max(first, ID_BITS - MAX_JOIN_REFRESHES)

    def _refresh_next(self, now: float) -> None:
        host = self.host
        while self.refresh_queue and self.refreshing < JOIN_REFRESH_CONCURRENCY:
            index = self.refresh_queue.pop()
            target = random_id_in_bucket(host.own_id, index, host.rng)
            host.table.touch_bucket(index, now)
            self.refreshing += 1
            LookupOp(
                host,
                INTERNAL_OP,
                target,
                LookupKind.NODE,
                now,
                then=self._refreshed,
                width=REFRESH_WIDTH,
            ).start(now)
        if self.refresh_queue or self.refreshing or self.stage is not _JoinStage.REFRESHING:
            return
        if self.refreshed:
            # Nodes that joined at the same time as us, near us, were in nobody's table
            # during our first self-lookup (nor we in theirs): a second one, through
            # neighbours that met them since, lets each find the other. It mostly asks
            # nodes that know us already, so it costs little.
            self.stage = _JoinStage.LOOKING_AGAIN
            LookupOp(
                host,
                INTERNAL_OP,
                host.own_id,
                LookupKind.NODE,
                now,
                then=self._done,
                width=SECOND_LOOKUP_WIDTH,
            ).start(now)
        else:
            self._done(None, now)

    def _refreshed(self, result: FindNodeResult, now: float) -> None:
        self.refreshing -= 1
        self.refreshed += 1
        self._refresh_next(now)

    def _done(self, result: FindNodeResult | None, now: float) -> None:
        self.stage = _JoinStage.DONE
        if self.done_callback is not None:
            self.done_callback(now)
        self.host.finish(self.op_id, BootstrapResult(self.answered, len(self.host.table)))
