"""The TURN server's forwarding path (RFC 8656 §10-12): client ChannelData and Send
indications to peers, peer datagrams back to clients.

Split out of ``relay.server`` (which answers requests and owns the allocation
tables): this part only reads those tables, checks allocation, channel binding
and permission on every packet, spends the allocation's bandwidth budget, drops
and counts by reason, and installs the routes (``relay.routes``) that the
runner's per-packet fast path uses for UDP channels afterwards.
"""

from __future__ import annotations

import random
import struct

from nat.drops import DropCounter
from nat.stun import (
    Data,
    DontFragment,
    StunClass,
    StunMessage,
    StunMethod,
    XorPeerAddress,
    encode_message,
)
from relay.allocation import Allocation, FiveTuple, Transport
from relay.messages import Output, ToPeer
from relay.routes import ClientRoute, PeerRoute, RouteTable, Traffic

__all__ = ["Forwarding"]

Address = tuple[str, int]

_CHANNEL_HEADER = struct.Struct("!HH")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_UDP = Transport.UDP  # a module constant: the hot paths compare with ``is``


class Forwarding:
    """Per-packet checks and relaying; shares (never writes) the server's allocation tables."""

    def __init__(
        self,
        allocations: dict[FiveTuple, Allocation],
        by_relayed: dict[Address, Allocation],
        traffic: Traffic,
        routes: RouteTable,
        drops: DropCounter,
        rng: random.Random,
    ) -> None:
        self._allocations = allocations
        self._by_relayed = by_relayed
        self._traffic = traffic
        self._routes = routes
        self._drops = drops
        self._rng = rng

    def channel_data(
        self, five_tuple: FiveTuple, data: bytes, now: float
    ) -> tuple[Address, Address, bytes] | None:
        """Hot path: a ChannelData message from a client -> (relayed, peer, payload) or drop.

        RFC 8656 §12.5: "If the channel number is not bound ... the message MUST be
        discarded"; a datagram shorter than the claimed length is discarded too.
        """
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.relayed is None or allocation.expiry <= now:
            self._drops.drop("channel data without allocation")
            return None
        if len(data) < 4:
            self._drops.drop("malformed channel data")
            return None
        number, length = _CHANNEL_HEADER.unpack_from(data)
        binding = allocation.channels.get(number)
        if binding is None or binding.expiry <= now:
            self._drops.drop("channel not bound")
            return None
        if len(data) < 4 + length:
            self._drops.drop("malformed channel data")
            return None
        peer = binding.peer
        expiry = allocation.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            self._drops.drop("no permission")
            return None
        route = ClientRoute(
            allocation.relayed,
            peer,
            min(allocation.expiry, binding.expiry, expiry),
            allocation.to_peer_bucket,
            self._traffic,
        )
        if five_tuple[0] is _UDP:
            self._routes.add_client_route(five_tuple, number, route)
        if not route.admit(length, now):
            return None
        return allocation.relayed, peer, data[4 : 4 + length]

    def peer_data(
        self, relayed: Address, data: bytes, peer: Address, now: float
    ) -> tuple[FiveTuple, bytes] | None:
        """Hot path: a datagram arriving on a relayed address -> (client 5-tuple, bytes) or drop.

        RFC 8656 §11.3 / §12.6: relay only from peers with a permission; use the
        channel if one is bound to the peer, else a Data indication.
        """
        allocation = self._by_relayed.get(relayed)
        if allocation is None or allocation.expiry <= now:
            self._drops.drop("peer data without allocation")
            return None
        expiry = allocation.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            # RFC 8656 §11.3: "If no permission ... the UDP datagram is silently discarded."
            self._drops.drop("no permission")
            return None
        size = len(data)
        if not self._traffic.to_client(allocation.to_client_bucket, size, now):
            return None
        five_tuple = allocation.five_tuple
        binding = allocation.peer_channels.get(peer)
        if binding is not None and binding.expiry > now:
            if five_tuple[0] is _UDP:
                route = PeerRoute(
                    five_tuple,
                    binding.number,
                    min(allocation.expiry, binding.expiry, expiry),
                    allocation.to_client_bucket,
                    self._traffic,
                )
                self._routes.add_peer_route(relayed, peer, route)
            header = _CHANNEL_HEADER.pack(binding.number, size)
            if five_tuple.transport is Transport.TCP:
                # RFC 8656 §12.5: over TCP "the ChannelData message MUST be padded".
                return five_tuple, header + data + _PADDING[size & 3]
            return five_tuple, header + data
        # RFC 8656 §11.3: "the server ... forms and sends a Data indication".
        indication = StunMessage(
            StunMethod.DATA,
            StunClass.INDICATION,
            self._rng.randbytes(12),
            (XorPeerAddress(peer), Data(data)),
        )
        return five_tuple, encode_message(indication)

    def send_indication(
        self, five_tuple: FiveTuple, message: StunMessage, now: float
    ) -> list[Output]:
        """RFC 8656 §10.2: indications are never answered; bad ones are dropped."""
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.relayed is None or allocation.expiry <= now:
            self._drops.drop("send without allocation")
            return []
        peer = message.get(XorPeerAddress)
        data = message.get(Data)
        if peer is None or data is None:
            # "If the indication lacks either attribute, it is discarded."
            self._drops.drop("malformed send indication")
            return []
        if message.get(DontFragment) is not None or message.unknown_comprehension_required():
            # We cannot set DF; the indication "MUST be discarded" (§10.2).
            self._drops.drop("send indication asks for DF")
            return []
        if not allocation.has_permission(peer.address[0], now):
            self._drops.drop("no permission")
            return []
        if not self._traffic.to_peer(allocation.to_peer_bucket, len(data.value), now):
            return []
        return [ToPeer(allocation.relayed, peer.address, data.value)]
