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
    Contact,
    ContactDecodeError,
    HomeEntry,
    decode_contact,
)
from p2pnode.connectivity.relays import RelayFinder
from p2pnode.dht import DhtNode
from p2pnode.records import RecordKind, record_key

__all__ = ["FindHomes", "contact_homes", "fetch_contact", "relay_home_finder"]

FindHomes = Callable[[], Awaitable[Sequence[HomeEntry]]]


async def fetch_contact(dht: DhtNode, key: bytes) -> Contact | None:
    """The newest live CONTACT ``key`` published, or None (the DHT checked signatures)."""
    result = await dht.get(record_key(RecordKind.CONTACT, key, CONTACT_SUBJECT))
    now = time.time()
    records = [
        r
        for r in result.records
        if r.owner == key and r.kind is RecordKind.CONTACT and r.expires_at > now
    ]
    for record in sorted(records, key=lambda r: r.seq, reverse=True):
        try:
            return decode_contact(record.payload)
        except ContactDecodeError:
            continue
    return None


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
