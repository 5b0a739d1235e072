"""What a node answers to each request: PONG, NODES, VALUE and registered extensions.

The serving side of the core, apart from its bookkeeping (``protocol``) and from
STOREs (``admission``). Everything here is bounded by the ``budget`` the core
computed for the request (``addresses``): a reply never grows past it.

Invariants:
- Contacts named in a reply keep within the diversity limits (``diversity``)
  and never include the requester.
- An extension's decoder sees fields no deeper than ``messages.MAX_FIELD_DEPTH``;
  whatever it raises (``ValueError``, ``RecursionError``) becomes one
  ``DhtDecodeError``, which the core drops and counts.
- Extension handlers get wall-clock time: they date things.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nat.drops import DropCounter
from p2pnode.dht.admission import StoreAdmission
from p2pnode.dht.config import DhtConfig
from p2pnode.dht.diversity import Diversity
from p2pnode.dht.keys import Address, Contact
from p2pnode.dht.messages import (
    EXTENSION_CODES,
    MAX_RECORDS_PER_REPLY,
    DhtDecodeError,
    ExtensionReply,
    ExtensionRequest,
    FindNode,
    FindValue,
    Message,
    Nodes,
    Ping,
    Pong,
    Value,
    WireContact,
)
from p2pnode.dht.routing import RoutingTable
from p2pnode.dht.storage import RecordStore
from p2pnode.identity import Identity

__all__ = ["PONG_CONTEXT", "VALUE_REPLY_CONTACTS", "Answers", "ExtensionRunner", "Peer"]

PONG_CONTEXT = b"p2pnode-dht-v1/pong\x00"  # what a PONG signs: context + nonce + asker's key
VALUE_REPLY_CONTACTS = 4  # contacts sent along with records in a VALUE reply
_REPLY_OVERHEAD = 80  # frame header bytes, generous
_TOKEN_FIELD = 18  # a store token in a reply, with its msgpack header

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent an extension request, as far as we know."""

    public_key: bytes
    node_id: bytes
    address: Address
    proven: bool  # has signed our challenge at this address
    client: bool


ExtensionRunner = Callable[[tuple[object, ...], Peer, float], tuple[object, ...] | None]


def _contact_bytes(contact: Contact | WireContact) -> int:
    return 42 + len(contact.address[0])


def fit_contacts(contacts: Sequence[Contact], room: int) -> tuple[WireContact, ...]:
    """As many of ``contacts`` (in order) as fit in ``room`` bytes."""
    fitted: list[WireContact] = []
    for contact in contacts:
        room -= _contact_bytes(contact)
        if room < 0:
            break
        fitted.append(WireContact(contact.public_key, contact.address))
    return tuple(fitted)


class Answers:
    """Replies to PING, FIND_NODE, FIND_VALUE and extension requests."""

    def __init__(
        self,
        identity: Identity,
        config: DhtConfig,
        table: RoutingTable,
        diversity: Diversity,
        admission: StoreAdmission,
        store: RecordStore,
        drops: DropCounter,
    ) -> None:
        self.identity = identity
        self.config = config
        self.table = table
        self.diversity = diversity
        self.admission = admission
        self.store = store
        self.drops = drops
        self.extensions: dict[int, ExtensionRunner] = {}

    def register_extension(
        self,
        code: int,
        decoder: Callable[[tuple[object, ...]], T],
        handler: Callable[[T, Peer, float], tuple[object, ...] | None],
    ) -> None:
        """Add an RPC: ``decoder`` must raise ``ValueError`` on junk.

        ``handler`` returns the reply fields (msgpack-able), or None for no reply; the
        ``now`` it gets is wall-clock time, as its records and timestamps use.
        """
        if code not in EXTENSION_CODES:
            raise ValueError(f"extension code {code} outside {EXTENSION_CODES}")
        if code in self.extensions:
            raise ValueError(f"extension code {code} already registered")

        def run(fields: tuple[object, ...], peer: Peer, now: float) -> tuple[object, ...] | None:
            try:
                request = decoder(fields)
            except (ValueError, RecursionError) as error:
                raise DhtDecodeError(f"extension {code}: {type(error).__name__}") from None
            return handler(request, peer, now)

        self.extensions[code] = run

    def answer(
        self,
        message: Message,
        sender: Contact,
        client: bool,
        proven: bool,
        budget: int,
        now: float,
        wall: float,
    ) -> Message | None:
        """The reply to ``message`` within ``budget`` bytes, or None for no reply."""
        match message:
            case Ping(nonce):
                signed = PONG_CONTEXT + nonce + sender.public_key
                token = self.admission.token_for(sender, now)
                return Pong(self.identity.sign(signed), sender.address, token)
            case FindNode(target):
                contacts = self.closest(target, self.config.k, sender)
                room = budget - _REPLY_OVERHEAD - _TOKEN_FIELD
                token = self.admission.token_for(sender, now)
                return Nodes(fit_contacts(contacts, room), token)
            case FindValue(key, offset):
                return self._find_value(key, offset, sender, budget, now, wall)
            case ExtensionRequest(code, fields):
                run = self.extensions.get(code)
                if run is None:
                    self.drops.drop("unknown extension", str(code))
                    return None
                peer = Peer(sender.public_key, sender.node_id, sender.address, proven, client)
                answer = run(fields, peer, wall)
                return None if answer is None else ExtensionReply(code, answer)
        return None  # replies and STOREs never reach here

    def closest(self, target: bytes, count: int, sender: Contact) -> list[Contact]:
        """What a reply names: the nearest contacts within the diversity limits.

        The ``count`` nearest first: when the limits keep them all (the usual case),
        they are the answer, and the table sorted half as many; only when the limits
        dropped some are ``2 * count`` fetched to fill the gaps (the same result).
        """
        exclude = frozenset((sender.node_id,))
        nearest = self.table.closest(target, count, exclude)
        picked = self.diversity.pick(nearest, count)
        if len(picked) == len(nearest):
            return picked
        return self.diversity.pick(self.table.closest(target, 2 * count, exclude), count)

    def _find_value(
        self, key: bytes, offset: int, sender: Contact, budget: int, now: float, wall: float
    ) -> Value:
        records = self.store.get(key, wall)
        token = self.admission.token_for(sender, now)
        room = budget - _REPLY_OVERHEAD - _TOKEN_FIELD
        page: list[bytes] = []
        for record in records[offset:]:
            size = len(record.encoded) + 3
            if size > room or len(page) >= MAX_RECORDS_PER_REPLY:
                break
            page.append(record.encoded)
            room -= size
        contacts: tuple[WireContact, ...] = ()
        if offset == 0:
            # With records in hand the reader needs few new leads (it has its own seeds).
            count = VALUE_REPLY_CONTACTS if page else self.config.k
            contacts = fit_contacts(self.closest(key, count, sender), room)
        return Value(tuple(page), len(records), contacts, token)
