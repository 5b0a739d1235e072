"""Verifier tooling: inspect a pending claim, countersign it, hand the signature over, revoke.

A verifier is just an identity whose public key resolvers choose to trust.
Invariants:
- A countersignature (``Endorsement``) binds kind, subject, the claimant's
  OWNER KEY and a validity window; it travels to the owner as a printable
  token and the owner puts it in their next record version.
- A revocation is the verifier's own REVOCATION record, one per revoked owner
  (key derived from the verifier, the subject and the owner), so a resolver
  that trusts the verifier knows exactly where to look, and no bound on a list
  ever makes an older revocation fall off.
- A revocation outlives every endorsement it voids: by default it lives
  ``MAX_VALIDITY`` (the longest any endorsement issued before it can still be
  valid), a new version never expires before the one it replaces, and a
  shorter requested lifetime that would let a known endorsement revive is
  refused (``RevocationTooShortError``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgpack

from p2pnode.directory.naptr import NaptrDirective
from p2pnode.directory.payloads import (
    ENDORSABLE_KINDS,
    MAX_ENDORSEMENTS,
    Endorsement,
    PayloadDecodeError,
    Revocation,
    decode_enum_entry,
    decode_name_claim,
    endorsement_message,
)
from p2pnode.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    fingerprint_for,
    peer_id_for,
)
from p2pnode.records import RecordKind, SignedRecord
from p2pnode.records.fields import FieldReader, Limits

__all__ = [
    "DEFAULT_VALIDITY",
    "MAX_VALIDITY",
    "TOKEN_PREFIX",
    "ClaimView",
    "EndorsementToken",
    "RevocationTooShortError",
    "TokenError",
    "add_endorsement",
    "claim_endorsements",
    "countersign",
    "decode_token",
    "encode_token",
    "inspect_claim",
    "revocation_expiry",
    "revoke",
]

DEFAULT_VALIDITY = 365 * 24 * 3600  # a verification lasts a year unless the verifier says less
MAX_VALIDITY = 2 * 365 * 24 * 3600
TOKEN_PREFIX = "p2pnode-endorsement:"  # noqa: S105 (a format tag, not a secret)
_MAX_TOKEN_CHARS = 600


class TokenError(ValueError):
    """Text that is not an endorsement token."""


_READ = FieldReader(TokenError)
# a flat array of 7 fields: nesting is refused before msgpack builds it (records.fields)
_TOKEN_LIMITS = Limits(
    max_bytes=_MAX_TOKEN_CHARS, max_depth=1, max_array=8, max_str=300, max_bin=64
)


class RevocationTooShortError(ValueError):
    """A requested revocation lifetime would let a voided endorsement revive."""

    def __init__(self, requested_until: int, needed_until: int) -> None:
        super().__init__(
            f"the revocation would expire at {requested_until}, before {needed_until}, "
            "when the endorsements it voids (or its previous version) run out"
        )
        self.requested_until = requested_until
        self.needed_until = needed_until


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What a verifier looks at before countersigning: who claims what, with which routes."""

    kind: RecordKind
    subject: str
    owner: bytes
    owner_peer_id: str
    owner_fingerprint: str
    seq: int
    issued_at: int
    expires_at: int
    directives: tuple[NaptrDirective, ...]
    endorsements: tuple[Endorsement, ...]


def claim_endorsements(record: SignedRecord) -> tuple[Endorsement, ...]:
    """The endorsements a claim record carries (``PayloadDecodeError`` if its payload is bad)."""
    if record.kind == RecordKind.NAME_CLAIM:
        return decode_name_claim(record.payload).endorsements
    if record.kind == RecordKind.ENUM_ENTRY:
        return decode_enum_entry(record.payload).endorsements
    raise PayloadDecodeError(f"a {record.kind.name} record is not a claim")


def inspect_claim(record: SignedRecord) -> ClaimView:
    """A readable view of a NAME_CLAIM or ENUM_ENTRY record."""
    directives: tuple[NaptrDirective, ...] = ()
    if record.kind == RecordKind.ENUM_ENTRY:
        directives = decode_enum_entry(record.payload).directives
    return ClaimView(
        kind=record.kind,
        subject=record.subject,
        owner=record.owner,
        owner_peer_id=peer_id_for(record.owner),
        owner_fingerprint=fingerprint_for(record.owner),
        seq=record.seq,
        issued_at=record.issued_at,
        expires_at=record.expires_at,
        directives=directives,
        endorsements=claim_endorsements(record),
    )


def countersign(
    verifier: Identity,
    kind: RecordKind,
    subject: str,
    owner: bytes,
    *,
    now: float,
    validity: int = DEFAULT_VALIDITY,
) -> Endorsement:
    """The verifier's signature over (kind, subject, owner key, validity window)."""
    if kind not in ENDORSABLE_KINDS:
        raise ValueError(f"{kind.name} records are not endorsed")
    if not 0 < validity <= MAX_VALIDITY:
        raise ValueError(f"validity must be 1-{MAX_VALIDITY} seconds")
    if len(owner) != PUBLIC_KEY_BYTES:
        raise ValueError("owner must be a 32-byte public key")
    issued_at = int(now)
    expires_at = issued_at + validity
    signature = verifier.sign(endorsement_message(kind, subject, owner, issued_at, expires_at))
    return Endorsement(verifier.public_key, issued_at, expires_at, signature)


def add_endorsement(existing: tuple[Endorsement, ...], new: Endorsement) -> tuple[Endorsement, ...]:
    """``existing`` with ``new`` replacing the same verifier's older one; newest kept if full."""
    kept = [e for e in existing if e.verifier != new.verifier]
    kept.append(new)
    kept.sort(key=lambda e: e.issued_at, reverse=True)
    return tuple(kept[:MAX_ENDORSEMENTS])


def revoke(kind: RecordKind, subject: str, owner: bytes, *, now: float) -> Revocation:
    """The verifier's revocation payload voiding its endorsements of ``owner`` issued by now."""
    if kind not in ENDORSABLE_KINDS:
        raise ValueError(f"{kind.name} records are not endorsed")
    if len(owner) != PUBLIC_KEY_BYTES:
        raise ValueError("owner must be a 32-byte public key")
    return Revocation(kind=kind, subject=subject, owner=owner, revoked_at=int(now))


def revocation_expiry(
    now: float,
    *,
    lifetime: int | None = None,
    previous_expires_at: int = 0,
    voided_until: int = 0,
) -> int:
    """When the next revocation record of one (verifier, subject, owner) expires.

    It must outlive what it voids: the known endorsements it voids (``voided_until``,
    their latest expiry) and the version it replaces (``previous_expires_at``: a
    new version replaces the old one on every node). Without ``lifetime`` it
    lives ``MAX_VALIDITY``, which outlives any endorsement issued up to ``now``
    (even a token the owner has not published yet) and so everything it voids.
    A ``lifetime`` that would expire sooner than needed raises
    ``RevocationTooShortError``.
    """
    if lifetime is not None and not 0 < lifetime <= MAX_VALIDITY:
        raise ValueError(f"a revocation lives 1-{MAX_VALIDITY} seconds")
    start = int(now)
    if lifetime is None:
        return start + MAX_VALIDITY
    needed = max(previous_expires_at, voided_until)
    if start + lifetime < needed:
        raise RevocationTooShortError(start + lifetime, needed)
    return start + lifetime


@dataclass(frozen=True, slots=True)
class EndorsementToken:
    """An endorsement with the claim it is for, as handed from verifier to owner."""

    kind: RecordKind
    subject: str
    owner: bytes
    endorsement: Endorsement


def encode_token(token: EndorsementToken) -> str:
    e = token.endorsement
    body: bytes = msgpack.packb(
        [
            int(token.kind),
            token.subject,
            token.owner,
            e.verifier,
            e.issued_at,
            e.expires_at,
            e.signature,
        ],
        use_bin_type=True,
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")


def decode_token(text: str) -> EndorsementToken:
    """Total: a token whose signature verifies for its claim, or ``TokenError``."""
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX) or len(text) > _MAX_TOKEN_CHARS:
        raise TokenError(f"not an endorsement token (they start with {TOKEN_PREFIX!r})")
    encoded = text[len(TOKEN_PREFIX) :]
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        fields = _READ.unpack(body, _TOKEN_LIMITS)
    except (ValueError, binascii.Error):
        raise TokenError("the endorsement token is damaged (copy it whole)") from None
    if type(fields) is not list or len(fields) != 7:
        raise TokenError("the endorsement token is damaged (copy it whole)")
    kind, subject, owner, verifier, issued_at, expires_at, signature = fields
    if (
        type(kind) is not int
        or kind not in {int(k) for k in ENDORSABLE_KINDS}
        or type(subject) is not str
        or type(owner) is not bytes
        or len(owner) != PUBLIC_KEY_BYTES
        or type(verifier) is not bytes
        or len(verifier) != PUBLIC_KEY_BYTES
        or type(issued_at) is not int
        or type(expires_at) is not int
        or not 0 <= issued_at <= expires_at < 2**40
        or type(signature) is not bytes
        or len(signature) != SIGNATURE_BYTES
    ):
        raise TokenError("the endorsement token is damaged (copy it whole)")
    token = EndorsementToken(
        kind=RecordKind(kind),
        subject=subject,
        owner=owner,
        endorsement=Endorsement(verifier, issued_at, expires_at, signature),
    )
    if not token.endorsement.valid_for(token.kind, token.subject, token.owner):
        raise TokenError("the endorsement token's signature does not verify")
    return token
