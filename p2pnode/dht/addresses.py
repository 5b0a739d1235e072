"""What a core knows about its peers' addresses: proven keys, challenges, reply budgets.

Two different facts, kept apart because mixing them was finding 4 of issue 10
(a spoofed request from an address "verified" earlier got 76x its size back):

- *proven*: a key signed our challenge (a PONG, a STORE proof, a receipt) while
  at an address. It lets the contact into the routing table and its STOREs in.
- *receives here*: a request echoes a cookie (``Frame.cookie``) that we issued to
  that key at that address (a stateless keyed hash, ``proofs.StoreTokens``, the
  same token as a STORE's). Only then may our reply be larger than the
  unverified budget. A spoofed source cannot echo it: it was sent only to the
  real address, for the real key; a different key at that address needs its own.

Bound (stated in docs/dht.md): to a source that did not echo a valid cookie we
send at most ``AMPLIFICATION_FACTOR`` times the bytes of its request, the
challenge PING we may send it included.

Invariants: every memory here is bounded (``MAX_KNOWN_ADDRESSES``, oldest
forgotten, which can only make us stricter); cookies need no memory at all.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from p2pnode.dht.keys import Address
from p2pnode.dht.messages import MAX_DATAGRAM_BYTES
from p2pnode.dht.proofs import StoreTokens

__all__ = [
    "AMPLIFICATION_FACTOR",
    "CHALLENGE_BYTES",
    "CHALLENGE_RETRY",
    "MAX_KNOWN_ADDRESSES",
    "PING_PAD_TO",
    "UNVERIFIED_PAD_TO",
    "AddressProofs",
]

AMPLIFICATION_FACTOR = 3
UNVERIFIED_PAD_TO = 480  # FIND_* without a cookie: 3 x 480 fits k contacts
PING_PAD_TO = 200  # PING without a cookie: its PONG (up to ~200 B with an IPv6 address) fits
CHALLENGE_BYTES = PING_PAD_TO + 10  # room kept for the challenge PING sent with a reply
CHALLENGE_RETRY = 30.0  # seconds before the same address is challenged again
MAX_KNOWN_ADDRESSES = 16384  # proven / challenged memories, each

T = TypeVar("T")


def _remember(memory: OrderedDict[T, float], item: T, value: float) -> None:
    memory[item] = value
    memory.move_to_end(item)
    if len(memory) > MAX_KNOWN_ADDRESSES:
        memory.popitem(last=False)


class AddressProofs:
    """Proven (key, address) pairs, challenge pacing, and the reply budget per request."""

    def __init__(self, cookies: StoreTokens) -> None:
        self.cookies = cookies
        self._proven: OrderedDict[tuple[bytes, Address], float] = OrderedDict()
        self._challenged: OrderedDict[Address, float] = OrderedDict()

    def proven(self, public_key: bytes, address: Address) -> bool:
        return (public_key, address) in self._proven

    def prove(self, public_key: bytes, address: Address, now: float) -> None:
        _remember(self._proven, (public_key, address), now)

    def may_challenge(self, address: Address, now: float) -> bool:
        """True (and remembered) unless ``address`` was challenged in the last retry period."""
        last = self._challenged.get(address)
        if last is not None and now - last < CHALLENGE_RETRY:
            return False
        _remember(self._challenged, address, now)
        return True

    def receives_at(self, cookie: bytes, public_key: bytes, address: Address, now: float) -> bool:
        """The request echoed the cookie we issued to this key at this address."""
        return bool(cookie) and self.cookies.valid(cookie, public_key, address, now)

    @staticmethod
    def reply_budget(receives: bool, request_bytes: int) -> int:
        """Most bytes our reply to a request may have (the challenge PING kept aside)."""
        if receives:
            return MAX_DATAGRAM_BYTES
        return AMPLIFICATION_FACTOR * request_bytes - CHALLENGE_BYTES
