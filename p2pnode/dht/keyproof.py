"""Key proofs carried in ordinary requests and replies, instead of PING/PONG challenges.

A contact may enter a routing table only once it proved it holds the key of its
node id at its address. A challenge (PING, signed PONG) costs two datagrams each
way per new contact, and a join meets hundreds: it was half of what a join cost
(issue 10: 611-999 datagrams per joining node). Both proofs here ride on the
datagrams a lookup sends anyway:

- *reply proof*: a request flagged ``PROVE`` gets a reply whose ``key_proof`` is
  the replier's signature over ``REPLY_CONTEXT`` + our random request id + our
  key. The reply is taken only from the address asked, so this is a PONG folded
  into the NODES/VALUE reply: fresh (our nonce), bound to us and to that address.
- *request proof*: a request's ``key_proof`` is the requester's signature over
  ``REQUEST_CONTEXT`` + the receiver's key + the requester's own address as the
  network shows it (learned from a PONG's ``observed``) + the current time slot.
  The receiver checks it against the source address it saw. Replayed from
  another address it fails; replayed from the same address within the slot it
  proves only what is true; sent to another node it fails (receiver key bound).

Invariants: pure functions; each check costs at most ``len(SLOT_TOLERANCE)``
signature verifications and the core only runs it for a sender its table would
take (``RoutingTable.wants``) and has not proven yet.
"""

from __future__ import annotations

from collections import OrderedDict

from p2pnode.dht.keys import Address
from p2pnode.identity import Identity, verify_signature

__all__ = [
    "PROOF_SLOT",
    "REPLY_CONTEXT",
    "REQUEST_CONTEXT",
    "RequestProofs",
    "reply_proof_valid",
    "request_proof_valid",
    "sign_reply_proof",
    "sign_request_proof",
]

REQUEST_CONTEXT = b"p2pnode-dht-v2/request-key\x00"
REPLY_CONTEXT = b"p2pnode-dht-v2/reply-key\x00"
PROOF_SLOT = 300.0  # seconds of wall time; a proof is good in its slot and the next
SLOT_TOLERANCE = (0, -1)
MAX_SIGNED_PROOFS = 4096  # request proofs kept for reuse


def _slot(wall: float) -> int:
    return int(wall // PROOF_SLOT)


def _request_data(receiver_key: bytes, address: Address, slot: int) -> bytes:
    host, port = address
    encoded = host.encode()
    return (
        REQUEST_CONTEXT
        + receiver_key
        + bytes((len(encoded),))
        + encoded
        + port.to_bytes(2, "big")
        + slot.to_bytes(8, "big", signed=True)
    )


def sign_request_proof(
    identity: Identity, receiver_key: bytes, own_address: Address, wall: float
) -> bytes:
    return identity.sign(_request_data(receiver_key, own_address, _slot(wall)))


def request_proof_valid(
    sender_key: bytes, proof: bytes, receiver_key: bytes, source: Address, wall: float
) -> bool:
    slot = _slot(wall)
    return any(
        verify_signature(sender_key, _request_data(receiver_key, source, slot + delta), proof)
        for delta in SLOT_TOLERANCE
    )


def sign_reply_proof(identity: Identity, request_id: bytes, requester_key: bytes) -> bytes:
    return identity.sign(REPLY_CONTEXT + request_id + requester_key)


def reply_proof_valid(
    sender_key: bytes, proof: bytes, request_id: bytes, requester_key: bytes
) -> bool:
    return verify_signature(sender_key, REPLY_CONTEXT + request_id + requester_key, proof)


class RequestProofs:
    """Our request proofs, signed once per receiver and slot (bounded, oldest forgotten)."""

    def __init__(self, identity: Identity, *, max_entries: int = MAX_SIGNED_PROOFS) -> None:
        self.identity = identity
        self.max_entries = max_entries
        self._signed: OrderedDict[bytes, tuple[int, Address, bytes]] = OrderedDict()

    def proof(self, receiver_key: bytes, own_address: Address, wall: float) -> bytes:
        slot = _slot(wall)
        cached = self._signed.get(receiver_key)
        if cached is not None and cached[0] == slot and cached[1] == own_address:
            return cached[2]
        proof = sign_request_proof(self.identity, receiver_key, own_address, wall)
        self._signed[receiver_key] = (slot, own_address, proof)
        self._signed.move_to_end(receiver_key)
        if len(self._signed) > self.max_entries:
            self._signed.popitem(last=False)
        return proof
