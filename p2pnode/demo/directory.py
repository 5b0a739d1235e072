"""The demo's directory step: a login and a number claimed twice, one claim countersigned.

Everything goes through the real ``Directory`` over the demo's DHT nodes, the
way the ``p2pnode name|enum|verifier`` commands use it: owners sign and publish
claims, a verifier reads the network's copy of a claim and countersigns its
owner key (handing the owner a printable token), the owner republishes with the
endorsement, and a third node resolves with and without trusting the verifier.
No trust rule lives here: ``directory.trust`` decides, this module only records
what it said.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from p2pnode.dht import DhtNode
from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.trust import Ambiguous, Resolution, Route, Verified
from p2pnode.directory.verifiers import (
    EndorsementToken,
    countersign,
    decode_token,
    encode_token,
    inspect_claim,
)
from p2pnode.identity import Identity
from p2pnode.records import RecordKind

__all__ = ["DirectoryOutcome", "DirectoryParties", "Publication", "run_directory_step"]

NAME = RecordKind.NAME_CLAIM
ENUM = RecordKind.ENUM_ENTRY


@dataclass(frozen=True)
class DirectoryParties:
    """Who does what: each party talks to the network through its own DHT node."""

    owner: DhtNode  # claims the login and the number with its node identity
    squatter: DhtNode  # claims the same login and number, never endorsed
    verifier: Identity  # a key resolvers may choose to trust
    verifier_node: DhtNode  # where the verifier reads claims from
    resolver: DhtNode  # the third node that looks both up


@dataclass(frozen=True)
class Publication:
    """One claim signed and stored, as the publisher's ``Directory`` reported it."""

    by: bytes  # the publisher's public key
    kind: RecordKind  # NAME_CLAIM or ENUM_ENTRY
    subject: str  # the login or the number
    uri: str | None  # the route published with a number (None: a login, or routes kept)
    endorsed: bool  # carries the verifier's countersignature
    stored_on: int


@dataclass(frozen=True)
class DirectoryOutcome:
    login: str
    number: str
    uri: str  # the owner's route for the number
    owner: bytes
    squatter: bytes
    published: tuple[Publication, ...]
    token_chars: int  # length of the endorsement token the owner was handed
    login_trusted: Resolution  # resolved trusting the verifier
    login_untrusted: Resolution  # resolved trusting nobody
    number_untrusted: Resolution
    route: Route | None  # the number's route, trusting the verifier

    @property
    def login_verified(self) -> bool:
        result = self.login_trusted
        return isinstance(result, Verified) and result.candidate.owner == self.owner

    @property
    def login_ambiguous(self) -> bool:
        """Without trust both claims are listed, neither silently picked."""
        result = self.login_untrusted
        owners = {c.owner for c in result.candidates} if isinstance(result, Ambiguous) else set()
        return owners == {self.owner, self.squatter}

    @property
    def route_ok(self) -> bool:
        route = self.route
        return (
            route is not None
            and route.source == "verified"
            and route.owner == self.owner
            and [d.uri_for(self.number) for d in route.directives] == [self.uri]
        )

    @property
    def passed(self) -> bool:
        stored = all(p.stored_on >= 1 for p in self.published)
        return stored and self.login_verified and self.login_ambiguous and self.route_ok


async def _endorse(
    verifier: Identity, at_verifier: Directory, kind: RecordKind, subject: str, owner: bytes
) -> str:
    """What `p2pnode verifier` does: find the owner's claim in the network, countersign
    its owner key, hand over a token. ``LookupError`` if the claim is not found."""
    records, _ = await at_verifier.fetch(kind, subject)
    claim = next((r for r in records if r.owner == owner), None)
    if claim is None:
        raise LookupError(f"the verifier finds no claim on {subject!r} by the owner")
    view = inspect_claim(claim)
    endorsement = countersign(verifier, kind, subject, view.owner, now=time.time())
    return encode_token(EndorsementToken(kind, subject, view.owner, endorsement))


async def run_directory_step(
    parties: DirectoryParties,
    *,
    login: str,
    number: str,
    uri: str,
    squatter_uri: str,
) -> DirectoryOutcome:
    """Claim, countersign, republish, resolve; raises ``DirectoryTimeoutError`` or
    ``LookupError`` when the network loses a claim."""
    owner, squatter = parties.owner.identity, parties.squatter.identity
    nobody: frozenset[bytes] = frozenset()
    trusted = frozenset({parties.verifier.public_key})
    at_owner = Directory(DhtNetwork(parties.owner), trusted=nobody, clock=time.time)
    at_squatter = Directory(DhtNetwork(parties.squatter), trusted=nobody, clock=time.time)
    at_verifier = Directory(DhtNetwork(parties.verifier_node), trusted=nobody, clock=time.time)
    trusting = Directory(DhtNetwork(parties.resolver), trusted=trusted, clock=time.time)
    distrusting = Directory(DhtNetwork(parties.resolver), trusted=nobody, clock=time.time)
    published: list[Publication] = []

    # A login: two claims, then the verifier countersigns the owner's.
    claim = await at_owner.claim_name(owner, login)
    published.append(Publication(owner.public_key, NAME, login, None, False, claim.stored_on))
    claim = await at_squatter.claim_name(squatter, login)
    published.append(Publication(squatter.public_key, NAME, login, None, False, claim.stored_on))
    token = await _endorse(parties.verifier, at_verifier, NAME, login, owner.public_key)
    claim = await at_owner.claim_name(owner, login, add=[decode_token(token).endorsement])
    published.append(Publication(owner.public_key, NAME, login, None, True, claim.stored_on))
    login_trusted = await trusting.resolve(NAME, login)
    login_untrusted = await distrusting.resolve(NAME, login)

    # A number: the owner's NAPTR route, a squatter's, the verifier countersigns the owner.
    entry = await at_owner.publish_enum(owner, number, [sip_directive(uri)])
    published.append(Publication(owner.public_key, ENUM, number, uri, False, entry.stored_on))
    entry = await at_squatter.publish_enum(squatter, number, [sip_directive(squatter_uri)])
    published.append(
        Publication(squatter.public_key, ENUM, number, squatter_uri, False, entry.stored_on)
    )
    token = await _endorse(parties.verifier, at_verifier, ENUM, number, owner.public_key)
    entry = await at_owner.publish_enum(owner, number, None, add=[decode_token(token).endorsement])
    published.append(Publication(owner.public_key, ENUM, number, None, True, entry.stored_on))
    number_untrusted = await distrusting.resolve(ENUM, number)
    route = await trusting.route(number)

    return DirectoryOutcome(
        login=login,
        number=number,
        uri=uri,
        owner=owner.public_key,
        squatter=squatter.public_key,
        published=tuple(published),
        token_chars=len(token),
        login_trusted=login_trusted,
        login_untrusted=login_untrusted,
        number_untrusted=number_untrusted,
        route=route,
    )
