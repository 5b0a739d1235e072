"""Payloads of the directory's record kinds: NAME_CLAIM, ENUM_ENTRY and REVOCATION.

Wire form: one msgpack array per payload, version first, fields by position.
Invariants:
- Decoding is total: any bytes give a payload or ``PayloadDecodeError``; the
  msgpack limits keep a hostile payload from making us allocate much, nesting
  is refused before it is built, and no error quotes a peer's value
  (``records.fields``).
- Encoding is canonical (decode(encode(x)) == x and encode(decode(b)) == b for
  every accepted b), so equal payloads sign equal bytes.
- A verifier's ``Endorsement`` signs (record kind, subject, OWNER KEY, issued,
  expiry) and never the routes: the owner may change routes without
  re-verification, and a signature lifted onto another owner or another
  number fails to verify.
- A REVOCATION voids one verifier's endorsements of ONE owner for one subject,
  and lives under its own key (``revocation_subject``): revoking an owner never
  pushes another owner's revocation out of a bounded list.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from p2pnode.directory.naptr import NaptrDirective, NaptrError
from p2pnode.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, peer_id_for, verify_signature
from p2pnode.records import RecordKind
from p2pnode.records.fields import FieldReader, Limits

__all__ = [
    "ENDORSABLE_KINDS",
    "MAX_DIRECTIVES",
    "MAX_ENDORSEMENTS",
    "PAYLOAD_VERSION",
    "Endorsement",
    "EnumEntry",
    "NameClaim",
    "PayloadDecodeError",
    "Revocation",
    "decode_enum_entry",
    "decode_name_claim",
    "decode_revocation",
    "encode_enum_entry",
    "encode_name_claim",
    "encode_revocation",
    "endorsement_message",
    "revocation_subject",
]

PAYLOAD_VERSION = 1
MAX_DIRECTIVES = 8  # more NAPTR rules than any PBX tries; keeps a record under 1200 bytes
MAX_ENDORSEMENTS = 4  # verifiers a record can carry at once
MAX_TIMESTAMP = 2**40
ENDORSABLE_KINDS = frozenset({RecordKind.NAME_CLAIM, RecordKind.ENUM_ENTRY})
_ENDORSE_CONTEXT = b"p2pnode-endorse-v1\x00"
_MAX_PAYLOAD_BYTES = 1200


class PayloadDecodeError(ValueError):
    """Bytes that are not a well-formed, canonical directory payload."""


def endorsement_message(
    kind: RecordKind, subject: str, owner: bytes, issued_at: int, expires_at: int
) -> bytes:
    """What a verifier signs: the claim (kind, subject, owner key) and the validity window."""
    body: bytes = msgpack.packb(
        [int(kind), subject, owner, issued_at, expires_at], use_bin_type=True
    )
    return _ENDORSE_CONTEXT + body


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A verifier's countersignature: "I checked that ``owner`` holds ``subject``"."""

    verifier: bytes
    issued_at: int
    expires_at: int
    signature: bytes

    def valid_for(self, kind: RecordKind, subject: str, owner: bytes) -> bool:
        """The signature verifies for exactly this claim (expiry is checked by trust rules)."""
        message = endorsement_message(kind, subject, owner, self.issued_at, self.expires_at)
        return verify_signature(self.verifier, message, self.signature)


@dataclass(frozen=True, slots=True)
class NameClaim:
    """NAME_CLAIM payload: the record's subject is the login, its owner the claimant."""

    endorsements: tuple[Endorsement, ...] = ()


@dataclass(frozen=True, slots=True)
class EnumEntry:
    """ENUM_ENTRY payload: the record's subject is the E.164 number."""

    directives: tuple[NaptrDirective, ...]
    endorsements: tuple[Endorsement, ...] = ()


@dataclass(frozen=True, slots=True)
class Revocation:
    """REVOCATION payload, owned by the verifier: it withdraws its endorsements of ``owner``
    for ``subject`` issued at or before ``revoked_at`` (a later endorsement restores)."""

    kind: RecordKind
    subject: str
    owner: bytes
    revoked_at: int


def revocation_subject(kind: RecordKind, subject: str, owner: bytes) -> str:
    """The subject of a verifier's revocation record for one owner of one login or number.

    One record per (verifier, subject, owner): a resolver reads it only for an owner whose
    claim carries that (trusted) verifier's endorsement.
    """
    return f"revoke/{int(kind)}/{subject}/{peer_id_for(owner)}"


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


_READ = FieldReader(PayloadDecodeError)
_LIMITS = Limits(
    max_bytes=_MAX_PAYLOAD_BYTES,
    max_depth=3,  # payload array -> list of directives/endorsements -> their fields
    max_array=32,
    max_str=512,
    max_bin=128,
)


def _unpack(data: bytes) -> list[object]:
    value = _READ.unpack(data, _LIMITS)
    if type(value) is not list or not value:
        raise PayloadDecodeError("not a version-1 payload array")
    _READ.exact(value[0], "payload version", PAYLOAD_VERSION)
    if _pack(value) != data:
        raise PayloadDecodeError("non-canonical encoding")
    return value


def _list(value: object, name: str, limit: int) -> list[object]:
    return _READ.array(value, name, max_length=limit)


def _int(value: object, name: str, maximum: int) -> int:
    return _READ.uint(value, name, maximum)


def _bytes(value: object, name: str, length: int) -> bytes:
    return _READ.binary(value, name, length=length)


def _str(value: object, name: str) -> str:
    return _READ.text(value, name)


def _endorsement_fields(endorsement: Endorsement) -> list[object]:
    return [
        endorsement.verifier,
        endorsement.issued_at,
        endorsement.expires_at,
        endorsement.signature,
    ]


def _decode_endorsements(value: object) -> tuple[Endorsement, ...]:
    result: list[Endorsement] = []
    for item in _list(value, "endorsements", MAX_ENDORSEMENTS):
        fields = _list(item, "endorsement", 4)
        if len(fields) != 4:
            raise PayloadDecodeError("an endorsement has 4 fields")
        result.append(
            Endorsement(
                verifier=_bytes(fields[0], "verifier", PUBLIC_KEY_BYTES),
                issued_at=_int(fields[1], "issued_at", MAX_TIMESTAMP),
                expires_at=_int(fields[2], "expires_at", MAX_TIMESTAMP),
                signature=_bytes(fields[3], "signature", SIGNATURE_BYTES),
            )
        )
    return tuple(result)


def _check_endorsements(endorsements: tuple[Endorsement, ...]) -> None:
    if len(endorsements) > MAX_ENDORSEMENTS:
        raise ValueError(f"at most {MAX_ENDORSEMENTS} endorsements per record")


def encode_name_claim(claim: NameClaim) -> bytes:
    _check_endorsements(claim.endorsements)
    return _pack([PAYLOAD_VERSION, [_endorsement_fields(e) for e in claim.endorsements]])


def decode_name_claim(data: bytes) -> NameClaim:
    fields = _unpack(data)
    if len(fields) != 2:
        raise PayloadDecodeError("a name claim has 2 fields")
    return NameClaim(endorsements=_decode_endorsements(fields[1]))


def encode_enum_entry(entry: EnumEntry) -> bytes:
    if not 1 <= len(entry.directives) <= MAX_DIRECTIVES:
        raise ValueError(f"an ENUM entry has 1-{MAX_DIRECTIVES} NAPTR directives")
    _check_endorsements(entry.endorsements)
    directives = [[d.order, d.preference, d.flags, d.service, d.regexp] for d in entry.directives]
    endorsements = [_endorsement_fields(e) for e in entry.endorsements]
    return _pack([PAYLOAD_VERSION, directives, endorsements])


def decode_enum_entry(data: bytes) -> EnumEntry:
    fields = _unpack(data)
    if len(fields) != 3:
        raise PayloadDecodeError("an ENUM entry has 3 fields")
    directives: list[NaptrDirective] = []
    raw_directives = _list(fields[1], "directives", MAX_DIRECTIVES)
    if not raw_directives:
        raise PayloadDecodeError("an ENUM entry has at least one directive")
    for item in raw_directives:
        parts = _list(item, "directive", 5)
        if len(parts) != 5:
            raise PayloadDecodeError("a directive has 5 fields")
        try:
            directives.append(
                NaptrDirective(
                    order=_int(parts[0], "order", 0xFFFF),
                    preference=_int(parts[1], "preference", 0xFFFF),
                    flags=_str(parts[2], "flags"),
                    service=_str(parts[3], "service"),
                    regexp=_str(parts[4], "regexp"),
                )
            )
        except NaptrError:
            # NaptrError quotes the offending text (for people typing rules); a peer's
            # bytes are never echoed into our errors or logs.
            raise PayloadDecodeError("a directive is not a valid ENUM NAPTR rule") from None
    return EnumEntry(directives=tuple(directives), endorsements=_decode_endorsements(fields[2]))


def encode_revocation(revocation: Revocation) -> bytes:
    if len(revocation.owner) != PUBLIC_KEY_BYTES:
        raise ValueError("the revoked owner is a 32-byte public key")
    return _pack(
        [
            PAYLOAD_VERSION,
            int(revocation.kind),
            revocation.subject,
            revocation.owner,
            revocation.revoked_at,
        ]
    )


def decode_revocation(data: bytes) -> Revocation:
    fields = _unpack(data)
    if len(fields) != 5:
        raise PayloadDecodeError("a revocation has 5 fields")
    kind_value = _int(fields[1], "kind", 255)
    if kind_value not in {int(k) for k in ENDORSABLE_KINDS}:
        raise PayloadDecodeError("that record kind cannot be revoked")
    return Revocation(
        kind=RecordKind(kind_value),
        subject=_str(fields[2], "subject"),
        owner=_bytes(fields[3], "owner", PUBLIC_KEY_BYTES),
        revoked_at=_int(fields[4], "revoked_at", MAX_TIMESTAMP),
    )
