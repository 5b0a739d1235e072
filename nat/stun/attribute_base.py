"""The machinery every STUN attribute shares: type codes, field checks, generic codecs.

Concrete attributes live in ``nat.stun.attributes`` (RFC 8489, RFC 5780, ours)
and ``nat.stun.turn_attributes`` (RFC 8656 TURN, RFC 8445 ICE); import them all
from ``nat.stun.attributes``. Every check raises ``ValueError`` only.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

__all__ = [
    "COOKIE_BYTES",
    "MAGIC_COOKIE",
    "MAX_TEXT_BYTES",
    "MAX_USERNAME_BYTES",
    "Address",
    "AddressAttribute",
    "AddressFamily",
    "Attribute",
    "AttributeType",
    "BytesAttribute",
    "FamilyAttribute",
    "FlagAttribute",
    "PortAttribute",
    "TextAttribute",
    "U32Attribute",
    "U64Attribute",
    "check_address",
    "check_error_code",
    "check_text",
    "check_u16",
    "check_u32",
    "decode_address",
    "decode_error_code",
    "decode_text",
    "encode_address",
    "encode_error_code",
    "exact_length",
    "is_comprehension_required",
]

MAGIC_COOKIE = 0x2112A442


COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")


Address = tuple[str, int]


# RFC 8489 §14.3/§14.9/§14.10/§14.14: "MUST be fewer than 128 characters
# (which can be as long as 509 [763] bytes)"; USERNAME "MUST contain a UTF-8
# encoded sequence of fewer than 509 bytes" (513 in RFC 8489's ABNF).
MAX_TEXT_BYTES = 763


MAX_USERNAME_BYTES = 513


class AttributeType(enum.IntEnum):
    """Registered STUN attribute types (IANA "STUN Attributes")."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C
    # Private range (0xC000-0xFFFF, comprehension-optional): our reachability probe.
    DIAL_BACK = 0xC0DB


class AddressFamily(enum.IntEnum):
    """RFC 8489 §14.1: 0x01 IPv4, 0x02 IPv6."""

    IPV4 = 0x01
    IPV6 = 0x02


def is_comprehension_required(attribute_type: int) -> bool:
    """RFC 8489 §14: "Attributes with type values between 0x0000 and 0x7FFF are
    comprehension-required attributes"."""
    return attribute_type < 0x8000


def check_u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} is not a 16-bit value")
    return value


def check_u32(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} is not a 32-bit value")
    return value


def exact_length(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(value)}")
    return value


def decode_text(value: bytes, limit: int, what: str) -> str:
    if len(value) > limit:
        raise ValueError(f"{what} longer than {limit} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None


def check_text(text: str, limit: int, what: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None
    if size > limit:
        raise ValueError(f"{what} longer than {limit} bytes")


def check_address(address: Address) -> None:
    host, port = address
    ipaddress.ip_address(host)  # raises ValueError on junk
    check_u16(port, "port")


def encode_address(address: Address, xor_with: bytes | None) -> bytes:
    """RFC 8489 §14.1/§14.2: 0x00, family, port, address (optionally XORed)."""
    host, port = address
    packed = ipaddress.ip_address(host).packed
    family = AddressFamily.IPV4 if len(packed) == 4 else AddressFamily.IPV6
    if xor_with is not None:
        # §14.2: X-Port is the port XORed with the most significant 16 bits of the
        # cookie; X-Address with the cookie (IPv4) or cookie || transaction id (IPv6).
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, xor_with, strict=False))
    return struct.pack("!BBH", 0, family, port) + packed


def decode_address(value: bytes, xor_with: bytes | None) -> Address:
    if len(value) < 4:
        raise ValueError("address attribute shorter than 4 bytes")
    family = value[1]
    port = int.from_bytes(value[2:4], "big")
    if family == AddressFamily.IPV4:
        exact_length(value, 8, "IPv4 address attribute")
    elif family == AddressFamily.IPV6:
        exact_length(value, 20, "IPv6 address attribute")
    else:
        raise ValueError(f"unknown address family {family:#04x}")
    packed = value[4:]
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, xor_with, strict=False))
    return (str(ipaddress.ip_address(packed)), port)


@dataclass(frozen=True)
class Attribute:
    """Base of every attribute: a type code and a value codec.

    ``transaction_id`` is passed to every codec because the XOR address
    attributes need it for IPv6 (RFC 8489 §14.2).
    """

    TYPE: ClassVar[int] = -1

    @property
    def attribute_type(self) -> int:
        return self.TYPE

    def encode_value(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        raise NotImplementedError


@dataclass(frozen=True)
class AddressAttribute(Attribute):
    address: Address

    XOR: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_address(self.address)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return encode_address(self.address, COOKIE_BYTES + transaction_id if self.XOR else None)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(decode_address(value, COOKIE_BYTES + transaction_id if cls.XOR else None))


@dataclass(frozen=True)
class TextAttribute(Attribute):
    value: str

    LIMIT: ClassVar[int] = MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        check_text(self.value, self.LIMIT, type(self).__name__)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(decode_text(value, cls.LIMIT, cls.__name__))


@dataclass(frozen=True)
class BytesAttribute(Attribute):
    value: bytes

    SIZES: ClassVar[tuple[int, ...] | None] = None  # allowed lengths; None: any

    def __post_init__(self) -> None:
        if self.SIZES is not None and len(self.value) not in self.SIZES:
            raise ValueError(f"{type(self).__name__} must be one of {self.SIZES} bytes")
        if len(self.value) > 0xFFFF:
            raise ValueError(f"{type(self).__name__} longer than 65535 bytes")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(bytes(value))


def encode_error_code(code: int) -> bytes:
    # RFC 8489 §14.8: "The Class represents the hundreds digit of the error code.
    # The value MUST be between 3 and 6. The Number represents the binary encoding
    # of the error code modulo 100, and its value MUST be between 0 and 99."
    return bytes((code // 100, code % 100))


def check_error_code(code: int) -> None:
    if not 300 <= code <= 699:
        raise ValueError(f"error code {code} is outside 300-699")


def decode_error_code(class_byte: int, number: int) -> int:
    error_class = class_byte & 0x07
    if not 3 <= error_class <= 6 or number > 99:
        raise ValueError(f"invalid error code class {error_class} number {number}")
    return error_class * 100 + number


@dataclass(frozen=True)
class PortAttribute(Attribute):
    """A 16-bit value followed by 16 reserved bits (RESPONSE-PORT, CHANNEL-NUMBER, DIAL-BACK)."""

    WHAT: ClassVar[str] = "port"

    def _number(self) -> int:
        raise NotImplementedError

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self._number().to_bytes(2, "big") + b"\x00\x00"

    @classmethod
    def _decode_number(cls, value: bytes) -> int:
        # RFC 5780 §7.5 RESPONSE-PORT: "a 16-bit unsigned integer ... followed by
        # 2 bytes of padding"; some agents send only the 2 bytes, accept both.
        if len(value) not in (2, 4):
            raise ValueError(f"{cls.WHAT} must be 2 or 4 bytes")
        return int.from_bytes(value[:2], "big")


@dataclass(frozen=True)
class U32Attribute(Attribute):
    value: int

    def __post_init__(self) -> None:
        check_u32(self.value, type(self).__name__)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(exact_length(value, 4, cls.__name__), "big"))


@dataclass(frozen=True)
class U64Attribute(Attribute):
    tie_breaker: int

    def __post_init__(self) -> None:
        if not 0 <= self.tie_breaker < 1 << 64:
            raise ValueError("tie-breaker is not a 64-bit value")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.tie_breaker.to_bytes(8, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(exact_length(value, 8, cls.__name__), "big"))


@dataclass(frozen=True)
class FlagAttribute(Attribute):
    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        exact_length(value, 0, cls.__name__)
        return cls()


@dataclass(frozen=True)
class FamilyAttribute(Attribute):
    family: AddressFamily

    def __post_init__(self) -> None:
        AddressFamily(self.family)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(AddressFamily(exact_length(value, 4, cls.__name__)[0]))
