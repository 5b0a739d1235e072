"""Every STUN attribute this project speaks, as frozen dataclasses: one grammar module.

RFC 8489 (STUN), RFC 5780 (NAT behaviour discovery), RFC 8656 (TURN), RFC 8445
(ICE) and one private comprehension-optional attribute (DIAL-BACK, for our
reachability probes). Anything else is kept raw as ``UnknownAttribute``.

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
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Self

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

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")

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


def _u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} is not a 16-bit value")
    return value


def _u32(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} is not a 32-bit value")
    return value


def _exact(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(value)}")
    return value


def _text(value: bytes, limit: int, what: str) -> str:
    if len(value) > limit:
        raise ValueError(f"{what} longer than {limit} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None


def _check_text(text: str, limit: int, what: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None
    if size > limit:
        raise ValueError(f"{what} longer than {limit} bytes")


def _check_address(address: Address) -> None:
    host, port = address
    ipaddress.ip_address(host)  # raises ValueError on junk
    _u16(port, "port")


def _encode_address(address: Address, xor_with: bytes | None) -> bytes:
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


def _decode_address(value: bytes, xor_with: bytes | None) -> Address:
    if len(value) < 4:
        raise ValueError("address attribute shorter than 4 bytes")
    family = value[1]
    port = int.from_bytes(value[2:4], "big")
    if family == AddressFamily.IPV4:
        _exact(value, 8, "IPv4 address attribute")
    elif family == AddressFamily.IPV6:
        _exact(value, 20, "IPv6 address attribute")
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
class _AddressAttribute(Attribute):
    address: Address

    XOR: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_address(self.address)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _encode_address(self.address, _COOKIE_BYTES + transaction_id if self.XOR else None)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_decode_address(value, _COOKIE_BYTES + transaction_id if cls.XOR else None))


@dataclass(frozen=True)
class MappedAddress(_AddressAttribute):
    """RFC 8489 §14.1: kept "for backward compatibility with RFC 3489 clients"."""

    TYPE = AttributeType.MAPPED_ADDRESS


@dataclass(frozen=True)
class XorMappedAddress(_AddressAttribute):
    """RFC 8489 §14.2: the reflexive address, XORed so ALGs leave it alone."""

    TYPE = AttributeType.XOR_MAPPED_ADDRESS
    XOR = True


@dataclass(frozen=True)
class AlternateServer(_AddressAttribute):
    """RFC 8489 §14.15: where a 300 (Try Alternate) sends the client."""

    TYPE = AttributeType.ALTERNATE_SERVER


@dataclass(frozen=True)
class ResponseOrigin(_AddressAttribute):
    """RFC 5780 §7.3: the address the response was sent from."""

    TYPE = AttributeType.RESPONSE_ORIGIN


@dataclass(frozen=True)
class OtherAddress(_AddressAttribute):
    """RFC 5780 §7.4: the server's alternate IP and port, for CHANGE-REQUEST."""

    TYPE = AttributeType.OTHER_ADDRESS


@dataclass(frozen=True)
class XorPeerAddress(_AddressAttribute):
    """RFC 8656 §18.3: a peer address as seen from the TURN server."""

    TYPE = AttributeType.XOR_PEER_ADDRESS
    XOR = True


@dataclass(frozen=True)
class XorRelayedAddress(_AddressAttribute):
    """RFC 8656 §18.5: the relayed transport address allocated to the client."""

    TYPE = AttributeType.XOR_RELAYED_ADDRESS
    XOR = True


@dataclass(frozen=True)
class _TextAttribute(Attribute):
    value: str

    LIMIT: ClassVar[int] = MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        _check_text(self.value, self.LIMIT, type(self).__name__)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_text(value, cls.LIMIT, cls.__name__))


@dataclass(frozen=True)
class Username(_TextAttribute):
    """RFC 8489 §14.3."""

    TYPE = AttributeType.USERNAME
    LIMIT = MAX_USERNAME_BYTES


@dataclass(frozen=True)
class Realm(_TextAttribute):
    """RFC 8489 §14.9."""

    TYPE = AttributeType.REALM


@dataclass(frozen=True)
class Nonce(_TextAttribute):
    """RFC 8489 §14.10."""

    TYPE = AttributeType.NONCE


@dataclass(frozen=True)
class Software(_TextAttribute):
    """RFC 8489 §14.14: the agent's name and version, for diagnostics only."""

    TYPE = AttributeType.SOFTWARE


@dataclass(frozen=True)
class AlternateDomain(_TextAttribute):
    """RFC 8489 §14.16: the domain name for the ALTERNATE-SERVER's certificate."""

    TYPE = AttributeType.ALTERNATE_DOMAIN


@dataclass(frozen=True)
class _BytesAttribute(Attribute):
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


@dataclass(frozen=True)
class UserHash(_BytesAttribute):
    """RFC 8489 §14.4: SHA-256(username ":" realm), for username anonymity."""

    TYPE = AttributeType.USERHASH
    SIZES = (32,)


@dataclass(frozen=True)
class MessageIntegrity(_BytesAttribute):
    """RFC 8489 §14.5: HMAC-SHA1 over the message up to this attribute."""

    TYPE = AttributeType.MESSAGE_INTEGRITY
    SIZES = (20,)


@dataclass(frozen=True)
class MessageIntegritySha256(_BytesAttribute):
    """RFC 8489 §14.6: HMAC-SHA256, "at least 16 and at most 32 bytes", a multiple of 4."""

    TYPE = AttributeType.MESSAGE_INTEGRITY_SHA256
    SIZES = (16, 20, 24, 28, 32)


@dataclass(frozen=True)
class Padding(_BytesAttribute):
    """RFC 5780 §7.6: pads a request to probe fragmentation."""

    TYPE = AttributeType.PADDING


@dataclass(frozen=True)
class Data(_BytesAttribute):
    """RFC 8656 §18.4: application data in Send and Data indications."""

    TYPE = AttributeType.DATA


@dataclass(frozen=True)
class ReservationToken(_BytesAttribute):
    """RFC 8656 §18.9: names a port reserved by EVEN-PORT."""

    TYPE = AttributeType.RESERVATION_TOKEN
    SIZES = (8,)


@dataclass(frozen=True)
class Fingerprint(Attribute):
    """RFC 8489 §14.7: CRC-32 of the message XORed with 0x5354554e."""

    TYPE = AttributeType.FINGERPRINT
    crc: int

    def __post_init__(self) -> None:
        _u32(self.crc, "FINGERPRINT")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.crc.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(_exact(value, 4, "FINGERPRINT"), "big"))


def _encode_code(code: int) -> bytes:
    # RFC 8489 §14.8: "The Class represents the hundreds digit of the error code.
    # The value MUST be between 3 and 6. The Number represents the binary encoding
    # of the error code modulo 100, and its value MUST be between 0 and 99."
    return bytes((code // 100, code % 100))


def _check_code(code: int) -> None:
    if not 300 <= code <= 699:
        raise ValueError(f"error code {code} is outside 300-699")


def _decode_code(class_byte: int, number: int) -> int:
    error_class = class_byte & 0x07
    if not 3 <= error_class <= 6 or number > 99:
        raise ValueError(f"invalid error code class {error_class} number {number}")
    return error_class * 100 + number


@dataclass(frozen=True)
class ErrorCode(Attribute):
    """RFC 8489 §14.8: a 300-699 code and a UTF-8 reason phrase."""

    TYPE = AttributeType.ERROR_CODE
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_text(self.reason, MAX_TEXT_BYTES, "ERROR-CODE reason")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"\x00\x00" + _encode_code(self.code) + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ValueError("ERROR-CODE shorter than 4 bytes")
        code = _decode_code(value[2], value[3])
        return cls(code, _text(value[4:], MAX_TEXT_BYTES, "ERROR-CODE reason"))


@dataclass(frozen=True)
class UnknownAttributes(Attribute):
    """RFC 8489 §14.13: the comprehension-required types a 420 response did not know."""

    TYPE = AttributeType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...]

    def __post_init__(self) -> None:
        for kind in self.types:
            _u16(kind, "attribute type")
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
        _u16(self.algorithm, "password algorithm")
        _u16(len(self.parameters), "password algorithm parameters length")

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
        flags = int.from_bytes(_exact(value, 4, "CHANGE-REQUEST"), "big")
        return cls(change_ip=bool(flags & 0x04), change_port=bool(flags & 0x02))


@dataclass(frozen=True)
class _PortAttribute(Attribute):
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
class ResponsePort(_PortAttribute):
    """RFC 5780 §7.5: send the response to this port instead of the source port."""

    TYPE = AttributeType.RESPONSE_PORT
    WHAT = "RESPONSE-PORT"
    port: int

    def __post_init__(self) -> None:
        _u16(self.port, "RESPONSE-PORT")

    def _number(self) -> int:
        return self.port

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(cls._decode_number(value))


@dataclass(frozen=True)
class ChannelNumber(_PortAttribute):
    """RFC 8656 §18.1: the channel number (0x4000-0x4FFF are valid; the relay checks)."""

    TYPE = AttributeType.CHANNEL_NUMBER
    WHAT = "CHANNEL-NUMBER"
    number: int

    def __post_init__(self) -> None:
        _u16(self.number, "CHANNEL-NUMBER")

    def _number(self) -> int:
        return self.number

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(_exact(value, 4, "CHANNEL-NUMBER")[:2], "big"))


@dataclass(frozen=True)
class DialBack(_PortAttribute):
    """Private: "please probe my observed IP at this port from another address".

    Comprehension-optional (0xC0DB), so servers that do not know it just answer
    the Binding request. The probe goes only to the requester's observed IP.
    """

    TYPE = AttributeType.DIAL_BACK
    WHAT = "DIAL-BACK"
    port: int

    def __post_init__(self) -> None:
        _u16(self.port, "DIAL-BACK port")

    def _number(self) -> int:
        return self.port

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(_exact(value, 4, "DIAL-BACK")[:2], "big"))


@dataclass(frozen=True)
class _U32Attribute(Attribute):
    value: int

    def __post_init__(self) -> None:
        _u32(self.value, type(self).__name__)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(_exact(value, 4, cls.__name__), "big"))


@dataclass(frozen=True)
class Lifetime(_U32Attribute):
    """RFC 8656 §18.2: allocation lifetime in seconds."""

    TYPE = AttributeType.LIFETIME

    @property
    def seconds(self) -> int:
        return self.value


@dataclass(frozen=True)
class Priority(_U32Attribute):
    """RFC 8445 §16.1: the candidate priority of a connectivity check."""

    TYPE = AttributeType.PRIORITY


@dataclass(frozen=True)
class _U64Attribute(Attribute):
    tie_breaker: int

    def __post_init__(self) -> None:
        if not 0 <= self.tie_breaker < 1 << 64:
            raise ValueError("tie-breaker is not a 64-bit value")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.tie_breaker.to_bytes(8, "big")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(_exact(value, 8, cls.__name__), "big"))


@dataclass(frozen=True)
class IceControlled(_U64Attribute):
    """RFC 8445 §16.1: the sender is the controlled agent (with its tie-breaker)."""

    TYPE = AttributeType.ICE_CONTROLLED


@dataclass(frozen=True)
class IceControlling(_U64Attribute):
    """RFC 8445 §16.1: the sender is the controlling agent (with its tie-breaker)."""

    TYPE = AttributeType.ICE_CONTROLLING


@dataclass(frozen=True)
class _FlagAttribute(Attribute):
    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _exact(value, 0, cls.__name__)
        return cls()


@dataclass(frozen=True)
class UseCandidate(_FlagAttribute):
    """RFC 8445 §16.1: the controlling agent nominates this pair."""

    TYPE = AttributeType.USE_CANDIDATE


@dataclass(frozen=True)
class DontFragment(_FlagAttribute):
    """RFC 8656 §18.8: set DF on relayed packets."""

    TYPE = AttributeType.DONT_FRAGMENT


@dataclass(frozen=True)
class _FamilyAttribute(Attribute):
    family: AddressFamily

    def __post_init__(self) -> None:
        AddressFamily(self.family)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(AddressFamily(_exact(value, 4, cls.__name__)[0]))


@dataclass(frozen=True)
class RequestedAddressFamily(_FamilyAttribute):
    """RFC 8656 §18.6: the address family of the relayed address wanted."""

    TYPE = AttributeType.REQUESTED_ADDRESS_FAMILY


@dataclass(frozen=True)
class AdditionalAddressFamily(_FamilyAttribute):
    """RFC 8656 §18.11: also allocate an address of this family (IPv6 only)."""

    TYPE = AttributeType.ADDITIONAL_ADDRESS_FAMILY


@dataclass(frozen=True)
class EvenPort(Attribute):
    """RFC 8656 §18.7: ask for an even relayed port, optionally reserving the next."""

    TYPE = AttributeType.EVEN_PORT
    reserve: bool = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        # "R: If 1, the server is requested to reserve the next-higher port number"
        return b"\x80" if self.reserve else b"\x00"

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(reserve=bool(_exact(value, 1, "EVEN-PORT")[0] & 0x80))


@dataclass(frozen=True)
class RequestedTransport(Attribute):
    """RFC 8656 §18.10: the relay transport protocol number (17 = UDP)."""

    TYPE = AttributeType.REQUESTED_TRANSPORT
    protocol: int

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFF:
            raise ValueError("protocol is not an 8-bit value")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.protocol, 0, 0, 0))

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_exact(value, 4, "REQUESTED-TRANSPORT")[0])


@dataclass(frozen=True)
class AddressErrorCode(Attribute):
    """RFC 8656 §18.12: why one address family of a dual allocation failed."""

    TYPE = AttributeType.ADDRESS_ERROR_CODE
    family: AddressFamily
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        AddressFamily(self.family)
        _check_code(self.code)
        _check_text(self.reason, MAX_TEXT_BYTES, "ADDRESS-ERROR-CODE reason")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0)) + _encode_code(self.code) + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ValueError("ADDRESS-ERROR-CODE shorter than 4 bytes")
        code = _decode_code(value[2], value[3])
        reason = _text(value[4:], MAX_TEXT_BYTES, "ADDRESS-ERROR-CODE reason")
        return cls(AddressFamily(value[0]), code, reason)


@dataclass(frozen=True)
class Icmp(Attribute):
    """RFC 8656 §18.13: an ICMP error the relay received for the peer."""

    TYPE = AttributeType.ICMP
    icmp_type: int
    icmp_code: int
    error_data: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.icmp_type <= 0xFF and 0 <= self.icmp_code <= 0xFF):
            raise ValueError("ICMP type and code are 8-bit values")
        _u32(self.error_data, "ICMP error data")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HBBI", 0, self.icmp_type, self.icmp_code, self.error_data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _, icmp_type, icmp_code, data = struct.unpack("!HBBI", _exact(value, 8, "ICMP"))
        return cls(icmp_type, icmp_code, data)


@dataclass(frozen=True)
class UnknownAttribute(Attribute):
    """Any attribute type we do not know, kept raw (RFC 8489 §14: 420 if comprehension-required)."""

    type: int
    value: bytes

    def __post_init__(self) -> None:
        _u16(self.type, "attribute type")
        _u16(len(self.value), "attribute length")

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
