"""The DHT wire format: one version byte, then one msgpack array per datagram.

Frame::

    0x02 | msgpack [type, request_id(bin 8), sender_key(bin 32), sender_id(bin 20),
                    flags, cookie(bin 0 or 16), key_proof(bin 0 or 64), *body]

``cookie`` (requests) echoes the token the receiver handed this sender at this
address (``p2pnode.dht.proofs``): it proves the requester receives there, so the
receiver may answer with more than ``AMPLIFICATION_FACTOR`` times the request.
``key_proof`` is the sender's signature proving it holds ``sender_key`` at its
address (``p2pnode.dht.keyproof``), so neither side needs a PING/PONG challenge.

Invariants:
- ``decode_frame`` is total: any bytes give a ``Frame`` or a ``DhtDecodeError``
  (a ``ValueError``), never another exception. msgpack runs with explicit
  size limits, so a datagram cannot make us allocate more than it carries.
- Dispatch is an explicit table from ``MessageType`` to a typed body decoder;
  nothing looks up code by a name taken from the wire.
- The codec checks form only. Whether ``sender_id`` derives from
  ``sender_key``, whether a reply matches a request, whether a record is
  acceptable: that is the protocol's job.
- Requests to a node that has not yet verified our address may be padded
  (``pad_to``), so the reply may be as large as a full one without amplifying.
- Raw fields handed to extension decoders nest at most ``MAX_FIELD_DEPTH``
  containers deep: a 1,000-deep array never reaches code that might recurse.
"""

from __future__ import annotations

import enum
import functools
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack

from p2pnode.dht.keys import ID_BYTES, Address
from p2pnode.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from p2pnode.records import MAX_RECORD_BYTES

__all__ = [
    "EXTENSION_CODES",
    "MAX_CONTACTS_PER_REPLY",
    "MAX_DATAGRAM_BYTES",
    "MAX_FIELD_DEPTH",
    "MAX_RECORDS_PER_REPLY",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "REQUEST_ID_BYTES",
    "TOKEN_BYTES",
    "DhtDecodeError",
    "ExtensionReply",
    "ExtensionRequest",
    "FindNode",
    "FindValue",
    "Flags",
    "Frame",
    "Message",
    "MessageType",
    "Nodes",
    "Ping",
    "Pong",
    "Store",
    "StoreResult",
    "StoreStatus",
    "Value",
    "WireContact",
    "decode_frame",
    "encode_frame",
    "parse_ip",
]

PROTOCOL_VERSION = 2  # 2: frame cookie and key proof, VALUE token
REQUEST_ID_BYTES = 8
NONCE_BYTES = 16
TOKEN_BYTES = 16  # a store token (see ``p2pnode.dht.proofs``); empty when none is offered
MAX_DATAGRAM_BYTES = 8192  # largest datagram we send or read (a VALUE page of records)
MAX_CONTACTS_PER_REPLY = 32
MAX_RECORDS_PER_REPLY = 16
MAX_PAD_BYTES = 1200
MAX_TEXT_BYTES = 200
MAX_HOST_CHARS = 45  # longest textual IPv6 address
MAX_EXTENSION_FIELDS = 32
MAX_FIELD_DEPTH = 8  # containers nested in extension fields
MAX_FIELD_ITEMS = 1024  # values in all extension fields of one frame, nested ones included
EXTENSION_CODES = range(64, 128)  # message types later layers may register


class DhtDecodeError(ValueError):
    """A datagram that is not a well-formed DHT message."""


class MessageType(enum.IntEnum):
    PING = 1
    PONG = 2
    FIND_NODE = 3
    NODES = 4
    FIND_VALUE = 5
    VALUE = 6
    STORE = 7
    STORE_RESULT = 8
    EXTENSION_REPLY = 9


class Flags(enum.IntFlag):
    NONE = 0
    CLIENT = 1  # the sender is in client mode: never put it into a routing table
    VERIFIED_YOU = 2  # (replies) the sender has verified the requester's address
    PROVE = 4  # (requests) sign a key proof into the reply (a STORE: a receipt)
    # (replies) your key is proven at this address here: your STOREs need no token proof
    PROVEN_YOU = 8


_ALL_FLAGS = int(Flags.CLIENT | Flags.VERIFIED_YOU | Flags.PROVE | Flags.PROVEN_YOU)


class StoreStatus(enum.IntEnum):
    STORED = 0
    DUPLICATE = 1  # byte-identical to what was held: counts as stored
    REJECTED = 2  # the record or the store's limits refused it (``reason`` says which)
    UNPROVEN = 3  # the sender has not proven its key: sign ``token`` and send the STORE again


@dataclass(frozen=True, slots=True)
class WireContact:
    """A contact as carried in replies; the receiver derives and checks its node id."""

    public_key: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: bytes  # the responder signs it: challenge-response proof of its key


@dataclass(frozen=True, slots=True)
class Pong:
    signature: bytes  # over PONG_CONTEXT + nonce + requester key (see protocol)
    observed: Address  # the requester's address as the responder saw it
    token: bytes = b""  # a store token for the requester (empty from client-mode nodes)


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes


@dataclass(frozen=True, slots=True)
class Nodes:
    contacts: tuple[WireContact, ...]
    token: bytes = b""  # a store token for the requester (empty from client-mode nodes)


@dataclass(frozen=True, slots=True)
class FindValue:
    key: bytes
    offset: int  # skip this many records: pages through a contested key


@dataclass(frozen=True, slots=True)
class Value:
    records: tuple[bytes, ...]  # encoded records, to be decoded and accepted by the reader
    total: int  # records held under the key (more pages if offset + len < total)
    contacts: tuple[WireContact, ...]
    token: bytes = b""  # a store token / cookie for the requester (empty from clients)


@dataclass(frozen=True, slots=True)
class Store:
    key: bytes  # where the sender files it; must equal the record's derived key
    record: bytes
    token: bytes = b""  # a token the receiver handed out to the sender (or empty)
    proof: bytes = b""  # the sender's signature binding token, receiver, key, record


@dataclass(frozen=True, slots=True)
class StoreResult:
    status: StoreStatus
    reason: str  # "" when stored, else a reject reason code
    detail: str
    token: bytes = b""  # UNPROVEN: a fresh token to prove the key with
    receipt: bytes = b""  # STORED/DUPLICATE: the storer's signature (``proofs.sign_receipt``)


@dataclass(frozen=True, slots=True)
class ExtensionRequest:
    code: int  # in EXTENSION_CODES, registered by a later layer
    fields: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class ExtensionReply:
    code: int
    fields: tuple[object, ...]


Message = (
    Ping
    | Pong
    | FindNode
    | Nodes
    | FindValue
    | Value
    | Store
    | StoreResult
    | ExtensionRequest
    | ExtensionReply
)


@dataclass(frozen=True, slots=True)
class Frame:
    message: Message
    request_id: bytes
    sender_key: bytes
    sender_id: bytes
    flags: int  # Flags bits (a plain int: tested on every datagram)
    cookie: bytes = b""  # requests: the receiver's token for us at this address, echoed
    key_proof: bytes = b""  # the sender's signature: it holds sender_key (``keyproof``)


def parse_ip(host: object) -> str:
    """An IPv4/IPv6 literal or ``DhtDecodeError``: a host name would make us resolve DNS."""
    if type(host) is not str or not host or len(host) > MAX_HOST_CHARS:
        raise DhtDecodeError("host is not an IP address")
    return _checked_ip(host)


@functools.lru_cache(maxsize=4096)
def _checked_ip(host: str) -> str:
    """Valid literals are cached (every reply repeats the same few); junk is not."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return host
    raise DhtDecodeError("host is not an IP address")


def _port(value: object) -> int:
    if type(value) is not int or not 1 <= value <= 65535:
        raise DhtDecodeError("port out of range")
    return value


def _bin(value: object, name: str, length: int | None = None, maximum: int = 0) -> bytes:
    if type(value) is not bytes:
        raise DhtDecodeError(f"{name} is not binary")
    if length is not None and len(value) != length:
        raise DhtDecodeError(f"{name} is {len(value)} bytes, not {length}")
    if maximum and len(value) > maximum:
        raise DhtDecodeError(f"{name} longer than {maximum} bytes")
    return value


def _text(value: object, name: str) -> str:
    if type(value) is not str or len(value) > MAX_TEXT_BYTES:
        raise DhtDecodeError(f"{name} is not a short string")
    return value


def _uint(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise DhtDecodeError(f"{name} is not an integer in 0..{maximum}")
    return value


def _token(value: object) -> bytes:
    token = _bin(value, "token", maximum=TOKEN_BYTES)
    if token and len(token) != TOKEN_BYTES:
        raise DhtDecodeError(f"token is {len(token)} bytes, not 0 or {TOKEN_BYTES}")
    return token


def _optional_signature(value: object, name: str) -> bytes:
    signature = _bin(value, name, maximum=SIGNATURE_BYTES)
    if signature and len(signature) != SIGNATURE_BYTES:
        raise DhtDecodeError(f"{name} is {len(signature)} bytes, not 0 or {SIGNATURE_BYTES}")
    return signature


def _contacts(value: object) -> tuple[WireContact, ...]:
    """The checks of ``_bin`` and ``_port`` written out: a put decodes ~400 contacts."""
    if type(value) is not list or len(value) > MAX_CONTACTS_PER_REPLY:
        raise DhtDecodeError("contacts is not a short list")
    result = []
    for item in value:
        if type(item) is not list or len(item) != 3:
            raise DhtDecodeError("contact is not [key, host, port]")
        key, host, port = item
        if type(key) is not bytes or len(key) != PUBLIC_KEY_BYTES:
            raise DhtDecodeError(f"contact key is not {PUBLIC_KEY_BYTES} bytes")
        if type(port) is not int or not 1 <= port <= 65535:
            raise DhtDecodeError("port out of range")
        result.append(WireContact(key, (parse_ip(host), port)))
    return tuple(result)


def _arity(body: Sequence[object], count: int, name: str) -> None:
    if len(body) != count:
        raise DhtDecodeError(f"{name} has {len(body)} fields, not {count}")


def _decode_ping(body: Sequence[object]) -> Message:
    _arity(body, 2, "PING")  # nonce, padding
    _bin(body[1], "padding", maximum=MAX_PAD_BYTES)
    return Ping(_bin(body[0], "nonce", NONCE_BYTES))


def _decode_pong(body: Sequence[object]) -> Message:
    _arity(body, 4, "PONG")
    signature = _bin(body[0], "signature", SIGNATURE_BYTES)
    return Pong(signature, (parse_ip(body[1]), _port(body[2])), _token(body[3]))


def _decode_find_node(body: Sequence[object]) -> Message:
    _arity(body, 2, "FIND_NODE")
    _bin(body[1], "padding", maximum=MAX_PAD_BYTES)
    return FindNode(_bin(body[0], "target", ID_BYTES))


def _decode_nodes(body: Sequence[object]) -> Message:
    _arity(body, 2, "NODES")
    return Nodes(_contacts(body[0]), _token(body[1]))


def _decode_find_value(body: Sequence[object]) -> Message:
    _arity(body, 3, "FIND_VALUE")
    _bin(body[2], "padding", maximum=MAX_PAD_BYTES)
    key = _bin(body[0], "key", ID_BYTES)
    return FindValue(key, _uint(body[1], "offset", MAX_RECORDS_PER_REPLY * 64))


def _decode_value(body: Sequence[object]) -> Message:
    _arity(body, 4, "VALUE")
    records = body[0]
    if type(records) is not list or len(records) > MAX_RECORDS_PER_REPLY:
        raise DhtDecodeError("records is not a short list")
    encoded = tuple(_bin(r, "record", maximum=MAX_RECORD_BYTES) for r in records)
    total = _uint(body[1], "total", 2**16)
    return Value(encoded, total, _contacts(body[2]), _token(body[3]))


def _bounded_fields(fields: Sequence[object]) -> tuple[object, ...]:
    """``fields`` if no container nests deeper than ``MAX_FIELD_DEPTH`` (iterative walk)."""
    stack: list[tuple[object, int]] = [(field, 1) for field in fields]
    items = 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_FIELD_ITEMS:
            raise DhtDecodeError("extension fields hold too many values")
        if type(value) is list:
            if depth > MAX_FIELD_DEPTH:
                raise DhtDecodeError(f"extension fields nest deeper than {MAX_FIELD_DEPTH}")
            stack.extend((item, depth + 1) for item in value)
    return tuple(fields)


def _decode_store(body: Sequence[object]) -> Message:
    _arity(body, 4, "STORE")
    key = _bin(body[0], "key", ID_BYTES)
    record = _bin(body[1], "record", maximum=MAX_RECORD_BYTES * 2)
    token, proof = _token(body[2]), _optional_signature(body[3], "proof")
    if bool(token) != bool(proof):
        raise DhtDecodeError("a proof needs its token and a token its proof")
    return Store(key, record, token, proof)


def _decode_store_result(body: Sequence[object]) -> Message:
    _arity(body, 5, "STORE_RESULT")
    status_value = _uint(body[0], "status", 255)
    try:
        status = StoreStatus(status_value)
    except ValueError:
        raise DhtDecodeError(f"unknown store status {status_value}") from None
    reason, detail = _text(body[1], "reason"), _text(body[2], "detail")
    token, receipt = _token(body[3]), _optional_signature(body[4], "receipt")
    return StoreResult(status, reason, detail, token, receipt)


def _decode_extension_reply(body: Sequence[object]) -> Message:
    if not body or len(body) > MAX_EXTENSION_FIELDS + 1:
        raise DhtDecodeError("extension reply has no code or too many fields")
    code = _uint(body[0], "extension code", 255)
    if code not in EXTENSION_CODES:
        raise DhtDecodeError(f"{code} is not an extension code")
    return ExtensionReply(code, _bounded_fields(body[1:]))


_DECODERS: dict[MessageType, Callable[[Sequence[object]], Message]] = {
    MessageType.PING: _decode_ping,
    MessageType.PONG: _decode_pong,
    MessageType.FIND_NODE: _decode_find_node,
    MessageType.NODES: _decode_nodes,
    MessageType.FIND_VALUE: _decode_find_value,
    MessageType.VALUE: _decode_value,
    MessageType.STORE: _decode_store,
    MessageType.STORE_RESULT: _decode_store_result,
    MessageType.EXTENSION_REPLY: _decode_extension_reply,
}


_DECODERS_BY_CODE = {int(kind): decoder for kind, decoder in _DECODERS.items()}


def _wire_contacts(contacts: Sequence[WireContact]) -> list[list[object]]:
    return [[c.public_key, c.address[0], c.address[1]] for c in contacts]


def _body(message: Message) -> tuple[int, list[object], bool]:
    """(type code, body fields, padded?) of a message."""
    match message:
        case Ping(nonce):
            return MessageType.PING, [nonce], True  # padded: see protocol.PING_PAD_TO
        case Pong(signature, observed, token):
            return MessageType.PONG, [signature, observed[0], observed[1], token], False
        case FindNode(target):
            return MessageType.FIND_NODE, [target], True
        case Nodes(contacts, token):
            return MessageType.NODES, [_wire_contacts(contacts), token], False
        case FindValue(key, offset):
            return MessageType.FIND_VALUE, [key, offset], True
        case Value(records, total, contacts, token):
            body = [list(records), total, _wire_contacts(contacts), token]
            return MessageType.VALUE, body, False
        case Store(key, record, token, proof):
            return MessageType.STORE, [key, record, token, proof], False
        case StoreResult(status, reason, detail, token, receipt):
            body = [int(status), reason, detail, token, receipt]
            return MessageType.STORE_RESULT, body, False
        case ExtensionRequest(code, fields):
            return code, list(fields), True
        case ExtensionReply(code, fields):
            return MessageType.EXTENSION_REPLY, [code, *fields], False
    raise AssertionError(f"unknown message {message!r}")  # pragma: no cover


def encode_frame(frame: Frame, *, pad_to: int = 0) -> bytes:
    """Wire bytes of ``frame``; padded requests grow to about ``pad_to`` bytes."""
    code, body, padded = _body(frame.message)
    head: list[object] = [
        int(code),
        frame.request_id,
        frame.sender_key,
        frame.sender_id,
        int(frame.flags),
        frame.cookie,
        frame.key_proof,
    ]
    if not padded:
        return bytes((PROTOCOL_VERSION,)) + msgpack.packb([*head, *body], use_bin_type=True)
    data = bytes((PROTOCOL_VERSION,)) + msgpack.packb([*head, *body, b""], use_bin_type=True)
    missing = min(pad_to - len(data) - 3, MAX_PAD_BYTES)
    if missing <= 0:
        return data
    # The padding is the array's last item, encoded last (b"" is C4 00): grow it in
    # place instead of packing the whole frame a second time.
    return data[:-2] + _bin_header(missing) + bytes(missing)


def _bin_header(size: int) -> bytes:
    """msgpack's header of a bin of ``size`` bytes (bin 8 or bin 16: padding <= 1200)."""
    if size < 0x100:
        return bytes((0xC4, size))
    return bytes((0xC5,)) + size.to_bytes(2, "big")


def decode_frame(data: bytes) -> Frame:
    """Parse one datagram, or raise ``DhtDecodeError``. Never anything else."""
    if len(data) < 2 or len(data) > MAX_DATAGRAM_BYTES:
        raise DhtDecodeError(f"datagram of {len(data)} bytes")
    if data[0] != PROTOCOL_VERSION:
        raise DhtDecodeError(f"unsupported protocol version {data[0]}")
    try:
        items = msgpack.unpackb(
            data[1:],
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=64,
            max_map_len=0,
            max_str_len=MAX_TEXT_BYTES,
            max_bin_len=MAX_DATAGRAM_BYTES,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types; all mean "not ours"
        raise DhtDecodeError(f"not msgpack: {type(error).__name__}") from None
    if type(items) is not list or len(items) < 7:
        raise DhtDecodeError("not a frame array")
    code = _uint(items[0], "type", 255)
    request_id = _bin(items[1], "request id", REQUEST_ID_BYTES)
    sender_key = _bin(items[2], "sender key", PUBLIC_KEY_BYTES)
    sender_id = _bin(items[3], "sender id", ID_BYTES)
    flags = _uint(items[4], "flags", _ALL_FLAGS)
    cookie = _token(items[5])
    key_proof = _optional_signature(items[6], "key proof")
    body = items[7:]
    message: Message
    if code in EXTENSION_CODES:
        if not body or len(body) > MAX_EXTENSION_FIELDS + 1:
            raise DhtDecodeError("extension request has no padding or too many fields")
        _bin(body[-1], "padding", maximum=MAX_PAD_BYTES)
        message = ExtensionRequest(code, _bounded_fields(body[:-1]))
    else:
        decoder = _DECODERS_BY_CODE.get(code)
        if decoder is None:
            raise DhtDecodeError(f"unknown message type {code}")
        message = decoder(body)
    return Frame(message, request_id, sender_key, sender_id, flags, cookie, key_proof)
