"""STUN messages (RFC 8489 §5): a total decoder, an encoder, integrity and fingerprint.

Invariants:
- ``decode_message`` is total: any bytes give a ``StunMessage`` or raise
  ``StunDecodeError`` (a ``ValueError``). It checks the header, the magic
  cookie, every length against the datagram, and FINGERPRINT when present.
- Attributes after MESSAGE-INTEGRITY are dropped as RFC 8489 §14.5 requires
  ("agents MUST ignore all other attributes that follow MESSAGE-INTEGRITY, with
  the exception of the MESSAGE-INTEGRITY-SHA256 and FINGERPRINT attributes");
  anything after FINGERPRINT is an error.
- Integrity is checked over the raw bytes (``check_integrity``), never over a
  re-encoding, so padding bytes and unknown attributes are covered exactly.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from typing import TypeVar

from nat.stun.attributes import (
    MAGIC_COOKIE,
    Attribute,
    AttributeType,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    UnknownAttribute,
    decode_attribute,
    is_comprehension_required,
)

__all__ = [
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "MAX_ATTRIBUTES",
    "StunAttributeError",
    "StunClass",
    "StunDecodeError",
    "StunMessage",
    "StunMethod",
    "check_integrity",
    "decode_message",
    "encode_message",
    "long_term_key",
    "looks_like_stun",
]

HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = 12
# A peer can pack ~16k empty attributes into one datagram; we never need more than this.
MAX_ATTRIBUTES = 128
# RFC 8489 §14.7: "XOR'ed with the 32-bit value 0x5354554e".
FINGERPRINT_XOR = 0x5354554E
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")

A = TypeVar("A", bound=Attribute)


class StunClass(enum.IntEnum):
    """RFC 8489 §5: the two class bits C1 C0."""

    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class StunMethod(enum.IntEnum):
    """RFC 8489 §18.2 and RFC 8656 §17: the methods we speak."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class StunDecodeError(ValueError):
    """The bytes are not a STUN message we accept (no header could be trusted)."""


class StunAttributeError(StunDecodeError):
    """The header was valid but an attribute was not: a request deserves a 400.

    Carries what a 400 (Bad Request) response needs (RFC 8489 §6.3.1.1).
    """

    def __init__(
        self, message: str, *, method: StunMethod, cls: StunClass, transaction_id: bytes
    ) -> None:
        super().__init__(message)
        self.method = method
        self.cls = cls
        self.transaction_id = transaction_id


@dataclass(frozen=True)
class StunMessage:
    """One STUN message; ``attributes`` in wire order (integrity and fingerprint included)."""

    method: StunMethod
    cls: StunClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        if len(self.transaction_id) != TRANSACTION_ID_LENGTH:
            raise ValueError("transaction id must be 12 bytes")

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of that type (RFC 8489 §14: only the first need be processed)."""
        for attribute in self.attributes:
            if type(attribute) is kind:
                return attribute
        return None

    def get_all(self, kind: type[A]) -> tuple[A, ...]:
        """Every attribute of that type, in order (e.g. several XOR-PEER-ADDRESS)."""
        return tuple(a for a in self.attributes if type(a) is kind)

    def unknown_comprehension_required(self) -> tuple[int, ...]:
        """Types to list in UNKNOWN-ATTRIBUTES of a 420 response (RFC 8489 §6.3.1.1)."""
        seen: list[int] = []
        for attribute in self.attributes:
            if (
                isinstance(attribute, UnknownAttribute)
                and is_comprehension_required(attribute.type)
                and attribute.type not in seen
            ):
                seen.append(attribute.type)
        return tuple(seen)


def _message_type(method: int, cls: int) -> int:
    # RFC 8489 §5: M11..M7 C1 M6..M4 C0 M3..M0 (bits 13..0).
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0x1) << 4)
        | ((cls & 0x2) << 7)
    )


def _split_type(message_type: int) -> tuple[int, int]:
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    cls = ((message_type >> 4) & 0x1) | ((message_type >> 7) & 0x2)
    return method, cls


def looks_like_stun(data: bytes) -> bool:
    """Cheap demultiplexing (RFC 7983: first byte 0-3 is STUN; ChannelData is 64-79).

    True means "worth decoding", not "valid".
    """
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 4
        and data[4:8] == _COOKIE_BYTES
        and data[3] % 4 == 0
        and int.from_bytes(data[2:4], "big") + HEADER_LENGTH == len(data)
    )


@dataclass(frozen=True)
class _RawAttribute:
    type: int
    offset: int  # of the attribute header inside the message
    value: bytes


def _parse_header(data: bytes) -> tuple[int, int, bytes]:
    """Check the header; returns (method, class, transaction id)."""
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError(f"{len(data)} bytes is shorter than a STUN header")
    message_type, length = struct.unpack_from("!HH", data)
    # RFC 8489 §5: "The most significant 2 bits of every STUN message MUST be zeroes."
    if message_type & 0xC000:
        raise StunDecodeError("top two bits are not zero")
    if data[4:8] != _COOKIE_BYTES:
        raise StunDecodeError("magic cookie mismatch")
    # "the message length MUST contain the size of the message in bytes, not
    # including the 20-byte STUN header. Since all STUN attributes are padded to a
    # multiple of 4 bytes, the last 2 bits of this field are always zero."
    if length % 4:
        raise StunDecodeError("message length is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunDecodeError(f"message length {length} disagrees with datagram size {len(data)}")
    method, cls = _split_type(message_type)
    return method, cls, bytes(data[8:20])


def _walk(data: bytes) -> list[_RawAttribute]:
    """Split the attribute area into TLVs, checking every length and the padding room."""
    found: list[_RawAttribute] = []
    offset = HEADER_LENGTH
    while offset < len(data):
        if len(found) >= MAX_ATTRIBUTES:
            raise StunDecodeError(f"more than {MAX_ATTRIBUTES} attributes")
        if len(data) - offset < 4:
            raise StunDecodeError("truncated attribute header")
        kind, length = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + length
        # RFC 8489 §14: "Each STUN attribute MUST end on a 32-bit boundary."
        padded_end = end + (-length % 4)
        if padded_end > len(data):
            raise StunDecodeError(f"attribute {kind:#06x} overruns the message")
        found.append(_RawAttribute(kind, offset, bytes(data[offset + 4 : end])))
        offset = padded_end
    return found


def decode_message(data: bytes) -> StunMessage:
    """Parse one STUN datagram; total (``StunDecodeError`` on anything malformed)."""
    method_number, cls_number, transaction_id = _parse_header(data)
    try:
        method = StunMethod(method_number)
    except ValueError:
        raise StunDecodeError(f"unknown method {method_number:#05x}") from None
    cls = StunClass(cls_number)
    raw = _walk(data)
    attributes: list[Attribute] = []
    after_integrity = False
    after_integrity_sha256 = False
    for index, item in enumerate(raw):
        if item.type == AttributeType.FINGERPRINT:
            # §14.7: "the FINGERPRINT attribute MUST be the last attribute"
            if index != len(raw) - 1:
                raise StunDecodeError("FINGERPRINT is not the last attribute")
        elif after_integrity_sha256 or (
            after_integrity and item.type != AttributeType.MESSAGE_INTEGRITY_SHA256
        ):
            continue  # §14.5/§14.6: ignored after MESSAGE-INTEGRITY(-SHA256)
        try:
            attribute = decode_attribute(item.type, item.value, transaction_id)
        except ValueError as error:
            raise StunAttributeError(
                str(error), method=method, cls=cls, transaction_id=transaction_id
            ) from None
        if isinstance(attribute, Fingerprint):
            expected = _crc(data[: item.offset])
            if attribute.crc != expected:
                raise StunDecodeError("FINGERPRINT mismatch")
        after_integrity = after_integrity or item.type == AttributeType.MESSAGE_INTEGRITY
        after_integrity_sha256 = (
            after_integrity_sha256 or item.type == AttributeType.MESSAGE_INTEGRITY_SHA256
        )
        attributes.append(attribute)
    return StunMessage(method, cls, transaction_id, tuple(attributes))


def _crc(prefix: bytes) -> int:
    """§14.7: CRC-32 of the message up to FINGERPRINT, with the length already covering it.

    ``prefix`` must already carry the final length in its header.
    """
    return (zlib.crc32(prefix) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def _with_length(prefix: bytes, total_attribute_bytes: int) -> bytes:
    return prefix[:2] + total_attribute_bytes.to_bytes(2, "big") + prefix[4:]


def _hmac(key: bytes, sha256: bool, covered: bytes) -> bytes:
    return hmac.new(key, covered, hashlib.sha256 if sha256 else hashlib.sha1).digest()


def _encode_tlv(kind: int, value: bytes, pad_byte: int) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes((pad_byte,)) * (-len(value) % 4)


def encode_message(
    message: StunMessage,
    *,
    integrity_key: bytes | None = None,
    integrity_sha256: bool = False,
    fingerprint: bool = False,
    pad_byte: int = 0,
) -> bytes:
    """Serialize, then append MESSAGE-INTEGRITY (or -SHA256 if asked) and FINGERPRINT.

    Attributes already in ``message.attributes`` are written as they are, so
    tests can build odd messages; ``pad_byte`` exists for the RFC 5769 vectors,
    which pad with spaces.
    """
    tid = message.transaction_id
    body = b"".join(
        _encode_tlv(a.attribute_type, a.encode_value(tid), pad_byte) for a in message.attributes
    )
    header = struct.pack("!HH", _message_type(message.method, message.cls), 0) + _COOKIE_BYTES
    out = header + tid + body
    if integrity_key is not None:
        # RFC 8489 §14.5: "the length field in the STUN header MUST contain the
        # total length of the message up to, and including, the MESSAGE-INTEGRITY
        # attribute itself, but excluding any attributes after it".
        size = 32 if integrity_sha256 else 20
        covered = _with_length(out, len(out) - HEADER_LENGTH + 4 + size)
        mac = _hmac(integrity_key, integrity_sha256, covered)
        kind = (
            AttributeType.MESSAGE_INTEGRITY_SHA256
            if integrity_sha256
            else AttributeType.MESSAGE_INTEGRITY
        )
        out = covered + _encode_tlv(kind, mac, 0)
    if fingerprint:
        covered = _with_length(out, len(out) - HEADER_LENGTH + 8)
        out = covered + _encode_tlv(AttributeType.FINGERPRINT, _crc(covered).to_bytes(4, "big"), 0)
    return _with_length(out, len(out) - HEADER_LENGTH)


def check_integrity(data: bytes, key: bytes) -> bool:
    """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, over the raw bytes.

    RFC 8489 §9.2.4 / §9.1.3: the receiver computes the HMAC over the message up
    to the attribute with the header length adjusted to end right after it.
    False for a missing attribute or undecodable bytes; never raises.
    """
    try:
        _parse_header(data)
        raw = _walk(data)
    except StunDecodeError:
        return False
    chosen: _RawAttribute | None = None
    for item in raw:
        if item.type == AttributeType.MESSAGE_INTEGRITY_SHA256:
            chosen = item
            break
        if item.type == AttributeType.MESSAGE_INTEGRITY and chosen is None:
            chosen = item
    if chosen is None:
        return False
    sha256 = chosen.type == AttributeType.MESSAGE_INTEGRITY_SHA256
    try:
        if sha256:
            MessageIntegritySha256(chosen.value)
        else:
            MessageIntegrity(chosen.value)
    except ValueError:
        return False
    attribute_end = chosen.offset + 4 + len(chosen.value)
    covered = _with_length(data[: chosen.offset], attribute_end - HEADER_LENGTH)
    expected = _hmac(key, sha256, covered)[: len(chosen.value)]
    return hmac.compare_digest(expected, chosen.value)


def _prepare(text: str) -> str:
    """RFC 8265 OpaqueString, near enough: non-ASCII spaces become U+0020, then NFC."""
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text)
    return unicodedata.normalize("NFC", mapped)


def long_term_key(username: str, realm: str, password: str, *, sha256: bool = False) -> bytes:
    """RFC 8489 §9.2.2: key = MD5(username ":" OpaqueString(realm) ":" OpaqueString(password)).

    With ``sha256`` (PASSWORD-ALGORITHM SHA-256) the hash is SHA-256 instead.
    """
    material = f"{username}:{_prepare(realm)}:{_prepare(password)}".encode()
    if sha256:
        return hashlib.sha256(material).digest()
    return hashlib.md5(material, usedforsecurity=False).digest()
