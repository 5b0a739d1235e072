"""Chat wire formats: the encrypted envelope, and the body inside it.

Envelope (what mailboxes hold and the online path carries; a msgpack array)::

    [version=1, sender(bin 32), recipient(bin 32),
     init(nil | [identity(bin 32), ephemeral(bin 32), signed_prekey(bin 32),
                 one_time(nil | bin 32)]),
     ratchet_key(bin 32), previous_chain_length, message_number, ciphertext(bin)]

Body (the plaintext the ratchet encrypts)::

    [version=1, kind, id(bin 16), seq, prev_hash(bin 32), sent_at_ms, text | [receipt ids]]

Invariants:
- Both decoders are total: any bytes give a value or ``ChatDecodeError`` (a
  ``ValueError``); msgpack limits bound what a hostile peer makes us allocate.
- Encodings are canonical (decode re-encodes to the same bytes), so an
  envelope's hash names it: mailboxes and outboxes key on ``envelope_id``.
- A text is at most ``MAX_TEXT_BYTES`` of UTF-8; a receipt names at most
  ``MAX_RECEIPT_IDS`` messages; an envelope is at most ``MAX_ENVELOPE_BYTES``.
- ``seq`` counts a sender's text messages in one conversation from 1, and
  ``prev_hash`` is ``message_hash`` of the previous one (zeros for seq 1): the
  reader sees a gap or a fork instead of guessing.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

import msgpack

from p2pnode.sessions.crypto import InitHeader, RatchetHeader
from p2pnode.sessions.wire_fields import FieldChecks

__all__ = [
    "BODY_VERSION",
    "ENVELOPE_VERSION",
    "GENESIS_HASH",
    "MAX_ENVELOPE_BYTES",
    "MAX_RECEIPT_IDS",
    "MAX_TEXT_BYTES",
    "MESSAGE_ID_BYTES",
    "Body",
    "BodyKind",
    "ChatDecodeError",
    "Envelope",
    "decode_body",
    "decode_envelope",
    "encode_body",
    "encode_envelope",
    "envelope_id",
    "message_hash",
]

BODY_VERSION = 1
ENVELOPE_VERSION = 1
MAX_TEXT_BYTES = 64 * 1024
MAX_RECEIPT_IDS = 256
MESSAGE_ID_BYTES = 16
HASH_BYTES = 32
KEY_BYTES = 32
GENESIS_HASH = bytes(HASH_BYTES)
MAX_SEQ = 2**63 - 1
MAX_TIME_MS = 2**53
MAX_CHAIN = 2**32 - 1
_AEAD_TAG = 16
_BODY_OVERHEAD = 128  # msgpack framing of the fields around the text
MAX_CIPHERTEXT_BYTES = MAX_TEXT_BYTES + _BODY_OVERHEAD + _AEAD_TAG  # the text limit is in bytes
MAX_ENVELOPE_BYTES = MAX_CIPHERTEXT_BYTES + 512


class ChatDecodeError(ValueError):
    """Bytes that are not a well-formed, canonical envelope or body."""


class BodyKind(enum.IntEnum):
    TEXT = 1
    DELIVERED = 2  # receipt: these ids were stored (end to end)
    READ = 3  # receipt: these ids were shown to the person


@dataclass(frozen=True, slots=True)
class Body:
    """One decrypted payload: a text message or a receipt."""

    kind: BodyKind
    message_id: bytes
    seq: int  # 0 for receipts
    prev_hash: bytes
    sent_at_ms: int
    text: str = ""
    receipt_ids: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.message_id) != MESSAGE_ID_BYTES:
            raise ValueError(f"message id must be {MESSAGE_ID_BYTES} bytes")
        if len(self.prev_hash) != HASH_BYTES:
            raise ValueError(f"prev_hash must be {HASH_BYTES} bytes")
        if not 0 <= self.seq <= MAX_SEQ or not 0 <= self.sent_at_ms <= MAX_TIME_MS:
            raise ValueError("seq or sent_at out of range")
        if self.kind is BodyKind.TEXT:
            if self.seq < 1 or self.receipt_ids:
                raise ValueError("a text has seq >= 1 and no receipt ids")
            if len(self.text.encode("utf-8")) > MAX_TEXT_BYTES:
                raise ValueError(f"text longer than {MAX_TEXT_BYTES} bytes")
        else:
            if self.text or self.seq != 0:
                raise ValueError("a receipt has no text and seq 0")
            if not 1 <= len(self.receipt_ids) <= MAX_RECEIPT_IDS:
                raise ValueError(f"a receipt names 1..{MAX_RECEIPT_IDS} ids")
            if any(len(i) != MESSAGE_ID_BYTES for i in self.receipt_ids):
                raise ValueError("receipt ids are message ids")


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encrypted body addressed from ``sender`` to ``recipient`` (both Ed25519 keys)."""

    sender: bytes
    recipient: bytes
    init: InitHeader | None
    header: RatchetHeader
    ciphertext: bytes

    def __post_init__(self) -> None:
        if len(self.sender) != KEY_BYTES or len(self.recipient) != KEY_BYTES:
            raise ValueError("sender and recipient are 32-byte keys")
        if len(self.ciphertext) > MAX_CIPHERTEXT_BYTES:
            raise ValueError("ciphertext too large")


def encode_body(body: Body) -> bytes:
    last: object = body.text if body.kind is BodyKind.TEXT else list(body.receipt_ids)
    fields = [
        BODY_VERSION,
        int(body.kind),
        body.message_id,
        body.seq,
        body.prev_hash,
        body.sent_at_ms,
        last,
    ]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def message_hash(body: Body) -> bytes:
    """What the next message's ``prev_hash`` must be."""
    return hashlib.blake2b(
        encode_body(body), digest_size=HASH_BYTES, person=b"p2pnode-msghash"
    ).digest()


def envelope_id(encoded_envelope: bytes) -> bytes:
    """The name of an envelope in mailboxes and outboxes: a hash of its canonical bytes."""
    return hashlib.blake2b(encoded_envelope, digest_size=16, person=b"p2pnode-envid").digest()


def _unpack(data: bytes, max_array: int, max_bin: int, max_str: int) -> object:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=max_array,
            max_map_len=0,
            max_str_len=max_str,
            max_bin_len=max_bin,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises many types; all mean "not ours"
        raise ChatDecodeError(f"not msgpack: {type(error).__name__}") from None


_FIELDS = FieldChecks(ChatDecodeError)
_int = _FIELDS.integer
_bin = _FIELDS.binary


def decode_body(data: bytes) -> Body:
    """Parse a decrypted body or raise ``ChatDecodeError``."""
    if len(data) > MAX_CIPHERTEXT_BYTES:
        raise ChatDecodeError("body too large")
    fields = _unpack(data, MAX_RECEIPT_IDS, HASH_BYTES, MAX_TEXT_BYTES)
    if type(fields) is not list or len(fields) != 7:
        raise ChatDecodeError("body is not an array of 7 fields")
    version, kind_value, message_id, seq, prev_hash, sent_at, last = fields
    if version != BODY_VERSION or type(version) is not int:
        raise ChatDecodeError("unsupported body version")
    try:
        kind = BodyKind(_int(kind_value, "kind", 255))
    except ValueError:
        raise ChatDecodeError("unknown body kind") from None
    text = ""
    receipt_ids: tuple[bytes, ...] = ()
    if kind is BodyKind.TEXT:
        if type(last) is not str:
            raise ChatDecodeError("text is not a string")
        text = last
    else:
        if type(last) is not list:
            raise ChatDecodeError("receipt ids are not an array")
        receipt_ids = tuple(_bin(i, "receipt id", MESSAGE_ID_BYTES) for i in last)
    try:
        body = Body(
            kind=kind,
            message_id=_bin(message_id, "id", MESSAGE_ID_BYTES),
            seq=_int(seq, "seq", MAX_SEQ),
            prev_hash=_bin(prev_hash, "prev_hash", HASH_BYTES),
            sent_at_ms=_int(sent_at, "sent_at", MAX_TIME_MS),
            text=text,
            receipt_ids=receipt_ids,
        )
    except ValueError as error:
        raise ChatDecodeError(f"invalid body: {error}") from None
    if encode_body(body) != data:
        raise ChatDecodeError("non-canonical body")
    return body


def encode_envelope(envelope: Envelope) -> bytes:
    init: object = None
    if envelope.init is not None:
        init = [
            envelope.init.identity_key,
            envelope.init.ephemeral_key,
            envelope.init.signed_prekey,
            envelope.init.one_time_prekey,
        ]
    fields = [
        ENVELOPE_VERSION,
        envelope.sender,
        envelope.recipient,
        init,
        envelope.header.ratchet_key,
        envelope.header.previous_chain_length,
        envelope.header.message_number,
        envelope.ciphertext,
    ]
    encoded: bytes = msgpack.packb(fields, use_bin_type=True)
    return encoded


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope or raise ``ChatDecodeError``; says nothing of its authenticity."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise ChatDecodeError("envelope too large")
    fields = _unpack(data, 8, MAX_CIPHERTEXT_BYTES, 0)
    if type(fields) is not list or len(fields) != 8:
        raise ChatDecodeError("envelope is not an array of 8 fields")
    version, sender, recipient, raw_init, ratchet_key, previous, number, ciphertext = fields
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise ChatDecodeError("unsupported envelope version")
    init = None
    if raw_init is not None:
        if type(raw_init) is not list or len(raw_init) != 4:
            raise ChatDecodeError("init is not an array of 4 fields")
        one_time = raw_init[3]
        init = InitHeader(
            identity_key=_bin(raw_init[0], "identity", KEY_BYTES),
            ephemeral_key=_bin(raw_init[1], "ephemeral", KEY_BYTES),
            signed_prekey=_bin(raw_init[2], "signed prekey", KEY_BYTES),
            one_time_prekey=None if one_time is None else _bin(one_time, "one-time", KEY_BYTES),
        )
    envelope = Envelope(
        sender=_bin(sender, "sender", KEY_BYTES),
        recipient=_bin(recipient, "recipient", KEY_BYTES),
        init=init,
        header=RatchetHeader(
            ratchet_key=_bin(ratchet_key, "ratchet key", KEY_BYTES),
            previous_chain_length=_int(previous, "previous chain length", MAX_CHAIN),
            message_number=_int(number, "message number", MAX_CHAIN),
        ),
        ciphertext=_bin(ciphertext, "ciphertext"),
    )
    if init is not None and init.identity_key != envelope.sender:
        raise ChatDecodeError("init identity is not the sender")
    if encode_envelope(envelope) != data:
        raise ChatDecodeError("non-canonical envelope")
    return envelope
