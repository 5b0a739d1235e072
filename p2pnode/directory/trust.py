"""Pure trust resolution: which claim on a login or a number a resolver believes.

Input: every record found under the subject's key, the revocation records of
trusted verifiers, the trusted verifier keys, ``now``. Output: one typed
resolution. No network, no clock: every rule is unit-testable.

Rules (issue 5; improving on ENUMER where it was weak):
1. A record counts only if it is the right kind and subject, its owner's
   signature verifies, it has not expired and its payload decodes.
2. A claim is VERIFIED when it carries an endorsement from a trusted verifier
   that verifies for (kind, subject, this record's owner), is inside its
   validity window, and is not revoked by that verifier (a revocation voids
   its endorsements of that owner issued at or before its ``revoked_at``).
   Revocations live one per (verifier, subject, owner); ``revocation_lookups``
   names the ones a resolver must read, and only trusted verifiers' valid
   endorsements name any, so peers cannot make a resolver read more.
3. Exactly one verified owner wins, whatever squatters sit beside it. Several
   verified owners (trusted verifiers disagree) are reported as a conflict.
4. Without a verified claim: one claim resolves as UNVERIFIED with the owner's
   fingerprint; several are AMBIGUOUS with every candidate. Never a silent pick.
5. Routing a number (the DNS gateway) follows only a verified claim, else the
   toll-free table, else nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2pnode.directory.naptr import NaptrDirective
from p2pnode.directory.payloads import (
    ENDORSABLE_KINDS,
    Endorsement,
    PayloadDecodeError,
    decode_enum_entry,
    decode_name_claim,
    decode_revocation,
    revocation_subject,
)
from p2pnode.directory.tollfree import TollFreeTable
from p2pnode.identity import fingerprint_for, peer_id_for
from p2pnode.records import (
    MAX_CLOCK_SKEW,
    RecordKind,
    SignedRecord,
    signature_valid,
    supersedes,
)

__all__ = [
    "MAX_CANDIDATES",
    "Ambiguous",
    "Candidate",
    "NotFound",
    "Resolution",
    "Route",
    "Unverified",
    "Verified",
    "resolve_claims",
    "revocation_lookups",
    "revocations_for",
    "route_number",
]

MAX_CANDIDATES = 64  # claims considered per subject (the DHT caps records per key too)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One owner's current claim, with the trusted verifiers that vouch for it (maybe none)."""

    owner: bytes
    peer_id: str
    fingerprint: str
    record: SignedRecord
    directives: tuple[NaptrDirective, ...]
    verified_by: tuple[bytes, ...]
    verified_until: int  # latest expiry among the trusted endorsements (0 if none)


@dataclass(frozen=True, slots=True)
class Verified:
    subject: str
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class Unverified:
    """Exactly one claim, vouched for by no trusted verifier: usable only with a warning."""

    subject: str
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """Several claims and no single verified one; ``conflict``: several verified owners."""

    subject: str
    candidates: tuple[Candidate, ...]
    conflict: bool


@dataclass(frozen=True, slots=True)
class NotFound:
    subject: str


Resolution = Verified | Unverified | Ambiguous | NotFound


def revocations_for(
    kind: RecordKind,
    subject: str,
    records: Iterable[SignedRecord],
    trusted: frozenset[bytes],
    now: float,
) -> dict[tuple[bytes, bytes], int]:
    """(verifier, owner) -> revoked_at, from valid revocation records of trusted verifiers."""
    revoked: dict[tuple[bytes, bytes], int] = {}
    for record in records:
        if (
            record.kind != RecordKind.REVOCATION
            or record.owner not in trusted
            or record.expires_at <= now
        ):
            continue
        try:
            revocation = decode_revocation(record.payload)
        except PayloadDecodeError:
            continue
        if (
            revocation.kind != kind
            or revocation.subject != subject
            or record.subject != revocation_subject(kind, subject, revocation.owner)
            or not signature_valid(record)
        ):
            continue
        key = (record.owner, revocation.owner)
        revoked[key] = max(revoked.get(key, 0), revocation.revoked_at)
    return revoked


def _trusted_endorsements(
    kind: RecordKind,
    record: SignedRecord,
    endorsements: tuple[Endorsement, ...],
    trusted: frozenset[bytes],
    revoked: dict[tuple[bytes, bytes], int],
    now: float,
) -> list[Endorsement]:
    good: list[Endorsement] = []
    for endorsement in endorsements:
        if endorsement.verifier not in trusted:
            continue  # rule 2: an untrusted verifier's word counts for nothing
        if endorsement.expires_at <= now or endorsement.issued_at > now + MAX_CLOCK_SKEW:
            continue  # rule 2: outside its validity window
        revoked_at = revoked.get((endorsement.verifier, record.owner))
        if revoked_at is not None and endorsement.issued_at <= revoked_at:
            continue  # rule 2: withdrawn by the verifier
        if not endorsement.valid_for(kind, record.subject, record.owner):
            continue  # rule 2: lifted from another owner or subject, or forged
        good.append(endorsement)
    return good


def _decode_claim(
    kind: RecordKind, record: SignedRecord
) -> tuple[tuple[NaptrDirective, ...], tuple[Endorsement, ...]] | None:
    """A claim's directives (none for logins) and endorsements; ``None`` if it does not decode."""
    try:
        if kind == RecordKind.ENUM_ENTRY:
            entry = decode_enum_entry(record.payload)
            return entry.directives, entry.endorsements
        return (), decode_name_claim(record.payload).endorsements
    except PayloadDecodeError:
        return None


def _candidate(
    kind: RecordKind,
    record: SignedRecord,
    trusted: frozenset[bytes],
    revoked: dict[tuple[bytes, bytes], int],
    now: float,
) -> Candidate | None:
    decoded = _decode_claim(kind, record)
    if decoded is None:
        return None
    directives, endorsements = decoded
    good = _trusted_endorsements(kind, record, endorsements, trusted, revoked, now)
    return Candidate(
        owner=record.owner,
        peer_id=peer_id_for(record.owner),
        fingerprint=fingerprint_for(record.owner),
        record=record,
        directives=directives,
        verified_by=tuple(sorted({e.verifier for e in good})),
        verified_until=max((e.expires_at for e in good), default=0),
    )


def _current_claims(
    kind: RecordKind, subject: str, records: Iterable[SignedRecord], now: float
) -> list[SignedRecord]:
    """Rule 1: per owner the newest valid record, at most ``MAX_CANDIDATES`` owners."""
    if kind not in ENDORSABLE_KINDS:
        raise ValueError(f"{kind.name} is not a claim kind")
    newest: dict[bytes, SignedRecord] = {}
    for record in records:
        if record.kind != kind or record.subject != subject or record.expires_at <= now:
            continue  # rule 1
        held = newest.get(record.owner)
        if held is not None and not supersedes(record, held):
            continue  # equal seq: the same deterministic rule as every storing node
        if len(newest) >= MAX_CANDIDATES and held is None:
            continue
        if not signature_valid(record):
            continue  # rule 1: unsigned or forged
        newest[record.owner] = record
    return list(newest.values())


def revocation_lookups(
    kind: RecordKind,
    subject: str,
    records: Iterable[SignedRecord],
    trusted: frozenset[bytes],
    now: float,
) -> tuple[tuple[bytes, bytes], ...]:
    """The (verifier, owner) pairs whose revocation record decides ``resolve_claims``.

    One per trusted endorsement that would count were it not revoked (rule 2
    without revocations). Only a trusted verifier's signature creates a pair, so
    squatters cannot make a resolver read more revocation keys; at most
    ``MAX_CANDIDATES`` x ``MAX_ENDORSEMENTS`` pairs.
    """
    pairs: set[tuple[bytes, bytes]] = set()
    for record in _current_claims(kind, subject, records, now):
        decoded = _decode_claim(kind, record)
        if decoded is None:
            continue
        for endorsement in _trusted_endorsements(kind, record, decoded[1], trusted, {}, now):
            pairs.add((endorsement.verifier, record.owner))
    return tuple(sorted(pairs))


def resolve_claims(
    kind: RecordKind,
    subject: str,
    records: Iterable[SignedRecord],
    revocation_records: Iterable[SignedRecord],
    trusted: frozenset[bytes],
    now: float,
) -> Resolution:
    """Apply rules 1-4 to every claim found for ``subject``."""
    revoked = revocations_for(kind, subject, revocation_records, trusted, now)
    candidates = [
        c
        for r in _current_claims(kind, subject, records, now)
        if (c := _candidate(kind, r, trusted, revoked, now)) is not None
    ]
    candidates.sort(key=lambda c: (not c.verified_by, c.peer_id))
    verified = [c for c in candidates if c.verified_by]
    if len(verified) == 1:
        return Verified(subject, verified[0])  # rule 3
    if len(verified) > 1:
        return Ambiguous(subject, tuple(verified), conflict=True)
    if len(candidates) == 1:
        return Unverified(subject, candidates[0])  # rule 4
    if candidates:
        return Ambiguous(subject, tuple(candidates), conflict=False)
    return NotFound(subject)


@dataclass(frozen=True, slots=True)
class Route:
    """What the DNS gateway answers for a number, and why."""

    number: str
    directives: tuple[NaptrDirective, ...]
    source: str  # "verified" or "tollfree"
    owner: bytes | None = None


def route_number(resolution: Resolution, tollfree: TollFreeTable) -> Route | None:
    """Rule 5: a verified claim's directives, else the toll-free table, else ``None``."""
    number = resolution.subject
    if isinstance(resolution, Verified):
        return Route(
            number, resolution.candidate.directives, "verified", resolution.candidate.owner
        )
    fallback = tollfree.lookup(number)
    if fallback:
        return Route(number, fallback, "tollfree")
    return None
