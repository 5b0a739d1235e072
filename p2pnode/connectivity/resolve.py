"""Resolving keys to CONTACT records, and supernodes to home candidates, through the DHT.

A CONTACT record lives under (CONTACT, owner, ``"contact"``); the DHT has
already checked each record's signature and key on read, so the newest live
record the owner signed is the answer. A supernode is its own home: its CONTACT
names itself, which is how a peer learns a supernode's signalling address from
the relay search (RELAY_ADVERT records say where it relays, not where it signals).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from p2pnode.connectivity.contact import (
    CONTACT_SUBJECT,
    CONTACT_TTL,
    PRESENCE_SUBJECT,
    Contact,
    ContactDecodeError,
    HomeEntry,
    Presence,
    decode_contact,
    decode_presence,
)
from p2pnode.connectivity.relays import RelayFinder
from p2pnode.dht import DhtNode, PutResult
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, record_key, sign_record

__all__ = [
    "FindHomes",
    "contact_homes",
    "fetch_contact",
    "fetch_presence",
    "publish",
    "relay_home_finder",
]

FindHomes = Callable[[], Awaitable[Sequence[HomeEntry]]]


async def _newest(dht: DhtNode, key: bytes, kind: RecordKind, subject: str) -> list[SignedRecord]:
    result = await dht.get(record_key(kind, key, subject))
    now = time.time()
    found = [r for r in result.records if r.owner == key and r.kind is kind and r.expires_at > now]
    return sorted(found, key=lambda r: r.seq, reverse=True)


async def fetch_contact(dht: DhtNode, key: bytes) -> Contact | None:
    """The newest live CONTACT ``key`` published, or None (the DHT checked signatures)."""
    for record in await _newest(dht, key, RecordKind.CONTACT, CONTACT_SUBJECT):
        try:
            return decode_contact(record.payload)
        except ContactDecodeError:
            continue
    return None


async def fetch_presence(dht: DhtNode, key: bytes) -> Presence | None:
    """The status ``key`` last published (live state comes from its homes: ``watch``)."""
    for record in await _newest(dht, key, RecordKind.PRESENCE, PRESENCE_SUBJECT):
        try:
            return decode_presence(record.payload)
        except ContactDecodeError:
            continue
    return None


async def publish(
    dht: DhtNode, identity: Identity, kind: RecordKind, subject: str, payload: bytes, seq: int
) -> PutResult:
    """Sign and put one of our short-lived records (``CONTACT_TTL``)."""
    record = sign_record(
        identity, kind, subject, payload, seq=seq, now=time.time(), ttl=CONTACT_TTL
    )
    return await dht.put(record)


async def contact_homes(dht: DhtNode, keys: Sequence[bytes]) -> list[HomeEntry]:
    """Home candidates from supernodes' own CONTACT records (a public node is its own home):
    for each key (e.g. ``RelayFinder.chosen()`` owners), the home entry naming that key."""
    contacts = await asyncio.gather(*(fetch_contact(dht, key) for key in keys))
    found: list[HomeEntry] = []
    for key, contact in zip(keys, contacts, strict=True):
        if contact is not None:
            found.extend(home for home in contact.homes if home.key == key)
    return found


def relay_home_finder(dht: DhtNode, finder: RelayFinder, limit: int = 6) -> FindHomes:
    """``find_homes`` from the relay search: the healthy supernodes it found (RELAY_ADVERT
    records, STUN-checked), mapped to their signalling addresses by their CONTACT records."""

    async def find() -> list[HomeEntry]:
        await finder.refresh()
        return await contact_homes(dht, [c.owner for c in finder.selector.healthy(limit)])

    return find
