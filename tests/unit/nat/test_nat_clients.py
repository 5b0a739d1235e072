"""NAT discovery and reachability machines against real server cores and a modelled NAT.

Everything runs in virtual time in memory: our ``StunServer`` cores, a NAT
model with RFC 4787 mapping and filtering behaviours, optional seeded loss.
The netns lab checks the same machines against real Linux NATs.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.behaviour import (
    DiscoverySockets,
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviour,
    NatClass,
    NatDiscovery,
    nat_class,
)
from nat.lifetime import MappingLifetimeProbe, checkpoints_up_to
from nat.reachability import (
    DialBackObservation,
    Reachability,
    ReachabilityCheck,
    ReachabilityEstimator,
    judge,
)
from nat.stun.attributes import Address
from nat.stun.server import StunServer, Transmit
from nat.stun.transaction import ClientTransaction, RetransmitPolicy, TransactionState

PRIVATE_IP = "10.0.0.2"
PUBLIC_IP = "203.0.113.1"
S1, S2 = "198.51.100.1", "198.51.100.2"
SERVER = (S1, 3478)
M = MappingBehaviour
F = FilteringBehaviour


@dataclass
class Nat:
    """A NAT (or, with ``mapping=None``, no NAT) between private sockets and the world."""

    mapping: MappingBehaviour | None
    filtering: FilteringBehaviour
    udp_blocked: bool = False
    hairpin: bool = False
    lifetime: float | None = None  # idle seconds before a mapping is forgotten
    now: float = 0.0  # set by the World before each packet
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))
    _out: dict[tuple[object, ...], int] = field(default_factory=dict)  # key -> public port
    _back: dict[int, Address] = field(default_factory=dict)  # public port -> private socket
    _contacted: dict[int, set[Address]] = field(default_factory=dict)
    _used: dict[int, float] = field(default_factory=dict)  # public port -> last packet

    def _expire(self) -> None:
        if self.lifetime is None:
            return
        for port, used in list(self._used.items()):
            if self.now - used > self.lifetime:
                del self._used[port]
                self._back.pop(port, None)
                self._contacted.pop(port, None)
                self._out = {k: v for k, v in self._out.items() if v != port}

    def outbound(self, local: Address, remote: Address) -> Address | None:
        """The source address the world sees, or None if dropped."""
        if self.udp_blocked:
            return None
        if self.mapping is None:
            return local
        self._expire()
        key: tuple[object, ...] = {
            M.ENDPOINT_INDEPENDENT: (local,),
            M.ADDRESS_DEPENDENT: (local, remote[0]),
            M.ADDRESS_AND_PORT_DEPENDENT: (local, remote),
        }[self.mapping]
        if key not in self._out:
            port = next(self._ports)
            self._out[key] = port
            self._back[port] = local
        port = self._out[key]
        self._contacted.setdefault(port, set()).add(remote)
        self._used[port] = self.now
        return (PUBLIC_IP, port)

    def inbound(self, source: Address, destination: Address) -> Address | None:
        """The private socket a packet to ``destination`` reaches, or None if filtered."""
        if self.udp_blocked:
            return None
        if self.mapping is None:
            if self.filtering is F.ENDPOINT_INDEPENDENT:
                return destination
            contacted = self._contacted.get(destination[1], set())
            allowed = self._allowed(source, contacted)
            return destination if allowed else None
        self._expire()
        local = self._back.get(destination[1])
        if local is None or destination[0] != PUBLIC_IP:
            return None
        contacted = self._contacted.get(destination[1], set())
        if not self._allowed(source, contacted):
            return None
        self._used[destination[1]] = self.now  # Linux refreshes on inbound packets too
        return local

    def _allowed(self, source: Address, contacted: set[Address]) -> bool:
        if self.filtering is F.ENDPOINT_INDEPENDENT:
            return True
        if self.filtering is F.ADDRESS_DEPENDENT:
            return any(ip == source[0] for ip, _ in contacted)
        return source in contacted

    def note_firewall_contact(self, local: Address, remote: Address) -> None:
        """No-NAT firewall state: remember who a local port talked to."""
        self._contacted.setdefault(local[1], set()).add(remote)


Machine = NatDiscovery | ReachabilityCheck | MappingLifetimeProbe


class World:
    """Routes datagrams between a client machine, a NAT and server cores; no time passes."""

    def __init__(self, nat: Nat, servers: list[StunServer], loss: float = 0.0) -> None:
        self.nat = nat
        self.servers = {a: s for s in servers for a in s.local_addresses}
        self.random = random.Random(1234)
        self.loss = loss
        self.private_ip = PRIVATE_IP if nat.mapping is not None else PUBLIC_IP

    def _lost(self) -> bool:
        return self.loss > 0 and self.random.random() < self.loss

    def run(self, machine: Machine, now: float = 100.0) -> float:
        machine.start(now)
        for _ in range(1000):
            self._flush(machine, now)
            if machine.done:
                return now
            deadline = machine.next_deadline()
            assert deadline is not None and deadline >= now
            now = deadline
            machine.handle_timeout(now)
        raise AssertionError("machine never finished")

    def _flush(self, machine: Machine, now: float) -> None:
        for _ in range(100):
            transmits = machine.take_transmits()
            if not transmits:
                return
            for transmit in transmits:
                self._from_client(machine, transmit, now)

    def _from_client(self, machine: Machine, transmit: Transmit, now: float) -> None:
        assert transmit.local is not None
        self.nat.now = now
        if self.nat.mapping is None:
            self.nat.note_firewall_contact(transmit.local, transmit.remote)
        source = self.nat.outbound(transmit.local, transmit.remote)
        if source is None or self._lost():
            return
        if transmit.remote[0] == PUBLIC_IP or transmit.remote[0] == self.private_ip:
            # Hairpin: towards our own public address.
            if self.nat.hairpin or self.nat.mapping is None:
                target = self.nat.inbound(source, transmit.remote)
                if target is not None:
                    machine.receive(transmit.data, source, target, now)
            return
        server = self.servers.get(transmit.remote)
        if server is None:
            return
        for reply in server.handle_datagram(transmit.data, source, transmit.remote, now):
            origin = reply.local if reply.local is not None else ("198.51.100.99", 5555)
            target = self.nat.inbound(origin, reply.remote)
            if target is not None and not self._lost():
                machine.receive(reply.data, origin, target, now)


def five_780_server() -> StunServer:
    return StunServer(SERVER, alt_ip=S2, alt_port=3479, dial_back=True)


def discover(nat: Nat, server: StunServer | None = None, loss: float = 0.0) -> NatBehaviour:
    world = World(nat, [server or five_780_server()], loss)
    ip = world.private_ip
    sockets = DiscoverySockets((ip, 1000), (ip, 1001), (ip, 1002))
    randomness = random.Random(7)
    machine = NatDiscovery(SERVER, sockets, random_bytes=randomness.randbytes)
    world.run(machine)
    return machine.result()


CONE_MATRIX = [
    (mapping, filtering)
    for mapping in (M.ENDPOINT_INDEPENDENT, M.ADDRESS_DEPENDENT, M.ADDRESS_AND_PORT_DEPENDENT)
    for filtering in (F.ENDPOINT_INDEPENDENT, F.ADDRESS_DEPENDENT, F.ADDRESS_AND_PORT_DEPENDENT)
]


@pytest.mark.parametrize(("mapping", "filtering"), CONE_MATRIX)
def test_discovery_finds_every_mapping_and_filtering(
    mapping: MappingBehaviour, filtering: FilteringBehaviour
) -> None:
    result = discover(Nat(mapping, filtering))
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.mapped_address is not None and result.mapped_address[0] == PUBLIC_IP
    assert result.local_address == (PRIVATE_IP, 1000)
    assert result.other_address == (S2, 3479)
    assert result.hairpinning is False


@pytest.mark.parametrize(("mapping", "filtering"), CONE_MATRIX)
def test_discovery_survives_seeded_loss(
    mapping: MappingBehaviour, filtering: FilteringBehaviour
) -> None:
    """20 % loss each way: four tries per test are enough for this seed (deterministic)."""
    result = discover(Nat(mapping, filtering), loss=0.2)
    assert (result.mapping, result.filtering) == (mapping, filtering)


def test_no_nat_and_hairpin() -> None:
    result = discover(Nat(None, F.ENDPOINT_INDEPENDENT))
    assert result.mapping is M.NO_NAT
    assert result.filtering is F.ENDPOINT_INDEPENDENT
    assert result.mapped_address == result.local_address
    assert result.hairpinning is True
    assert nat_class(result) is NatClass.NONE


def test_firewall_without_nat() -> None:
    result = discover(Nat(None, F.ADDRESS_AND_PORT_DEPENDENT))
    assert result.mapping is M.NO_NAT
    assert result.filtering is F.ADDRESS_AND_PORT_DEPENDENT
    assert nat_class(result) is NatClass.FIREWALLED


def test_hairpinning_nat() -> None:
    result = discover(Nat(M.ENDPOINT_INDEPENDENT, F.ENDPOINT_INDEPENDENT, hairpin=True))
    assert result.hairpinning is True


def test_udp_blocked_takes_one_transaction_timeout() -> None:
    nat = Nat(M.ENDPOINT_INDEPENDENT, F.ENDPOINT_INDEPENDENT, udp_blocked=True)
    world = World(nat, [five_780_server()])
    sockets = DiscoverySockets((PRIVATE_IP, 1000), (PRIVATE_IP, 1001), (PRIVATE_IP, 1002))
    machine = NatDiscovery(SERVER, sockets, random_bytes=random.Random(1).randbytes)
    finished = world.run(machine, now=0.0)
    result = machine.result()
    assert (result.mapping, result.filtering) == (M.UDP_BLOCKED, F.UDP_BLOCKED)
    assert result.mapped_address is None and result.hairpinning is None
    assert finished == pytest.approx(2.2)  # DISCOVERY_POLICY: 0, .2, .6, 1.4; gives up at 2.2
    assert nat_class(result) is NatClass.UDP_BLOCKED


def test_server_without_rfc5780_gives_unknown_not_a_guess() -> None:
    result = discover(Nat(M.ENDPOINT_INDEPENDENT, F.ENDPOINT_INDEPENDENT), StunServer(SERVER))
    assert result.mapping is M.UNKNOWN and result.filtering is F.UNKNOWN
    assert result.mapped_address is not None
    assert nat_class(result) is NatClass.UNKNOWN


@pytest.mark.parametrize(
    ("mapping", "filtering", "expected"),
    [
        (M.ENDPOINT_INDEPENDENT, F.ENDPOINT_INDEPENDENT, NatClass.FULL_CONE),
        (M.ENDPOINT_INDEPENDENT, F.ADDRESS_DEPENDENT, NatClass.ADDRESS_RESTRICTED),
        (M.ENDPOINT_INDEPENDENT, F.ADDRESS_AND_PORT_DEPENDENT, NatClass.PORT_RESTRICTED),
        (M.ADDRESS_AND_PORT_DEPENDENT, F.ADDRESS_AND_PORT_DEPENDENT, NatClass.SYMMETRIC),
        (M.ADDRESS_DEPENDENT, F.ADDRESS_DEPENDENT, NatClass.SYMMETRIC),
    ],
)
def test_classic_names(
    mapping: MappingBehaviour, filtering: FilteringBehaviour, expected: NatClass
) -> None:
    assert nat_class(discover(Nat(mapping, filtering))) is expected


def test_garbage_and_strangers_do_not_disturb_discovery() -> None:
    sockets = DiscoverySockets((PRIVATE_IP, 1000), (PRIVATE_IP, 1001), (PRIVATE_IP, 1002))
    machine = NatDiscovery(SERVER, sockets, random_bytes=random.Random(3).randbytes)
    machine.start(0.0)
    machine.receive(b"garbage", SERVER, sockets.mapping, 0.0)
    machine.receive(b"\x01\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), SERVER, sockets.mapping, 0.0)
    assert not machine.done
    with pytest.raises(RuntimeError):
        machine.result()


# ---------------------------------------------------------------- transactions
def test_rfc8489_retransmission_schedule() -> None:
    """RFC 8489 §6.2.1: "requests would be sent at times 0 ms, 500 ms, 1500 ms, 3500 ms,
    7500 ms, 15500 ms, and 31500 ms. If the client has not received a response after
    39500 ms, the client will consider the transaction to have timed out.\""""
    transaction = ClientTransaction(RetransmitPolicy(), 0.0)
    sends = [0.0]
    while (deadline := transaction.next_deadline()) is not None:
        if transaction.on_timer(deadline):
            sends.append(deadline)
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert transaction.state is TransactionState.TIMED_OUT
    assert transaction.transmissions == 7


def test_transaction_stops_when_answered_and_late_timers_do_not_burst() -> None:
    transaction = ClientTransaction(RetransmitPolicy(), 0.0)
    assert transaction.on_timer(10.0) is True  # one resend, however late
    assert transaction.transmissions == 5
    transaction.on_response()
    assert transaction.next_deadline() is None
    assert transaction.on_timer(100.0) is False
    assert transaction.state is TransactionState.ANSWERED


# ---------------------------------------------------------------- reachability
def reachability(nat: Nat, count: int = 3, dial_back: bool = True) -> list[Reachability | None]:
    servers = [
        StunServer((f"198.51.100.{10 + n}", 3478), dial_back=dial_back) for n in range(count)
    ]
    world = World(nat, servers)
    local = (world.private_ip, 2000)
    machine = ReachabilityCheck(
        [s.primary for s in servers], local, random_bytes=random.Random(5).randbytes
    )
    world.run(machine)
    return [judge(o, [local]) for o in machine.observations()]


def test_public_host_is_public() -> None:
    assert reachability(Nat(None, F.ENDPOINT_INDEPENDENT)) == [Reachability.PUBLIC] * 3


@pytest.mark.parametrize(("mapping", "filtering"), CONE_MATRIX)
def test_every_nat_is_behind_nat(mapping: MappingBehaviour, filtering: FilteringBehaviour) -> None:
    """Even a full cone, whose dial-back gets through, is not "public": the address is not ours."""
    assert reachability(Nat(mapping, filtering)) == [Reachability.BEHIND_NAT] * 3


def test_firewalled_public_address_is_not_reachable() -> None:
    votes = reachability(Nat(None, F.ADDRESS_AND_PORT_DEPENDENT))
    assert votes == [Reachability.BEHIND_NAT] * 3


def test_servers_that_do_not_dial_back_give_no_vote() -> None:
    assert reachability(Nat(None, F.ENDPOINT_INDEPENDENT), dial_back=False) == [None] * 3


def test_udp_blocked_gives_no_vote() -> None:
    nat = Nat(M.ENDPOINT_INDEPENDENT, F.ENDPOINT_INDEPENDENT, udp_blocked=True)
    assert reachability(nat) == [None] * 3


@pytest.mark.parametrize(
    ("mapped", "promised", "received", "vote"),
    [
        (None, False, False, None),
        (("1.2.3.4", 5), True, True, Reachability.BEHIND_NAT),
        (("10.0.0.2", 2000), True, True, Reachability.PUBLIC),
        (("10.0.0.2", 2000), True, False, Reachability.BEHIND_NAT),
        (("10.0.0.2", 2000), False, False, None),
        (("10.0.0.2", 2000), False, True, Reachability.PUBLIC),
    ],
)
def test_judge_table(
    mapped: Address | None, promised: bool, received: bool, vote: Reachability | None
) -> None:
    observation = DialBackObservation(("9.9.9.9", 1), mapped, promised, received)
    assert judge(observation, [("10.0.0.2", 2000)]) is vote


def test_estimator_needs_agreement_and_does_not_flap() -> None:
    estimator = ReachabilityEstimator(min_agree=3)
    servers = [(f"192.0.2.{n}", 3478) for n in range(6)]
    assert estimator.observe(servers[0], Reachability.PUBLIC, 0) is Reachability.UNKNOWN
    assert estimator.observe(servers[1], Reachability.PUBLIC, 1) is Reachability.UNKNOWN
    assert estimator.observe(servers[2], Reachability.PUBLIC, 2) is Reachability.PUBLIC
    # One, then two dissenters change nothing.
    assert estimator.observe(servers[3], Reachability.BEHIND_NAT, 3) is Reachability.PUBLIC
    assert estimator.observe(servers[4], Reachability.BEHIND_NAT, 4) is Reachability.PUBLIC
    # A server repeating itself still counts once.
    assert estimator.observe(servers[4], Reachability.BEHIND_NAT, 5) is Reachability.PUBLIC
    # Three against three: still no flip (the other side must outnumber).
    assert estimator.observe(servers[5], Reachability.BEHIND_NAT, 6) is Reachability.PUBLIC
    # A server changing its mind tips it.
    assert estimator.observe(servers[0], Reachability.BEHIND_NAT, 7) is Reachability.BEHIND_NAT
    # Votes expire: nothing fresh, nothing known.
    assert estimator.status(10_000) is Reachability.UNKNOWN


def test_rounds_keep_votes_of_servers_that_decline_and_drop_silent_ones() -> None:
    """A rate-limited server (answers, no dial-back) must not demote a public node."""
    me = ("203.0.113.7", 4000)
    servers = [(f"192.0.2.{n}", 3478) for n in range(3)]
    estimator = ReachabilityEstimator(min_agree=3)
    probed = [DialBackObservation(s, me, True, True) for s in servers]
    assert estimator.observe_round(probed, [me], 0) is Reachability.PUBLIC
    declined = [DialBackObservation(s, me, False, False) for s in servers]
    assert estimator.observe_round(declined, [me], 10) is Reachability.PUBLIC
    assert estimator.tally(10)[Reachability.PUBLIC] == 3
    # Silence withdraws a vote: with all three gone we know nothing any more.
    silent = [DialBackObservation(s, None, False, False) for s in servers]
    assert estimator.observe_round(silent[:1], [me], 20) is Reachability.PUBLIC
    assert estimator.tally(20)[Reachability.PUBLIC] == 2
    assert estimator.observe_round(silent, [me], 30) is Reachability.UNKNOWN
    # A promised probe that never came is a vote against, as in ``judge``.
    firewalled = [DialBackObservation(s, me, True, False) for s in servers]
    assert estimator.observe_round(firewalled, [me], 40) is Reachability.BEHIND_NAT


@given(
    st.lists(
        st.tuples(
            st.integers(0, 7), st.sampled_from([Reachability.PUBLIC, Reachability.BEHIND_NAT, None])
        ),
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_estimator_changes_only_with_min_agree_fresh_votes(
    events: list[tuple[int, Reachability | None]], min_agree: int
) -> None:
    estimator = ReachabilityEstimator(min_agree=min_agree)
    status = Reachability.UNKNOWN
    for now, (server, vote) in enumerate(events):
        new = estimator.observe((f"192.0.2.{server}", 1), vote, float(now))
        if new is not status and new is not Reachability.UNKNOWN:
            counts: Counter[Reachability] = estimator.tally(float(now))
            assert counts[new] >= min_agree
            assert counts[new] > sum(counts.values()) - counts[new]
        status = new


# ---------------------------------------------------------------- mapping lifetime
def lifetime_probe(nat: Nat, maximum: float) -> tuple[float | None, float | None, float]:
    world = World(nat, [five_780_server()])
    ip = world.private_ip
    points = checkpoints_up_to(maximum)
    keepers = [(ip, 3000 + n) for n in range(len(points))]
    probe = MappingLifetimeProbe(
        SERVER, keepers, (ip, 2999), points, random_bytes=random.Random(9).randbytes
    )
    finished = world.run(probe, now=0.0)
    result = probe.result()
    return result.lower, result.upper, finished


def test_checkpoints_are_bounded() -> None:
    assert checkpoints_up_to(20) == (2.0, 4.0, 8.0, 16.0, 20)
    assert checkpoints_up_to(1) == (1,)
    assert len(checkpoints_up_to(300)) <= 10
    with pytest.raises(ValueError):
        checkpoints_up_to(301)


@pytest.mark.parametrize(
    ("lifetime", "bounds"), [(6.0, (4.0, 8.0)), (30.0, (20.0, None)), (1.0, (None, 2.0))]
)
@pytest.mark.parametrize("mapping", [M.ENDPOINT_INDEPENDENT, M.ADDRESS_AND_PORT_DEPENDENT])
def test_mapping_lifetime_is_bracketed(
    lifetime: float, bounds: tuple[float | None, float | None], mapping: MappingBehaviour
) -> None:
    nat = Nat(mapping, F.ADDRESS_AND_PORT_DEPENDENT, lifetime=lifetime)
    lower, upper, finished = lifetime_probe(nat, 20.0)
    assert (lower, upper) == bounds
    assert finished < 20.0 + 3.0  # bounded: the last checkpoint plus one transaction


def test_no_nat_mapping_never_expires() -> None:
    lower, upper, _ = lifetime_probe(Nat(None, F.ENDPOINT_INDEPENDENT), 8.0)
    assert (lower, upper) == (8.0, None)
