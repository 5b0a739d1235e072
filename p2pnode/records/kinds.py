"""Record kinds, their lifetime limits, and where each record lives in the DHT.

Invariant: a record's DHT key is a pure function of (kind, owner, subject), so a
reader can recompute it and a storing node can refuse a record filed under the
wrong key. Contested kinds (a login, a phone number, a relay rendezvous) key on the subject alone:
every owner's claim meets under one key and a squatter cannot hide the owner's.
"""

from __future__ import annotations

import enum
import hashlib

import msgpack

__all__ = [
    "CONTESTED_KINDS",
    "KEY_BYTES",
    "MAX_TTL_BY_KIND",
    "RecordKind",
    "record_key",
]

KEY_BYTES = 20  # same id space as node ids (p2pnode.identity.NODE_ID_BYTES)

_DAY = 24 * 3600


class RecordKind(enum.IntEnum):
    """What a record says; payload formats belong to the layer that reads them."""

    PRESENCE = 1  # "this key is online", short-lived
    CONTACT = 2  # how to reach this key: addresses, relays
    NAME_CLAIM = 3  # login -> owner key (contested)
    RELAY_ADVERT = 4  # a supernode's relay offer: addresses, capacity, load
    ENUM_ENTRY = 5  # E.164 number -> NAPTR routes (contested)
    REVOCATION = 6  # a verifier withdraws a countersignature
    PREKEY_BUNDLE = 7  # X3DH signed prekey of this key (sessions.prekeys)
    MAILBOX_LIST = 8  # the supernodes that hold this key's offline mail (sessions.mailbox_list)


# Kinds whose key ignores the owner, so many owners' records meet under one key:
# claims on a login or a number (contested), and relay adverts filed under a few
# well-known rendezvous subjects ("relays/0".."relays/15") where peers find them.
CONTESTED_KINDS: frozenset[RecordKind] = frozenset(
    {RecordKind.NAME_CLAIM, RecordKind.ENUM_ENTRY, RecordKind.RELAY_ADVERT}
)

MAX_TTL_BY_KIND: dict[RecordKind, int] = {
    RecordKind.PRESENCE: _DAY,
    RecordKind.CONTACT: _DAY,
    RecordKind.NAME_CLAIM: 30 * _DAY,
    RecordKind.RELAY_ADVERT: _DAY,
    RecordKind.ENUM_ENTRY: 30 * _DAY,
    # as long as the longest endorsement it may void (directory.verifiers.MAX_VALIDITY),
    # so a revoked endorsement never revives because its revocation expired first
    RecordKind.REVOCATION: 2 * 365 * _DAY,
    RecordKind.PREKEY_BUNDLE: 30 * _DAY,  # a signed prekey rotates weekly; kept a month
    RecordKind.MAILBOX_LIST: 30 * _DAY,
}


def record_key(kind: RecordKind, owner: bytes, subject: str) -> bytes:
    """The DHT key of a record: BLAKE2b-160 of its kind, (owner,) and subject."""
    if kind in CONTESTED_KINDS:
        parts: list[object] = [int(kind), subject]
    else:
        parts = [int(kind), owner, subject]
    material: bytes = msgpack.packb(parts, use_bin_type=True)
    return hashlib.blake2b(material, digest_size=KEY_BYTES, person=b"p2pnode-reckey").digest()
