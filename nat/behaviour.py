"""NAT behaviour discovery (RFC 5780 §4.3 mapping, §4.4 filtering, §4.5 hairpinning), sans-IO.

Three local sockets, so one test cannot open the NAT for another:
- ``mapping``: test I to the primary address, test II to (alternate IP, primary
  port), test III to the alternate address; compares the mapped addresses.
- ``filtering``: test I to the primary, then CHANGE-REQUEST (IP and port) and
  CHANGE-REQUEST (port); only ever *sends* to the primary address, so any answer
  from the alternate address is unsolicited as far as the NAT knows.
- ``hairpin``: sends a Binding request to the mapping socket's public address;
  hairpinning works if the mapping socket receives it.

A lost answer and a filtered answer look the same; the retransmission policy
(several tries per test) is what separates them. Tests that do not depend on
each other run at the same time, so a run takes about one transaction timeout.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nat.drops import DropCounter
from nat.stun.attributes import Address, ChangeRequest, OtherAddress, XorMappedAddress
from nat.stun.client import Outstanding, TransactionTable
from nat.stun.message import StunClass, StunDecodeError, StunMessage, decode_message
from nat.stun.server import Transmit
from nat.stun.transaction import RetransmitPolicy

__all__ = [
    "DISCOVERY_POLICY",
    "DiscoverySockets",
    "FilteringBehaviour",
    "MappingBehaviour",
    "NatBehaviour",
    "NatClass",
    "NatDiscovery",
    "nat_class",
]

logger = logging.getLogger(__name__)

# Sends at 0, 0.2, 0.6, 1.4 s; gives up at 2.2 s: four tries per test, a short CLI.
DISCOVERY_POLICY = RetransmitPolicy(rto=0.2, rc=4, rm=4)


class MappingBehaviour(enum.Enum):
    """RFC 4787 §4.1 mapping behaviour, as RFC 5780 §4.3 measures it."""

    NO_NAT = "no NAT"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UDP_BLOCKED = "UDP blocked"
    UNKNOWN = "unknown"


class FilteringBehaviour(enum.Enum):
    """RFC 4787 §5 filtering behaviour, as RFC 5780 §4.4 measures it."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UDP_BLOCKED = "UDP blocked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NatBehaviour:
    """What discovery found out; ``None`` where a test could not run."""

    server: Address
    mapping: MappingBehaviour
    filtering: FilteringBehaviour
    local_address: Address
    mapped_address: Address | None
    other_address: Address | None  # the server's RFC 5780 OTHER-ADDRESS
    hairpinning: bool | None


@dataclass(frozen=True)
class DiscoverySockets:
    """The bound local addresses of the three sockets (specific IPs, not wildcards)."""

    mapping: Address
    filtering: Address
    hairpin: Address


class _Test(enum.Enum):
    MAPPING_1 = "mapping test I"
    MAPPING_2 = "mapping test II"
    MAPPING_3 = "mapping test III"
    FILTERING_1 = "filtering test I"
    FILTERING_2 = "filtering test II"
    FILTERING_3 = "filtering test III"
    HAIRPIN = "hairpinning"


class NatDiscovery:
    """The discovery state machine: ``start``, then feed datagrams and timers until ``done``."""

    def __init__(
        self,
        server: Address,
        sockets: DiscoverySockets,
        *,
        random_bytes: Callable[[int], bytes],
        policy: RetransmitPolicy = DISCOVERY_POLICY,
        drops: DropCounter | None = None,
    ) -> None:
        self.server = server
        self.sockets = sockets
        self._now = 0.0
        self._drops = drops or DropCounter(logger, lambda: self._now)
        self._table: TransactionTable[_Test] = TransactionTable(policy, random_bytes)
        self._policy = policy
        self._started = False
        self._mapped: dict[_Test, Address] = {}
        self._failed: set[_Test] = set()
        self._other: Address | None = None
        self._filter_answers: set[_Test] = set()
        self._mapping: MappingBehaviour | None = None
        self._filtering: FilteringBehaviour | None = None
        self._hairpin: bool | None = None
        self._hairpin_tid: bytes | None = None
        self._hairpin_deadline: float | None = None

    # ------------------------------------------------------------ driving
    def start(self, now: float) -> None:
        if self._started:
            raise RuntimeError("discovery already started")
        self._started = True
        self._now = now
        self._table.start(_Test.MAPPING_1, self.sockets.mapping, self.server, (), now)
        self._table.start(_Test.FILTERING_1, self.sockets.filtering, self.server, (), now)

    def receive(self, data: bytes, source: Address, local: Address, now: float) -> None:
        self._now = now
        try:
            message = decode_message(data)
        except StunDecodeError as error:
            self._drops.drop("discovery: malformed", str(error))
            return
        if message.cls is StunClass.REQUEST:
            self._hairpin_request(message, local)
            return
        entry = self._table.match(message, local)
        if entry is None:
            self._drops.drop("discovery: unmatched response", str(source))
            return
        self._answered(entry, message, now)

    def handle_timeout(self, now: float) -> None:
        self._now = now
        for entry in self._table.handle_timeout(now):
            self._timed_out(entry.key, now)
        if self._hairpin_deadline is not None and now >= self._hairpin_deadline:
            self._hairpin_deadline = None
            if self._hairpin is None:
                self._hairpin = False

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._table.next_deadline(), self._hairpin_deadline) if d]
        return min(deadlines, default=None)

    def take_transmits(self) -> list[Transmit]:
        return self._table.take_transmits()

    @property
    def done(self) -> bool:
        return (
            self._mapping is not None
            and self._filtering is not None
            and (self._hairpin is not None or self._hairpin_deadline is None)
            and len(self._table) == 0
        )

    def result(self) -> NatBehaviour:
        if not self.done:
            raise RuntimeError("discovery is not finished")
        assert self._mapping is not None and self._filtering is not None
        return NatBehaviour(
            server=self.server,
            mapping=self._mapping,
            filtering=self._filtering,
            local_address=self.sockets.mapping,
            mapped_address=self._mapped.get(_Test.MAPPING_1),
            other_address=self._other,
            hairpinning=self._hairpin,
        )

    # ------------------------------------------------------------ the tests
    def _answered(self, entry: Outstanding[_Test], message: StunMessage, now: float) -> None:
        test = entry.key
        if message.cls is StunClass.ERROR:
            # e.g. 420 to CHANGE-REQUEST: the server cannot do RFC 5780 discovery.
            self._failed.add(test)
            self._decide_after_error(test)
            return
        mapped = message.get(XorMappedAddress)
        if mapped is None:
            self._failed.add(test)
            self._decide_after_error(test)
            return
        self._mapped[test] = mapped.address
        if test is _Test.MAPPING_1:
            other = message.get(OtherAddress)
            self._other = other.address if other is not None else None
            self._after_mapping_1(mapped.address, now)
        elif test in (_Test.MAPPING_2, _Test.MAPPING_3):
            self._decide_mapping()
        elif test is _Test.FILTERING_1:
            other = message.get(OtherAddress)
            if other is None:
                self._filtering = FilteringBehaviour.UNKNOWN
                return
            # RFC 5780 §4.4: "In test II, the client sends a binding request to the
            # primary address of the server with the "change IP" and "change port"
            # flags set ... In test III, the client sends a binding request with
            # only the "change port" flag set."
            filtering = self.sockets.filtering
            change_both, change_port = ChangeRequest(True, True), ChangeRequest(False, True)
            self._table.start(_Test.FILTERING_2, filtering, self.server, (change_both,), now)
            self._table.start(_Test.FILTERING_3, filtering, self.server, (change_port,), now)
        elif test in (_Test.FILTERING_2, _Test.FILTERING_3):
            self._filter_answers.add(test)
            self._decide_filtering()

    def _after_mapping_1(self, mapped: Address, now: float) -> None:
        # RFC 5780 §4.3: "If the XOR-MAPPED-ADDRESS is the same as the local address
        # ... the client is not behind a NAT" (for the mapping, at least).
        if mapped == self.sockets.mapping:
            self._mapping = MappingBehaviour.NO_NAT
        elif self._other is None:
            self._mapping = MappingBehaviour.UNKNOWN  # not an RFC 5780 server
        else:
            # "Test II: the client sends a Binding Request to the alternate address,
            # but primary port. ... Test III: ... to the alternate address and port."
            alt_ip, alt_port = self._other
            mapping = self.sockets.mapping
            self._table.start(_Test.MAPPING_2, mapping, (alt_ip, self.server[1]), (), now)
            self._table.start(_Test.MAPPING_3, mapping, (alt_ip, alt_port), (), now)
        # RFC 5780 §4.5: "send a Binding Request ... to the mapped address" from
        # another socket; the hairpin socket is a plain sender, the mapping socket
        # listens for our transaction id.
        self._hairpin_tid = self._table.start(_Test.HAIRPIN, self.sockets.hairpin, mapped, (), now)
        self._hairpin_deadline = None

    def _hairpin_request(self, message: StunMessage, local: Address) -> None:
        if message.transaction_id == self._hairpin_tid and local == self.sockets.mapping:
            self._hairpin = True
            self._table.cancel(message.transaction_id)

    def _decide_mapping(self) -> None:
        if self._mapping is not None:
            return
        first = self._mapped.get(_Test.MAPPING_1)
        second = self._mapped.get(_Test.MAPPING_2)
        third = self._mapped.get(_Test.MAPPING_3)
        if first is None or second is None:
            return
        # "If the XOR-MAPPED-ADDRESS in the Binding Response [test II] is the same as
        # test I's, the NAT currently has Endpoint-Independent Mapping."
        if second == first:
            self._mapping = MappingBehaviour.ENDPOINT_INDEPENDENT
        elif third is not None:
            # "If [test III's] is the same as test II's, the NAT has
            # Address-Dependent Mapping; otherwise Address and Port-Dependent."
            self._mapping = (
                MappingBehaviour.ADDRESS_DEPENDENT
                if third == second
                else MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT
            )

    def _decide_filtering(self) -> None:
        if self._filtering is not None:
            return
        if _Test.FILTERING_2 in self._filter_answers:
            self._filtering = FilteringBehaviour.ENDPOINT_INDEPENDENT
        elif _Test.FILTERING_2 in self._failed:
            if _Test.FILTERING_3 in self._filter_answers:
                self._filtering = FilteringBehaviour.ADDRESS_DEPENDENT
            elif _Test.FILTERING_3 in self._failed:
                self._filtering = FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT

    def _decide_after_error(self, test: _Test) -> None:
        if test in (_Test.MAPPING_2, _Test.MAPPING_3) and self._mapping is None:
            self._mapping = MappingBehaviour.UNKNOWN
        elif (test in (_Test.FILTERING_2, _Test.FILTERING_3) and self._filtering is None) or (
            test is _Test.FILTERING_1 and self._filtering is None
        ):
            self._filtering = FilteringBehaviour.UNKNOWN
        elif test is _Test.MAPPING_1:
            self._mapping = MappingBehaviour.UNKNOWN
            self._filtering = self._filtering or FilteringBehaviour.UNKNOWN

    def _timed_out(self, test: _Test, now: float) -> None:
        self._failed.add(test)
        if test is _Test.MAPPING_1:
            # RFC 5780 §4.3 via RFC 3489 §10.1: no answer to test I: UDP is blocked.
            self._mapping = MappingBehaviour.UDP_BLOCKED
            if _Test.FILTERING_1 in self._failed:
                self._filtering = FilteringBehaviour.UDP_BLOCKED
        elif test is _Test.FILTERING_1:
            blocked = self._mapping in (None, MappingBehaviour.UDP_BLOCKED)
            self._filtering = (
                FilteringBehaviour.UDP_BLOCKED if blocked else FilteringBehaviour.UNKNOWN
            )
        elif test in (_Test.MAPPING_2, _Test.MAPPING_3):
            if _Test.MAPPING_2 in self._failed:
                self._mapping = self._mapping or MappingBehaviour.UNKNOWN
            else:
                self._decide_mapping()
                self._mapping = self._mapping or MappingBehaviour.UNKNOWN
        elif test in (_Test.FILTERING_2, _Test.FILTERING_3):
            self._decide_filtering()
        elif test is _Test.HAIRPIN:
            # The request is never answered; a short grace for a late arrival.
            self._hairpin_deadline = now + self._policy.rto


class NatClass(enum.Enum):
    """The classic (RFC 3489) names people know, derived from mapping and filtering."""

    NONE = "no NAT (open internet)"
    FIREWALLED = "no NAT, but a filtering firewall"
    FULL_CONE = "full cone"
    ADDRESS_RESTRICTED = "address-restricted cone"
    PORT_RESTRICTED = "port-restricted cone"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "UDP blocked"
    UNKNOWN = "unknown"


def nat_class(behaviour: NatBehaviour) -> NatClass:
    """RFC 4787 behaviours -> the classic name (RFC 5780 §1 explains the mapping)."""
    mapping, filtering = behaviour.mapping, behaviour.filtering
    if mapping is MappingBehaviour.UDP_BLOCKED:
        return NatClass.UDP_BLOCKED
    if mapping is MappingBehaviour.NO_NAT:
        if filtering is FilteringBehaviour.ENDPOINT_INDEPENDENT:
            return NatClass.NONE
        if filtering is FilteringBehaviour.UNKNOWN:
            return NatClass.UNKNOWN
        return NatClass.FIREWALLED
    if mapping in (
        MappingBehaviour.ADDRESS_DEPENDENT,
        MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT,
    ):
        return NatClass.SYMMETRIC
    if mapping is MappingBehaviour.ENDPOINT_INDEPENDENT:
        return {
            FilteringBehaviour.ENDPOINT_INDEPENDENT: NatClass.FULL_CONE,
            FilteringBehaviour.ADDRESS_DEPENDENT: NatClass.ADDRESS_RESTRICTED,
            FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT: NatClass.PORT_RESTRICTED,
        }.get(filtering, NatClass.UNKNOWN)
    return NatClass.UNKNOWN
