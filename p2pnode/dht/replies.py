"""Whether a reply answers the request it names: address, key, type, signatures.

The reply half of the core's dispatch (``protocol``) first asks this module;
only a reply that passes completes its request. Kept apart because it is one
question with a yes/no answer and several ways to fail, each a drop reason.

Invariants:
- A reply is taken only for a pending request, from the address asked, with
  the key expected (when one was), of the one type that answers the request.
- A PONG must sign our nonce and our key under ``PONG_CONTEXT``.
- A STORED or DUPLICATE answer from a storer whose key is not proven at that
  address counts only with its signed receipt (our request id is the nonce);
  ``Matched.receipted`` then says the storer proved its key like a PONG would.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.dht.addresses import AddressProofs
from p2pnode.dht.answers import PONG_CONTEXT
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import (
    ExtensionReply,
    ExtensionRequest,
    FindNode,
    FindValue,
    Frame,
    Message,
    Nodes,
    Ping,
    Pong,
    Store,
    StoreResult,
    StoreStatus,
    Value,
)
from p2pnode.dht.proofs import receipt_valid
from p2pnode.dht.requests import SentRequest
from p2pnode.identity import verify_signature

__all__ = ["REPLY_TYPES", "Matched", "match_reply", "offered_token"]

REPLY_TYPES: dict[type, type] = {
    Ping: Pong,
    FindNode: Nodes,
    FindValue: Value,
    Store: StoreResult,
    ExtensionRequest: ExtensionReply,
}
_STORED = (StoreStatus.STORED, StoreStatus.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Matched:
    """The reply answers its request; ``receipted``: a signed store receipt proved the key."""

    receipted: bool


def offered_token(message: Message) -> bytes:
    """The store token (and cookie) a reply hands us, if any."""
    if isinstance(message, Nodes | Pong | StoreResult | Value):
        return message.token
    return b""


def match_reply(
    request: SentRequest | None,
    frame: Frame,
    address: Address,
    own_key: bytes,
    addresses: AddressProofs,
) -> Matched | str:
    """``Matched`` if ``frame`` answers ``request``, else the drop reason."""
    if request is None:
        return "unsolicited reply"
    if request.address != address:
        return "reply from another address"
    if request.expected_key is not None and request.expected_key != frame.sender_key:
        return "reply from another key"
    message = frame.message
    if REPLY_TYPES[type(request.message)] is not type(message):
        return "reply of the wrong type"
    if isinstance(message, Pong):
        assert isinstance(request.message, Ping)
        signed = PONG_CONTEXT + request.message.nonce + own_key
        if not verify_signature(frame.sender_key, signed, message.signature):
            return "bad challenge signature"
    if (
        isinstance(message, StoreResult)
        and message.status in _STORED
        and not addresses.proven(frame.sender_key, address)
    ):
        assert isinstance(request.message, Store)
        store = request.message
        if not receipt_valid(
            frame.sender_key,
            message.receipt,
            frame.request_id,
            own_key,
            store.key,
            store.record,
            message.status,
        ):
            return "bad store receipt"  # not signed by the key we asked
        return Matched(receipted=True)
    return Matched(receipted=False)
