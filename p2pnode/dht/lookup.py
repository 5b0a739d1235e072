"""The iterative node lookup as a pure state machine (Kademlia section 2.3).

The protocol core asks it whom to query, and tells it about replies and
failures; it never touches the network or the clock.

Invariants:
- At most ``alpha`` queries are in flight, and the lookup is not lockstep: as
  soon as one reply or failure arrives, the next closest unqueried candidate
  may be sent (``next_queries``).
- Only the ``k`` closest candidates that have not failed matter: the lookup
  is done when every one of them has answered (or, for a value lookup, when
  ``quorum`` nodes have returned records).
- Candidates are bounded (``MAX_CANDIDATES``): a peer flooding us with contacts
  only displaces the farthest ones.
- With a ``Diversity``, "the k closest" means the k closest that keep within its
  limits per address and per network, walking nearest first: a crowd of ground
  ids from one host or one network fills at most its share of them, so the
  lookup asks, and a put stores at, honest nodes beyond the crowd.
- With a ``Diversity``, a contact whose id is below its puzzle's difficulty
  (``dht/puzzle.py``) never becomes a candidate (counted): it is never queried,
  never in the result, never a put's storer.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from p2pnode.dht.diversity import Diversity, Tally
from p2pnode.dht.keys import Contact, id_to_int

__all__ = ["MAX_CANDIDATES", "Lookup", "LookupKind"]

MAX_CANDIDATES = 200


class LookupKind(enum.Enum):
    NODE = "node"
    VALUE = "value"


class _State(enum.Enum):
    NEW = 0
    IN_FLIGHT = 1
    ANSWERED = 2
    FAILED = 3


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    depth: int
    state: _State = _State.NEW


class Lookup:
    """Where one iterative lookup stands."""

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
        diversity: Diversity | None = None,
        claims: dict[bytes, int] | None = None,
        path: int = 0,
    ) -> None:
        self.diversity = diversity
        # Disjoint lookups (``dht/disjoint.py``): which path queried which node, shared by
        # every path; a node another path claimed is never queried here, nor counted
        # among this path's k closest.
        self._claims = claims
        self.path = path
        self.target = target
        self.target_int = id_to_int(target)
        self.kind = kind
        self.k = k
        self.alpha = alpha
        self.quorum = quorum
        self._own_id = own_id
        self._by_id: dict[bytes, _Candidate] = {}
        self._order: list[tuple[int, bytes]] = []  # (distance, node id), nearest first
        self.in_flight = 0
        self.queries = 0
        self.value_holders = 0
        self.value_depth = 0
        # The first k considered candidates (``_considered``), kept until the candidate
        # set changes: a walk with the diversity tally per reply instead of three.
        self._top: list[_Candidate] | None = None
        self.add(seeds, depth=1)

    def add(self, contacts: Iterable[Contact], *, depth: int) -> None:
        """Learn candidates (from the table, or from a reply at ``depth`` hops)."""
        puzzle = self.diversity.puzzle if self.diversity is not None else None
        for contact in contacts:
            node_id = contact.node_id
            if node_id in self._by_id or node_id == self._own_id:
                continue
            if puzzle is not None and not puzzle.admit(contact):
                continue
            dist = contact.id_int ^ self.target_int
            if len(self._order) >= MAX_CANDIDATES:
                if dist >= self._order[-1][0]:
                    continue
                _, dropped = self._order[-1]
                if self._by_id[dropped].state is _State.IN_FLIGHT:
                    continue  # keep the in-flight bookkeeping exact
                self._order.pop()
                del self._by_id[dropped]
            self._by_id[node_id] = _Candidate(contact, dist, depth)
            bisect.insort(self._order, (dist, node_id))
            self._top = None

    def next_queries(self) -> list[Contact]:
        """Candidates to query now; each is marked in flight."""
        picked: list[Contact] = []
        if self.done:
            return picked
        if (
            self.kind is LookupKind.VALUE
            and self.value_holders
            and self.value_holders + self.in_flight >= self.quorum
        ):
            # The records' neighbourhood is found and the queries in flight can complete
            # the quorum: wait for them instead of spending more datagrams.
            return picked
        for candidate in self._first_k():
            if self.in_flight >= self.alpha:
                break
            if candidate.state is _State.NEW:
                if self._claims is not None:
                    self._claims[candidate.contact.node_id] = self.path
                candidate.state = _State.IN_FLIGHT
                self.in_flight += 1
                self.queries += 1
                picked.append(candidate.contact)
        return picked

    def _first_k(self) -> list[_Candidate]:
        """The first k of ``_considered`` (their states are read live: only a new or a
        failed candidate changes who they are)."""
        if self._top is None:
            self._top = list(islice(self._considered(), self.k))
        return self._top

    def reconsider(self) -> None:
        """Another path claimed nodes: this path's k closest may have changed."""
        self._top = None

    def _considered(self) -> Iterator[_Candidate]:
        """Candidates that have not failed, nearest first, within the diversity limits
        (and, on a disjoint path, not claimed by another path)."""
        tally = Tally(self.diversity) if self.diversity is not None else None
        claims = self._claims
        for _, node_id in self._order:
            candidate = self._by_id[node_id]
            if candidate.state is _State.FAILED:
                continue
            if claims is not None and claims.get(node_id, self.path) != self.path:
                continue
            if tally is not None and not tally.take(candidate.contact):
                continue
            yield candidate

    def depth_of(self, node_id: bytes) -> int:
        candidate = self._by_id.get(node_id)
        return 0 if candidate is None else candidate.depth

    def is_in_flight(self, node_id: bytes) -> bool:
        candidate = self._by_id.get(node_id)
        return candidate is not None and candidate.state is _State.IN_FLIGHT

    def on_reply(self, node_id: bytes, contacts: Iterable[Contact], *, has_value: bool) -> None:
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not _State.IN_FLIGHT:
            return
        candidate.state = _State.ANSWERED
        self.in_flight -= 1
        if has_value:
            self.value_holders += 1
            if not self.value_depth:
                self.value_depth = candidate.depth
        self.add(contacts, depth=candidate.depth + 1)

    def on_failure(self, node_id: bytes) -> None:
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not _State.IN_FLIGHT:
            return
        candidate.state = _State.FAILED
        self.in_flight -= 1
        self._top = None

    @property
    def done(self) -> bool:
        if self.kind is LookupKind.VALUE and self.value_holders >= self.quorum:
            return True
        return all(c.state is _State.ANSWERED for c in self._first_k())

    def closest_answered(self) -> list[Contact]:
        """The k closest candidates that answered, nearest first."""
        result: list[Contact] = []
        for candidate in self._considered():
            if candidate.state is _State.ANSWERED:
                result.append(candidate.contact)
                if len(result) >= self.k:
                    break
        return result

    @property
    def hops(self) -> int:
        """Hops to the first value holder, else to the deepest answering candidate."""
        if self.value_depth:
            return self.value_depth
        answered = [c.depth for c in self._by_id.values() if c.state is _State.ANSWERED]
        return max(answered, default=0)
