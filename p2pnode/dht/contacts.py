"""Who enters the routing table, and what proving a key costs: the core's gatekeeper.

A contact enters the table only once it proved, at its address, the key its
node id derives from. The proof rides on a lookup's datagrams when it can
(``keyproof``: a signed reply to a ``PROVE`` request, a signed request), else on
a STORE proof or receipt (``proofs``), else a PING/PONG challenge (two
datagrams each way), which is spent only on a sender that would get a free slot.

Invariants:
- Clients (``Flags.CLIENT``) never enter a table, proven or not; nor does a
  server whose id is below the puzzle's difficulty (``dht/puzzle.py``; counted
  once per datagram, and no proof of its key is ever checked or challenged).
- A key proof is checked (a signature verification) only for a sender the table
  needs (``RoutingTable.needs``: a free slot, or an empty replacement cache) and
  would take (``wants``: diversity limits included), and not proven already.
- At most ``MAX_CHALLENGES_IN_FLIGHT`` challenges, one address at most once per
  ``addresses.CHALLENGE_RETRY``.
- A full bucket parks a proven newcomer in its replacement cache with no eager
  liveness PING of its oldest contact (section 2.2's check set off a
  network-wide cascade of PINGs at 10,000 nodes); section 4.1's lazy rule
  replaces a contact once it fails to answer one of our requests.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pnode.dht.addresses import AddressProofs
from p2pnode.dht.keyproof import (
    RequestProofs,
    reply_proof_valid,
    request_proof_valid,
    sign_reply_proof,
)
from p2pnode.dht.keys import Address, Contact, node_id_of
from p2pnode.dht.messages import Frame
from p2pnode.dht.routing import RoutingTable
from p2pnode.identity import Identity

__all__ = ["MAX_CHALLENGES_IN_FLIGHT", "ContactGate"]

MAX_CHALLENGES_IN_FLIGHT = 256

# Starts a challenge PING to (address, expected key); calls the callback when done.
Challenger = Callable[[Address, bytes, Callable[[object, float], None], float], None]


class ContactGate:
    """Proofs in, table offers out, challenges only where worth two datagrams."""

    def __init__(
        self,
        identity: Identity,
        table: RoutingTable,
        addresses: AddressProofs,
        challenger: Challenger,
    ) -> None:
        self.identity = identity
        self.table = table
        self.addresses = addresses
        self._challenger = challenger
        self.request_proofs = RequestProofs(identity)
        self.observed: Address | None = None  # our address as the last PONG saw it
        self.challenges_in_flight = 0

    # ----------------------------------------------------------- sending requests

    def request_proof(self, receiver_key: bytes, wall: float) -> bytes:
        """Our key proof for a request to ``receiver_key`` (b"" before any PONG told us
        our address)."""
        if self.observed is None:
            return b""
        return self.request_proofs.proof(receiver_key, self.observed, wall)

    def wants_reply_proof(self, expected_key: bytes, address: Address) -> bool:
        """Should our request carry ``PROVE`` (its reply then proves the replier's key)?"""
        if self.addresses.proven(expected_key, address):
            return False
        contact = Contact(node_id_of(expected_key), expected_key, address)
        return self.table.needs(contact.node_id) and self.table.wants(contact.node_id, contact)

    @staticmethod
    def sign_reply(identity: Identity, request_id: bytes, requester_key: bytes) -> bytes:
        return sign_reply_proof(identity, request_id, requester_key)

    # ------------------------------------------------------------ datagrams in

    def reply_proves(self, frame: Frame, address: Address) -> bool:
        """A reply's ``key_proof`` signs our request id and our key: a PONG in a reply."""
        return (
            bool(frame.key_proof)
            and not self.addresses.proven(frame.sender_key, address)
            and self.table.meets(Contact(frame.sender_id, frame.sender_key, address))
            and reply_proof_valid(
                frame.sender_key, frame.key_proof, frame.request_id, self.identity.public_key
            )
        )

    def check_request_proof(self, frame: Frame, sender: Contact, now: float, wall: float) -> None:
        """Remember ``sender`` as proven if its request's key proof holds and it is wanted."""
        if (
            frame.key_proof
            and not self.addresses.proven(sender.public_key, sender.address)
            and self.table.needs(sender.node_id)
            and self.table.wants(sender.node_id, sender)
            and request_proof_valid(
                sender.public_key,
                frame.key_proof,
                self.identity.public_key,
                sender.address,
                wall,
            )
        ):
            self.addresses.prove(sender.public_key, sender.address, now)

    def proven_contact(self, sender: Contact, client: bool, now: float) -> None:
        """A proven sender: into its bucket, or its replacement cache when the bucket is full."""
        self.addresses.prove(sender.public_key, sender.address, now)
        if not client:
            self.table.offer(sender, now)

    def seen(self, sender: Contact, client: bool, now: float) -> None:
        """Any datagram from a sender: refresh it if proven, else challenge it if useful."""
        if client:
            return  # clients pad their requests; they never get a table slot
        proven = self.addresses.proven(sender.public_key, sender.address)
        if sender.node_id in self.table:
            if proven:
                self.table.record_success(sender.node_id, now)
            return
        if not self.table.admits(sender):
            return
        if not self.table.wants(sender.node_id, sender):
            return
        if proven:
            self.proven_contact(sender, client, now)
        elif self.table.has_room(sender.node_id):
            self._challenge(sender, now)

    def _challenge(self, sender: Contact, now: float) -> None:
        if self.challenges_in_flight >= MAX_CHALLENGES_IN_FLIGHT:
            return
        if not self.addresses.may_challenge(sender.address, now):
            return
        self.challenges_in_flight += 1
        self._challenger(sender.address, sender.public_key, self._challenge_done, now)

    def _challenge_done(self, result: object, now: float) -> None:
        self.challenges_in_flight -= 1
