"""Every trust rule, on real signed records: no network needed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from p2pnode.directory.naptr import parse_enumer_directive, sip_directive
from p2pnode.directory.tollfree import TollFreeTable, parse_tollfree
from p2pnode.directory.trust import (
    Ambiguous,
    NotFound,
    Resolution,
    Unverified,
    Verified,
    resolve_claims,
    revocation_lookups,
    route_number,
)
from p2pnode.directory.verifiers import (
    MAX_VALIDITY,
    RevocationTooShortError,
    revocation_expiry,
)
from p2pnode.records import MAX_TTL_BY_KIND, Accepted, RecordKind, SignedRecord, accept

from .helpers import (
    DAY,
    NOW,
    NUMBER,
    OTHER_NUMBER,
    endorse,
    enum_record,
    identity,
    name_record,
    revocation_record,
)

OWNER, SQUATTER, VERIFIER, ROGUE = identity(1), identity(2), identity(3), identity(4)
TRUSTED = frozenset({VERIFIER.public_key})
ENUM = RecordKind.ENUM_ENTRY
TOLLFREE = parse_tollfree(
    "# US toll-free\nE2U+sip=100|10|!^\\+1(800[0-9]{7})$!sip:\\1@tollfree.example.net!\n"
)


def resolve(
    records: Iterable[SignedRecord],
    revocations: Iterable[SignedRecord] = (),
    trusted: frozenset[bytes] = TRUSTED,
    now: float = NOW,
    number: str = NUMBER,
) -> Resolution:
    return resolve_claims(ENUM, number, records, revocations, trusted, now)


def test_verified_owner_wins_beside_squatter() -> None:
    owner = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER),))
    squatter = enum_record(SQUATTER, uri="sip:evil@squat.example")
    for order in ([owner, squatter], [squatter, owner]):
        result = resolve(order)
        assert isinstance(result, Verified)
        assert result.candidate.owner == OWNER.public_key
        assert result.candidate.verified_by == (VERIFIER.public_key,)
        route = route_number(result, TollFreeTable())
        assert route is not None and route.source == "verified"
        assert route.directives[0].uri_for(NUMBER) == "sip:pbx@owner.example"


def test_unsigned_record_is_ignored() -> None:
    record = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER),))
    forged = replace(record, signature=bytes(64))
    assert isinstance(resolve([forged]), NotFound)
    # routes changed after signing (tampered payload): the owner's signature fails
    other = enum_record(OWNER, uri="sip:else@where", endorsements=(endorse(VERIFIER, OWNER),))
    assert isinstance(resolve([replace(record, payload=other.payload)]), NotFound)


def test_wrong_verifier_leaves_claim_unverified() -> None:
    record = enum_record(SQUATTER, endorsements=(endorse(ROGUE, SQUATTER),))
    result = resolve([record])
    assert isinstance(result, Unverified)
    assert result.candidate.fingerprint == SQUATTER.fingerprint
    assert result.candidate.verified_by == ()
    assert route_number(result, TollFreeTable()) is None  # the gateway never routes it


def test_lifted_signature_fails() -> None:
    genuine = endorse(VERIFIER, OWNER)
    # onto another owner, same number
    assert isinstance(resolve([enum_record(SQUATTER, endorsements=(genuine,))]), Unverified)
    # onto another number, same owner
    other = enum_record(OWNER, OTHER_NUMBER, endorsements=(genuine,))
    assert isinstance(resolve([other], number=OTHER_NUMBER), Unverified)
    # onto another kind (a login named like the number)
    login = name_record(OWNER, "18009359935", endorsements=(endorse(VERIFIER, OWNER),))
    assert isinstance(
        resolve_claims(RecordKind.NAME_CLAIM, "18009359935", [login], (), TRUSTED, NOW), Unverified
    )
    from p2pnode.directory.payloads import Endorsement

    extended = Endorsement(
        genuine.verifier, genuine.issued_at, genuine.expires_at + DAY, genuine.signature
    )
    assert isinstance(resolve([enum_record(OWNER, endorsements=(extended,))]), Unverified)


def test_routes_change_without_reverification() -> None:
    token = endorse(VERIFIER, OWNER)
    first = enum_record(OWNER, uri="sip:old@pbx", endorsements=(token,), seq=1)
    second = enum_record(OWNER, uri="sip:new@pbx", endorsements=(token,), seq=2)
    result = resolve([first, second])
    assert isinstance(result, Verified)
    assert result.candidate.directives == (sip_directive("sip:new@pbx"),)


def test_revoked_endorsement_fails_and_reendorsement_restores() -> None:
    record = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, now=NOW - 100),))
    revoked = revocation_record(VERIFIER, OWNER, now=NOW - 10)
    assert isinstance(resolve([record], [revoked]), Unverified)
    # a revocation by an untrusted key, or for another owner, changes nothing
    assert isinstance(resolve([record], [revocation_record(ROGUE, OWNER, now=NOW - 10)]), Verified)
    assert isinstance(
        resolve([record], [revocation_record(VERIFIER, SQUATTER, now=NOW - 10)]), Verified
    )
    # a forged revocation changes nothing
    assert isinstance(resolve([record], [replace(revoked, signature=bytes(64))]), Verified)
    # the verifier endorses again after revoking
    again = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, now=NOW),), seq=2)
    assert isinstance(resolve([again], [revoked]), Verified)


def test_a_revocation_voids_one_owner_only_under_its_own_subject() -> None:
    record = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, now=NOW - 100),))
    revoked = revocation_record(VERIFIER, OWNER, now=NOW - 10)
    # the owner's revocation filed under another owner's subject is ignored
    misfiled = replace(revoked, subject=revocation_record(VERIFIER, SQUATTER).subject)
    assert isinstance(resolve([record], [misfiled]), Verified)
    assert isinstance(resolve([record], [revoked]), Unverified)


def test_revoking_many_owners_never_revives_an_earlier_one() -> None:
    """Revocations live one per owner: the 1st stays in force after 40 more (a bounded list
    used to keep the 16 newest and silently revive the rest)."""
    owners = [identity(n) for n in range(10, 51)]
    claims = [
        enum_record(o, endorsements=(endorse(VERIFIER, o, now=NOW - 100),), seq=1) for o in owners
    ]
    revocations = [revocation_record(VERIFIER, o, now=NOW - 50 + n) for n, o in enumerate(owners)]
    for claim in claims:
        assert isinstance(resolve([claim], revocations), Unverified)


def test_revocation_lookups_follow_trusted_endorsements_only() -> None:
    endorsed = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, now=NOW - 100),))
    rogue = enum_record(SQUATTER, endorsements=(endorse(ROGUE, SQUATTER),))
    lifted = enum_record(ROGUE, endorsements=(endorse(VERIFIER, OWNER),))  # another owner's
    pairs = revocation_lookups(ENUM, NUMBER, [endorsed, rogue, lifted], TRUSTED, NOW)
    assert pairs == ((VERIFIER.public_key, OWNER.public_key),)
    expired = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, validity=DAY),))
    assert revocation_lookups(ENUM, NUMBER, [expired], TRUSTED, NOW + DAY) == ()


def test_a_revocation_outlives_the_longest_endorsement() -> None:
    """A revocation made with the default lifetime is still in force on the last day of a
    730-day endorsement, and the DHT's accept() takes a record that long."""
    assert MAX_TTL_BY_KIND[RecordKind.REVOCATION] >= MAX_VALIDITY
    longest = endorse(VERIFIER, OWNER, now=NOW - 100, validity=MAX_VALIDITY)
    expires_at = revocation_expiry(NOW)
    assert expires_at >= longest.expires_at
    revoked = revocation_record(VERIFIER, OWNER, now=NOW, ttl=expires_at - int(NOW))
    assert isinstance(accept(revoked, None, revoked.key, NOW), Accepted)
    last_day = longest.expires_at - DAY
    # the owner kept republishing the claim with the revoked endorsement in it
    fresh = enum_record(OWNER, endorsements=(longest,), now=last_day - DAY, ttl=30 * DAY)
    assert isinstance(resolve([fresh], [revoked], now=last_day), Unverified)
    assert isinstance(resolve([fresh], [], now=last_day), Verified)


def test_revocation_expiry_refuses_to_let_an_endorsement_revive() -> None:
    assert revocation_expiry(NOW) == int(NOW) + MAX_VALIDITY
    assert revocation_expiry(NOW, lifetime=DAY, voided_until=int(NOW) + DAY) == int(NOW) + DAY
    with pytest.raises(RevocationTooShortError) as short:
        revocation_expiry(NOW, lifetime=DAY, voided_until=int(NOW) + 30 * DAY)
    assert short.value.needed_until == int(NOW) + 30 * DAY
    # a new version replaces the old one everywhere: it may not expire sooner
    with pytest.raises(RevocationTooShortError):
        revocation_expiry(NOW, lifetime=DAY, previous_expires_at=int(NOW) + 400 * DAY)
    for bad in (0, -1, MAX_VALIDITY + 1):
        with pytest.raises(ValueError, match="revocation lives"):
            revocation_expiry(NOW, lifetime=bad)


def test_expired_endorsement_and_expired_record() -> None:
    record = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, validity=DAY),))
    assert isinstance(resolve([record], now=NOW + DAY - 1), Verified)
    assert isinstance(resolve([record], now=NOW + DAY), Unverified)
    assert isinstance(resolve([record], now=NOW + 7 * DAY), NotFound)  # the record itself expired
    future = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER, now=NOW + DAY),))
    assert isinstance(resolve([future]), Unverified)  # issued in the future


def test_several_unverified_claims_are_ambiguous() -> None:
    result = resolve([enum_record(OWNER), enum_record(SQUATTER)])
    assert isinstance(result, Ambiguous) and not result.conflict
    assert {c.owner for c in result.candidates} == {OWNER.public_key, SQUATTER.public_key}
    assert route_number(result, TollFreeTable()) is None


def test_two_verified_owners_are_a_conflict() -> None:
    other_verifier = identity(5)
    trusted = TRUSTED | {other_verifier.public_key}
    a = enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER),))
    b = enum_record(SQUATTER, endorsements=(endorse(other_verifier, SQUATTER),))
    result = resolve([a, b], trusted=trusted)
    assert isinstance(result, Ambiguous) and result.conflict
    assert route_number(result, TollFreeTable()) is None


def test_wrong_subject_or_kind_is_ignored() -> None:
    record = enum_record(
        OWNER, OTHER_NUMBER, endorsements=(endorse(VERIFIER, OWNER, OTHER_NUMBER),)
    )
    assert isinstance(resolve([record]), NotFound)
    assert isinstance(resolve([name_record(OWNER, NUMBER)]), NotFound)


def test_tollfree_fallback_only_without_trusted_record() -> None:
    squatter_only = resolve([enum_record(SQUATTER)])
    route = route_number(squatter_only, TOLLFREE)
    assert route is not None and route.source == "tollfree"
    assert route.directives[0].uri_for(NUMBER) == "sip:8009359935@tollfree.example.net"
    assert route_number(resolve([]), TOLLFREE) is not None
    verified = resolve([enum_record(OWNER, endorsements=(endorse(VERIFIER, OWNER),))])
    route = route_number(verified, TOLLFREE)
    assert route is not None and route.source == "verified"
    assert route_number(resolve([], number=OTHER_NUMBER), TOLLFREE) is None


def test_names_follow_the_same_rules() -> None:
    good = name_record(
        OWNER, endorsements=(endorse(VERIFIER, OWNER, "alice", RecordKind.NAME_CLAIM),)
    )
    squat = name_record(SQUATTER)
    result = resolve_claims(RecordKind.NAME_CLAIM, "alice", [squat, good], (), TRUSTED, NOW)
    assert isinstance(result, Verified) and result.candidate.owner == OWNER.public_key
    result = resolve_claims(RecordKind.NAME_CLAIM, "alice", [squat], (), TRUSTED, NOW)
    assert isinstance(result, Unverified)
    assert result.candidate.fingerprint == SQUATTER.fingerprint


def test_tollfree_table_parsing() -> None:
    line = "E2U+sip=100|10|!^\\+1(800[0-9]{7})$!sip:\\1@tollfree.example.net!"
    assert TOLLFREE.directives == (parse_enumer_directive(line),)
    assert TOLLFREE.lookup("+442079460018") == ()


def test_equal_seq_equivocation_resolves_the_same_in_any_order() -> None:
    """Issue 10 finding 5: two records of one owner with one seq; readers that saw them in
    different orders once disagreed (first seen won). Greater bytes win, as in ``accept``."""
    owner, verifier = identity(1), identity(2)
    ends = (endorse(verifier, owner),)
    one = enum_record(owner, uri="sip:a@one.example", seq=9, endorsements=ends)
    two = enum_record(owner, uri="sip:b@two.example", seq=9, endorsements=ends)
    trusted = frozenset({verifier.public_key})
    results = {
        resolve_claims(RecordKind.ENUM_ENTRY, NUMBER, order, [], trusted, NOW)
        for order in ([one, two], [two, one])
    }
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, Verified)
    assert result.candidate.record.encoded == max(one.encoded, two.encoded)
