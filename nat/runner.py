"""Drive a sans-IO client machine (NAT discovery, reachability) on real UDP sockets.

The machine is built once its sockets are bound (it needs their real ports);
then this loop only sends what the machine queues, feeds what arrives, and
wakes it at its next deadline. Bounded: it stops at ``time_limit`` whatever
the machine says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from nat.behaviour import DISCOVERY_POLICY, DiscoverySockets, NatBehaviour, NatDiscovery
from nat.endpoint import DatagramSocket, open_datagram_socket
from nat.lifetime import MappingLifetime, MappingLifetimeProbe, checkpoints_up_to
from nat.reachability import (
    DEFAULT_MIN_AGREE,
    DialBackObservation,
    Reachability,
    ReachabilityCheck,
    ReachabilityEstimator,
    judge,
)
from nat.stun.attributes import Address
from nat.stun.server import Transmit
from nat.stun.transaction import RetransmitPolicy

__all__ = [
    "ClientMachine",
    "ReachabilityReport",
    "check_reachability",
    "discover_nat",
    "drive",
    "estimate_mapping_lifetime",
    "route_source_ip",
]


class ClientMachine(Protocol):
    """What ``drive`` needs from a sans-IO client."""

    def receive(self, data: bytes, source: Address, local: Address, now: float) -> None: ...
    def handle_timeout(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def take_transmits(self) -> list[Transmit]: ...

    @property
    def done(self) -> bool: ...


M = TypeVar("M", bound=ClientMachine)


def route_source_ip(destination: Address) -> str:
    """The local IP the kernel would use towards ``destination`` (no packet is sent).

    Discovery needs a specific local IP: "is my mapped address my own?" has no
    answer for a socket bound to 0.0.0.0.
    """
    family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(destination)
        return str(probe.getsockname()[0])


async def drive(
    build: Callable[[Sequence[Address]], M],
    local_ip: str,
    socket_count: int,
    *,
    start: Callable[[M, float], None],
    time_limit: float,
) -> M:
    """Bind ``socket_count`` sockets on ``local_ip``, build the machine, run it to completion."""
    loop = asyncio.get_running_loop()
    wakeup = asyncio.Event()
    holder: list[M] = []
    sockets: list[DatagramSocket] = []

    def feeder(index: int) -> Callable[[bytes, Address], None]:
        def feed(data: bytes, source: Address) -> None:
            if holder:
                holder[0].receive(data, source, sockets[index].local, loop.time())
                wakeup.set()

        return feed

    try:
        for index in range(socket_count):
            sockets.append(await open_datagram_socket((local_ip, 0), feeder(index)))
        by_address = {s.local: s for s in sockets}
        machine = build([s.local for s in sockets])
        holder.append(machine)
        start(machine, loop.time())
        give_up = loop.time() + time_limit
        while True:
            for transmit in machine.take_transmits():
                sock = by_address.get(transmit.local) if transmit.local is not None else None
                if sock is not None:
                    sock.send(transmit.data, transmit.remote)
            if machine.done or loop.time() >= give_up:
                return machine
            deadline = min(machine.next_deadline() or give_up, give_up)
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), max(0.0, deadline - loop.time()))
            machine.handle_timeout(loop.time())
    finally:
        for sock in sockets:
            sock.close()


def _finish(machine: ClientMachine) -> None:
    """Past the time limit: let every pending test time out now (a few steps)."""
    for _ in range(4):
        if machine.done:
            return
        machine.handle_timeout(float("inf"))


async def discover_nat(
    server: Address,
    *,
    local_ip: str | None = None,
    policy: RetransmitPolicy = DISCOVERY_POLICY,
    time_limit: float = 10.0,
) -> NatBehaviour:
    """Run RFC 5780 discovery against ``server`` on three fresh sockets."""
    ip = local_ip or route_source_ip(server)

    def build(addresses: Sequence[Address]) -> NatDiscovery:
        sockets = DiscoverySockets(addresses[0], addresses[1], addresses[2])
        return NatDiscovery(server, sockets, random_bytes=os.urandom, policy=policy)

    def start(machine: NatDiscovery, now: float) -> None:
        machine.start(now)

    machine = await drive(build, ip, 3, start=start, time_limit=time_limit)
    _finish(machine)
    return machine.result()


@dataclass(frozen=True)
class ReachabilityReport:
    """The status after one round of dial-back checks, with the evidence."""

    status: Reachability
    local_address: Address
    observations: tuple[DialBackObservation, ...]
    votes: tuple[Reachability | None, ...]  # one per observation, same order
    min_agree: int


async def check_reachability(
    servers: Sequence[Address],
    *,
    local_ip: str | None = None,
    min_agree: int = DEFAULT_MIN_AGREE,
    estimator: ReachabilityEstimator | None = None,
    time_limit: float = 10.0,
) -> ReachabilityReport:
    """Ask every server to dial us back once; feed the votes to ``estimator`` (or a new one)."""
    ip = local_ip or route_source_ip(servers[0])
    estimator = estimator or ReachabilityEstimator(min_agree=min_agree)

    def build(addresses: Sequence[Address]) -> ReachabilityCheck:
        return ReachabilityCheck(servers, addresses[0], random_bytes=os.urandom)

    def start(machine: ReachabilityCheck, now: float) -> None:
        machine.start(now)

    machine = await drive(build, ip, 1, start=start, time_limit=time_limit)
    _finish(machine)
    now = asyncio.get_running_loop().time()
    observations = machine.observations()
    votes = tuple(judge(o, [machine.local]) for o in observations)
    status = estimator.observe_round(observations, [machine.local], now)
    return ReachabilityReport(status, machine.local, observations, votes, estimator.min_agree)


async def estimate_mapping_lifetime(
    server: Address, maximum: float, *, local_ip: str | None = None
) -> MappingLifetime:
    """RFC 5780 §4.6 against ``server`` (it must honour RESPONSE-PORT); takes ~``maximum`` s."""
    ip = local_ip or route_source_ip(server)
    checkpoints = checkpoints_up_to(maximum)

    def build(addresses: Sequence[Address]) -> MappingLifetimeProbe:
        return MappingLifetimeProbe(
            server, addresses[1:], addresses[0], checkpoints, random_bytes=os.urandom
        )

    def start(machine: MappingLifetimeProbe, now: float) -> None:
        machine.start(now)

    machine = await drive(build, ip, len(checkpoints) + 1, start=start, time_limit=maximum + 10.0)
    _finish(machine)
    return machine.result()
