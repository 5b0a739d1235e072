"""What the home and its peers agree on: the signed statements, one home's bounds,
its events and its statistics.

Split out of ``attach`` (the home's sans-IO core) because both sides use it: the
peer side (``homes``) signs ``attach_signed_bytes``/``watch_signed_bytes`` and the
home checks them; the node and its API read ``HomeConfig`` and ``HomeStatistics``
without the core. Each signed statement starts with its own context string and
names the home's key, so a signature for one home or one purpose is worth
nothing to another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ATTACH_CONTEXT",
    "WATCH_CONTEXT",
    "Address",
    "HomeConfig",
    "HomeEvent",
    "HomeStatistics",
    "LocalDelivery",
    "PeerAttached",
    "PeerDetached",
    "Random",
    "attach_signed_bytes",
    "watch_signed_bytes",
]

ATTACH_CONTEXT = b"p2pnode-attach-v1\x00"
WATCH_CONTEXT = b"p2pnode-watch-v1\x00"

Address = tuple[str, int]
Random = Callable[[int], bytes]


def attach_signed_bytes(home_key: bytes, nonce: bytes, peer_key: bytes, keepalive_ms: int) -> bytes:
    """What a peer signs to attach: bound to this home, its fresh nonce and the interval."""
    return ATTACH_CONTEXT + home_key + nonce + peer_key + keepalive_ms.to_bytes(8, "big")


def watch_signed_bytes(home_key: bytes, target_key: bytes, timestamp: int) -> bytes:
    """What a watcher signs: this home, the target, the time (checked within ``watch_skew``)."""
    return WATCH_CONTEXT + home_key + target_key + timestamp.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class HomeConfig:
    """Bounds and timers of one home; the defaults suit a supernode core."""

    max_attached: int = 100_000
    min_keepalive: float = 1.0
    max_keepalive: float = 25.0
    grace: float = 5.0  # a session is lost after keepalive + grace without a keepalive
    challenge_period: float = 30.0
    deliver_retransmit: float = 0.4
    deliver_timeout: float = 1.5
    max_pending: int = 4096
    max_pending_per_recipient: int = 32
    send_rate: float = 50.0  # envelopes per second per sender host
    send_burst: float = 200.0
    recipient_rate: float = 50.0  # envelopes per second per recipient key
    recipient_burst: float = 200.0
    control_rate: float = 20.0  # HELLO/ATTACH/WATCH per second per host (signatures cost CPU)
    control_burst: float = 60.0
    watch_skew: float = 300.0


@dataclass(frozen=True, slots=True)
class PeerAttached:
    key: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class PeerDetached:
    key: bytes
    reason: str  # "detached", "timed out"


@dataclass(frozen=True, slots=True)
class LocalDelivery:
    """An envelope for this home's own key (a public node is its own home)."""

    envelope: bytes
    source: Address


HomeEvent = PeerAttached | PeerDetached | LocalDelivery


@dataclass(frozen=True, slots=True)
class HomeStatistics:
    attached: int
    pending: int
    watches: int
    forwarded: int
    delivered: int
    not_attached: int
    no_answer: int
    refused: tuple[tuple[str, int], ...]  # (code name, count)
    dropped: tuple[tuple[str, int], ...]  # (reason, count)
    watches_renewed: int = 0  # WATCH requests that renewed a lease
    watches_admitted: int = 0  # refused watchers let in by an allow-list change, told at once
