"""What the signalling service reports: its events, results, errors and statistics.

Events are frozen dataclasses of text and numbers only (peer ids, "host:port"),
so the runtime can send them as JSON on its event stream as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from p2pnode.connectivity.attach import HomeStatistics
from p2pnode.connectivity.contact import ContactDecodeError, decode_presence

__all__ = [
    "ContactPublished",
    "HomeDown",
    "HomeUp",
    "PeerAttachedHere",
    "PeerLeftHere",
    "PeerUnreachableError",
    "PresenceChanged",
    "SendReport",
    "SignallingStatistics",
    "address_text",
    "presence_report",
]

Address = tuple[str, int]


class PeerUnreachableError(Exception):
    """No home of the peer took the envelope; ``attempts`` says what each answered."""

    def __init__(self, peer: str, attempts: tuple[tuple[Address, str], ...], reason: str) -> None:
        tried = ", ".join(f"{h}:{p} {outcome}" for (h, p), outcome in attempts) or "no homes"
        super().__init__(f"peer {peer[:12]}... unreachable: {reason} ({tried})")
        self.peer = peer
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class SendReport:
    via: Address  # the home that delivered it
    attempts: tuple[tuple[Address, str], ...]


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    peer: str
    online: bool
    status: str  # PresenceStatus name, lower case ("offline" when not attached anywhere)
    note: str


@dataclass(frozen=True, slots=True)
class HomeUp:
    """We attached to a home (events carry text only: the runtime sends them as JSON)."""

    home: str  # the home's peer id
    signal: str  # its signalling address, "host:port"
    observed: str  # our address as the home sees it (our NAT's mapping)
    keepalive: float


@dataclass(frozen=True, slots=True)
class HomeDown:
    home: str
    signal: str
    reason: str


@dataclass(frozen=True, slots=True)
class PeerAttachedHere:
    """A peer attached to this node as its home."""

    peer: str
    address: str


@dataclass(frozen=True, slots=True)
class PeerLeftHere:
    peer: str
    reason: str  # "detached", "timed out"


@dataclass(frozen=True, slots=True)
class ContactPublished:
    homes: tuple[str, ...]  # the homes' signalling addresses, "host:port"
    stored: int  # DHT nodes that hold it


@dataclass(frozen=True, slots=True)
class SignallingStatistics:
    homes: int
    sent: int
    unreachable: int
    received: int
    refused: tuple[tuple[str, int], ...]  # received envelopes refused, by reason
    dropped: tuple[tuple[str, int], ...]  # datagrams dropped by the peer core, by reason
    home: HomeStatistics | None  # when this node serves as a home


def address_text(address: Address) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def presence_report(peer: str, homes: Iterable[tuple[bool, bytes]]) -> PresenceChanged:
    """What the watched peer's homes say, combined: online while attached at any home,
    with the status it gave them (the longest payload: an empty one means none set)."""
    online = [presence for attached, presence in homes if attached]
    if not online:
        return PresenceChanged(peer, False, "offline", "")
    status, note = "online", ""
    with contextlib.suppress(ContactDecodeError):
        decoded = decode_presence(max(online, key=len))
        status, note = decoded.status.name.lower(), decoded.note
    return PresenceChanged(peer, True, status, note)
