"""Records this node holds for the DHT: only what ``p2pnode.records.accept`` admits.

Invariants:
- Every record enters through ``offer``, which runs the one acceptance function
  against the record held under the same key from the same owner: forged,
  re-keyed, expired, rolled-back or reused-seq records never get in.
- A non-contested key holds one owner's record (its key derives from the owner).
  A contested key (``CONTESTED_KINDS``: name claims, ENUM numbers) holds one
  record per owner, at most ``per_key_cap``; when full, a newcomer evicts the
  record expiring first only if it expires later itself, else it is refused
  (``key-full``): squatters cannot push out long-lived claims with short ones.
- Total bytes are bounded (``max_bytes``); expired records are purged and are
  never returned.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from p2pnode.records import CONTESTED_KINDS, Rejected, SignedRecord, accept

__all__ = [
    "DEFAULT_MAX_STORE_BYTES",
    "DEFAULT_PER_KEY_CAP",
    "RecordStore",
    "StoreLimit",
    "StoreOutcome",
]

DEFAULT_MAX_STORE_BYTES = 16 * 1024 * 1024
DEFAULT_PER_KEY_CAP = 16


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
    ) -> None:
        self.max_bytes = max_bytes
        self.per_key_cap = per_key_cap
        self._records: dict[bytes, dict[bytes, SignedRecord]] = {}
        self._bytes = 0
        self._count = 0
        self._stored_at: dict[tuple[bytes, bytes], float] = {}  # (key, owner) -> first stored
        self.rejects: Counter[str] = Counter()

    def __len__(self) -> int:
        return self._count

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def _reject(self, reason: str, detail: str) -> StoreOutcome:
        self.rejects[reason] += 1
        return StoreOutcome(stored=False, reason=reason, detail=detail)

    def offer(self, record: SignedRecord, key: bytes, now: float) -> StoreOutcome:
        """Admit ``record`` under ``key`` if acceptable and within bounds."""
        held = self._records.get(key)
        previous = held.get(record.owner) if held is not None else None
        if previous is not None and previous.expires_at <= now:
            previous = None  # an expired record protects nothing: it is gone
        verdict = accept(record, previous, key, now)
        if isinstance(verdict, Rejected):
            return self._reject(verdict.reason.value, verdict.detail)
        if verdict.duplicate:
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
                first = min(held.values(), key=lambda r: r.expires_at)
                if first.expires_at >= record.expires_at:
                    return self._reject(
                        StoreLimit.KEY_FULL.value,
                        f"{len(held)} records here expire no earlier than this one",
                    )
                self._remove(key, held, first.owner)
        size = len(record.encoded)
        old_size = len(held[record.owner].encoded) if record.owner in held else 0
        if self._bytes - old_size + size > self.max_bytes:
            self.purge(now)
            if self._bytes - old_size + size > self.max_bytes:
                if not held:
                    del self._records[key]
                return self._reject(StoreLimit.STORE_FULL.value, f"{self._bytes} bytes held")
        if record.owner in held:
            self._remove(key, held, record.owner, replaced=True)
            held = self._records.setdefault(key, {})
        held[record.owner] = record
        self._stored_at.setdefault((key, record.owner), now)
        self._bytes += size
        self._count += 1
        return StoreOutcome(stored=True)

    def _remove(
        self, key: bytes, held: dict[bytes, SignedRecord], owner: bytes, *, replaced: bool = False
    ) -> None:
        record = held.pop(owner)
        if not replaced:
            self._stored_at.pop((key, owner), None)
        self._bytes -= len(record.encoded)
        self._count -= 1
        if not held:
            self._records.pop(key, None)

    def _drop_expired(self, key: bytes, held: dict[bytes, SignedRecord], now: float) -> None:
        for owner in [o for o, r in held.items() if r.expires_at <= now]:
            self._remove(key, held, owner)

    def get(self, key: bytes, now: float) -> list[SignedRecord]:
        """Unexpired records under ``key``, latest-expiring first (stable page order)."""
        held = self._records.get(key)
        if not held:
            return []
        live = [r for r in held.values() if r.expires_at > now]
        live.sort(key=lambda r: (-r.expires_at, r.owner))
        return live

    def stored_at(self, key: bytes, owner: bytes) -> float:
        """When this owner's record under ``key`` first arrived here (replication skips
        contacts older than that: the publisher reached them itself)."""
        return self._stored_at.get((key, owner), 0.0)

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
