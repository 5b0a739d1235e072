"""The one wire format of every signed record: canonical, versioned msgpack.

Wire form (a msgpack array, shortest encodings only)::

    [version=1, kind, owner(bin 32), subject(str), seq, issued_at, expires_at,
     payload(bin), signature(bin 64)]

The signature is Ed25519 by ``owner`` over ``SIGNING_CONTEXT`` followed by the
msgpack array of the first eight fields. Invariants:
- ``decode_record`` is total: any bytes give a ``SignedRecord`` or a
  ``RecordDecodeError``; it checks form, not trust (that is ``policy.accept``).
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


def _int_field(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise RecordDecodeError(f"{name} is not an integer in 0..{maximum}")
    return value


def _bytes_field(value: object, name: str, length: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise RecordDecodeError(f"{name} is not binary")
    if length is not None and len(value) != length:
        raise RecordDecodeError(f"{name} is {len(value)} bytes, not {length}")
    return value


def decode_record(data: bytes) -> SignedRecord:
    """Parse wire bytes into a record, or raise ``RecordDecodeError``. Never anything else."""
    if len(data) > MAX_RECORD_BYTES:
        raise RecordDecodeError(f"record is {len(data)} bytes, more than {MAX_RECORD_BYTES}")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=_FIELD_COUNT,
            max_map_len=0,
            max_str_len=MAX_SUBJECT_BYTES,
            max_bin_len=MAX_RECORD_BYTES,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types; all mean "not a record"
        raise RecordDecodeError(f"not msgpack: {type(error).__name__}: {error}") from None
    if type(fields) is not list or len(fields) != _FIELD_COUNT:
        raise RecordDecodeError(f"not an array of {_FIELD_COUNT} fields")
    version, kind_value, owner, subject, seq, issued_at, expires_at, payload, signature = fields
    if type(version) is not int or version != FORMAT_VERSION:
        raise RecordDecodeError(f"unsupported record format version {version!r}")
    if type(kind_value) is not int:
        raise RecordDecodeError("kind is not an integer")
    try:
        kind = RecordKind(kind_value)
    except ValueError:
        raise RecordDecodeError(f"unknown record kind {kind_value}") from None
    if type(subject) is not str:
        raise RecordDecodeError("subject is not a string")
    record = SignedRecord(
        kind=kind,
        owner=_bytes_field(owner, "owner", PUBLIC_KEY_BYTES),
        subject=subject,
        seq=_int_field(seq, "seq", MAX_SEQ),
        issued_at=_int_field(issued_at, "issued_at", MAX_TIMESTAMP),
        expires_at=_int_field(expires_at, "expires_at", MAX_TIMESTAMP),
        payload=_bytes_field(payload, "payload"),
        signature=_bytes_field(signature, "signature", SIGNATURE_BYTES),
    )
    if record.encoded != data:
        raise RecordDecodeError("non-canonical encoding")
    return record
