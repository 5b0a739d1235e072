"""The one pure function that decides whether a signed record is accepted.

It runs everywhere a record enters a node: when a peer STOREs it, when a
lookup returns it, and when the node puts its own. Keeping it pure (record,
what is stored, key, ``now`` in; verdict out) is what makes "nobody can forge or
roll back another key's record" checkable in one place (cf. BEP 44, OpenDHT's
securedht).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pnode.records.codec import MAX_RECORD_BYTES, SignedRecord, signature_valid
from p2pnode.records.kinds import MAX_TTL_BY_KIND

__all__ = [
    "MAX_CLOCK_SKEW",
    "Accepted",
    "RejectReason",
    "Rejected",
    "Verdict",
    "accept",
    "supersedes",
]

MAX_CLOCK_SKEW = 300  # seconds a record may claim to be issued ahead of our clock


class RejectReason(enum.Enum):
    BAD_SIGNATURE = "bad-signature"
    KEY_MISMATCH = "key-mismatch"
    EXPIRED = "expired"
    FROM_FUTURE = "from-future"
    TTL_TOO_LONG = "ttl-too-long"
    ROLLBACK = "rollback"
    SEQ_REUSED = "seq-reused"
    OWNER_MISMATCH = "owner-mismatch"
    TOO_LARGE = "too-large"


@dataclass(frozen=True)
class Accepted:
    record: SignedRecord
    duplicate: bool  # byte-identical to the stored record: nothing changes


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str


Verdict = Accepted | Rejected


def supersedes(new: SignedRecord, old: SignedRecord) -> bool:
    """Whether ``new`` replaces ``old``, the same owner's record under the same key.

    A higher ``seq`` wins. An owner who signs two different records with the same
    ``seq`` (a restored backup, two devices, or on purpose) must not split the
    network by arrival order, so equal ``seq`` is settled by one deterministic rule
    every storing node and every reader applies: the lexicographically greater
    encoded bytes win (issue 10, finding 5). Only the owner can make such a pair.
    """
    if new.seq != old.seq:
        return new.seq > old.seq
    return new.encoded > old.encoded


def accept(new: SignedRecord, stored: SignedRecord | None, key: bytes, now: float) -> Verdict:
    """Accept ``new`` filed under ``key`` given ``stored``, the same owner's current record.

    Cheap checks run first so a flood of junk costs no signature verifications.
    """
    size = len(new.encoded)
    if size > MAX_RECORD_BYTES:
        return Rejected(RejectReason.TOO_LARGE, f"{size} bytes > {MAX_RECORD_BYTES}")
    if new.key != key:
        return Rejected(RejectReason.KEY_MISMATCH, "record does not derive to this key")
    if new.expires_at <= now:
        return Rejected(RejectReason.EXPIRED, f"expired {now - new.expires_at:.0f} s ago")
    if new.issued_at > now + MAX_CLOCK_SKEW:
        return Rejected(RejectReason.FROM_FUTURE, f"issued {new.issued_at - now:.0f} s ahead")
    ttl = new.expires_at - new.issued_at
    limit = MAX_TTL_BY_KIND[new.kind]
    if ttl > limit:
        return Rejected(RejectReason.TTL_TOO_LONG, f"lifetime {ttl} s > {limit} s")
    if stored is not None:
        if stored.owner != new.owner:
            return Rejected(RejectReason.OWNER_MISMATCH, "stored record has another owner")
        if new.seq < stored.seq:
            return Rejected(RejectReason.ROLLBACK, f"seq {new.seq} < stored {stored.seq}")
        if new.seq == stored.seq:
            if new.encoded == stored.encoded:
                return Accepted(record=stored, duplicate=True)
            if not supersedes(new, stored):
                return Rejected(
                    RejectReason.SEQ_REUSED, f"seq {new.seq} reused; the held bytes sort higher"
                )
    if not signature_valid(new):
        return Rejected(RejectReason.BAD_SIGNATURE, "signature does not verify")
    return Accepted(record=new, duplicate=False)
