"""Every STUN attribute this project speaks, as frozen dataclasses: one grammar module.

RFC 8489 (STUN), RFC 5780 (NAT behaviour discovery), RFC 8656 (TURN), RFC 8445
(ICE) and one private comprehension-optional attribute (DIAL-BACK, for our
reachability probes). Anything else is kept raw as ``UnknownAttribute``.
Import every attribute from here: the TURN/ICE ones are defined in
``nat.stun.turn_attributes`` and the shared machinery in
``nat.stun.attribute_base`` only to keep each module short.

Invariants:
- ``decode_attribute`` is total: any (type, value, transaction id) gives an
  ``Attribute`` or raises ``ValueError`` (the message decoder turns it into
  ``StunDecodeError``); never ``struct.error``, ``IndexError`` or
  ``UnicodeDecodeError``.
- Constructors validate their fields (``__post_init__``), so a value that can be
  built can be encoded, and ``decode(encode(x)) == x``.
- Addresses are ``(ip_text, port)`` tuples; IPv4 and IPv6 both work.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from nat.stun.attribute_base import (
    MAGIC_COOKIE,
    MAX_TEXT_BYTES,
    MAX_USERNAME_BYTES,
    Address,
    AddressAttribute,
    AddressFamily,
    Attribute,
    AttributeType,
    BytesAttribute,
    PortAttribute,
    TextAttribute,
    check_error_code,
    check_text,
    check_u16,
    check_u32,
    decode_error_code,
    decode_text,
    encode_error_code,
    exact_length,
    is_comprehension_required,
)
from nat.stun.turn_attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    IceControlled,
    IceControlling,
    Icmp,
    Lifetime,
    Priority,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    UseCandidate,
    XorPeerAddress,
    XorRelayedAddress,
)

__all__ = [
    "MAGIC_COOKIE",
    "AdditionalAddressFamily",
    "Address",
    "AddressErrorCode",
    "AddressFamily",
    "AlternateDomain",
    "AlternateServer",
    "Attribute",
    "AttributeType",
    "ChangeRequest",
    "ChannelNumber",
    "Data",
    "DialBack",
    "DontFragment",
    "ErrorCode",
    "EvenPort",
    "Fingerprint",
    "IceControlled",
    "IceControlling",
    "Icmp",
    "Lifetime",
    "MappedAddress",
    "MessageIntegrity",
    "MessageIntegritySha256",
    "Nonce",
    "OtherAddress",
    "Padding",
    "PasswordAlgorithm",
    "PasswordAlgorithmId",
    "PasswordAlgorithms",
    "Priority",
    "Realm",
    "RequestedAddressFamily",
    "RequestedTransport",
    "ReservationToken",
    "ResponseOrigin",
    "ResponsePort",
    "Software",
    "UnknownAttribute",
    "UnknownAttributes",
    "UseCandidate",
    "UserHash",
    "Username",
    "XorMappedAddress",
    "XorPeerAddress",
    "XorRelayedAddress",
    "decode_attribute",
    "is_comprehension_required",
]


@dataclass(frozen=True)
class MappedAddress(AddressAttribute):
    """RFC 8489 §14.1: kept "for backward compatibility with RFC 3489 clients"."""

    TYPE = AttributeType.MAPPED_ADDRESS


@dataclass(frozen=True)
class XorMappedAddress(AddressAttribute):
    """RFC 8489 §14.2: the reflexive address, XORed so ALGs leave it alone."""

    TYPE = AttributeType.XOR_MAPPED_ADDRESS
    XOR = True


@dataclass(frozen=True)
class AlternateServer(AddressAttribute):
    """RFC 8489 §14.15: where a 300 (Try Alternate) sends the client."""

    TYPE = AttributeType.ALTERNATE_SERVER


@dataclass(frozen=True)
class ResponseOrigin(AddressAttribute):
    """RFC 5780 §7.3: the address the response was sent from."""

    TYPE = AttributeType.RESPONSE_ORIGIN


@dataclass(frozen=True)
class OtherAddress(AddressAttribute):
    """RFC 5780 §7.4: the server's alternate IP and port, for CHANGE-REQUEST."""

    TYPE = AttributeType.OTHER_ADDRESS


@dataclass(frozen=True)
class Username(TextAttribute):
    """RFC 8489 §14.3."""

    TYPE = AttributeType.USERNAME
    LIMIT = MAX_USERNAME_BYTES


@dataclass(frozen=True)
class Realm(TextAttribute):
    """RFC 8489 §14.9."""

    TYPE = AttributeType.REALM


@dataclass(frozen=True)
class Nonce(TextAttribute):
    """RFC 8489 §14.10."""

    TYPE = AttributeType.NONCE


@dataclass(frozen=True)
class Software(TextAttribute):
    """RFC 8489 §14.14: the agent's name and version, for diagnostics only."""

    TYPE = AttributeType.SOFTWARE


@dataclass(frozen=True)
class AlternateDomain(TextAttribute):
    """RFC 8489 §14.16: the domain name for the ALTERNATE-SERVER's certificate."""

    TYPE = AttributeType.ALTERNATE_DOMAIN


@dataclass(frozen=True)
class UserHash(BytesAttribute):
    """RFC 8489 §14.4: SHA-256(username ":" realm), for username anonymity."""

    TYPE = AttributeType.USERHASH
    SIZES = (32,)


@dataclass(frozen=True)
class MessageIntegrity(BytesAttribute):
    """RFC 8489 §14.5: HMAC-SHA1 over the message up to this attribute."""

    TYPE = AttributeType.MESSAGE_INTEGRITY
    SIZES = (20,)


@dataclass(frozen=True)
class MessageIntegritySha256(BytesAttribute):
    """RFC 8489 §14.6: HMAC-SHA256, "at least 16 and at most 32 bytes", a multiple of 4."""

    TYPE = AttributeType.MESSAGE_INTEGRITY_SHA256
    SIZES = (16, 20, 24, 28, 32)


@dataclass(frozen=True)
class Padding(BytesAttribute):
    """RFC 5780 §7.6: pads a request to probe fragmentation."""

    TYPE = AttributeType.PADDING


@dataclass(frozen=True)
class Fingerprint(Attribute):
    """RFC 8489 §14.7: CRC-32 of the message XORed with 0x5354554e."""

    TYPE = AttributeType.FINGERPRINT
    crc: int

    def __post_init__(self) -> None:
        check_u32(self.crc, "FINGERPRINT")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.crc.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(exact_length(value, 4, "FINGERPRINT"), "big"))


@dataclass(frozen=True)
class ErrorCode(Attribute):
    """RFC 8489 §14.8: a 300-699 code and a UTF-8 reason phrase."""

    TYPE = AttributeType.ERROR_CODE
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        check_error_code(self.code)
        check_text(self.reason, MAX_TEXT_BYTES, "ERROR-CODE reason")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"\x00\x00" + encode_error_code(self.code) + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ValueError("ERROR-CODE shorter than 4 bytes")
        code = decode_error_code(value[2], value[3])
        return cls(code, decode_text(value[4:], MAX_TEXT_BYTES, "ERROR-CODE reason"))


@dataclass(frozen=True)
class UnknownAttributes(Attribute):
    """RFC 8489 §14.13: the comprehension-required types a 420 response did not know."""

    TYPE = AttributeType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...]

    def __post_init__(self) -> None:
        for kind in self.types:
            check_u16(kind, "attribute type")
        if len(self.types) * 2 > 0xFFFF:
            raise ValueError("too many unknown attribute types")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(kind.to_bytes(2, "big") for kind in self.types)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise ValueError("UNKNOWN-ATTRIBUTES length is odd")
        return cls(tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)))


class PasswordAlgorithmId(enum.IntEnum):
    """RFC 8489 §18.5: STUN Password Algorithms registry."""

    MD5 = 0x0001
    SHA256 = 0x0002


def _encode_algorithm(algorithm: int, parameters: bytes) -> bytes:
    padded = parameters + b"\x00" * (-len(parameters) % 4)
    return struct.pack("!HH", algorithm, len(parameters)) + padded


@dataclass(frozen=True)
class PasswordAlgorithm(Attribute):
    """RFC 8489 §14.12: the algorithm the client chose (also an entry of §14.11)."""

    TYPE = AttributeType.PASSWORD_ALGORITHM
    algorithm: int
    parameters: bytes = b""

    def __post_init__(self) -> None:
        check_u16(self.algorithm, "password algorithm")
        check_u16(len(self.parameters), "password algorithm parameters length")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _encode_algorithm(self.algorithm, self.parameters)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        entries = _decode_algorithms(value)
        if len(entries) != 1:
            raise ValueError("PASSWORD-ALGORITHM must hold exactly one algorithm")
        return cls(*entries[0])


def _decode_algorithms(value: bytes) -> list[tuple[int, bytes]]:
    entries: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 4:
            raise ValueError("truncated password algorithm entry")
        algorithm, length = struct.unpack_from("!HH", value, offset)
        end = offset + 4 + length
        if end > len(value):
            raise ValueError("password algorithm parameters overrun the attribute")
        entries.append((algorithm, bytes(value[offset + 4 : end])))
        offset = end + (-length % 4)
    if offset != len(value):
        raise ValueError("password algorithm padding overruns the attribute")
    return entries


@dataclass(frozen=True)
class PasswordAlgorithms(Attribute):
    """RFC 8489 §14.11: the algorithms a server offers, in preference order."""

    TYPE = AttributeType.PASSWORD_ALGORITHMS
    algorithms: tuple[PasswordAlgorithm, ...]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(_encode_algorithm(a.algorithm, a.parameters) for a in self.algorithms)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(tuple(PasswordAlgorithm(a, p) for a, p in _decode_algorithms(value)))


@dataclass(frozen=True)
class ChangeRequest(Attribute):
    """RFC 5780 §7.2: ask the server to answer from its other IP and/or port."""

    TYPE = AttributeType.CHANGE_REQUEST
    change_ip: bool = False
    change_port: bool = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        # "A: This is the "change IP" flag ... B: This is the "change port" flag."
        return (0x04 * self.change_ip | 0x02 * self.change_port).to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        flags = int.from_bytes(exact_length(value, 4, "CHANGE-REQUEST"), "big")
        return cls(change_ip=bool(flags & 0x04), change_port=bool(flags & 0x02))


@dataclass(frozen=True)
class ResponsePort(PortAttribute):
    """RFC 5780 §7.5: send the response to this port instead of the source port."""

    TYPE = AttributeType.RESPONSE_PORT
    WHAT = "RESPONSE-PORT"
    port: int

    def __post_init__(self) -> None:
        check_u16(self.port, "RESPONSE-PORT")

    def _number(self) -> int:
        return self.port

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(cls._decode_number(value))


@dataclass(frozen=True)
class DialBack(PortAttribute):
    """Private: "please probe my observed IP at this port from another address".

    Comprehension-optional (0xC0DB), so servers that do not know it just answer
    the Binding request. The probe goes only to the requester's observed IP.
    """

    TYPE = AttributeType.DIAL_BACK
    WHAT = "DIAL-BACK"
    port: int

    def __post_init__(self) -> None:
        check_u16(self.port, "DIAL-BACK port")

    def _number(self) -> int:
        return self.port

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(exact_length(value, 4, "DIAL-BACK")[:2], "big"))


@dataclass(frozen=True)
class UnknownAttribute(Attribute):
    """Any attribute type we do not know, kept raw (RFC 8489 §14: 420 if comprehension-required)."""

    type: int
    value: bytes

    def __post_init__(self) -> None:
        check_u16(self.type, "attribute type")
        check_u16(len(self.value), "attribute length")

    @property
    def attribute_type(self) -> int:
        return self.type

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        raise TypeError("UnknownAttribute is built by decode_attribute, which knows the type")


_Decoder = Callable[[bytes, bytes], Attribute]


_KNOWN: tuple[type[Attribute], ...] = (
    MappedAddress,
    XorMappedAddress,
    AlternateServer,
    ResponseOrigin,
    OtherAddress,
    XorPeerAddress,
    XorRelayedAddress,
    Username,
    Realm,
    Nonce,
    Software,
    AlternateDomain,
    UserHash,
    MessageIntegrity,
    MessageIntegritySha256,
    Padding,
    Data,
    ReservationToken,
    Fingerprint,
    ErrorCode,
    UnknownAttributes,
    PasswordAlgorithm,
    PasswordAlgorithms,
    ChangeRequest,
    ResponsePort,
    ChannelNumber,
    DialBack,
    Lifetime,
    Priority,
    IceControlled,
    IceControlling,
    UseCandidate,
    DontFragment,
    RequestedAddressFamily,
    AdditionalAddressFamily,
    EvenPort,
    RequestedTransport,
    AddressErrorCode,
    Icmp,
)


# An explicit typed table from wire type to decoder: no reflection on peer input.
_DECODERS: dict[int, _Decoder] = {kind.TYPE: kind.decode_value for kind in _KNOWN}


def decode_attribute(attribute_type: int, value: bytes, transaction_id: bytes) -> Attribute:
    """Decode one attribute value; unknown types become ``UnknownAttribute``.

    Raises ``ValueError`` (never anything else) when a known attribute is malformed.
    """
    decoder = _DECODERS.get(attribute_type)
    if decoder is None:
        return UnknownAttribute(attribute_type, bytes(value))
    try:
        return decoder(value, transaction_id)
    except (ValueError, struct.error, IndexError) as error:
        # struct.error/IndexError cannot happen by construction; belt and braces
        # keep the promise of a total decoder.
        raise ValueError(f"attribute {attribute_type:#06x}: {error}") from None
