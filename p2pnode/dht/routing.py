"""The routing table: 160 k-buckets of verified contacts, LRU ordered, with replacements.

Invariants:
- Only contacts whose node id was proven (challenge-response, see protocol) are
  offered here; the table itself never talks to the network.
- Bucket i holds contacts at XOR distance [2**i, 2**(i+1)) from us, at most k
  of them, least recently seen first (Kademlia section 2.2: old live contacts
  are preferred, which resists flooding the table with fresh ids).
- A full bucket parks newcomers in a bounded replacement cache and names its
  least recently seen contact for a liveness check; a contact that fails is
  replaced by the most recently seen replacement (section 4.1).
- ``closest`` is exact: it returns the ``count`` contacts nearest the target
  over the whole table (checked against brute force by a property test).
- With a ``Diversity``, no bucket holds more than its limits of one address or
  one network (``diversity``): a newcomer over a limit is refused, and a
  replacement is promoted only if it fits (finding 3 of issue 10).
- No contact whose id is below the difficulty of the diversity's ``puzzle``
  (``dht/puzzle.py``) enters: ``offer`` refuses it (counted), ``wants`` says no
  before anyone spends a signature check on its key proof.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from p2pnode.dht.diversity import Diversity
from p2pnode.dht.keys import ID_BITS, Contact, bucket_index, id_to_int

__all__ = [
    "DEFAULT_K",
    "MAX_FAILURES",
    "REPLACEMENT_CACHE_SIZE",
    "OfferOutcome",
    "OfferResult",
    "RoutingTable",
    "TableHealth",
]

DEFAULT_K = 20
REPLACEMENT_CACHE_SIZE = 8  # per bucket
MAX_FAILURES = 2  # consecutive timeouts before a contact without replacement is dropped


class OfferOutcome(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"  # already known: moved to the tail (most recently seen)
    REPLACEMENT = "replacement"  # bucket full: parked in the replacement cache
    SELF = "self"
    REFUSED = "refused"  # its address or network holds its share of the bucket already
    BELOW_DIFFICULTY = "below difficulty"  # its id lacks the puzzle bits (``dht/puzzle.py``)


@dataclass(frozen=True, slots=True)
class OfferResult:
    outcome: OfferOutcome
    check: Contact | None = None  # least recently seen contact to ping (bucket full)


@dataclass(frozen=True, slots=True)
class TableHealth:
    contacts: int
    buckets_used: int
    replacements: int


class _Bucket:
    __slots__ = ("contacts", "failures", "last_changed", "replacements")

    def __init__(self) -> None:
        self.contacts: OrderedDict[bytes, Contact] = OrderedDict()
        self.replacements: OrderedDict[bytes, Contact] = OrderedDict()
        self.failures: dict[bytes, int] = {}
        self.last_changed = 0.0


class RoutingTable:
    """k-buckets around ``own_id``; pure data structure, no I/O, no clock reads."""

    def __init__(
        self, own_id: bytes, *, k: int = DEFAULT_K, diversity: Diversity | None = None
    ) -> None:
        self.own_id = own_id
        self.diversity = diversity
        self.refused = 0  # offers refused for diversity
        self.own_int = id_to_int(own_id)
        self.k = k
        self._buckets = [_Bucket() for _ in range(ID_BITS)]
        self._size = 0
        self._added: dict[bytes, float] = {}  # node id -> when it entered the table
        self._used: set[int] = set()  # indices of non-empty buckets

    def __len__(self) -> int:
        return self._size

    def __contains__(self, node_id: bytes) -> bool:
        return self.get(node_id) is not None

    def _bucket_of(self, node_id: bytes) -> _Bucket | None:
        index = bucket_index(self.own_int, id_to_int(node_id))
        return None if index < 0 else self._buckets[index]

    def get(self, node_id: bytes) -> Contact | None:
        bucket = self._bucket_of(node_id)
        return None if bucket is None else bucket.contacts.get(node_id)

    def contacts(self) -> list[Contact]:
        return [c for bucket in self._buckets for c in bucket.contacts.values()]

    def offer(self, contact: Contact, now: float) -> OfferResult:
        """A verified contact was seen: add it, refresh it, or park it as a replacement."""
        bucket = self._bucket_of(contact.node_id)
        if bucket is None:
            return OfferResult(OfferOutcome.SELF)
        node_id = contact.node_id
        if node_id in bucket.contacts:
            bucket.contacts[node_id] = contact  # the address may have changed (proven)
            bucket.contacts.move_to_end(node_id)
            bucket.failures.pop(node_id, None)
            bucket.last_changed = now
            return OfferResult(OfferOutcome.UPDATED)
        if not self.admits(contact):
            return OfferResult(OfferOutcome.BELOW_DIFFICULTY)
        if not self._fits(bucket, contact):
            self.refused += 1
            return OfferResult(OfferOutcome.REFUSED)
        if len(bucket.contacts) < self.k:
            bucket.contacts[node_id] = contact
            bucket.replacements.pop(node_id, None)
            bucket.last_changed = now
            self._size += 1
            self._added[node_id] = now
            self._used.add(bucket_index(self.own_int, contact.id_int))
            return OfferResult(OfferOutcome.ADDED)
        bucket.replacements[node_id] = contact
        bucket.replacements.move_to_end(node_id)
        while len(bucket.replacements) > REPLACEMENT_CACHE_SIZE:
            bucket.replacements.popitem(last=False)
        oldest = next(iter(bucket.contacts.values()))
        return OfferResult(OfferOutcome.REPLACEMENT, check=oldest)

    def _fits(self, bucket: _Bucket, contact: Contact) -> bool:
        return self.diversity is None or self.diversity.admits(bucket.contacts.values(), contact)

    def meets(self, contact: Contact) -> bool:
        """Does ``contact``'s id meet the puzzle? (no count: before spending on a proof)"""
        return self.diversity is None or self.diversity.puzzle.meets(contact)

    def admits(self, contact: Contact) -> bool:
        """Does ``contact``'s id meet the puzzle? A refusal is counted (``Puzzle.admit``)."""
        return self.diversity is None or self.diversity.puzzle.admit(contact)

    def wants(self, node_id: bytes, contact: Contact | None = None) -> bool:
        """Would ``offer`` keep this id (new, and room in the bucket or its replacements)?

        Lets the protocol skip challenging strangers it could not store anyway
        (with ``contact``, also those its diversity limits or the id puzzle would refuse).
        """
        bucket = self._bucket_of(node_id)
        if bucket is None or node_id in bucket.contacts or node_id in bucket.replacements:
            return False
        if contact is not None and not (self._fits(bucket, contact) and self.meets(contact)):
            return False
        return len(bucket.contacts) < self.k or len(bucket.replacements) < REPLACEMENT_CACHE_SIZE

    def has_room(self, node_id: bytes) -> bool:
        """Is there a free slot in the bucket ``node_id`` falls in?"""
        bucket = self._bucket_of(node_id)
        return bucket is not None and len(bucket.contacts) < self.k

    def needs(self, node_id: bytes) -> bool:
        """Would a proof of this id's key be worth a signature: a free slot in its bucket,
        or an empty replacement cache (so a failing contact could be replaced)?"""
        bucket = self._bucket_of(node_id)
        if bucket is None or node_id in bucket.contacts or node_id in bucket.replacements:
            return False
        return len(bucket.contacts) < self.k or not bucket.replacements

    def record_success(self, node_id: bytes, now: float) -> None:
        """The contact answered: it is the most recently seen of its bucket."""
        bucket = self._bucket_of(node_id)
        if bucket is not None and node_id in bucket.contacts:
            bucket.contacts.move_to_end(node_id)
            bucket.failures.pop(node_id, None)

    def record_failure(self, node_id: bytes, now: float) -> bool:
        """The contact timed out; evict it if a replacement waits or it failed too often.

        Returns True when it was evicted.
        """
        bucket = self._bucket_of(node_id)
        if bucket is None or node_id not in bucket.contacts:
            if bucket is not None:
                bucket.replacements.pop(node_id, None)
            return False
        failures = bucket.failures.get(node_id, 0) + 1
        if bucket.replacements or failures >= MAX_FAILURES:
            self._evict(bucket, node_id, now)
            return True
        bucket.failures[node_id] = failures
        return False

    def remove(self, node_id: bytes, now: float) -> None:
        bucket = self._bucket_of(node_id)
        if bucket is not None and node_id in bucket.contacts:
            self._evict(bucket, node_id, now)

    def _evict(self, bucket: _Bucket, node_id: bytes, now: float) -> None:
        del bucket.contacts[node_id]
        bucket.failures.pop(node_id, None)
        self._added.pop(node_id, None)
        self._size -= 1
        bucket.last_changed = now
        for replacement_id in reversed(list(bucket.replacements)):  # most recent first
            replacement = bucket.replacements.pop(replacement_id)
            if not self._fits(bucket, replacement):
                continue  # dropped: it would break the bucket's diversity
            bucket.contacts[replacement_id] = replacement
            self._added[replacement_id] = now
            self._size += 1
            break
        if not bucket.contacts:
            self._used.discard(self._buckets.index(bucket))

    def closest(
        self, target: bytes, count: int, exclude: frozenset[bytes] = frozenset()
    ) -> list[Contact]:
        """The ``count`` contacts nearest ``target`` by XOR, nearest first (exact).

        With b = bucket of the target, distances to the target are ordered by
        group: bucket b (< 2**b), then buckets below b together ([2**b,
        2**(b+1))), then buckets b+1, b+2, ... (each its own power of two). So
        we sort group by group and stop once ``count`` are found: no whole-table
        scan for the usual far target.
        """
        if count <= 0:
            return []
        target_int = id_to_int(target)
        b = bucket_index(self.own_int, target_int)
        buckets = self._buckets
        used = sorted(self._used)
        result: list[Contact] = []

        def groups() -> Iterator[list[Contact]]:
            if b >= 0:
                yield list(buckets[b].contacts.values())
                yield [c for i in used if i < b for c in buckets[i].contacts.values()]
            for i in used:
                if i > b:
                    yield list(buckets[i].contacts.values())

        for group in groups():
            members = [c for c in group if c.node_id not in exclude] if exclude else group
            members.sort(key=lambda c: c.id_int ^ target_int)
            result.extend(members[: count - len(result)])
            if len(result) >= count:
                break
        return result

    def added_since(self, since: float) -> dict[bytes, float]:
        """Contacts that entered the table after ``since``: node id -> when (replication)."""
        return {node_id: added for node_id, added in self._added.items() if added > since}

    def used_buckets(self) -> list[int]:
        """Indices of the non-empty buckets, nearest (lowest) first."""
        return sorted(self._used)

    def bucket_ranges_to_refresh(self, now: float, interval: float) -> list[int]:
        """Indices of used buckets unchanged for ``interval`` seconds (section 2.3 refresh)."""
        return [
            i
            for i, bucket in enumerate(self._buckets)
            if bucket.contacts and now - bucket.last_changed >= interval
        ]

    def touch_bucket(self, index: int, now: float) -> None:
        self._buckets[index].last_changed = now

    def health(self) -> TableHealth:
        used = sum(1 for bucket in self._buckets if bucket.contacts)
        replacements = sum(len(bucket.replacements) for bucket in self._buckets)
        return TableHealth(contacts=self._size, buckets_used=used, replacements=replacements)
