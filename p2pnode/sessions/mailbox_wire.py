"""Mailbox RPC wire format: register, deposit, fetch, acknowledge, and one-time
prekeys (length-framed msgpack).

Requests (msgpack arrays)::

    REGISTER [1, rid, mailbox_list_record(bin)]
    DEPOSIT  [2, rid, sender(bin 32), recipient(bin 32), [envelope(bin)...], ts, sig(bin 64)]
    FETCH    [3, rid, recipient(bin 32), ts, limit, sig(bin 64)]
    ACK      [4, rid, recipient(bin 32), ts, [item_id(bin 16)...], sig(bin 64)]
    UPLOAD_PREKEYS [5, rid, owner(bin 32), ts, [[public(bin 32), opk_sig(bin 64)]...],
                    [retired_public(bin 32)...], sig(bin 64)]
    TAKE_PREKEY    [6, rid, requester(bin 32), owner(bin 32), ts, sig(bin 64)]

Responses::

    [kind, rid, status, statuses[...], items[[item_id, envelope, deposited_at]...], more]
    UPLOAD_PREKEYS, TAKE_PREKEY: the same six fields + [[public, opk_sig]...]

UPLOAD_PREKEYS first deletes the ``retired`` keys (ones the owner no longer holds
the private half of: a mailbox must not hand them out), then stores the new ones,
answers one status per new key and lists every key of the owner the mailbox
still holds (an empty upload is how the owner asks "how many left");
TAKE_PREKEY answers one key, handed out once (``one_time_prekeys.py``).

``sig`` is Ed25519 by the sender (DEPOSIT), the recipient (FETCH, ACK), the owner
(UPLOAD_PREKEYS) or the requester (TAKE_PREKEY) over
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
from p2pnode.sessions.one_time_prekeys import OPK_MAX_PER_OWNER, OneTimePrekey
from p2pnode.sessions.wire_fields import FieldChecks

__all__ = [
    "MAX_DEPOSIT_ITEMS",
    "MAX_FETCH_ITEMS",
    "MAX_FRAME_BYTES",
    "MAX_UPLOAD_PREKEYS",
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
    "TakePrekeyRequest",
    "UploadPrekeysRequest",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "sign_ack",
    "sign_deposit",
    "sign_fetch",
    "sign_take_prekey",
    "sign_upload_prekeys",
    "signature_valid",
]

MAX_DEPOSIT_ITEMS = 64
MAX_FETCH_ITEMS = 256
MAX_UPLOAD_PREKEYS = OPK_MAX_PER_OWNER  # keys in one upload, and listed in one answer
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
    UPLOAD_PREKEYS = 5
    TAKE_PREKEY = 6


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
    NO_PREKEYS = 21  # TAKE_PREKEY: none of the owner's one-time prekeys left here
    RATE_LIMITED = 22  # TAKE_PREKEY: the requester, the pair or the owner took too many
    PREKEYS_FULL = 23  # UPLOAD_PREKEYS: the owner already has OPK_MAX_PER_OWNER here

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


@dataclass(frozen=True, slots=True)
class UploadPrekeysRequest:
    rid: int
    owner: bytes
    ts: int
    prekeys: tuple[OneTimePrekey, ...]
    retired: tuple[bytes, ...]
    signature: bytes


@dataclass(frozen=True, slots=True)
class TakePrekeyRequest:
    rid: int
    requester: bytes
    owner: bytes
    ts: int
    signature: bytes


Request = (
    RegisterRequest
    | DepositRequest
    | FetchRequest
    | AckRequest
    | UploadPrekeysRequest
    | TakePrekeyRequest
)
SignedRequest = (
    DepositRequest | FetchRequest | AckRequest | UploadPrekeysRequest | TakePrekeyRequest
)
_PREKEY_KINDS = (RequestKind.UPLOAD_PREKEYS, RequestKind.TAKE_PREKEY)


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
    prekeys: tuple[OneTimePrekey, ...] = ()  # TAKE_PREKEY: the one; UPLOAD: all still held


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
        case UploadPrekeysRequest():
            return [
                int(RequestKind.UPLOAD_PREKEYS),
                request.rid,
                request.owner,
                request.ts,
                [[p.public, p.signature] for p in request.prekeys],
                list(request.retired),
            ]
        case TakePrekeyRequest():
            return [
                int(RequestKind.TAKE_PREKEY),
                request.rid,
                request.requester,
                request.owner,
                request.ts,
            ]


def _signed_bytes(mailbox_key: bytes, request: Request) -> bytes:
    body: bytes = msgpack.packb(_fields_before_signature(request), use_bin_type=True)
    return SIGNING_CONTEXT + mailbox_key + body


def _signer(request: SignedRequest) -> bytes:
    match request:
        case DepositRequest():
            return request.sender
        case UploadPrekeysRequest():
            return request.owner
        case TakePrekeyRequest():
            return request.requester
        case FetchRequest() | AckRequest():
            return request.recipient


def signature_valid(mailbox_key: bytes, request: SignedRequest) -> bool:
    """The request is signed for this mailbox by its sender (DEPOSIT), recipient (FETCH,
    ACK), owner (UPLOAD_PREKEYS) or requester (TAKE_PREKEY)."""
    return verify_signature(
        _signer(request), _signed_bytes(mailbox_key, request), request.signature
    )


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


def sign_upload_prekeys(
    owner: Identity,
    mailbox_key: bytes,
    rid: int,
    ts: int,
    prekeys: tuple[OneTimePrekey, ...],
    retired: tuple[bytes, ...] = (),
) -> UploadPrekeysRequest:
    unsigned = UploadPrekeysRequest(rid, owner.public_key, ts, prekeys, retired, _NO_SIGNATURE)
    signature = owner.sign(_signed_bytes(mailbox_key, unsigned))
    return UploadPrekeysRequest(rid, owner.public_key, ts, prekeys, retired, signature)


def sign_take_prekey(
    requester: Identity, mailbox_key: bytes, rid: int, owner: bytes, ts: int
) -> TakePrekeyRequest:
    unsigned = TakePrekeyRequest(rid, requester.public_key, owner, ts, _NO_SIGNATURE)
    signature = requester.sign(_signed_bytes(mailbox_key, unsigned))
    return TakePrekeyRequest(rid, requester.public_key, owner, ts, signature)


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


_FIELDS = FieldChecks(MailboxDecodeError)
_int = _FIELDS.integer
_bin = _FIELDS.binary


def _bins(value: object, name: str, limit: int, length: int | None = None) -> tuple[bytes, ...]:
    if type(value) is not list or len(value) > limit:
        raise MailboxDecodeError(f"{name} is not an array of at most {limit}")
    return tuple(_bin(item, name, length) for item in value)


def _prekeys(value: object) -> tuple[OneTimePrekey, ...]:
    if type(value) is not list or len(value) > MAX_UPLOAD_PREKEYS:
        raise MailboxDecodeError(f"prekeys is not an array of at most {MAX_UPLOAD_PREKEYS}")
    prekeys: list[OneTimePrekey] = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise MailboxDecodeError("prekey is not 2 fields")
        prekeys.append(
            OneTimePrekey(
                _bin(pair[0], "prekey", 32), _bin(pair[1], "prekey signature", SIGNATURE_BYTES)
            )
        )
    return tuple(prekeys)


_ARITY = {
    RequestKind.REGISTER: 3,
    RequestKind.DEPOSIT: 7,
    RequestKind.FETCH: 6,
    RequestKind.ACK: 6,
    RequestKind.UPLOAD_PREKEYS: 7,
    RequestKind.TAKE_PREKEY: 6,
}


def decode_request(data: bytes) -> Request:
    """Parse a request or raise ``MailboxDecodeError``; checks form, not signatures."""
    fields = _unpack(data, max(MAX_DEPOSIT_ITEMS, MAX_FETCH_ITEMS, MAX_UPLOAD_PREKEYS, 7))
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
    elif kind is RequestKind.UPLOAD_PREKEYS:
        request = UploadPrekeysRequest(
            rid,
            _bin(fields[2], "owner", 32),
            _int(fields[3], "ts", MAX_TS),
            _prekeys(fields[4]),
            _bins(fields[5], "retired", MAX_UPLOAD_PREKEYS, 32),
            _bin(fields[6], "signature", SIGNATURE_BYTES),
        )
    elif kind is RequestKind.TAKE_PREKEY:
        request = TakePrekeyRequest(
            rid,
            _bin(fields[2], "requester", 32),
            _bin(fields[3], "owner", 32),
            _int(fields[4], "ts", MAX_TS),
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
    if response.kind in _PREKEY_KINDS:
        fields.append([[p.public, p.signature] for p in response.prekeys])
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def _status(value: object) -> Status:
    try:
        return Status(_int(value, "status", 255))
    except ValueError:
        raise MailboxDecodeError("unknown status") from None


def decode_response(data: bytes) -> MailboxResponse:
    """Parse a response or raise ``MailboxDecodeError``."""
    fields = _unpack(data, max(MAX_DEPOSIT_ITEMS, MAX_FETCH_ITEMS, MAX_UPLOAD_PREKEYS, 7))
    try:
        kind = RequestKind(_int(fields[0], "kind", 255))
    except ValueError:
        raise MailboxDecodeError("unknown response kind") from None
    arity = 7 if kind in _PREKEY_KINDS else 6
    if len(fields) != arity:
        raise MailboxDecodeError("response has the wrong number of fields")
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
        prekeys=_prekeys(fields[6]) if arity == 7 else (),
    )
