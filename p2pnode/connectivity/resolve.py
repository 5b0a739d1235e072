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
    encode_contact,
)
from p2pnode.connectivity.relays import RelayFinder
from p2pnode.dht import DhtNode, PutResult
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, SignedRecord, record_key, sign_record

__all__ = [
    "CONTACT_CACHE",
    "ContactCache",
    "FindHomes",
    "contact_homes",
    "fetch_contact",
    "fetch_presence",
    "publish",
    "publish_contact",
    "relay_home_finder",
]

FindHomes = Callable[[], Awaitable[Sequence[HomeEntry]]]
Address = tuple[str, int]

CONTACT_CACHE = 60.0  # seconds a resolved CONTACT is used without asking the DHT again
MAX_CACHED = 4096  # resolved CONTACTs kept; the least recently fetched go first
SUSPECT_FOR = 30.0  # seconds a home that did not answer is tried after the others
MAX_SUSPECTS = 1024


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


async def publish_contact(
    dht: DhtNode, identity: Identity, contact: Contact, presence: bytes, seq: int
) -> PutResult:
    """Our CONTACT, and our last status (if any) as a PRESENCE record for those who do
    not watch; the CONTACT's put result."""
    result = await publish(
        dht, identity, RecordKind.CONTACT, CONTACT_SUBJECT, encode_contact(contact), seq
    )
    if presence:
        await publish(dht, identity, RecordKind.PRESENCE, PRESENCE_SUBJECT, presence, seq)
    return result


class ContactCache:
    """Resolved CONTACTs, and homes that just failed to answer (tried last for a while:
    a peer's other home then delivers at once, until its CONTACT names a replacement)."""

    def __init__(self, dht: DhtNode, clock: Callable[[], float] = time.time) -> None:
        self._dht = dht
        self._clock = clock
        self._contacts: dict[bytes, tuple[Contact, float]] = {}
        self._suspects: dict[Address, float] = {}  # home -> until when it goes last

    def cached(self, key: bytes) -> Contact | None:
        entry = self._contacts.get(key)
        return None if entry is None else entry[0]

    async def get(self, key: bytes, *, fresh: bool) -> Contact | None:
        """``key``'s CONTACT: from the cache unless ``fresh`` or stale, else from the DHT.
        One naming no home is asked again (a peer just starting publishes one before it
        attaches; kept, it made every send fail for ``CONTACT_CACHE`` seconds)."""
        entry = self._contacts.get(key)
        recent = entry is not None and self._clock() - entry[1] < CONTACT_CACHE
        if entry is not None and entry[0].homes and not fresh and recent:
            return entry[0]
        contact = await fetch_contact(self._dht, key)
        if contact is not None:
            self._contacts.pop(key, None)
            self._contacts[key] = (contact, self._clock())
            while len(self._contacts) > MAX_CACHED:
                del self._contacts[next(iter(self._contacts))]
        return contact

    def order(self, homes: Sequence[HomeEntry]) -> list[Address]:
        """The homes' signalling addresses, those that just failed last."""
        now = self._clock()
        for address in [a for a, until in self._suspects.items() if until <= now]:
            del self._suspects[address]
        return sorted((home.signal for home in homes), key=lambda a: a in self._suspects)

    def failed(self, attempts: Sequence[tuple[Address, str]]) -> None:
        """Remember the homes of a send that did not answer."""
        for address, outcome in attempts:
            if outcome == "no answer" and len(self._suspects) < MAX_SUSPECTS:
                self._suspects[address] = self._clock() + SUSPECT_FOR
