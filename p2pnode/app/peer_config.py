"""The ``[presence]`` section: how a node is reached (home supernodes, sealed signalling).

Why a role and not a flag per part: a node either serves as a home (a public
node is its own home and forwards others' envelopes) or attaches to two homes
(everyone behind NAT). ``auto`` takes the verdict the operator gave at start
(``supernode.public_ip`` set: serve); a node attaching to homes is useless in
others' routing tables, so ``peer_services.effective_config`` puts its DHT in client mode
before the DHT starts (the DHT's client mode is fixed at construction).

Off by default: a node hosts signalling only when its operator asks for it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from p2pnode.app.config_types import (
    IpHostPort,
    IpText,
    PeerIdText,
    check_ip_hostport,
    check_peer_id,
)

__all__ = ["CallsSection", "ChatSection", "MailboxSection", "PresenceSection"]


HostPort = IpHostPort


class PresenceSection(BaseModel):
    """Signalling, presence and peer links (``p2pnode ping``, ``presence``, ``contacts``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="host the signalling service")
    listen: HostPort = Field("0.0.0.0:0", description="UDP address of the signalling socket")
    advertise: IpText | None = Field(
        None, description="public IP of the signalling socket (serving nodes on a wildcard)"
    )
    home: Literal["auto", "serve", "attach"] = Field(
        "auto", description="serve as a home, attach to two, or auto (serve when public_ip)"
    )
    homes: tuple[PeerIdText, ...] = Field(
        (), description="home supernodes to attach to (default: found by the relay search)"
    )
    status: Literal["online", "away", "busy"] = Field("online", description="status at start")
    note: str = Field("", max_length=140, description="presence note at start")
    keepalive: float | None = Field(
        None, ge=1.0, le=25.0, description="seconds between keepalives (default 20)"
    )
    max_attached: int = Field(100_000, ge=1, description="peers a home holds at most")
    control_rate: float = Field(
        20.0, gt=0, description="HELLO/ATTACH/WATCH per second per host at a home"
    )
    link_idle: float = Field(
        30.0, gt=0, le=3600, description="seconds an answered idle peer link is kept"
    )


def _check_mailbox(text: str) -> str:
    """PEERID@HOST:PORT: a mailbox supernode's key and its TCP address."""
    peer_id, sep, address = text.partition("@")
    if not sep:
        raise ValueError("not PEERID@HOST:PORT")
    check_peer_id(peer_id)
    check_ip_hostport(address)
    return text


MailboxText = Annotated[str, AfterValidator(_check_mailbox)]


class MailboxSection(BaseModel):
    """A supernode keeping others' offline messages (SQLite in the home, 30 days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serve: bool = Field(False, description="run a mailbox server")
    listen: HostPort = Field("0.0.0.0:0", description="TCP address of the mailbox server")
    advertise: IpText | None = Field(
        None,
        description="IP published in our mailbox offer (default: the listen IP, else "
        "supernode.public_ip, else presence.advertise; none known: no offer)",
    )


class ChatSection(BaseModel):
    """End-to-end encrypted messages (online through the homes, else by mailboxes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="host the messaging service (needs [presence])")
    mailboxes: tuple[MailboxText, ...] = Field(
        (),
        max_length=8,
        description="pinned mailboxes, PEERID@HOST:PORT (fewer than 3: found in the network)",
    )
    drain_every: float = Field(60.0, gt=0, description="seconds between mailbox polls")
    retry_first: float = Field(2.0, gt=0, description="first outbox retry, seconds")


class CallsSection(BaseModel):
    """Audio (and video) calls over peer connections (needs [presence])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="host the call service")
    auto_answer: bool = Field(False, description="answer every call (gateways, tests)")
    answer_tone: float | None = Field(
        None, gt=0, lt=8000, description="answered calls hear this tone (Hz); default silence"
    )
    record: bool = Field(False, description="record answered calls to <home>/calls/*.wav")
    non_contacts: Literal["ring", "request", "refuse"] = Field(
        "ring", description="calls from peers not in contacts"
    )
