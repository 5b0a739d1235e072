"""Am I publicly reachable? AutoNAT-style dial-back checks and a hysteresis estimator, sans-IO.

A node sends each of several STUN servers (other nodes) a Binding request with
DIAL-BACK from the socket it would accept peers on. Each server answers with
the observed address and, if it can, also sends a *probe* Binding request from
another address (never to another IP) at the observed address; echoing
DIAL-BACK in the response promises the probe.

One server's answer is one vote (``judge``):
- observed address is not one of ours: BEHIND_NAT;
- observed address is ours and the unsolicited probe arrived: PUBLIC;
- observed address is ours, a probe was promised but never came: BEHIND_NAT
  (a firewall: not reachable, which is what the status is for);
- no answer, or ours but no probe promised: no vote.

Across rounds (``ReachabilityEstimator.observe_round``) a server that does not
answer loses its earlier vote (it may be gone, or we may be cut off now); a
server that answers but declines to dial back (rate-limited, or not a
dial-back server) keeps its earlier vote: declining says nothing new about us.

``ReachabilityEstimator`` turns votes into a status only after ``min_agree``
servers agree, keeps one (latest) vote per server so no server counts twice,
and changes a decided status only when the other side has ``min_agree`` votes
*and* outnumbers it: one odd answer never flips it (hysteresis).
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nat.drops import DropCounter
from nat.stun.attributes import Address, DialBack, XorMappedAddress
from nat.stun.client import TransactionTable
from nat.stun.message import StunClass, StunDecodeError, decode_message
from nat.stun.server import Transmit
from nat.stun.transaction import RetransmitPolicy

__all__ = [
    "DEFAULT_MIN_AGREE",
    "DIAL_BACK_WAIT",
    "DialBackObservation",
    "Reachability",
    "ReachabilityCheck",
    "ReachabilityEstimator",
    "judge",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_AGREE = 3
# How long after the last answer we still wait for promised probes.
DIAL_BACK_WAIT = 1.0
# Votes older than this no longer count (addresses and firewalls change).
DEFAULT_VOTE_MAX_AGE = 1800.0
MAX_SERVERS = 32
REACHABILITY_POLICY = RetransmitPolicy(rto=0.2, rc=4, rm=4)


class Reachability(enum.Enum):
    PUBLIC = "public"
    BEHIND_NAT = "behind NAT"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DialBackObservation:
    """What one server told us, and whether its probe reached us."""

    server: Address
    mapped_address: Address | None  # None: no answer
    dial_back_promised: bool
    dial_back_received: bool


def judge(
    observation: DialBackObservation, local_addresses: Iterable[Address]
) -> Reachability | None:
    """One server's vote (see the module docstring); None means "no opinion"."""
    if observation.mapped_address is None:
        return None
    if observation.mapped_address not in set(local_addresses):
        return Reachability.BEHIND_NAT
    if observation.dial_back_received:
        return Reachability.PUBLIC
    if observation.dial_back_promised:
        return Reachability.BEHIND_NAT
    return None


class ReachabilityEstimator:
    """Votes in (per server, with ``now``), a status with hysteresis out."""

    def __init__(
        self, *, min_agree: int = DEFAULT_MIN_AGREE, max_age: float = DEFAULT_VOTE_MAX_AGE
    ) -> None:
        if min_agree < 1:
            raise ValueError("min_agree must be at least 1")
        self.min_agree = min_agree
        self._max_age = max_age
        self._votes: dict[Address, tuple[Reachability, float]] = {}
        self._status = Reachability.UNKNOWN

    def observe(self, server: Address, vote: Reachability | None, now: float) -> Reachability:
        """Record a server's latest vote (None withdraws it); returns the status."""
        if vote is None or vote is Reachability.UNKNOWN:
            self._votes.pop(server, None)
        else:
            self._votes[server] = (vote, now)
            if len(self._votes) > MAX_SERVERS:  # forget the oldest vote
                oldest = min(self._votes, key=lambda s: self._votes[s][1])
                del self._votes[oldest]
        return self.status(now)

    def observe_round(
        self,
        observations: Iterable[DialBackObservation],
        local_addresses: Iterable[Address],
        now: float,
    ) -> Reachability:
        """Feed one check round; a server that answered without a dial-back keeps its vote."""
        local = tuple(local_addresses)
        status = self.status(now)
        for observation in observations:
            vote = judge(observation, local)
            if vote is None and observation.mapped_address is not None:
                continue  # answered, declined to dial back: its earlier vote stands
            status = self.observe(observation.server, vote, now)
        return status

    def tally(self, now: float) -> Counter[Reachability]:
        return Counter(v for v, at in self._votes.values() if now - at <= self._max_age)

    def status(self, now: float) -> Reachability:
        counts = self.tally(now)
        public, behind = counts[Reachability.PUBLIC], counts[Reachability.BEHIND_NAT]
        current = self._status
        if public + behind == 0:
            self._status = Reachability.UNKNOWN  # every vote expired: we know nothing
        elif (
            current is not Reachability.BEHIND_NAT and behind >= self.min_agree and behind > public
        ):
            self._status = Reachability.BEHIND_NAT
        elif current is not Reachability.PUBLIC and public >= self.min_agree and public > behind:
            self._status = Reachability.PUBLIC
        return self._status


class ReachabilityCheck:
    """Ask every server once (with retransmissions) from one socket; collect observations."""

    def __init__(
        self,
        servers: Sequence[Address],
        local: Address,
        *,
        random_bytes: Callable[[int], bytes],
        policy: RetransmitPolicy = REACHABILITY_POLICY,
        wait: float = DIAL_BACK_WAIT,
        drops: DropCounter | None = None,
    ) -> None:
        if not servers or len(servers) > MAX_SERVERS:
            raise ValueError(f"between 1 and {MAX_SERVERS} servers")
        self.servers = tuple(dict.fromkeys(servers))  # each server once
        self.local = local
        self._wait = wait
        self._now = 0.0
        self._drops = drops or DropCounter(logger, lambda: self._now)
        self._table: TransactionTable[Address] = TransactionTable(policy, random_bytes)
        self._tids: dict[bytes, Address] = {}
        self._mapped: dict[Address, Address] = {}
        self._promised: set[Address] = set()
        self._received: set[Address] = set()
        self._answered_at: float | None = None
        self._started = False

    def start(self, now: float) -> None:
        if self._started:
            raise RuntimeError("check already started")
        self._started = True
        self._now = now
        for server in self.servers:
            # DIAL-BACK port 0: "the port you see me at", i.e. where peers would reach me.
            tid = self._table.start(server, self.local, server, (DialBack(0),), now)
            self._tids[tid] = server

    def receive(self, data: bytes, source: Address, local: Address, now: float) -> None:
        self._now = now
        try:
            message = decode_message(data)
        except StunDecodeError as error:
            self._drops.drop("reachability: malformed", str(error))
            return
        server = self._tids.get(message.transaction_id)
        if server is None or local != self.local:
            self._drops.drop("reachability: unknown transaction", str(source))
            return
        if message.cls is StunClass.REQUEST:
            # A probe: our transaction id, from an address we never sent to.
            if source != server:
                self._received.add(server)
            return
        entry = self._table.match(message, local)
        if entry is None:
            return  # a duplicate answer to a retransmission
        mapped = message.get(XorMappedAddress)
        if message.cls is StunClass.SUCCESS and mapped is not None:
            self._mapped[server] = mapped.address
            if message.get(DialBack) is not None:
                self._promised.add(server)
        self._answered_at = now

    def handle_timeout(self, now: float) -> None:
        self._now = now
        if self._table.handle_timeout(now) and self._answered_at is None:
            self._answered_at = now

    def next_deadline(self) -> float | None:
        if len(self._table):
            return self._table.next_deadline()
        if self._answered_at is not None and not self.done:
            return self._answered_at + self._wait
        return None

    def take_transmits(self) -> list[Transmit]:
        return self._table.take_transmits()

    @property
    def done(self) -> bool:
        if len(self._table) or not self._started:
            return False
        if self._promised <= self._received:
            return True
        return self._answered_at is not None and self._now >= self._answered_at + self._wait

    def observations(self) -> tuple[DialBackObservation, ...]:
        return tuple(
            DialBackObservation(
                server=server,
                mapped_address=self._mapped.get(server),
                dial_back_promised=server in self._promised,
                dial_back_received=server in self._received,
            )
            for server in self.servers
        )
