"""Forwarding routes: the ChannelData hot path (UDP) as one dict lookup per packet.

A route caches what the core's full checks (``TurnServer.channel_data_from_client``
and ``from_peer``) decided for one bound channel: allocation found, channel bound,
permission installed. The runner looks a route up by what the socket gave it
(client address + channel number on a listener; peer address on a relayed
socket), compares ``now`` with the route's ``expiry``, calls ``admit`` and sends.
A miss or a stale route goes the slow path, which re-checks everything, drops and
counts by reason, and (if the packet is relayed over a channel) builds the route
again. Only the core writes the tables; the runner reads them.

Invariants (what keeps the fast path exactly as strict as the slow one):
- ``expiry`` is the earliest of the allocation's, the channel binding's and the
  permission's expiry when the route was built, and a route is used only while
  ``now < expiry``: RFC 8656 §12 and §9 lifetimes hold to the instant;
- every change to an allocation's state (Refresh, CreatePermission, ChannelBind,
  the sweep, deletion) forgets all of its routes first (``RouteTable.forget``),
  so a route never outlives the state it was built from;
- ``admit`` spends the allocation's own token bucket and counts into the
  server's ``Traffic``: the bandwidth cap and the metrics are the slow path's;
- the tables hold at most one route per live channel binding per direction.
"""

from __future__ import annotations

from relay.allocation import FiveTuple
from relay.quota import TokenBucket

__all__ = ["MAX_PEER_DATA", "ClientRoute", "PeerRoute", "RouteTable", "Traffic"]

Address = tuple[str, int]

# Peer data relayed to a client must fit a Data indication's 16-bit length
# (36 bytes of header and XOR-PEER-ADDRESS around it).
MAX_PEER_DATA = 0xFFFF - 36


class Traffic:
    """The relay's packet and byte counters (one instance per server, shared by routes)."""

    __slots__ = (
        "bytes_to_client",
        "bytes_to_peer",
        "dropped_over_bandwidth",
        "packets_to_client",
        "packets_to_peer",
    )

    def __init__(self) -> None:
        self.packets_to_peer = 0
        self.bytes_to_peer = 0
        self.packets_to_client = 0
        self.bytes_to_client = 0
        self.dropped_over_bandwidth = 0

    # The one place the per-allocation bandwidth cap is applied and counted, for the
    # routes' fast path and the core's full path alike.

    def to_peer(self, bucket: TokenBucket, length: int, now: float) -> bool:
        """Spend ``length`` bytes of the allocation's client->peer budget and count them;
        False: over the cap, dropped (counted)."""
        if not bucket.take(length, now):
            self.dropped_over_bandwidth += 1
            return False
        self.packets_to_peer += 1
        self.bytes_to_peer += length
        return True

    def to_client(self, bucket: TokenBucket, size: int, now: float) -> bool:
        """As ``to_peer``, peer->client; data too long for a Data indication is dropped too."""
        if size > MAX_PEER_DATA or not bucket.take(size, now):
            self.dropped_over_bandwidth += 1
            return False
        self.packets_to_client += 1
        self.bytes_to_client += size
        return True


class ClientRoute:
    """Client -> peer over one bound channel: ChannelData payload goes from ``relayed`` to
    ``peer``."""

    __slots__ = ("_bucket", "_traffic", "expiry", "peer", "relayed")

    def __init__(
        self,
        relayed: Address,
        peer: Address,
        expiry: float,
        bucket: TokenBucket,
        traffic: Traffic,
    ) -> None:
        self.relayed = relayed
        self.peer = peer
        self.expiry = expiry
        self._bucket = bucket
        self._traffic = traffic

    def admit(self, length: int, now: float) -> bool:
        """Spend the allocation's bandwidth and count; False: over the cap, dropped (counted).

        Only for a live route (``now < expiry``), on a well-formed message."""
        return self._traffic.to_peer(self._bucket, length, now)


class PeerRoute:
    """Peer -> client over the peer's bound channel: ``number`` heads the ChannelData sent
    from listener ``server`` to ``client`` (a UDP 5-tuple: no padding)."""

    __slots__ = ("_bucket", "_traffic", "client", "expiry", "number", "server")

    def __init__(
        self,
        five_tuple: FiveTuple,
        number: int,
        expiry: float,
        bucket: TokenBucket,
        traffic: Traffic,
    ) -> None:
        self.client = five_tuple.client
        self.server = five_tuple.server
        self.number = number
        self.expiry = expiry
        self._bucket = bucket
        self._traffic = traffic

    def admit(self, size: int, now: float) -> bool:
        """As ``ClientRoute.admit``, for ``size`` bytes of peer data."""
        return self._traffic.to_client(self._bucket, size, now)


class RouteTable:
    """All routes of one server: client routes per listener, peer routes per relayed address.

    ``client_routes(listener)`` and ``peer_routes(relayed)`` hand out the live dicts
    (the runner reads them once per batch of datagrams); they are only ever
    mutated in place, never replaced, so a reference stays current.
    """

    __slots__ = ("_by_listener", "_by_relayed", "_numbers")

    def __init__(self) -> None:
        # listener -> (client address, channel number) -> route
        self._by_listener: dict[Address, dict[tuple[Address, int], ClientRoute]] = {}
        # relayed address -> peer address -> route
        self._by_relayed: dict[Address, dict[Address, PeerRoute]] = {}
        # the channel numbers each allocation (by 5-tuple) has client routes for
        self._numbers: dict[FiveTuple, set[int]] = {}

    def client_routes(self, listener: Address) -> dict[tuple[Address, int], ClientRoute]:
        routes = self._by_listener.get(listener)
        if routes is None:
            routes = self._by_listener[listener] = {}
        return routes

    def peer_routes(self, relayed: Address) -> dict[Address, PeerRoute]:
        routes = self._by_relayed.get(relayed)
        if routes is None:
            routes = self._by_relayed[relayed] = {}
        return routes

    def add_client_route(self, five_tuple: FiveTuple, number: int, route: ClientRoute) -> None:
        self.client_routes(five_tuple.server)[(five_tuple.client, number)] = route
        numbers = self._numbers.get(five_tuple)
        if numbers is None:
            numbers = self._numbers[five_tuple] = set()
        numbers.add(number)

    def add_peer_route(self, relayed: Address, peer: Address, route: PeerRoute) -> None:
        self.peer_routes(relayed)[peer] = route

    def forget(self, five_tuple: FiveTuple, relayed: Address | None) -> None:
        """Drop every route of the allocation of ``five_tuple`` (relayed on ``relayed``)."""
        numbers = self._numbers.pop(five_tuple, None)
        if numbers:
            routes = self._by_listener.get(five_tuple.server)
            if routes is not None:
                for number in numbers:
                    routes.pop((five_tuple.client, number), None)
        if relayed is not None:
            peer_routes = self._by_relayed.get(relayed)
            if peer_routes is not None:
                peer_routes.clear()

    def release(self, relayed: Address) -> None:
        """The relayed address is gone: drop its (empty) table too."""
        self._by_relayed.pop(relayed, None)

    def __len__(self) -> int:
        """Routes held, both directions."""
        return sum(len(r) for r in self._by_listener.values()) + sum(
            len(r) for r in self._by_relayed.values()
        )
