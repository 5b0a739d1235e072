"""Mailbox RPC wire format: register, deposit, fetch, acknowledge (length-framed msgpack).

Requests (msgpack arrays)::

    REGISTER [1, rid, mailbox_list_record(bin)]
    DEPOSIT  [2, rid, sender(bin 32), recipient(bin 32), [envelope(bin)...], ts, sig(bin 64)]
    FETCH    [3, rid, recipient(bin 32), ts, limit, sig(bin 64)]
    ACK      [4, rid, recipient(bin 32), ts, [item_id(bin 16)...], sig(bin 64)]

Responses::

    [kind, rid, status, statuses[...], items[[item_id, envelope, deposited_at]...], more]

``sig`` is Ed25519 by the sender (DEPOSIT) or the recipient (FETCH, ACK) over
``SIGNING_CONTEXT + mailbox_key + msgpack(fields before sig)``: binding the
mailbox's own key means a request signed for one mailbox is refused by all others.

Invariants:
- Decoders are total (``MailboxDecodeError``); limits bound every list and blob.
- Status codes are stable numbers on the wire; a refusal always says which bound.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from p2pnode.identity import SIGNATURE_BYTES, Identity, verify_signature
from p2pnode.sessions.chat_message import MAX_ENVELOPE_BYTES

__all__ = [
    "MAX_DEPOSIT_ITEMS",
    "MAX_FETCH_ITEMS",
    "MAX_FRAME_BYTES",
    "AckRequest",
    "DepositRequest",
    "FetchRequest",
    "MailboxDecodeError",
    "MailboxItem",
    "MailboxResponse",
    "RegisterRequest",
    "Request",
    "RequestKind",
    "Status",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "sign_ack",
    "sign_deposit",
    "sign_fetch",
    "signature_valid",
]

MAX_DEPOSIT_ITEMS = 64
MAX_FETCH_ITEMS = 256
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_RID = 2**32 - 1
MAX_TS = 2**40
ITEM_ID_BYTES = 16
SIGNING_CONTEXT = b"p2pnode-mailbox-v1\x00"


class MailboxDecodeError(ValueError):
    """Bytes that are not a well-formed mailbox request or response."""


class RequestKind(enum.IntEnum):
    REGISTER = 1
    DEPOSIT = 2
    FETCH = 3
    ACK = 4


class Status(enum.IntEnum):
    """Outcome of a request or of one deposited item. Never a silent drop."""

    OK = 0
    DUPLICATE = 1  # already held: stored once, acknowledged again
    NOT_MAILBOX = 10  # the recipient never asked us to be its mailbox
    RECIPIENT_FULL_COUNT = 11
    RECIPIENT_FULL_BYTES = 12
    SENDER_FULL_COUNT = 13
    SENDER_FULL_BYTES = 14
    TOO_LARGE = 15
    BAD_SIGNATURE = 16
    STALE = 17  # timestamp outside the allowed skew
    BAD_RECORD = 18  # the mailbox list record is invalid or does not name us
    MALFORMED = 19
    BUSY = 20  # the mailbox holds as many recipients as it will (REGISTER)

    @property
    def stored(self) -> bool:
        return self in (Status.OK, Status.DUPLICATE)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    rid: int
    record: bytes


@dataclass(frozen=True, slots=True)
class DepositRequest:
    rid: int
    sender: bytes
    recipient: bytes
    envelopes: tuple[bytes, ...]
    ts: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class FetchRequest:
    rid: int
    recipient: bytes
    ts: int
    limit: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class AckRequest:
    rid: int
    recipient: bytes
    ts: int
    item_ids: tuple[bytes, ...]
    signature: bytes


Request = RegisterRequest | DepositRequest | FetchRequest | AckRequest


@dataclass(frozen=True, slots=True)
class MailboxItem:
    item_id: bytes
    envelope: bytes
    deposited_at: int


@dataclass(frozen=True, slots=True)
class MailboxResponse:
    kind: RequestKind
    rid: int
    status: Status
    statuses: tuple[Status, ...] = ()  # DEPOSIT: one per envelope
    items: tuple[MailboxItem, ...] = ()  # FETCH
    more: bool = False  # FETCH: further items wait


def _fields_before_signature(request: Request) -> list[object]:
    match request:
        case RegisterRequest():
            return [int(RequestKind.REGISTER), request.rid, request.record]
        case DepositRequest():
            return [
                int(RequestKind.DEPOSIT),
                request.rid,
                request.sender,
                request.recipient,
                list(request.envelopes),
                request.ts,
            ]
        case FetchRequest():
            return [
                int(RequestKind.FETCH),
                request.rid,
                request.recipient,
                request.ts,
                request.limit,
            ]
        case AckRequest():
            return [
                int(RequestKind.ACK),
                request.rid,
                request.recipient,
                request.ts,
                list(request.item_ids),
            ]


def _signed_bytes(mailbox_key: bytes, request: Request) -> bytes:
    body: bytes = msgpack.packb(_fields_before_signature(request), use_bin_type=True)
    return SIGNING_CONTEXT + mailbox_key + body


def signature_valid(
    mailbox_key: bytes, request: DepositRequest | FetchRequest | AckRequest
) -> bool:
    """The request is signed by its sender (DEPOSIT) or recipient (FETCH, ACK) for this mailbox."""
    signer = request.sender if isinstance(request, DepositRequest) else request.recipient
    return verify_signature(signer, _signed_bytes(mailbox_key, request), request.signature)


_NO_SIGNATURE = bytes(SIGNATURE_BYTES)


def sign_deposit(
    sender: Identity,
    mailbox_key: bytes,
    rid: int,
    recipient: bytes,
    envelopes: tuple[bytes, ...],
    ts: int,
) -> DepositRequest:
    unsigned = DepositRequest(rid, sender.public_key, recipient, envelopes, ts, _NO_SIGNATURE)
    signature = sender.sign(_signed_bytes(mailbox_key, unsigned))
    return DepositRequest(rid, sender.public_key, recipient, envelopes, ts, signature)


def sign_fetch(
    recipient: Identity, mailbox_key: bytes, rid: int, ts: int, limit: int
) -> FetchRequest:
    unsigned = FetchRequest(rid, recipient.public_key, ts, limit, _NO_SIGNATURE)
    return FetchRequest(
        rid, recipient.public_key, ts, limit, recipient.sign(_signed_bytes(mailbox_key, unsigned))
    )


def sign_ack(
    recipient: Identity, mailbox_key: bytes, rid: int, ts: int, item_ids: tuple[bytes, ...]
) -> AckRequest:
    unsigned = AckRequest(rid, recipient.public_key, ts, item_ids, _NO_SIGNATURE)
    return AckRequest(
        rid,
        recipient.public_key,
        ts,
        item_ids,
        recipient.sign(_signed_bytes(mailbox_key, unsigned)),
    )


def encode_request(request: Request) -> bytes:
    fields = _fields_before_signature(request)
    if not isinstance(request, RegisterRequest):
        fields.append(request.signature)
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def _unpack(data: bytes, max_array: int) -> list[object]:
    if len(data) > MAX_FRAME_BYTES:
        raise MailboxDecodeError("frame too large")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=max_array,
            max_map_len=0,
            max_str_len=0,
            max_bin_len=MAX_ENVELOPE_BYTES,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack's many error types all mean "not ours"
        raise MailboxDecodeError(f"not msgpack: {type(error).__name__}") from None
    if type(value) is not list or not value:
        raise MailboxDecodeError("not a non-empty array")
    return value


def _int(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise MailboxDecodeError(f"{name} is not an integer in 0..{maximum}")
    return value


def _bin(value: object, name: str, length: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise MailboxDecodeError(f"{name} is not binary")
    if length is not None and len(value) != length:
        raise MailboxDecodeError(f"{name} has the wrong length")
    return value


def _bins(value: object, name: str, limit: int, length: int | None = None) -> tuple[bytes, ...]:
    if type(value) is not list or len(value) > limit:
        raise MailboxDecodeError(f"{name} is not an array of at most {limit}")
    return tuple(_bin(item, name, length) for item in value)


_ARITY = {
    RequestKind.REGISTER: 3,
    RequestKind.DEPOSIT: 7,
    RequestKind.FETCH: 6,
    RequestKind.ACK: 6,
}


def decode_request(data: bytes) -> Request:
    """Parse a request or raise ``MailboxDecodeError``; checks form, not signatures."""
    fields = _unpack(data, max(MAX_DEPOSIT_ITEMS, MAX_FETCH_ITEMS, 7))
    try:
        kind = RequestKind(_int(fields[0], "kind", 255))
    except ValueError:
        raise MailboxDecodeError("unknown request kind") from None
    if len(fields) != _ARITY[kind]:
        raise MailboxDecodeError("wrong number of fields")
    rid = _int(fields[1], "rid", MAX_RID)
    request: Request
    if kind is RequestKind.REGISTER:
        request = RegisterRequest(rid, _bin(fields[2], "record"))
    elif kind is RequestKind.DEPOSIT:
        envelopes = _bins(fields[4], "envelopes", MAX_DEPOSIT_ITEMS)
        request = DepositRequest(
            rid,
            _bin(fields[2], "sender", 32),
            _bin(fields[3], "recipient", 32),
            envelopes,
            _int(fields[5], "ts", MAX_TS),
            _bin(fields[6], "signature", SIGNATURE_BYTES),
        )
    elif kind is RequestKind.FETCH:
        request = FetchRequest(
            rid,
            _bin(fields[2], "recipient", 32),
            _int(fields[3], "ts", MAX_TS),
            _int(fields[4], "limit", MAX_FETCH_ITEMS),
            _bin(fields[5], "signature", SIGNATURE_BYTES),
        )
    else:
        request = AckRequest(
            rid,
            _bin(fields[2], "recipient", 32),
            _int(fields[3], "ts", MAX_TS),
            _bins(fields[4], "item ids", MAX_FETCH_ITEMS, ITEM_ID_BYTES),
            _bin(fields[5], "signature", SIGNATURE_BYTES),
        )
    if encode_request(request) != data:
        raise MailboxDecodeError("non-canonical request")
    return request


def encode_response(response: MailboxResponse) -> bytes:
    fields = [
        int(response.kind),
        response.rid,
        int(response.status),
        [int(s) for s in response.statuses],
        [[i.item_id, i.envelope, i.deposited_at] for i in response.items],
        response.more,
    ]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def _status(value: object) -> Status:
    try:
        return Status(_int(value, "status", 255))
    except ValueError:
        raise MailboxDecodeError("unknown status") from None


def decode_response(data: bytes) -> MailboxResponse:
    """Parse a response or raise ``MailboxDecodeError``."""
    fields = _unpack(data, max(MAX_DEPOSIT_ITEMS, MAX_FETCH_ITEMS, 6))
    if len(fields) != 6:
        raise MailboxDecodeError("response is not 6 fields")
    try:
        kind = RequestKind(_int(fields[0], "kind", 255))
    except ValueError:
        raise MailboxDecodeError("unknown response kind") from None
    raw_statuses, raw_items, more = fields[3], fields[4], fields[5]
    if type(raw_statuses) is not list or type(raw_items) is not list or type(more) is not bool:
        raise MailboxDecodeError("malformed response lists")
    items: list[MailboxItem] = []
    for raw in raw_items:
        if type(raw) is not list or len(raw) != 3:
            raise MailboxDecodeError("item is not 3 fields")
        items.append(
            MailboxItem(
                _bin(raw[0], "item id", ITEM_ID_BYTES),
                _bin(raw[1], "envelope"),
                _int(raw[2], "deposited_at", MAX_TS),
            )
        )
    return MailboxResponse(
        kind=kind,
        rid=_int(fields[1], "rid", MAX_RID),
        status=_status(fields[2]),
        statuses=tuple(_status(s) for s in raw_statuses),
        items=tuple(items),
        more=more,
    )
