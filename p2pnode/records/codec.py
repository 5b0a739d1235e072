"""The one wire format of every signed record: canonical, versioned msgpack.

Wire form (a msgpack array, shortest encodings only)::

    [version=1, kind, owner(bin 32), subject(str), seq, issued_at, expires_at,
     payload(bin), signature(bin 64)]

The signature is Ed25519 by ``owner`` over ``SIGNING_CONTEXT`` followed by the
msgpack array of the first eight fields. Invariants:
- ``decode_record`` is total: any bytes give a ``SignedRecord`` or a
  ``RecordDecodeError``; it checks form, not trust (that is ``policy.accept``).
  Nesting is refused before msgpack builds it, and errors never quote a
  field's value (``records.fields``).
- Decoding accepts only the canonical encoding (re-encoding gives the same
  bytes), so "byte-identical" and "same record" mean the same thing.
- No encoded record exceeds ``MAX_RECORD_BYTES``: it fits one UDP datagram
  with room for the DHT message around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import msgpack

from p2pnode.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature
from p2pnode.records.fields import FieldReader, Limits
from p2pnode.records.kinds import RecordKind, record_key

__all__ = [
    "FORMAT_VERSION",
    "MAX_RECORD_BYTES",
    "MAX_SUBJECT_BYTES",
    "SIGNING_CONTEXT",
    "RecordDecodeError",
    "SignedRecord",
    "decode_record",
    "encode_record",
    "sign_record",
    "signature_valid",
]

FORMAT_VERSION = 1
MAX_RECORD_BYTES = 1200
MAX_SUBJECT_BYTES = 255
MAX_SEQ = 2**64 - 1
MAX_TIMESTAMP = 2**40  # seconds; far beyond any real expiry, small enough to stay exact
SIGNING_CONTEXT = b"p2pnode-record-v1\x00"
_FIELD_COUNT = 9


class RecordDecodeError(ValueError):
    """Bytes that are not a well-formed, canonical record."""


@dataclass(frozen=True)
class SignedRecord:
    """A record as signed by its owner. Construct with ``sign_record`` or ``decode_record``."""

    kind: RecordKind
    owner: bytes
    subject: str
    seq: int
    issued_at: int
    expires_at: int
    payload: bytes
    signature: bytes

    @cached_property
    def key(self) -> bytes:
        """Where this record lives in the DHT."""
        return record_key(self.kind, self.owner, self.subject)

    @cached_property
    def encoded(self) -> bytes:
        """The canonical wire bytes."""
        return encode_record(self)

    def signed_bytes(self) -> bytes:
        """What the owner's signature covers."""
        return _signed_bytes(
            self.kind,
            self.owner,
            self.subject,
            self.seq,
            self.issued_at,
            self.expires_at,
            self.payload,
        )


def _signed_bytes(
    kind: RecordKind,
    owner: bytes,
    subject: str,
    seq: int,
    issued_at: int,
    expires_at: int,
    payload: bytes,
) -> bytes:
    fields = [FORMAT_VERSION, int(kind), owner, subject, seq, issued_at, expires_at, payload]
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return SIGNING_CONTEXT + body


def encode_record(record: SignedRecord) -> bytes:
    """The canonical wire bytes of ``record``."""
    fields = [
        FORMAT_VERSION,
        int(record.kind),
        record.owner,
        record.subject,
        record.seq,
        record.issued_at,
        record.expires_at,
        record.payload,
        record.signature,
    ]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def sign_record(
    identity: Identity,
    kind: RecordKind,
    subject: str,
    payload: bytes,
    *,
    seq: int,
    now: float,
    ttl: int,
) -> SignedRecord:
    """Sign a new record issued at ``now`` and expiring ``ttl`` seconds later.

    Raises ``ValueError`` for a record that could never be accepted in form
    (subject too long, negative ttl, too large once encoded).
    """
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("seq out of range")
    if len(subject.encode("utf-8")) > MAX_SUBJECT_BYTES:
        raise ValueError(f"subject longer than {MAX_SUBJECT_BYTES} bytes")
    issued_at = int(now)
    expires_at = issued_at + ttl
    signature = identity.sign(
        _signed_bytes(kind, identity.public_key, subject, seq, issued_at, expires_at, payload)
    )
    record = SignedRecord(
        kind=kind,
        owner=identity.public_key,
        subject=subject,
        seq=seq,
        issued_at=issued_at,
        expires_at=expires_at,
        payload=payload,
        signature=signature,
    )
    if len(record.encoded) > MAX_RECORD_BYTES:
        raise ValueError(
            f"record is {len(record.encoded)} bytes encoded, more than {MAX_RECORD_BYTES}"
        )
    return record


def signature_valid(record: SignedRecord) -> bool:
    """True when the owner's signature covers exactly this record."""
    return verify_signature(record.owner, record.signed_bytes(), record.signature)


_READ = FieldReader(RecordDecodeError)
_LIMITS = Limits(
    max_bytes=MAX_RECORD_BYTES,
    max_depth=1,  # a flat array of scalars: anything nested is refused before it is built
    max_array=_FIELD_COUNT,
    max_str=MAX_SUBJECT_BYTES,
    max_bin=MAX_RECORD_BYTES,
)


def decode_record(data: bytes) -> SignedRecord:
    """Parse wire bytes into a record, or raise ``RecordDecodeError``. Never anything else."""
    fields = _READ.array(_READ.unpack(data, _LIMITS), "record", length=_FIELD_COUNT)
    version, kind_value, owner, subject, seq, issued_at, expires_at, payload, signature = fields
    _READ.exact(version, "record format version", FORMAT_VERSION)
    kind_number = _READ.uint(kind_value, "kind", 255)
    try:
        kind = RecordKind(kind_number)
    except ValueError:
        raise RecordDecodeError("unknown record kind") from None
    record = SignedRecord(
        kind=kind,
        owner=_READ.binary(owner, "owner", length=PUBLIC_KEY_BYTES),
        subject=_READ.text(subject, "subject", max_bytes=MAX_SUBJECT_BYTES),
        seq=_READ.uint(seq, "seq", MAX_SEQ),
        issued_at=_READ.uint(issued_at, "issued_at", MAX_TIMESTAMP),
        expires_at=_READ.uint(expires_at, "expires_at", MAX_TIMESTAMP),
        payload=_READ.binary(payload, "payload"),
        signature=_READ.binary(signature, "signature", length=SIGNATURE_BYTES),
    )
    if record.encoded != data:
        raise RecordDecodeError("non-canonical encoding")
    return record
