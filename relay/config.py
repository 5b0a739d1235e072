"""What an operator configures for one TURN relay (``TurnServer``'s input).

Its own module so callers and the promotion code can build a configuration
without importing the server core; ``relay.server`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relay.allocation import DEFAULT_LIFETIME, MAX_LIFETIME, FiveTuple
from relay.auth import CredentialLookup
from relay.policy import PeerAddressPolicy
from relay.ports import DEFAULT_PORT_RANGE
from relay.quota import QuotaConfig

__all__ = ["TurnConfig"]


@dataclass(frozen=True)
class TurnConfig:
    """Operator configuration; ``credentials`` and ``quota`` are the injected policy."""

    realm: str
    credentials: CredentialLookup
    relay_ip: str  # where relayed sockets bind and what XOR-RELAYED-ADDRESS says
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    policy: PeerAddressPolicy = field(default_factory=PeerAddressPolicy)
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    default_lifetime: int = DEFAULT_LIFETIME
    max_lifetime: int = MAX_LIFETIME
    nonce_lifetime: float = 600.0
    software: str = "p2pnode relay"
    # Accept RFC 5766 channel numbers 0x5000-0x7FFF too (coturn's clients use them).
    legacy_channels: bool = False
    # Injected admission policy (as pion/turn injects its handlers): asked inside
    # Allocate, after authentication; False refuses the new allocation with 508
    # through the core's one response path. Existing allocations are not asked.
    admission: Callable[[FiveTuple], bool] | None = None
