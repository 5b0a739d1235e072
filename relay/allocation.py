"""One TURN allocation: its 5-tuple, relayed address, lifetime, permissions and channels.

RFC 8656 §2.2/§3: an allocation is identified by the client's 5-tuple and owns
one relayed transport address; permissions (by peer IP, 300 s) and channel
bindings (channel number <-> peer transport address, 600 s) live inside it.

Invariants:
- expiry is checked lazily against ``now`` on every use, so a sweep that runs
  late never relays for an expired permission, channel or allocation;
- ``permissions`` and ``channels`` never exceed the caps the server passes in;
- a channel stays reserved for ``CHANNEL_COOLDOWN`` seconds after it expires
  (RFC 8656 §12: no rebinding to another peer during that time).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from relay.quota import TokenBucket

__all__ = [
    "CHANNEL_COOLDOWN",
    "CHANNEL_LIFETIME",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "PERMISSION_LIFETIME",
    "Allocation",
    "BindResult",
    "ChannelBinding",
    "FiveTuple",
    "PendingAllocate",
    "Transport",
]

Address = tuple[str, int]

# RFC 8656 §3.2: "the default lifetime of an allocation is 10 minutes";
# §7.2: "The server MAY ... a maximum ... the RECOMMENDED value is 3600 seconds".
DEFAULT_LIFETIME = 600
MAX_LIFETIME = 3600
# RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds (= 5 minutes)."
PERMISSION_LIFETIME = 300
# RFC 8656 §12: "A channel binding lasts for 10 minutes unless refreshed."
CHANNEL_LIFETIME = 600
# RFC 8656 §12: "the server MUST NOT ... bind the channel number to a different
# transport address, or the transport address to a different channel number,
# for a period of 5 minutes after the binding expires" (paraphrased: the same
# cool-down applies both ways).
CHANNEL_COOLDOWN = 300


class Transport(enum.IntEnum):
    """The client-to-server transport of a 5-tuple, by IANA protocol number.

    An IntEnum because its hash is int's (C) hash: every relayed packet hashes a
    5-tuple, and ``Enum.__hash__`` is Python code.
    """

    UDP = 17
    TCP = 6


class FiveTuple(NamedTuple):
    """RFC 8656 §2.2: client address, server address and transport name an allocation.

    A NamedTuple (not a dataclass) because the hot path builds one per packet.
    """

    transport: Transport
    client: Address
    server: Address


@dataclass(frozen=True)
class PendingAllocate:
    """What the Allocate success response needs once the relayed socket is open."""

    transaction_id: bytes
    lifetime: int
    integrity_sha256: bool
    fingerprint: bool
    even_port: bool
    bind_attempts: int
    ipv6_refused: bool = False


class BindResult(enum.Enum):
    OK = "ok"
    NUMBER_BOUND_ELSEWHERE = "channel number bound to another peer"
    PEER_BOUND_ELSEWHERE = "peer bound to another channel number"
    FULL = "too many channels"


class ChannelBinding:
    """Mutable: refreshed in place by ChannelBind (slots: one per channel, hot-path lookups)."""

    __slots__ = ("expiry", "number", "peer")

    def __init__(self, number: int, peer: Address, expiry: float) -> None:
        self.number = number
        self.peer = peer
        self.expiry = expiry


class Allocation:
    """All state of one allocation; the server core is its only writer."""

    __slots__ = (
        "channels",
        "credential_identity",
        "expiry",
        "five_tuple",
        "integrity_key",
        "peer_channels",
        "pending",
        "permissions",
        "port",
        "relayed",
        "success_response",
        "to_client_bucket",
        "to_peer_bucket",
        "transaction_id",
        "username",
    )

    def __init__(
        self,
        five_tuple: FiveTuple,
        *,
        username: str,
        identity: str,
        integrity_key: bytes,
        port: int,
        lifetime: int,
        now: float,
        bandwidth: float,
        burst: float,
        pending: PendingAllocate,
    ) -> None:
        self.five_tuple = five_tuple
        self.username = username
        self.credential_identity = identity
        self.integrity_key = integrity_key
        self.port = port
        self.relayed: Address | None = None
        self.expiry = now + lifetime
        self.pending: PendingAllocate | None = pending
        self.transaction_id = pending.transaction_id
        self.success_response = b""
        # peer IP -> expiry time
        self.permissions: dict[str, float] = {}
        self.channels: dict[int, ChannelBinding] = {}
        self.peer_channels: dict[Address, ChannelBinding] = {}
        self.to_peer_bucket = TokenBucket(bandwidth, bandwidth * burst, now)
        self.to_client_bucket = TokenBucket(bandwidth, bandwidth * burst, now)

    def refresh(self, lifetime: int, now: float) -> None:
        self.expiry = now + lifetime

    def has_permission(self, ip: str, now: float) -> bool:
        expiry = self.permissions.get(ip)
        return expiry is not None and expiry > now

    def can_add_permissions(self, ips: set[str], now: float, cap: int) -> bool:
        """All-or-nothing capacity check for one CreatePermission (RFC 8656 §9.2)."""
        live = {ip for ip, expiry in self.permissions.items() if expiry > now}
        return len(live | ips) <= cap

    def install_permission(self, ip: str, now: float) -> None:
        """RFC 8656 §9.2: install or refresh; expired entries are reused in place."""
        self.permissions[ip] = now + PERMISSION_LIFETIME

    def bind_channel(self, number: int, peer: Address, now: float, cap: int) -> BindResult:
        """RFC 8656 §11.2: check the rebinding rules, then install or refresh the binding."""
        by_number = self.channels.get(number)
        by_peer = self.peer_channels.get(peer)
        # A binding (live or cooling down) blocks other pairings until fully released.
        if by_number is not None and by_number.peer != peer:
            if by_number.expiry + CHANNEL_COOLDOWN > now:
                return BindResult.NUMBER_BOUND_ELSEWHERE
            self._forget_channel(by_number)
            by_number = None
        if by_peer is not None and by_peer.number != number:
            if by_peer.expiry + CHANNEL_COOLDOWN > now:
                return BindResult.PEER_BOUND_ELSEWHERE
            self._forget_channel(by_peer)
            by_peer = None
        if by_number is not None:
            by_number.expiry = now + CHANNEL_LIFETIME
            return BindResult.OK
        if len(self.channels) >= cap:
            self.sweep(now)
            if len(self.channels) >= cap:
                return BindResult.FULL
        binding = ChannelBinding(number, peer, now + CHANNEL_LIFETIME)
        self.channels[number] = binding
        self.peer_channels[peer] = binding
        return BindResult.OK

    def _forget_channel(self, binding: ChannelBinding) -> None:
        self.channels.pop(binding.number, None)
        if self.peer_channels.get(binding.peer) is binding:
            del self.peer_channels[binding.peer]

    def sweep(self, now: float) -> float:
        """Drop expired permissions and cooled-down channels; return the next deadline."""
        deadline = self.expiry
        for ip, expiry in list(self.permissions.items()):
            if expiry <= now:
                del self.permissions[ip]
            else:
                deadline = min(deadline, expiry)
        for binding in list(self.channels.values()):
            release = binding.expiry + CHANNEL_COOLDOWN
            if release <= now:
                self._forget_channel(binding)
            else:
                deadline = min(deadline, binding.expiry if binding.expiry > now else release)
        return deadline

    def live_channels(self, now: float) -> int:
        return sum(1 for binding in self.channels.values() if binding.expiry > now)

    def live_permissions(self, now: float) -> int:
        return sum(1 for expiry in self.permissions.values() if expiry > now)
