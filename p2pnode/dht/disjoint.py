"""Disjoint lookup paths (S/Kademlia, Baumgart and Mies 2007, section 4.4).

Why: a single lookup asks the k closest candidates it hears of, and ground ids are
closer to a key than any honest node. With the diversity limits
(``dht/diversity.py``) a crowd from one network fills at most 4 of those k, but a
crowd from M >= 5 networks fills all 20: every node it names is one of its own,
every one answers with nothing, and the lookup settles on the crowd without ever
asking the honest nodes just beyond it, which hold the record.

How: the k closest contacts of our own table are dealt round robin to ``paths``
independent lookups (``dht/lookup.py``), each with its own candidates and its own
k closest. A node queried by one path is claimed by it: no other path queries
it, nor counts it among its own k closest. So the crowd is shared out among the
paths, and a path settles only when k nodes *it alone* queried have answered: to
make every path miss the honest nodes the crowd must be ``paths`` x k strong
(with the diversity limits, ``ceil(paths x k / max_per_network)`` networks),
not k. The records of every path are merged by the caller (the newest valid one
per owner, ``records.supersedes``): one path reaching one honest holder is enough.

A put (with ``DhtConfig.disjoint_puts``) takes the paths too and stores at each
path's k closest (``closest_answered_per_path``): the crowd takes the first k
slots of each, the honest nodes just beyond it, where disjoint gets arrive, hold
the record as well. That doubles a put's STOREs, so it is off by default.

Cost: the paths share the ``alpha`` queries in flight (alpha = 3 over 2 paths: 2
and 1; at least 1 each), and a get still stops once ``quorum`` nodes returned records, so a get
that finds its key costs about what a single path did. A get of a key nobody
holds asks every path's k closest: up to ``paths`` x k queries instead of k.

Invariants:
- Every node is queried by at most one path (``claims``), whatever the replies say.
- Each path is bounded like a single lookup (``MAX_CANDIDATES``), so a lookup holds
  at most ``paths`` x ``MAX_CANDIDATES`` candidates; ``paths`` is at most
  ``MAX_PATHS``.
- A value lookup is done once ``quorum`` nodes, over all paths, returned records,
  or when every path is done.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2pnode.dht.diversity import Diversity
from p2pnode.dht.keys import Contact, id_to_int
from p2pnode.dht.lookup import Lookup, LookupKind

__all__ = ["MAX_PATHS", "DisjointLookup", "make_lookup"]

MAX_PATHS = 8


class DisjointLookup:
    """Where ``paths`` disjoint lookups of one target stand, as one lookup."""

    def __init__(
        self,
        target: bytes,
        kind: LookupKind,
        *,
        own_id: bytes,
        k: int,
        alpha: int,
        quorum: int,
        seeds: Iterable[Contact],
        paths: int,
        diversity: Diversity | None = None,
    ) -> None:
        if not 1 <= paths <= MAX_PATHS:
            raise ValueError("disjoint paths out of range")
        self.target = target
        self.target_int = id_to_int(target)
        self.kind = kind
        self.k = k
        self.quorum = quorum
        self.diversity = diversity
        self._claims: dict[bytes, int] = {}
        dealt: list[list[Contact]] = [[] for _ in range(paths)]
        for index, seed in enumerate(seeds):  # nearest first: each path gets near seeds
            dealt[index % paths].append(seed)
        self.paths = [
            Lookup(
                target,
                kind,
                own_id=own_id,
                k=k,
                alpha=max(1, alpha // paths + (number < alpha % paths)),
                quorum=quorum,
                seeds=path_seeds,
                diversity=diversity,
                claims=self._claims,
                path=number,
            )
            for number, path_seeds in enumerate(dealt)
        ]

    @property
    def in_flight(self) -> int:
        return sum(path.in_flight for path in self.paths)

    @property
    def queries(self) -> int:
        return sum(path.queries for path in self.paths)

    @property
    def value_holders(self) -> int:
        return sum(path.value_holders for path in self.paths)

    def next_queries(self) -> list[Contact]:
        """Candidates to query now, from every path; each is claimed by its path."""
        picked: list[Contact] = []
        if self.done:
            return picked
        holders = self.value_holders
        if self.kind is LookupKind.VALUE and holders and holders + self.in_flight >= self.quorum:
            return picked  # as a single lookup: the queries in flight can complete the quorum
        for path in self.paths:
            fresh = path.next_queries()
            if fresh:
                picked.extend(fresh)
                for other in self.paths:
                    if other is not path:
                        other.reconsider()
        return picked

    def _path_of(self, node_id: bytes) -> Lookup | None:
        number = self._claims.get(node_id)
        return None if number is None else self.paths[number]

    def on_reply(self, node_id: bytes, contacts: Iterable[Contact], *, has_value: bool) -> None:
        path = self._path_of(node_id)
        if path is not None:
            path.on_reply(node_id, contacts, has_value=has_value)

    def on_failure(self, node_id: bytes) -> None:
        path = self._path_of(node_id)
        if path is not None:
            path.on_failure(node_id)

    @property
    def done(self) -> bool:
        if self.kind is LookupKind.VALUE and self.value_holders >= self.quorum:
            return True
        return all(path.done for path in self.paths)

    def closest_answered(self) -> list[Contact]:
        """The k closest that answered on any path, nearest first, within the limits."""
        answered = sorted(
            (contact for path in self.paths for contact in path.closest_answered()),
            key=lambda contact: contact.id_int ^ self.target_int,
        )
        if self.diversity is None:
            return answered[: self.k]
        return self.diversity.pick(answered, self.k)

    def closest_answered_per_path(self) -> list[Contact]:
        """Each path's k closest that answered (distinct: no node answers two paths),
        nearest first: where a disjoint put stores."""
        return sorted(
            (contact for path in self.paths for contact in path.closest_answered()),
            key=lambda contact: contact.id_int ^ self.target_int,
        )

    @property
    def hops(self) -> int:
        """Hops to the first value holder on any path, else the deepest answer."""
        found = [path.value_depth for path in self.paths if path.value_depth]
        if found:
            return min(found)
        return max((path.hops for path in self.paths), default=0)


def make_lookup(
    target: bytes,
    kind: LookupKind,
    *,
    own_id: bytes,
    k: int,
    alpha: int,
    quorum: int,
    seeds: Iterable[Contact],
    paths: int,
    diversity: Diversity | None = None,
) -> Lookup | DisjointLookup:
    """A single lookup for one path, else ``paths`` disjoint ones."""
    if paths == 1:
        return Lookup(
            target,
            kind,
            own_id=own_id,
            k=k,
            alpha=alpha,
            quorum=quorum,
            seeds=seeds,
            diversity=diversity,
        )
    return DisjointLookup(
        target,
        kind,
        own_id=own_id,
        k=k,
        alpha=alpha,
        quorum=quorum,
        seeds=seeds,
        paths=paths,
        diversity=diversity,
    )
