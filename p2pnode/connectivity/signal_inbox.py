"""What arrives for us: a sealed envelope opened, checked against replay, put in its channel.

Split out of :mod:`signalling` (the asyncio adapter): this is the receiving
half's policy, with no socket. An envelope becomes a ``SignalDelivery`` only if
it opens with our key (confidential to us, the sender's signature inside), is
fresh in the replay window, names a channel some service opened, and that
channel's inbox has room; each refusal is dropped and counted by reason
(``refused``), never raised: envelopes come from anyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nat.drops import DropCounter
from p2pnode.connectivity.envelope import EnvelopeDecodeError, open_envelope
from p2pnode.connectivity.link_signal import SignalDelivery
from p2pnode.connectivity.replay import ReplayVerdict, ReplayWindow
from p2pnode.connectivity.signal_channel import SignalChannels
from p2pnode.identity import Identity, peer_id_for

__all__ = ["SignalInbox"]


class SignalInbox:
    """Opens, de-duplicates and files the envelopes delivered to one identity."""

    def __init__(
        self,
        identity: Identity,
        channels: SignalChannels,
        refused: DropCounter,
        clock: Callable[[], float],
    ) -> None:
        self._identity = identity
        self._x25519 = identity.x25519_private_key()
        self._channels = channels
        self._refused = refused
        self._clock = clock
        self._replay = ReplayWindow()
        self.received = 0

    def accept(self, envelope: bytes) -> None:
        """File ``envelope`` in its channel's inbox, or drop it and count why."""
        try:
            opened = open_envelope(envelope, self._identity, self._x25519)
        except EnvelopeDecodeError as error:
            self._refused.drop("envelope", str(error))
            return
        verdict = self._replay.check(
            opened.sender, opened.envelope_id, opened.timestamp_ms / 1000, self._clock()
        )
        if verdict is not ReplayVerdict.FRESH:
            self._refused.drop(f"envelope {verdict.value}")
            return
        channel = self._channels.get(opened.channel)
        if channel is None:
            self._refused.drop("envelope for a channel nobody opened")
            return
        try:
            channel.inbox.put_nowait(SignalDelivery(peer_id_for(opened.sender), opened.payload))
        except asyncio.QueueFull:
            self._refused.drop("inbox full")
            return
        self.received += 1
