"""Chat envelopes over the connectivity layer's sealed signalling (the online path).

The signalling inbox is shared with calls and PeerLink, so a chat payload is
tagged: ``CHAT_SIGNAL_TAG`` starts with 0xc1, a byte msgpack never uses, so no
call or link signal (all msgpack) can be mistaken for chat or the reverse.

Invariants:
- ``online_sender`` never raises for an unreachable peer or an envelope too
  large for a signal: it returns False and the outbox deposits in mailboxes.
- ``chat_envelope`` accepts a delivery only when the signalling's authenticated
  sender is the envelope's sender; anything else is None (not chat) or
  ``ChatSignalRefusedError`` (chat, but forged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from p2pnode.connectivity.envelope import MAX_PAYLOAD_BYTES
from p2pnode.connectivity.link_signal import SignalDelivery
from p2pnode.connectivity.signalling_events import PeerUnreachableError
from p2pnode.identity import public_key_from_peer_id
from p2pnode.sessions.chat_message import ChatDecodeError, decode_envelope

__all__ = [
    "CHAT_SIGNAL_TAG",
    "MAX_ONLINE_ENVELOPE",
    "ChatSignalRefusedError",
    "SignalSender",
    "chat_envelope",
    "online_sender",
]

CHAT_SIGNAL_TAG = b"\xc1chat1"
MAX_ONLINE_ENVELOPE = MAX_PAYLOAD_BYTES - len(CHAT_SIGNAL_TAG)


class ChatSignalRefusedError(ValueError):
    """A tagged chat payload whose envelope is malformed or not from the proven sender."""


class SignalSender(Protocol):
    """What we need of ``connectivity.signalling.SignallingService``."""

    async def send_signal(self, peer: bytes | str, payload: bytes) -> object: ...


def online_sender(signalling: SignalSender) -> Callable[[bytes, bytes], Awaitable[bool]]:
    """A ``messaging.SendSignal`` over sealed signalling: True once a home delivered it."""

    async def send(peer: bytes, envelope: bytes) -> bool:
        if len(envelope) > MAX_ONLINE_ENVELOPE:
            return False  # long texts go by mailbox only
        try:
            await signalling.send_signal(peer, CHAT_SIGNAL_TAG + envelope)
        except (PeerUnreachableError, OSError, TimeoutError):
            return False
        return True

    return send


def chat_envelope(delivery: SignalDelivery) -> bytes | None:
    """The chat envelope in ``delivery``, None if it is not chat."""
    if not delivery.payload.startswith(CHAT_SIGNAL_TAG):
        return None
    envelope = delivery.payload[len(CHAT_SIGNAL_TAG) :]
    try:
        sender = public_key_from_peer_id(delivery.sender)
        decoded = decode_envelope(envelope)
    except (ValueError, ChatDecodeError):
        raise ChatSignalRefusedError("malformed chat signal") from None
    if decoded.sender != sender:
        raise ChatSignalRefusedError("envelope sender is not the signal's sender")
    return envelope
