"""A peer's mailbox list as a signed record (kind MAILBOX_LIST): who holds its offline mail.

Payload (msgpack array)::

    [version=1, [[mailbox_key(bin 32), host(str), port]...]]

The same signed record is the recipient's authorisation: a mailbox supernode
stores deposits for a peer only while it holds an unexpired MAILBOX_LIST record
of that peer naming the supernode's own key (``names``). Senders read it from
the DHT to learn where to deposit.

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
    "MAX_MAILBOXES",
    "MIN_MAILBOXES",
    "MailboxEntry",
    "MailboxListDecodeError",
    "decode_mailbox_list",
    "encode_mailbox_list",
    "mailbox_list_record",
    "mailboxes_from_record",
]

MAILBOX_LIST_SUBJECT = "mailboxes"
MAILBOX_LIST_TTL = 30 * 24 * 3600
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
