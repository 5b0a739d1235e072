"""What the peer side of the home protocol reports, and how it is configured.

Split out of :mod:`homes` (the ``PeerCore`` state machine) so that the services
reading these events (signalling, presence) need not know the core: frozen
dataclasses only, one union ``PeerEvent``.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.connectivity.contact import HomeEntry
from p2pnode.connectivity.homeslot import DEFAULT_KEEPALIVE
from p2pnode.connectivity.homewire import Code

__all__ = [
    "Delivered",
    "HomeAttached",
    "HomeLost",
    "HomesChanged",
    "NeedCandidates",
    "PeerConfig",
    "PeerEvent",
    "PresenceNotice",
    "SendDone",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    wanted: int = 2
    keepalive: float = DEFAULT_KEEPALIVE
    keepalive_timeout: float = 3.0  # silence after a keepalive before the home is lost
    attach_timeout: float = 3.0
    retransmit: float = 0.5
    send_timeout: float = 2.5  # per home: its delivery timeout (1.5 s) plus round trips
    failure_backoff: float = 60.0
    watch_refresh: float = 20.0


@dataclass(frozen=True, slots=True)
class HomeAttached:
    home: HomeEntry
    observed: Address  # our address as the home sees it (our NAT's mapping)
    keepalive: float


@dataclass(frozen=True, slots=True)
class HomeLost:
    home: HomeEntry
    reason: str


@dataclass(frozen=True, slots=True)
class HomesChanged:
    homes: tuple[HomeEntry, ...]  # attached now, in slot order


@dataclass(frozen=True, slots=True)
class NeedCandidates:
    """Fewer usable candidates than slots to fill: find more supernodes."""


@dataclass(frozen=True, slots=True)
class Delivered:
    envelope: bytes
    home: HomeEntry


@dataclass(frozen=True, slots=True)
class SendDone:
    handle: int
    delivered: bool
    via: Address | None
    attempts: tuple[tuple[Address, str], ...]  # (home, outcome) in order tried


@dataclass(frozen=True, slots=True)
class PresenceNotice:
    target: bytes
    home: Address
    code: Code
    attached: bool
    presence: bytes


PeerEvent = (
    HomeAttached | HomeLost | HomesChanged | NeedCandidates | Delivered | SendDone | PresenceNotice
)
