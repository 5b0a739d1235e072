"""A cost to grinding node ids: S/Kademlia's static puzzle for DHT servers.

A node id is a hash of its key, so nobody picks it, but anybody can try keys until
one lands near a target: 20 ids sharing 12 leading bits with a key cost ~82,000
key generations, a few seconds (finding 3 of issue 10). Here a contact counts only
if its id has at least ``c`` *puzzle bits* (leading zero bits of BLAKE2b-64 of the
id under its own person, ``identity.puzzle_bits``): an honest server grinds 2**c
keys once, an attacker 2**c times more for every id it places (S/Kademlia,
Baumgart and Mies 2007, section 4.1, the static crypto puzzle). No wire change:
the id is derived from the key already, and a key proof binds the two.

The check runs wherever a contact enters: the routing table (``routing``), the
candidates a lookup learns from replies and therefore its results and a put's
storers (``lookup``); each refusal is counted as ``id below difficulty`` through
the core's drop counter (one log line per interval). Clients are never in tables,
so a client's id needs no bits: ``p2pnode record get`` keeps a throwaway key.

Loopback (127.0.0.0/8, ::1) is exempt unless ``loopback`` is set: tests and local
demos run many honest nodes with instant keys on 127.0.0.1, and nothing there is
reachable by an attacker who is not on the machine already.

Invariants: ``id_meets`` is a pure function, cached (a lookup meets the same ids
again and again), one BLAKE2b call when not cached; nothing here touches the
network or a clock.
"""

from __future__ import annotations

import functools

from nat.drops import DropCounter
from p2pnode.dht.keys import Contact, host_ip
from p2pnode.identity import puzzle_bits

__all__ = [
    "DEFAULT_ID_DIFFICULTY",
    "MAX_ID_DIFFICULTY",
    "REFUSAL",
    "Puzzle",
    "exempt_host",
    "id_meets",
    "own_id_problem",
]

# 2**16 tries: ~1.7 s per honest server key on one core here (PyNaCl, 26 us a try), once;
# an attacker's 20 ids sharing 12 bits with a key: 20 x 2**28 tries, ~39 core-hours.
DEFAULT_ID_DIFFICULTY = 16
MAX_ID_DIFFICULTY = 32  # 2**32 tries is ~30 core-hours for one honest key: beyond sense
REFUSAL = "id below difficulty"


@functools.lru_cache(maxsize=1 << 16)
def _bits(node_id: bytes) -> int:
    return puzzle_bits(node_id)


def id_meets(node_id: bytes, bits: int) -> bool:
    """Does ``node_id`` carry at least ``bits`` puzzle bits? (cached; bits <= 0: always)"""
    return bits <= 0 or _bits(node_id) >= bits


@functools.lru_cache(maxsize=4096)
def exempt_host(host: str, loopback: bool) -> bool:
    """Is a contact at ``host`` exempt from the puzzle (loopback, unless ``loopback``)?"""
    if loopback:
        return False
    ip = host_ip(host)  # not an IP literal (never from the wire): no exemption
    return ip is not None and ip.is_loopback


class Puzzle:
    """One node's difficulty, applied to contacts; refusals counted by the core's drops."""

    __slots__ = ("bits", "drops", "loopback", "refused")

    def __init__(self, bits: int, *, loopback: bool = False) -> None:
        if not 0 <= bits <= MAX_ID_DIFFICULTY:
            raise ValueError(f"id difficulty must be 0 to {MAX_ID_DIFFICULTY}")
        self.bits = bits
        self.loopback = loopback
        self.refused = 0
        # The core's drop counter (``DhtCore`` sets it): counts and logs once per interval.
        self.drops: DropCounter | None = None

    def meets(self, contact: Contact) -> bool:
        """Would ``contact`` count? (no side effect: for "is it worth a proof" checks)"""
        return (
            self.bits <= 0
            or id_meets(contact.node_id, self.bits)
            or exempt_host(contact.address[0], self.loopback)
        )

    def admit(self, contact: Contact) -> bool:
        """``meets``, and a refusal is counted (``REFUSAL``) where a contact tried to enter."""
        if self.meets(contact):
            return True
        self.refused += 1
        if self.drops is not None:
            self.drops.drop(REFUSAL)
        return False


def own_id_problem(node_id: bytes, bits: int, listen_host: str, *, loopback: bool) -> str | None:
    """Why a node with this id may not serve the DHT (None: it may), for its log.

    A node listening on loopback is exempt like its contacts there; one listening on
    any other address (0.0.0.0 included) needs the bits, or peers refuse it.
    """
    if id_meets(node_id, bits) or exempt_host(listen_host, loopback):
        return None
    return (
        f"this identity's node id has {_bits(node_id)} puzzle bits, the network asks "
        f"{bits} ([dht] id_difficulty): peers would refuse it as a DHT server, so the "
        "DHT runs as a client (query only); make a server identity with "
        "`p2pnode init --replace` (it grinds ~2**bits keys once; a new peer id)"
    )
