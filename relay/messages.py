"""What the TURN core tells its runner to do, its errors, and its statistics snapshot.

Outputs are frozen dataclasses (STYLE 5); the runner executes them in order.
The two per-packet paths (ChannelData and peer datagrams) return plain tuples
instead, to stay allocation-light.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.allocation import FiveTuple

__all__ = [
    "CloseRelay",
    "OpenRelay",
    "Output",
    "RelayStatistics",
    "ToClient",
    "ToPeer",
    "TurnErrorCode",
]

Address = tuple[str, int]


class TurnErrorCode(enum.IntEnum):
    """RFC 8489 §14.8 and RFC 8656 §19: every error the relay answers with; reason phrases
    are the RFC's."""

    BAD_REQUEST = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNKNOWN_ATTRIBUTE = 420
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    ALLOCATION_QUOTA_REACHED = 486
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    TurnErrorCode.BAD_REQUEST: "Bad Request",
    TurnErrorCode.UNAUTHENTICATED: "Unauthenticated",
    TurnErrorCode.FORBIDDEN: "Forbidden",
    TurnErrorCode.UNKNOWN_ATTRIBUTE: "Unknown Attribute",
    TurnErrorCode.ALLOCATION_MISMATCH: "Allocation Mismatch",
    TurnErrorCode.STALE_NONCE: "Stale Nonce",
    TurnErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED: "Address Family not Supported",
    TurnErrorCode.WRONG_CREDENTIALS: "Wrong Credentials",
    TurnErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL: "Unsupported Transport Protocol",
    TurnErrorCode.PEER_ADDRESS_FAMILY_MISMATCH: "Peer Address Family Mismatch",
    TurnErrorCode.ALLOCATION_QUOTA_REACHED: "Allocation Quota Reached",
    TurnErrorCode.SERVER_ERROR: "Server Error",
    TurnErrorCode.INSUFFICIENT_CAPACITY: "Insufficient Capacity",
}


@dataclass(frozen=True, slots=True)
class ToClient:
    """Send ``data`` to the client over the transport connection of ``five_tuple``."""

    five_tuple: FiveTuple
    data: bytes


@dataclass(frozen=True, slots=True)
class ToPeer:
    """Send ``data`` from the relayed address ``relayed`` to ``peer`` (UDP)."""

    relayed: Address
    peer: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class OpenRelay:
    """Bind a UDP socket on ``address`` for the allocation of ``five_tuple``; report back with
    ``TurnServer.relay_opened`` or ``TurnServer.relay_open_failed``."""

    five_tuple: FiveTuple
    address: Address


@dataclass(frozen=True, slots=True)
class CloseRelay:
    """Close the relayed socket bound on ``address`` (its allocation is gone)."""

    address: Address


Output = ToClient | ToPeer | OpenRelay | CloseRelay


@dataclass(frozen=True)
class RelayStatistics:
    """A snapshot of the relay's counters (for metrics, the relay advert and tests)."""

    allocations: int
    allocations_created: int
    permissions: int
    channels: int
    packets_to_peer: int
    bytes_to_peer: int
    packets_to_client: int
    bytes_to_client: int
    dropped_over_bandwidth: int
    refusals: tuple[tuple[int, int], ...]  # (error code, count), by code
    drops: tuple[tuple[str, int], ...]  # (reason, count): malformed or unrelayable input

    def refused(self, code: int) -> int:
        return dict(self.refusals).get(code, 0)

    def dropped(self, reason: str) -> int:
        return dict(self.drops).get(reason, 0)
