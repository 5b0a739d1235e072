"""One service's share of the signalling: its own inbox, its own ``SignalTransport``.

PeerLink ("link"), chat ("chat") and calls ("call") each take a channel of the
node's ``SignallingService``: what they send is sealed with the channel's name
(inside the signed part of the envelope), and what arrives for that name goes
to that channel's inbox only, so one service never reads another's signals.
A delivery for a channel nobody opened is dropped and counted.

Bounded: ``INBOX_SIZE`` deliveries wait per channel; beyond that the service
drops (and counts) what arrives until the channel's owner reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from p2pnode.connectivity.envelope import MAX_CHANNEL_BYTES
from p2pnode.connectivity.link_signal import SignalDelivery
from p2pnode.connectivity.signalling_events import SendReport

__all__ = ["INBOX_SIZE", "MAX_CHANNELS", "SignalChannel", "SignalChannels"]

INBOX_SIZE = 256  # received signals waiting for receive(), per channel
MAX_CHANNELS = 16

Send = Callable[[bytes | str, bytes, str], Awaitable[SendReport]]


class SignalChannel:
    """A ``link_signal.SignalTransport`` for one named service."""

    def __init__(self, name: str, send: Send) -> None:
        self.name = name
        self._send = send
        self.inbox: asyncio.Queue[SignalDelivery] = asyncio.Queue(INBOX_SIZE)

    async def send_signal(self, peer: bytes | str, payload: bytes) -> SendReport:
        """Seal ``payload`` to ``peer``'s channel of the same name; which home delivered
        it, or ``PeerUnreachableError``."""
        return await self._send(peer, payload, self.name)

    async def send(self, peer: str, payload: bytes) -> None:
        """``SignalTransport.send``."""
        await self._send(peer, payload, self.name)

    async def receive(self) -> SignalDelivery:
        """The next signal for this channel, its sender authenticated."""
        return await self.inbox.get()


class SignalChannels:
    """The channels of one service: the default ("") always, others opened by name."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._channels = {"": SignalChannel("", send)}

    def open(self, name: str) -> SignalChannel:
        """The channel ``name``, created on first use (at most ``MAX_CHANNELS``)."""
        existing = self._channels.get(name)
        if existing is not None:
            return existing
        if len(self._channels) >= MAX_CHANNELS:
            raise OverflowError(f"more than {MAX_CHANNELS} signalling channels")
        if not name.isascii() or len(name) > MAX_CHANNEL_BYTES:
            raise ValueError(f"a channel is at most {MAX_CHANNEL_BYTES} ASCII characters")
        self._channels[name] = SignalChannel(name, self._send)
        return self._channels[name]

    def get(self, name: str) -> SignalChannel | None:
        return self._channels.get(name)
