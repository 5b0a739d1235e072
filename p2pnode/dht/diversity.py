"""Address diversity: how many contacts one host or one network may place anywhere.

Kademlia trusts whoever is closest to a key. Ids are cheap to grind (20 ids
sharing 12 leading bits with a key cost ~100,000 key generations, about 3 s),
so one host with many ports could fill the k closest slots of any key (finding 3
of issue 10). Here every contact belongs to two groups, its IP address and its
network (the IPv4 /``network_prefix_v4``, the IPv6 /``network_prefix_v6``), and a
set of contacts may hold at most ``max_per_address`` of one address and
``max_per_network`` of one network. The rule applies to each k-bucket of the
routing table, to each reply we send, and to the k nodes a lookup settles on
(whom it asks, and where a put stores). go-libp2p-kad-dht's diversity filter
(groups per IP prefix, per bucket and per table) is the reference.

What an attacker with N addresses in M networks can still do: place at most
``min(N * max_per_address, M * max_per_network)`` of the k contacts of any
bucket, reply or lookup result (k=20 with the defaults 2 and 4: one address
places 2, one /24 places 4, so 5 networks are needed to fill a neighbourhood;
gets take disjoint paths, ``dht/disjoint.py``, so a crowd must fill the k closest
of each of them: 10 networks for 2 paths).

Loopback (127.0.0.0/8, ::1) is exempt unless ``diverse_loopback`` is set: tests
and demos run many honest nodes on 127.0.0.1. Prefix lengths are settings so a
lab whose nodes share one segment can widen or narrow the network groups.

The node's id puzzle (``dht/puzzle.py``) rides along as ``puzzle``: the routing
table and lookups that hold a ``Diversity`` ask it too, so every place that
limits contacts by address also refuses ids below the difficulty.

Invariant: pure functions of addresses and settings; nothing here is stateful
beyond a bounded cache of parsed addresses.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from p2pnode.dht.keys import Contact, host_ip
from p2pnode.dht.puzzle import Puzzle

__all__ = ["Diversity", "Groups", "Tally"]


@dataclass(frozen=True, slots=True)
class Groups:
    """The two groups one address belongs to (strings: hashable, printable)."""

    address: str
    network: str


MAX_CACHED_HOSTS = 4096  # per Diversity: hosts whose groups are remembered


@functools.lru_cache(maxsize=1 << 16)
def _groups(host: str, prefix_v4: int, prefix_v6: int, loopback: bool) -> Groups | None:
    ip = host_ip(host)
    if ip is None:
        return Groups(host, host)  # not an IP literal: its own group (never from the wire)
    if ip.is_loopback and not loopback:
        return None
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return Groups(str(ip), str(network))


class Diversity:
    """The limits of one node's settings, applied to sets of contacts."""

    def __init__(
        self,
        *,
        max_per_address: int,
        max_per_network: int,
        prefix_v4: int = 24,
        prefix_v6: int = 48,
        loopback: bool = False,
        puzzle: Puzzle | None = None,
    ) -> None:
        self.puzzle = puzzle if puzzle is not None else Puzzle(0)
        if max_per_address < 1 or max_per_network < 1:
            raise ValueError("diversity limits must be at least 1")
        if not 0 <= prefix_v4 <= 32 or not 0 <= prefix_v6 <= 128:
            raise ValueError("network prefix out of range")
        self.max_per_address = max_per_address
        self.max_per_network = max_per_network
        self.prefix_v4 = prefix_v4
        self.prefix_v6 = prefix_v6
        self.loopback = loopback
        self._cache: dict[str, Groups | None] = {}

    def groups(self, contact: Contact) -> Groups | None:
        """The contact's groups, or None when it is exempt (loopback by default)."""
        host = contact.address[0]
        try:
            return self._cache[host]  # a lookup walks its candidates once per reply
        except KeyError:
            pass
        if len(self._cache) >= MAX_CACHED_HOSTS:
            self._cache.clear()
        found = self._cache[host] = _groups(host, self.prefix_v4, self.prefix_v6, self.loopback)
        return found

    def admits(self, present: Iterable[Contact], newcomer: Contact) -> bool:
        """Would ``newcomer`` keep a set holding ``present`` within the limits?"""
        groups = self.groups(newcomer)
        if groups is None:
            return True
        same_address = same_network = 0
        for contact in present:
            other = self.groups(contact)
            if other is None:
                continue
            if other.network == groups.network:
                same_network += 1
                if other.address == groups.address:
                    same_address += 1
        return same_address < self.max_per_address and same_network < self.max_per_network

    def pick(self, contacts: Iterable[Contact], count: int) -> list[Contact]:
        """The first ``count`` contacts (in the given order) that keep within the limits."""
        return list(self.filter(contacts, count))

    def filter(self, contacts: Iterable[Contact], count: int) -> Iterator[Contact]:
        counter = Tally(self)
        taken = 0
        for contact in contacts:
            if taken >= count:
                return
            if counter.take(contact):
                taken += 1
                yield contact


class Tally:
    """Running counts per group while walking contacts nearest first."""

    __slots__ = ("_addresses", "_diversity", "_networks")

    def __init__(self, diversity: Diversity) -> None:
        self._diversity = diversity
        self._addresses: Counter[str] = Counter()
        self._networks: Counter[str] = Counter()

    def take(self, contact: Contact) -> bool:
        """Count ``contact`` if it fits; False (and nothing counted) if over a limit."""
        groups = self._diversity.groups(contact)
        if groups is None:
            return True
        if (
            self._addresses[groups.address] >= self._diversity.max_per_address
            or self._networks[groups.network] >= self._diversity.max_per_network
        ):
            return False
        self._addresses[groups.address] += 1
        self._networks[groups.network] += 1
        return True
