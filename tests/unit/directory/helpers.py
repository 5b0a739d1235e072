"""Shared builders for directory unit tests: real identities, real signed records."""

from __future__ import annotations

from p2pnode.directory.naptr import NaptrDirective, sip_directive
from p2pnode.directory.payloads import (
    Endorsement,
    EnumEntry,
    NameClaim,
    encode_enum_entry,
    encode_name_claim,
    encode_revocation,
    revocation_subject,
)
from p2pnode.directory.verifiers import countersign, revoke
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, sign_record

NOW = 1_800_000_000.0
NUMBER = "+18009359935"
OTHER_NUMBER = "+442079460018"
DAY = 24 * 3600


def identity(n: int) -> Identity:
    return Identity.generate(bytes([n]) * 32)


def enum_record(
    owner: Identity,
    number: str = NUMBER,
    *,
    uri: str = "sip:pbx@owner.example",
    endorsements: tuple[Endorsement, ...] = (),
    directives: tuple[NaptrDirective, ...] | None = None,
    seq: int = 1,
    now: float = NOW,
    ttl: int = 7 * DAY,
) -> SignedRecord:
    entry = EnumEntry(directives or (sip_directive(uri),), endorsements)
    return sign_record(
        owner, RecordKind.ENUM_ENTRY, number, encode_enum_entry(entry), seq=seq, now=now, ttl=ttl
    )


def name_record(
    owner: Identity,
    login: str = "alice",
    *,
    endorsements: tuple[Endorsement, ...] = (),
    seq: int = 1,
    now: float = NOW,
) -> SignedRecord:
    payload = encode_name_claim(NameClaim(endorsements))
    return sign_record(owner, RecordKind.NAME_CLAIM, login, payload, seq=seq, now=now, ttl=DAY)


def endorse(
    verifier: Identity,
    owner: Identity,
    subject: str = NUMBER,
    kind: RecordKind = RecordKind.ENUM_ENTRY,
    *,
    now: float = NOW,
    validity: int = 30 * DAY,
) -> Endorsement:
    return countersign(verifier, kind, subject, owner.public_key, now=now, validity=validity)


def revocation_record(
    verifier: Identity,
    owner: Identity,
    subject: str = NUMBER,
    kind: RecordKind = RecordKind.ENUM_ENTRY,
    *,
    now: float = NOW,
    seq: int = 1,
    ttl: int = 30 * DAY,
) -> SignedRecord:
    payload = revoke(kind, subject, owner.public_key, now=now)
    return sign_record(
        verifier,
        RecordKind.REVOCATION,
        revocation_subject(kind, subject, owner.public_key),
        encode_revocation(payload),
        seq=seq,
        now=now,
        ttl=ttl,
    )
