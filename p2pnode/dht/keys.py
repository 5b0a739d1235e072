"""Ids, distances and contacts of the Kademlia id space.

Invariants:
- An id is 160 bits (``ID_BYTES``); node ids are derived from Ed25519 keys
  (``p2pnode.identity.node_id_for``), record keys from records (``record_key``):
  both live in this one space, so "the k nodes closest to a key" is well defined.
- A ``Contact`` binds a public key, the node id derived from it and one UDP
  address. Whoever builds one from peer input must have checked the derivation.
"""

from __future__ import annotations

import functools
import ipaddress
import random

from p2pnode.identity import NODE_ID_BYTES, node_id_for

__all__ = [
    "ID_BITS",
    "ID_BYTES",
    "Address",
    "Contact",
    "bucket_index",
    "distance",
    "host_ip",
    "id_to_int",
    "node_id_of",
    "random_id_in_bucket",
]

ID_BYTES = NODE_ID_BYTES
ID_BITS = ID_BYTES * 8

Address = tuple[str, int]


def id_to_int(node_id: bytes) -> int:
    """An id as an integer, so XOR distance is one machine operation away."""
    return int.from_bytes(node_id, "big")


def distance(a: bytes, b: bytes) -> int:
    """Kademlia's XOR metric (Maymounkov & Mazieres 2002, section 2.1)."""
    return id_to_int(a) ^ id_to_int(b)


@functools.lru_cache(maxsize=65536)
def node_id_of(public_key: bytes) -> bytes:
    """``node_id_for`` with a bounded cache: every datagram names its sender's key."""
    return node_id_for(public_key)


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A contact's host as an IP: zone dropped, IPv4-mapped IPv6 as IPv4; None if not a literal.

    One reading for every per-address rule (diversity groups, the puzzle's loopback
    exemption), so a host cannot count as one thing to one rule and another to the next.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def bucket_index(own_id: int, other_id: int) -> int:
    """Index of the k-bucket ``other_id`` falls in: bit length of the distance minus one.

    Bucket i holds ids at distance [2**i, 2**(i+1)); -1 means "ourselves".
    """
    return (own_id ^ other_id).bit_length() - 1


def random_id_in_bucket(own_id: bytes, index: int, rng: random.Random) -> bytes:
    """A random id at XOR distance [2**index, 2**(index+1)) from ``own_id`` (bucket ``index``).

    What a bucket refresh looks up (Kademlia section 2.3: "a random ID in the bucket's range").
    """
    offset = (1 << index) | rng.getrandbits(index) if index else 1
    return (id_to_int(own_id) ^ offset).to_bytes(ID_BYTES, "big")


class Contact:
    """A node we can talk to: its key, the id bound to that key, and where it listens.

    Immutable by convention (a plain slotted class: built for every contact in every
    reply, so it skips the frozen-dataclass ``__init__`` cost).
    """

    __slots__ = ("address", "id_int", "node_id", "public_key")

    def __init__(self, node_id: bytes, public_key: bytes, address: Address) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.address = address
        self.id_int = int.from_bytes(node_id, "big")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Contact):
            return NotImplemented
        return (self.node_id, self.public_key, self.address) == (
            other.node_id,
            other.public_key,
            other.address,
        )

    def __hash__(self) -> int:
        return hash((self.node_id, self.address))

    def __repr__(self) -> str:
        return f"Contact({self.node_id.hex()[:12]}..., {self.address[0]}:{self.address[1]})"
