"""A peer's mailbox list as a signed record (kind MAILBOX_LIST): who holds its offline mail.

Payload (msgpack array)::

    [version=1, [[mailbox_key(bin 32), host(str), port]...]]

The same signed record is the recipient's authorisation: a mailbox supernode
stores deposits for a peer only while it holds an unexpired MAILBOX_LIST record
of that peer naming the supernode's own key (``names``). Senders read it from
the DHT to learn where to deposit.

A supernode that serves mailboxes says so with a second record of the same kind
and codec under its own key and the subject ``MAILBOX_OFFER_SUBJECT``: a list of
exactly one entry naming itself and its mailbox TCP address. Why a record of its
own rather than a field in RELAY_ADVERT or CONTACT: the mailbox server runs apart
from the relay and the signalling (``[mailbox] serve`` alone is enough), so it
publishes what it alone knows; a peer that learned a supernode's key (relay
search, its homes) reads one more record to learn whether and where it keeps
mail. The offer lives ``MAILBOX_OFFER_TTL`` (republished hourly), so a supernode
that stopped serving drops out of every search within a day. An offer can never
stand in for a peer's list at a mailbox: ``mailboxes_from_record`` checks the
subject.

Invariants: ``decode_mailbox_list`` is total (``MailboxListDecodeError``); at
most ``MAX_MAILBOXES`` entries, keys unique, addresses canonical IPs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import msgpack

from p2pnode.identity import Identity
from p2pnode.records.codec import SignedRecord, sign_record
from p2pnode.records.kinds import RecordKind

__all__ = [
    "MAILBOX_LIST_SUBJECT",
    "MAILBOX_LIST_TTL",
    "MAILBOX_OFFER_SUBJECT",
    "MAILBOX_OFFER_TTL",
    "MAX_MAILBOXES",
    "MIN_MAILBOXES",
    "MailboxEntry",
    "MailboxListDecodeError",
    "decode_mailbox_list",
    "encode_mailbox_list",
    "mailbox_list_record",
    "mailbox_offer_record",
    "mailboxes_from_record",
    "offer_from_record",
]

MAILBOX_LIST_SUBJECT = "mailboxes"
MAILBOX_LIST_TTL = 30 * 24 * 3600
MAILBOX_OFFER_SUBJECT = "mailbox-offer"
MAILBOX_OFFER_TTL = 24 * 3600
MIN_MAILBOXES = 3
MAX_MAILBOXES = 8
_VERSION = 1


class MailboxListDecodeError(ValueError):
    """A MAILBOX_LIST payload that is malformed."""


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    key: bytes  # the supernode's Ed25519 key
    host: str
    port: int

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("mailbox key is 32 bytes")
        if str(ipaddress.ip_address(self.host)) != self.host:
            raise ValueError("host is not a canonical IP address")
        if not 1 <= self.port <= 65535:
            raise ValueError("port out of range")


def encode_mailbox_list(entries: tuple[MailboxEntry, ...]) -> bytes:
    if not 1 <= len(entries) <= MAX_MAILBOXES:
        raise ValueError(f"a mailbox list names 1..{MAX_MAILBOXES} mailboxes")
    if len({e.key for e in entries}) != len(entries):
        raise ValueError("mailbox keys repeat")
    fields = [_VERSION, [[e.key, e.host, e.port] for e in entries]]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def decode_mailbox_list(data: bytes) -> tuple[MailboxEntry, ...]:
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            max_array_len=MAX_MAILBOXES,
            max_map_len=0,
            max_str_len=45,
            max_bin_len=32,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack's many errors all mean malformed
        raise MailboxListDecodeError(f"not msgpack: {type(error).__name__}") from None
    if (
        type(fields) is not list
        or len(fields) != 2
        or fields[0] != _VERSION
        or type(fields[1]) is not list
    ):
        raise MailboxListDecodeError("not a version-1 mailbox list")
    entries: list[MailboxEntry] = []
    for raw in fields[1]:
        if type(raw) is not list or len(raw) != 3:
            raise MailboxListDecodeError("entry is not 3 fields")
        key, host, port = raw
        if type(key) is not bytes or type(host) is not str or type(port) is not int:
            raise MailboxListDecodeError("entry has wrong types")
        try:
            entries.append(MailboxEntry(key, host, port))
        except ValueError as error:
            raise MailboxListDecodeError(f"bad entry: {error}") from None
    result = tuple(entries)
    try:
        canonical = encode_mailbox_list(result)
    except ValueError as error:
        raise MailboxListDecodeError(str(error)) from None
    if canonical != data:
        raise MailboxListDecodeError("non-canonical mailbox list")
    return result


def mailbox_list_record(
    identity: Identity, entries: tuple[MailboxEntry, ...], *, seq: int, now: float
) -> SignedRecord:
    return sign_record(
        identity,
        RecordKind.MAILBOX_LIST,
        MAILBOX_LIST_SUBJECT,
        encode_mailbox_list(entries),
        seq=seq,
        now=now,
        ttl=MAILBOX_LIST_TTL,
    )


def mailboxes_from_record(record: SignedRecord) -> tuple[MailboxEntry, ...]:
    if record.kind is not RecordKind.MAILBOX_LIST or record.subject != MAILBOX_LIST_SUBJECT:
        raise MailboxListDecodeError("not a mailbox list record")
    return decode_mailbox_list(record.payload)


def mailbox_offer_record(identity: Identity, host: str, port: int, *, now: float) -> SignedRecord:
    """A supernode's signed "I keep mailboxes at HOST:PORT" (see the module docstring)."""
    entry = MailboxEntry(identity.public_key, host, port)
    return sign_record(
        identity,
        RecordKind.MAILBOX_LIST,
        MAILBOX_OFFER_SUBJECT,
        encode_mailbox_list((entry,)),
        seq=int(now * 1000),
        now=now,
        ttl=MAILBOX_OFFER_TTL,
    )


def offer_from_record(record: SignedRecord) -> MailboxEntry:
    """The mailbox a supernode offers: one entry, naming the record's own signer."""
    if record.kind is not RecordKind.MAILBOX_LIST or record.subject != MAILBOX_OFFER_SUBJECT:
        raise MailboxListDecodeError("not a mailbox offer record")
    entries = decode_mailbox_list(record.payload)
    if len(entries) != 1 or entries[0].key != record.owner:
        raise MailboxListDecodeError("an offer names exactly its own signer")
    return entries[0]
