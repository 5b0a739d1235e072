"""RFC 8656 (TURN) and RFC 8445 (ICE) attributes; re-exported by ``nat.stun.attributes``."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from nat.stun.attribute_base import (
    MAX_TEXT_BYTES,
    AddressAttribute,
    AddressFamily,
    Attribute,
    AttributeType,
    BytesAttribute,
    FamilyAttribute,
    FlagAttribute,
    PortAttribute,
    U32Attribute,
    U64Attribute,
    check_error_code,
    check_text,
    check_u16,
    check_u32,
    decode_error_code,
    decode_text,
    encode_error_code,
    exact_length,
)

__all__ = [
    "AdditionalAddressFamily",
    "AddressErrorCode",
    "ChannelNumber",
    "Data",
    "DontFragment",
    "EvenPort",
    "IceControlled",
    "IceControlling",
    "Icmp",
    "Lifetime",
    "Priority",
    "RequestedAddressFamily",
    "RequestedTransport",
    "ReservationToken",
    "UseCandidate",
    "XorPeerAddress",
    "XorRelayedAddress",
]


@dataclass(frozen=True)
class XorPeerAddress(AddressAttribute):
    """RFC 8656 §18.3: a peer address as seen from the TURN server."""

    TYPE = AttributeType.XOR_PEER_ADDRESS
    XOR = True


@dataclass(frozen=True)
class XorRelayedAddress(AddressAttribute):
    """RFC 8656 §18.5: the relayed transport address allocated to the client."""

    TYPE = AttributeType.XOR_RELAYED_ADDRESS
    XOR = True


@dataclass(frozen=True)
class Data(BytesAttribute):
    """RFC 8656 §18.4: application data in Send and Data indications."""

    TYPE = AttributeType.DATA


@dataclass(frozen=True)
class ReservationToken(BytesAttribute):
    """RFC 8656 §18.9: names a port reserved by EVEN-PORT."""

    TYPE = AttributeType.RESERVATION_TOKEN
    SIZES = (8,)


@dataclass(frozen=True)
class ChannelNumber(PortAttribute):
    """RFC 8656 §18.1: the channel number (0x4000-0x4FFF are valid; the relay checks)."""

    TYPE = AttributeType.CHANNEL_NUMBER
    WHAT = "CHANNEL-NUMBER"
    number: int

    def __post_init__(self) -> None:
        check_u16(self.number, "CHANNEL-NUMBER")

    def _number(self) -> int:
        return self.number

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(int.from_bytes(exact_length(value, 4, "CHANNEL-NUMBER")[:2], "big"))


@dataclass(frozen=True)
class Lifetime(U32Attribute):
    """RFC 8656 §18.2: allocation lifetime in seconds."""

    TYPE = AttributeType.LIFETIME

    @property
    def seconds(self) -> int:
        return self.value


@dataclass(frozen=True)
class Priority(U32Attribute):
    """RFC 8445 §16.1: the candidate priority of a connectivity check."""

    TYPE = AttributeType.PRIORITY


@dataclass(frozen=True)
class IceControlled(U64Attribute):
    """RFC 8445 §16.1: the sender is the controlled agent (with its tie-breaker)."""

    TYPE = AttributeType.ICE_CONTROLLED


@dataclass(frozen=True)
class IceControlling(U64Attribute):
    """RFC 8445 §16.1: the sender is the controlling agent (with its tie-breaker)."""

    TYPE = AttributeType.ICE_CONTROLLING


@dataclass(frozen=True)
class UseCandidate(FlagAttribute):
    """RFC 8445 §16.1: the controlling agent nominates this pair."""

    TYPE = AttributeType.USE_CANDIDATE


@dataclass(frozen=True)
class DontFragment(FlagAttribute):
    """RFC 8656 §18.8: set DF on relayed packets."""

    TYPE = AttributeType.DONT_FRAGMENT


@dataclass(frozen=True)
class RequestedAddressFamily(FamilyAttribute):
    """RFC 8656 §18.6: the address family of the relayed address wanted."""

    TYPE = AttributeType.REQUESTED_ADDRESS_FAMILY


@dataclass(frozen=True)
class AdditionalAddressFamily(FamilyAttribute):
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
        return cls(reserve=bool(exact_length(value, 1, "EVEN-PORT")[0] & 0x80))


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
        return cls(exact_length(value, 4, "REQUESTED-TRANSPORT")[0])


@dataclass(frozen=True)
class AddressErrorCode(Attribute):
    """RFC 8656 §18.12: why one address family of a dual allocation failed."""

    TYPE = AttributeType.ADDRESS_ERROR_CODE
    family: AddressFamily
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        AddressFamily(self.family)
        check_error_code(self.code)
        check_text(self.reason, MAX_TEXT_BYTES, "ADDRESS-ERROR-CODE reason")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0)) + encode_error_code(self.code) + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ValueError("ADDRESS-ERROR-CODE shorter than 4 bytes")
        code = decode_error_code(value[2], value[3])
        reason = decode_text(value[4:], MAX_TEXT_BYTES, "ADDRESS-ERROR-CODE reason")
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
        check_u32(self.error_data, "ICMP error data")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HBBI", 0, self.icmp_type, self.icmp_code, self.error_data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        _, icmp_type, icmp_code, data = struct.unpack("!HBBI", exact_length(value, 8, "ICMP"))
        return cls(icmp_type, icmp_code, data)
