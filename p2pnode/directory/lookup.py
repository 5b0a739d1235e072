"""The thin async layer: fetch claims and revocations from the network, publish our own.

The network is anything with ``put``/``get`` (``RecordNetwork``): the real DHT
node in production and in integration tests. Trust decisions stay in the pure
``trust`` module; this module only gathers records and signs new versions.
Invariants:
- Every network call is bounded by ``timeout``; a lookup that times out is a
  ``DirectoryTimeoutError``, never a silent "not found".
- Revocations are read only where a *trusted* verifier's endorsement on a
  current claim points (``revocation_lookups``), so their number is bounded by
  what trusted verifiers signed, not by what peers publish.
- Publishing keeps the owner's existing endorsements unless their verifier
  revoked them or they expired, reports every one it drops and a previous
  version it could not find (``Published.notes``), and always uses a
  sequence number above the one the network holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from p2pnode.dht import DhtNode
from p2pnode.directory.e164 import parse_e164
from p2pnode.directory.names import LoginError, normalise_login
from p2pnode.directory.naptr import NaptrDirective
from p2pnode.directory.payloads import (
    Endorsement,
    EnumEntry,
    NameClaim,
    PayloadDecodeError,
    decode_enum_entry,
    decode_name_claim,
    encode_enum_entry,
    encode_name_claim,
    encode_revocation,
    revocation_subject,
)
from p2pnode.directory.tollfree import TollFreeTable
from p2pnode.directory.trust import (
    Resolution,
    Route,
    resolve_claims,
    revocation_lookups,
    revocations_for,
    route_number,
)
from p2pnode.directory.verifiers import (
    add_endorsement,
    claim_endorsements,
    revocation_expiry,
    revoke,
)
from p2pnode.identity import Identity, fingerprint_for
from p2pnode.records import MAX_TTL_BY_KIND, RecordKind, SignedRecord, record_key, sign_record

__all__ = [
    "DEFAULT_TIMEOUT",
    "DhtNetwork",
    "Directory",
    "DirectoryTimeoutError",
    "Published",
    "RecordNetwork",
]

DEFAULT_TIMEOUT = 5.0
MAX_TRUSTED_VERIFIERS = 32  # revocation keys read per lookup


class RecordNetwork(Protocol):
    """What the directory needs from the DHT."""

    async def put(self, record: SignedRecord) -> int:
        """Store ``record``; how many nodes stored it."""
        ...

    async def get(self, key: bytes) -> list[SignedRecord]:
        """The newest valid record per owner under ``key``."""
        ...


class DhtNetwork:
    """``RecordNetwork`` over a real ``DhtNode`` (whose results carry more detail)."""

    def __init__(self, node: DhtNode) -> None:
        self.node = node

    async def put(self, record: SignedRecord) -> int:
        return (await self.node.put(record)).stored

    async def get(self, key: bytes) -> list[SignedRecord]:
        return list((await self.node.get(key)).records)


class DirectoryTimeoutError(TimeoutError):
    """The network did not answer within the lookup's time bound."""


@dataclass(frozen=True, slots=True)
class Published:
    record: SignedRecord
    stored_on: int  # nodes that stored it
    # What a republish changed that the owner must hear about: endorsements dropped
    # (revoked or expired), or no previous record found to carry them over from.
    notes: tuple[str, ...] = ()


class Directory:
    """Resolve and publish logins and numbers over a ``RecordNetwork``."""

    def __init__(
        self,
        network: RecordNetwork,
        *,
        trusted: frozenset[bytes],
        clock: Callable[[], float],
        tollfree: TollFreeTable | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if len(trusted) > MAX_TRUSTED_VERIFIERS:
            raise ValueError(f"at most {MAX_TRUSTED_VERIFIERS} trusted verifiers")
        self._network = network
        self.trusted = trusted
        self._clock = clock
        self.tollfree = tollfree or TollFreeTable()
        self._timeout = timeout

    async def _bounded_get(self, key: bytes) -> list[SignedRecord]:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._network.get(key)
        except TimeoutError:
            raise DirectoryTimeoutError(
                f"no answer from the network in {self._timeout:g} s"
            ) from None

    async def _bounded_put(self, record: SignedRecord) -> int:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._network.put(record)
        except TimeoutError:
            raise DirectoryTimeoutError(
                f"no answer from the network in {self._timeout:g} s"
            ) from None

    async def fetch(
        self, kind: RecordKind, subject: str
    ) -> tuple[list[SignedRecord], list[SignedRecord]]:
        """Every claim under the subject's key, then the revocations that can void them.

        A revocation is read (in parallel) for each trusted verifier that endorsed a
        current claim's owner: one more round trip, only when there is something to void.
        """
        records = await self._bounded_get(record_key(kind, b"", subject))
        pairs = revocation_lookups(kind, subject, records, self.trusted, self._clock())
        keys = [
            record_key(RecordKind.REVOCATION, verifier, revocation_subject(kind, subject, owner))
            for verifier, owner in pairs
        ]
        results = await asyncio.gather(*(self._bounded_get(k) for k in keys))
        return records, [r for batch in results for r in batch]

    async def resolve(self, kind: RecordKind, subject: str) -> Resolution:
        records, revocations = await self.fetch(kind, subject)
        return resolve_claims(kind, subject, records, revocations, self.trusted, self._clock())

    async def route(self, number: str) -> Route | None:
        """What a caller should dial for ``number``: verified routes, toll-free, or ``None``."""
        return route_number(await self.resolve(RecordKind.ENUM_ENTRY, number), self.tollfree)

    async def own_record(self, kind: RecordKind, subject: str, owner: bytes) -> SignedRecord | None:
        """The network's newest record of ``owner`` under the subject's key (contested kinds)."""
        records = await self._bounded_get(record_key(kind, owner, subject))
        mine = [r for r in records if r.owner == owner and r.subject == subject and r.kind == kind]
        return max(mine, key=lambda r: r.seq, default=None)

    def _next_seq(self, previous: SignedRecord | None) -> int:
        # time-based so a lost previous version still never makes us roll back
        return max(int(self._clock()), previous.seq + 1 if previous else 0)

    async def publish_enum(
        self,
        identity: Identity,
        number: str,
        directives: Sequence[NaptrDirective] | None,
        *,
        add: Sequence[Endorsement] = (),
        ttl: int | None = None,
    ) -> Published:
        """Sign and store the next version of our ENUM entry; ``None`` keeps current routes."""
        parse_e164(number)  # only single, canonical, valid numbers are ever published
        kind = RecordKind.ENUM_ENTRY
        previous = await self.own_record(kind, number, identity.public_key)
        endorsements: tuple[Endorsement, ...] = ()
        kept_directives: tuple[NaptrDirective, ...] = ()
        if previous is not None:
            try:
                entry = decode_enum_entry(previous.payload)
                endorsements, kept_directives = entry.endorsements, entry.directives
            except PayloadDecodeError:
                pass
        endorsements, notes = await self._carried_over(
            kind, number, identity.public_key, previous, endorsements
        )
        for endorsement in add:
            endorsements = add_endorsement(endorsements, endorsement)
        routes = tuple(directives) if directives is not None else kept_directives
        if not routes:
            raise ValueError(f"no routes for {number}: give at least one NAPTR directive")
        payload = encode_enum_entry(EnumEntry(routes, endorsements))
        record = sign_record(
            identity,
            RecordKind.ENUM_ENTRY,
            number,
            payload,
            seq=self._next_seq(previous),
            now=self._clock(),
            ttl=ttl or MAX_TTL_BY_KIND[RecordKind.ENUM_ENTRY],
        )
        return Published(record, await self._bounded_put(record), notes)

    async def claim_name(
        self,
        identity: Identity,
        login: str,
        *,
        add: Sequence[Endorsement] = (),
        ttl: int | None = None,
    ) -> Published:
        """Sign and store the next version of our claim on ``login``."""
        if normalise_login(login) != login:
            raise LoginError(f"{login!r} is not a canonical login")
        previous = await self.own_record(RecordKind.NAME_CLAIM, login, identity.public_key)
        endorsements: tuple[Endorsement, ...] = ()
        if previous is not None:
            with contextlib.suppress(PayloadDecodeError):
                endorsements = decode_name_claim(previous.payload).endorsements
        endorsements, notes = await self._carried_over(
            RecordKind.NAME_CLAIM, login, identity.public_key, previous, endorsements
        )
        for endorsement in add:
            endorsements = add_endorsement(endorsements, endorsement)
        record = sign_record(
            identity,
            RecordKind.NAME_CLAIM,
            login,
            encode_name_claim(NameClaim(endorsements)),
            seq=self._next_seq(previous),
            now=self._clock(),
            ttl=ttl or MAX_TTL_BY_KIND[RecordKind.NAME_CLAIM],
        )
        return Published(record, await self._bounded_put(record), notes)

    async def _carried_over(
        self,
        kind: RecordKind,
        subject: str,
        owner: bytes,
        previous: SignedRecord | None,
        endorsements: tuple[Endorsement, ...],
    ) -> tuple[tuple[Endorsement, ...], tuple[str, ...]]:
        """The previous version's endorsements a new version may keep, and notes on the rest.

        Each endorsement's own verifier's revocation is read (whether or not this
        node trusts that verifier: it is the verifier's word on its own signature);
        a revoked or expired endorsement is dropped, and every drop is reported, as
        is a previous version that was not found (so nothing is dropped silently).
        """
        if previous is None:
            return (), (
                f"no earlier record of yours for {subject} was found on the network, so "
                "no endorsement was carried over: add your verifier's token again "
                "(--endorsement) if you had one",
            )
        now = self._clock()
        verifiers = sorted({e.verifier for e in endorsements})
        keys = [
            record_key(RecordKind.REVOCATION, v, revocation_subject(kind, subject, owner))
            for v in verifiers
        ]
        batches = await asyncio.gather(*(self._bounded_get(k) for k in keys))
        revoked = revocations_for(
            kind, subject, [r for b in batches for r in b], frozenset(verifiers), now
        )
        kept: list[Endorsement] = []
        notes: list[str] = []
        for endorsement in endorsements:
            who = fingerprint_for(endorsement.verifier)
            revoked_at = revoked.get((endorsement.verifier, owner))
            if revoked_at is not None and endorsement.issued_at <= revoked_at:
                notes.append(f"dropped the endorsement by {who}: its verifier revoked it")
            elif endorsement.expires_at <= now:
                notes.append(f"dropped the endorsement by {who}: it expired")
            else:
                kept.append(endorsement)
        return tuple(kept), tuple(notes)

    async def publish_revocation(
        self,
        verifier: Identity,
        kind: RecordKind,
        subject: str,
        owner: bytes,
        *,
        lifetime: int | None = None,
    ) -> Published:
        """The verifier withdraws its endorsements of ``owner`` for ``subject``.

        The record outlives what it voids (``revocation_expiry``): ``MAX_VALIDITY`` by
        default; a shorter ``lifetime`` is refused (``RevocationTooShortError``) if
        the owner's claim carries a longer-lived endorsement of ours, or if the
        version it replaces would have lasted longer.
        """
        rsubject = revocation_subject(kind, subject, owner)
        key = record_key(RecordKind.REVOCATION, verifier.public_key, rsubject)
        held, claims = await asyncio.gather(
            self._bounded_get(key), self._bounded_get(record_key(kind, b"", subject))
        )
        mine = [
            r
            for r in held
            if r.owner == verifier.public_key
            and r.kind == RecordKind.REVOCATION
            and r.subject == rsubject
        ]
        previous = max(mine, key=lambda r: r.seq, default=None)
        now = self._clock()
        voided_until = max(
            (
                e.expires_at
                for r in claims
                if r.kind == kind and r.subject == subject and r.owner == owner
                for e in _endorsements_or_none(r)
                if e.verifier == verifier.public_key
                and e.issued_at <= now
                and e.valid_for(kind, subject, owner)
            ),
            default=0,
        )
        expires_at = revocation_expiry(
            now,
            lifetime=lifetime,
            previous_expires_at=previous.expires_at if previous is not None else 0,
            voided_until=voided_until,
        )
        record = sign_record(
            verifier,
            RecordKind.REVOCATION,
            rsubject,
            encode_revocation(revoke(kind, subject, owner, now=now)),
            seq=self._next_seq(previous),
            now=now,
            ttl=expires_at - int(now),
        )
        return Published(record, await self._bounded_put(record))


def _endorsements_or_none(record: SignedRecord) -> tuple[Endorsement, ...]:
    try:
        return claim_endorsements(record)
    except PayloadDecodeError:
        return ()
