"""Records this node holds for the DHT: only what ``p2pnode.records.accept`` admits.

Invariants:
- Every record enters through ``offer``, which runs the one acceptance function
  against the record held under the same key from the same owner: forged,
  re-keyed, expired, rolled-back or reused-seq records never get in (an equal
  seq with other bytes is settled by ``accept``'s deterministic rule).
- A non-contested key holds one owner's record (its key derives from the owner).
  A contested key (``CONTESTED_KINDS``: name claims, ENUM numbers, relay
  rendezvous) holds one record per owner, at most ``per_key_cap``.
- Squatters cannot evict an owner (issue 10, finding 2). Each held record is
  charged to the NETWORK it came from (the STORE's source address cut to
  ``prefix_v4``/``prefix_v6`` bits; re-charged to the owner's own network
  whenever the owner itself stores it again, so a replicating node's crowded
  network never sticks to it). When a contested key is full, a newcomer from
  network X evicts a record of the network Y holding the most records there
  only if ``count(X) + 1 < count(Y)`` (max-min fairness), else it is refused
  (``key-full``). A record whose network holds one record under the key is
  therefore never evicted by another network, and a newcomer alone in its
  network is refused only when ``per_key_cap`` distinct networks already hold
  one record each. Inside the victim network the record that arrived last
  goes first, then the one with the earliest lifetime counted from
  ``min(issued_at, arrival)``: a claim dated into the future or a long
  lifetime buys nothing, age at this node does. See docs/directory.md.
- The owner can always replace its own record (a newer seq is not a newcomer).
- Total bytes are bounded (``max_bytes``); expired records are purged and are
  never returned.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from p2pnode.records import CONTESTED_KINDS, Rejected, SignedRecord, accept

__all__ = [
    "DEFAULT_MAX_STORE_BYTES",
    "DEFAULT_PER_KEY_CAP",
    "DEFAULT_PREFIX_V4",
    "DEFAULT_PREFIX_V6",
    "LOCAL_NETWORK",
    "RecordStore",
    "StoreLimit",
    "StoreOutcome",
    "network_of",
]

DEFAULT_MAX_STORE_BYTES = 16 * 1024 * 1024
DEFAULT_PER_KEY_CAP = 16
DEFAULT_PREFIX_V4 = 24  # one network: a /24 (an ISP customer, a cloud subnet) ...
DEFAULT_PREFIX_V6 = 48  # ... or an IPv6 /48 (one site, RFC 6177)
LOCAL_NETWORK = "local"  # records this node stores itself (no source address)


@functools.lru_cache(maxsize=4096)
def network_of(host: str, prefix_v4: int, prefix_v6: int) -> str:
    """The network a source address belongs to, as text (an unparsable host is its own).

    Cached (a pure function, bounded): every STORE asks it, and building ``ipaddress``
    objects was ~10 % of a storer's Python per STORE.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "?" + host[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = prefix_v4 if address.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class StoreLimit(enum.Enum):
    """Refusals of the store itself, beside the acceptance function's reasons."""

    KEY_FULL = "key-full"
    STORE_FULL = "store-full"
    OWNER_MISMATCH = "owner-mismatch"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    stored: bool
    duplicate: bool = False
    reason: str = ""  # a RejectReason or StoreLimit value when not stored
    detail: str = ""


class RecordStore:
    """Key -> owner -> newest accepted record, bounded in records per key and bytes."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_STORE_BYTES,
        per_key_cap: int = DEFAULT_PER_KEY_CAP,
        prefix_v4: int = DEFAULT_PREFIX_V4,
        prefix_v6: int = DEFAULT_PREFIX_V6,
    ) -> None:
        """``prefix_v4``/``prefix_v6``: how many leading bits make one network (tests on
        loopback give each squatter its own /24 inside 127/8, or use /32)."""
        if not (0 <= prefix_v4 <= 32 and 0 <= prefix_v6 <= 128):
            raise ValueError("network prefixes are 0-32 (IPv4) and 0-128 (IPv6) bits")
        self.max_bytes = max_bytes
        self.per_key_cap = per_key_cap
        self.prefix_v4 = prefix_v4
        self.prefix_v6 = prefix_v6
        self._records: dict[bytes, dict[bytes, SignedRecord]] = {}
        self._bytes = 0
        self._count = 0
        self._stored_at: dict[tuple[bytes, bytes], float] = {}  # (key, owner) -> first stored
        self._network: dict[tuple[bytes, bytes], str] = {}  # (key, owner) -> charged network
        self.rejects: Counter[str] = Counter()

    def __len__(self) -> int:
        return self._count

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def _reject(self, reason: str, detail: str) -> StoreOutcome:
        self.rejects[reason] += 1
        return StoreOutcome(stored=False, reason=reason, detail=detail)

    def offer(
        self,
        record: SignedRecord,
        key: bytes,
        now: float,
        *,
        source: str | None = None,
        sender: bytes | None = None,
    ) -> StoreOutcome:
        """Admit ``record`` under ``key`` if acceptable and within bounds.

        ``source``: the STORE's source IP (None: this node's own record);
        ``sender``: the STORE sender's proven key (the owner storing its own record
        moves its charge to its own network).
        """
        network = (
            LOCAL_NETWORK if source is None else network_of(source, self.prefix_v4, self.prefix_v6)
        )
        held = self._records.get(key)
        previous = held.get(record.owner) if held is not None else None
        if previous is not None and previous.expires_at <= now:
            previous = None  # an expired record protects nothing: it is gone
        verdict = accept(record, previous, key, now)
        if isinstance(verdict, Rejected):
            return self._reject(verdict.reason.value, verdict.detail)
        if verdict.duplicate:
            if sender == record.owner:
                self._network[(key, record.owner)] = network
            return StoreOutcome(stored=True, duplicate=True)
        if held is None:
            held = self._records[key] = {}
        if previous is None:
            others = [r for owner, r in held.items() if owner != record.owner]
            if others and record.kind not in CONTESTED_KINDS:
                return self._reject(
                    StoreLimit.OWNER_MISMATCH.value, "key holds another owner's record"
                )
            self._drop_expired(key, held, now)
            if len(held) >= self.per_key_cap:
                victim = self._victim(key, held, network)
                if victim is None:
                    if not held:
                        del self._records[key]
                    return self._reject(
                        StoreLimit.KEY_FULL.value,
                        f"{len(held)} records here, none from a network holding more than yours",
                    )
                self._remove(key, held, victim)
                held = self._records.setdefault(key, held)
        size = len(record.encoded)
        old_size = len(held[record.owner].encoded) if record.owner in held else 0
        if self._bytes - old_size + size > self.max_bytes:
            self.purge(now)
            if self._bytes - old_size + size > self.max_bytes:
                if not held:
                    self._records.pop(key, None)
                return self._reject(StoreLimit.STORE_FULL.value, f"{self._bytes} bytes held")
        if record.owner in held:
            self._remove(key, held, record.owner, replaced=True)
            held = self._records.setdefault(key, held)
        held[record.owner] = record
        self._stored_at.setdefault((key, record.owner), now)
        if sender == record.owner or (key, record.owner) not in self._network:
            self._network[(key, record.owner)] = network
        self._bytes += size
        self._count += 1
        return StoreOutcome(stored=True)

    def _victim(self, key: bytes, held: dict[bytes, SignedRecord], network: str) -> bytes | None:
        """Whose record a newcomer from ``network`` may push out of a full key, if anyone's.

        Max-min fairness over networks: only a network holding at least two records
        more than the newcomer's loses one, so squatters from one network can never
        push out a record from another that holds fewer.
        """
        counts = Counter(self._network.get((key, owner), LOCAL_NETWORK) for owner in held)
        heaviest = max(counts.values(), default=0)
        if heaviest < counts[network] + 2:
            return None

        def order(owner: bytes) -> tuple[float, float, bytes]:
            record = held[owner]
            arrived = self._stored_at.get((key, owner), 0.0)
            lifetime_end = min(record.issued_at, arrived) + (record.expires_at - record.issued_at)
            return (arrived, -lifetime_end, owner)  # last arrival first, then shortest life

        crowded = [
            owner
            for owner in held
            if counts[self._network.get((key, owner), LOCAL_NETWORK)] == heaviest
        ]
        return max(crowded, key=order)

    def _remove(
        self, key: bytes, held: dict[bytes, SignedRecord], owner: bytes, *, replaced: bool = False
    ) -> None:
        record = held.pop(owner)
        if not replaced:
            self._stored_at.pop((key, owner), None)
            self._network.pop((key, owner), None)
        self._bytes -= len(record.encoded)
        self._count -= 1
        if not held:
            self._records.pop(key, None)

    def _drop_expired(self, key: bytes, held: dict[bytes, SignedRecord], now: float) -> None:
        for owner in [o for o, r in held.items() if r.expires_at <= now]:
            self._remove(key, held, owner)

    def get(self, key: bytes, now: float) -> list[SignedRecord]:
        """Unexpired records under ``key``, longest held here first (stable page order).

        Arrival order, not expiry: a squatter's far-future claim can never sort
        ahead of an incumbent owner's, so the owner is on a reader's first page.
        """
        held = self._records.get(key)
        if not held:
            return []
        live = [r for r in held.values() if r.expires_at > now]
        live.sort(key=lambda r: (self._stored_at.get((key, r.owner), 0.0), r.owner))
        return live

    def stored_at(self, key: bytes, owner: bytes) -> float:
        """When this owner's record under ``key`` first arrived here (replication skips
        contacts older than that: the publisher reached them itself)."""
        return self._stored_at.get((key, owner), 0.0)

    def network(self, key: bytes, owner: bytes) -> str | None:
        """The network this owner's record under ``key`` is charged to (None: not held)."""
        return self._network.get((key, owner))

    def held(self, key: bytes, owner: bytes) -> SignedRecord | None:
        held = self._records.get(key)
        return None if held is None else held.get(owner)

    def purge(self, now: float) -> int:
        """Forget expired records; returns how many went."""
        before = self._count
        for key in list(self._records):
            self._drop_expired(key, self._records[key], now)
        return before - self._count

    def items(self) -> Iterator[tuple[bytes, SignedRecord]]:
        """(key, record) pairs, for replication; do not mutate the store while iterating."""
        for key, held in self._records.items():
            for record in held.values():
                yield key, record

    def reject_counts(self) -> Mapping[str, int]:
        return dict(self.rejects)
