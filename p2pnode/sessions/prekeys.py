"""Prekey bundles as signed records (kind PREKEY_BUNDLE), and when to rotate them.

Payload (msgpack array)::

    [version=1, signed_prekey(bin 32), signed_prekey_signature(bin 64), created_at]

The identity key is the record's owner, so the record signature and the XEdDSA
signature on the prekey both bind to one Ed25519 key. One-time prekeys are not
published here: a DHT record hands the same bytes to everyone, so a one-time
key in it could be used twice. They are handed out once by the owner's
mailboxes instead (``one_time_prekeys.py``, ``TAKE_PREKEY``); a session opens on
the signed prekey alone only when none is to be had. The signed prekey rotates
every ``ROTATE_AFTER`` seconds.

Invariants: ``decode_prekey_payload`` is total (``PrekeyDecodeError``);
``bundle_from_record`` accepts only a record whose prekey signature verifies
under its owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord, sign_record
from p2pnode.records.kinds import RecordKind
from p2pnode.sessions.crypto import PrekeyBundle, verify_bundle

__all__ = [
    "PREKEY_SUBJECT",
    "PREKEY_TTL",
    "ROTATE_AFTER",
    "PrekeyDecodeError",
    "PrekeyPayload",
    "bundle_from_record",
    "decode_prekey_payload",
    "encode_prekey_payload",
    "needs_rotation",
    "prekey_record",
]

PREKEY_SUBJECT = "prekeys"
ROTATE_AFTER = 7 * 24 * 3600
PREKEY_TTL = 14 * 24 * 3600  # the previous signed prekey still answers one period after rotation
_VERSION = 1
_MAX_TIME = 2**40


class PrekeyDecodeError(ValueError):
    """A PREKEY_BUNDLE payload that is malformed or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class PrekeyPayload:
    signed_prekey: bytes
    signature: bytes
    created_at: int


def encode_prekey_payload(payload: PrekeyPayload) -> bytes:
    fields = [_VERSION, payload.signed_prekey, payload.signature, payload.created_at]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def decode_prekey_payload(data: bytes) -> PrekeyPayload:
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            max_array_len=4,
            max_map_len=0,
            max_str_len=0,
            max_bin_len=64,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack's many errors all mean malformed
        raise PrekeyDecodeError(f"not msgpack: {type(error).__name__}") from None
    if type(fields) is not list or len(fields) != 4 or fields[0] != _VERSION:
        raise PrekeyDecodeError("not a version-1 prekey payload")
    _, prekey, signature, created_at = fields
    if type(prekey) is not bytes or len(prekey) != 32:
        raise PrekeyDecodeError("signed prekey is not 32 bytes")
    if type(signature) is not bytes or len(signature) != 64:
        raise PrekeyDecodeError("signature is not 64 bytes")
    if type(created_at) is not int or not 0 <= created_at < _MAX_TIME:
        raise PrekeyDecodeError("created_at out of range")
    payload = PrekeyPayload(prekey, signature, created_at)
    if encode_prekey_payload(payload) != data:
        raise PrekeyDecodeError("non-canonical payload")
    return payload


def prekey_record(
    identity: Identity, bundle: PrekeyBundle, *, created_at: int, seq: int, now: float
) -> SignedRecord:
    """Our bundle as a record; ``seq`` must grow with each rotation (records.policy)."""
    payload = PrekeyPayload(bundle.signed_prekey, bundle.signed_prekey_signature, created_at)
    return sign_record(
        identity,
        RecordKind.PREKEY_BUNDLE,
        PREKEY_SUBJECT,
        encode_prekey_payload(payload),
        seq=seq,
        now=now,
        ttl=PREKEY_TTL,
    )


def bundle_from_record(record: SignedRecord) -> PrekeyBundle:
    """The bundle a verified record carries, or ``PrekeyDecodeError``."""
    if record.kind is not RecordKind.PREKEY_BUNDLE or record.subject != PREKEY_SUBJECT:
        raise PrekeyDecodeError("not a prekey bundle record")
    payload = decode_prekey_payload(record.payload)
    bundle = PrekeyBundle(record.owner, payload.signed_prekey, payload.signature)
    if not verify_bundle(bundle):
        raise PrekeyDecodeError("signed prekey not signed by the record owner")
    return bundle


def needs_rotation(created_at: int, now: float) -> bool:
    """The signed prekey is older than ``ROTATE_AFTER``."""
    return now - created_at >= ROTATE_AFTER
