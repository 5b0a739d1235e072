"""Sending one request: its frame (cookie, padding, flags, key proof) and its bookkeeping.

The send half of the core, as ``serving`` is the answer half: operations ask the
core to send a request (``OperationHost.send_request``) and this module decides
what the datagram carries. Kept apart because what a request proves and asks for
is one concept with several rules (reflection padding, store proofs, receipts,
key proofs), none of which is the core's dispatch.

Invariants:
- At most ``max_pending`` requests are outstanding (``requests.PendingRequests``);
  beyond that a request is refused (``False``) and dropped as "too many pending
  requests", never queued.
- A request that echoes no cookie for its receiver's key at its address is padded
  (``addresses.UNVERIFIED_PAD_TO``; PINGs to ``PING_PAD_TO``) so the answer it
  may draw stays within the receiver's amplification budget.
- A STORE carries our proof over a fresh token the storer handed us, if we hold
  one (``proofs.HeldTokens``), and asks for a signed receipt (``PROVE``) unless
  the storer's key is already proven at that address.
- As a client (``Flags.CLIENT``) we sign no key proofs and ask for none.
- A STORE refused as ``UNPROVEN`` is sent again at most once (``retry_store``),
  with the proof over the token its refusal carried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from nat.drops import DropCounter
from p2pnode.dht.addresses import PING_PAD_TO, UNVERIFIED_PAD_TO, AddressProofs
from p2pnode.dht.contacts import ContactGate
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import (
    ExtensionRequest,
    FindNode,
    FindValue,
    Flags,
    Frame,
    Message,
    Ping,
    Store,
    encode_frame,
)
from p2pnode.dht.proofs import HeldTokens
from p2pnode.dht.requests import PendingRequests, Requester, SentRequest
from p2pnode.dht.serving import kind_of
from p2pnode.identity import Identity

__all__ = ["RequestSender"]

_CLIENT = int(Flags.CLIENT)
_PROVE = int(Flags.PROVE)


class RequestSender:
    """Frames requests, queues them for the adapter and registers them as pending."""

    def __init__(
        self,
        identity: Identity,
        *,
        client_mode: bool,
        requests: PendingRequests,
        held_tokens: HeldTokens,
        addresses: AddressProofs,
        contacts: ContactGate,
        drops: DropCounter,
        rpcs: Counter[tuple[str, str]],
        send: Callable[[bytes, Address], None],
        wall: Callable[[float], float],
    ) -> None:
        self.identity = identity
        self._flags = _CLIENT if client_mode else 0
        self._requests = requests
        self._held_tokens = held_tokens
        self._addresses = addresses
        self._contacts = contacts
        self._drops = drops
        self._rpcs = rpcs
        self._send = send
        self._wall = wall
        self.store_retries = 0  # STOREs sent again with a proof after an UNPROVEN answer

    def enter_client_mode(self) -> None:
        """Send as a client from now on (``DhtCore.enter_client_mode``)."""
        self._flags = _CLIENT

    def send(
        self,
        address: Address,
        message: Message,
        expected_key: bytes | None,
        owner: Requester | None,
        now: float,
        *,
        retried: bool,
    ) -> bool:
        """Send one request; False if refused (too many pending)."""
        if self._requests.full:
            self._drops.drop("too many pending requests")
            return False
        request_id = self._requests.new_id()
        if isinstance(message, Store):
            message = self._held_tokens.prove(message, address, expected_key, now)
        cookie = self._held_tokens.cookie_for(address, expected_key, now)
        pad = 0
        if not cookie:
            if isinstance(message, FindNode | FindValue | ExtensionRequest):
                pad = UNVERIFIED_PAD_TO
            elif isinstance(message, Ping):
                pad = PING_PAD_TO
        flags = self._flags
        key_proof = b""
        # A receipt is what counts an answer from a storer we have not proven (a node
        # naming itself under someone else's key is not counted): a STORE asks for one
        # only then; from a proven storer the answer to our random request id at its
        # address is as good as its PONG, and a receipt would be a wasted signature
        # there and a wasted check here.
        if isinstance(message, Store) and (
            expected_key is None or not self._addresses.proven(expected_key, address)
        ):
            flags |= _PROVE
        if expected_key is not None and not self._flags:
            key_proof = self._contacts.request_proof(expected_key, self._wall(now))
            if not isinstance(message, Store) and self._contacts.wants_reply_proof(
                expected_key, address
            ):
                flags |= _PROVE  # its reply proves its key: no challenge PING needed
        frame = Frame(
            message,
            request_id,
            self.identity.public_key,
            self.identity.node_id,
            flags,
            cookie,
            key_proof,
        )
        self._send(encode_frame(frame, pad_to=pad), address)
        self._requests.add(request_id, address, message, expected_key, owner, now, retried=retried)
        self._rpcs[(kind_of(message), "sent")] += 1
        return True

    def retry_store(self, request: SentRequest, now: float) -> bool:
        """Send a refused STORE again, proven with the token its refusal carried."""
        assert isinstance(request.message, Store)
        plain = Store(request.message.key, request.message.record)
        sent = self.send(
            request.address, plain, request.expected_key, request.owner, now, retried=True
        )
        self.store_retries += int(sent)
        return sent
