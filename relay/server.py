"""The sans-IO TURN server core (RFC 8656), with plain STUN Binding (RFC 8489).

Bytes, the client's 5-tuple and ``now`` go in; ``Output`` commands come out
(datagrams to clients and peers, relayed sockets to open and close) plus the
next deadline. The core never reads a clock, never draws entropy of its own
(``rng`` is injected) and never touches a socket.

Invariants:
- every request gets exactly one response, built at one place (``relay.responses``);
  errors after authentication carry MESSAGE-INTEGRITY like successes;
- state a client can create is bounded by ``QuotaConfig`` (allocations total,
  per identity, per source IP; permissions and channels per allocation);
  unauthenticated clients create none (nonces are stateless);
- malformed or unrelayable input is dropped and counted by reason (the
  forwarding checks per packet are ``relay.forwarding``'s);
- expiry is checked lazily on every use, the sweep only frees memory;
- every change to an allocation's permissions, channels, lifetime or existence
  first forgets its forwarding routes (``relay.routes``), which the slow path
  rebuilds: the runner's per-packet fast path never outlives what it caches.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from nat.drops import DropCounter
from nat.stun import (
    Attribute,
    DontFragment,
    Lifetime,
    Nonce,
    Realm,
    RequestedAddressFamily,
    StunAttributeError,
    StunClass,
    StunDecodeError,
    StunMessage,
    StunMethod,
    UnknownAttributes,
    decode_message,
)
from nat.stun.attributes import AttributeType
from nat.stun.server import StunServer
from relay.allocate import new_allocation, next_bind_attempt
from relay.allocation import (
    PERMISSION_LIFETIME,
    Allocation,
    FiveTuple,
    Transport,
)
from relay.auth import Credential, NonceIssuer
from relay.channeldata import CHANNEL_MAX, LEGACY_CHANNEL_MAX
from relay.config import TurnConfig
from relay.forwarding import Forwarding
from relay.messages import (
    CloseRelay,
    OpenRelay,
    Output,
    RelayStatistics,
    ToClient,
    ToPeer,
    TurnErrorCode,
)
from relay.permissions import channel_bind, create_permission
from relay.ports import PortPool
from relay.quota import AllocationCounter
from relay.requests import (
    Authenticated,
    AuthFailure,
    address_family,
    authenticate,
    desired_lifetime,
)
from relay.responses import ResponseBuilder
from relay.routes import ClientRoute, PeerRoute, RouteTable, Traffic

__all__ = ["TurnConfig", "TurnServer"]

Address = tuple[str, int]
logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0  # the sweep runs at most this often
UNAUTHENTICATED = TurnErrorCode.UNAUTHENTICATED


class TurnServer:
    """RFC 8656 server state machine for all allocations of one relay."""

    def __init__(
        self,
        config: TurnConfig,
        rng: random.Random,
        now: float,
        *,
        stun: StunServer | None = None,
    ) -> None:
        """``stun``: the NAT layer's STUN server answers Binding on UDP (RFC 5780 with an
        alternate address; its rate limits); without it Binding gets a plain answer."""
        self._config = config
        self._stun = stun
        self._rng = rng
        self._now = now
        self._family = address_family(config.relay_ip)
        self._nonces = NonceIssuer(rng.randbytes(32), config.nonce_lifetime)
        self._ports = PortPool(*config.port_range)
        self._allocations: dict[FiveTuple, Allocation] = {}
        self._by_relayed: dict[Address, Allocation] = {}
        self._counter = AllocationCounter()
        self._drops = DropCounter(logger, lambda: self._now)
        self._responses = ResponseBuilder(config.software)
        self._deadline: float | None = None
        self._last_sweep = now
        self._wall: float | None = None
        self.allocations_created = 0
        self._traffic = Traffic()
        self._routes = RouteTable()
        self._forwarding = Forwarding(
            self._allocations, self._by_relayed, self._traffic, self._routes, self._drops, rng
        )
        self.channel_max = LEGACY_CHANNEL_MAX if config.legacy_channels else CHANNEL_MAX
        # First byte of a ChannelData message: 0x40..0x4F (RFC 7983), 0x40..0x7F (legacy).
        self.channel_first_byte_max = self.channel_max >> 8
        self._handlers: dict[
            StunMethod, Callable[[FiveTuple, StunMessage, Authenticated], list[Output]]
        ]
        self._handlers = {
            StunMethod.ALLOCATE: self._allocate,
            StunMethod.REFRESH: self._refresh,
            StunMethod.CREATE_PERMISSION: self._create_permission,
            StunMethod.CHANNEL_BIND: self._channel_bind,
        }

    # ------------------------------------------------------------------ inputs

    def handle_client(
        self, five_tuple: FiveTuple, data: bytes, now: float, wall: float | None = None
    ) -> list[Output]:
        """One datagram (UDP) or one frame (TCP) from a client.

        ``now`` is monotonic (every timer); ``wall`` is unix time, used only to check
        the expiry of REST credentials (without it they are refused)."""
        self._now = now
        self._wall = wall
        if data and 64 <= data[0] <= self.channel_first_byte_max:
            relayed = self.channel_data_from_client(five_tuple, data, now)
            return [] if relayed is None else [ToPeer(*relayed)]
        try:
            message = decode_message(data)
        except StunAttributeError as error:
            if error.cls is StunClass.REQUEST:
                # RFC 8489 §6.3.1.1: a malformed attribute in a request gets a 400.
                self._drops.drop("malformed attribute", str(error))
                request = StunMessage(error.method, error.cls, error.transaction_id)
                return [self._responses.error(five_tuple, request, TurnErrorCode.BAD_REQUEST, None)]
            self._drops.drop("malformed attribute", str(error))
            return []
        except StunDecodeError as error:
            self._drops.drop("malformed stun", str(error))
            return []
        if message.cls is StunClass.REQUEST:
            return self._request(five_tuple, message, data, now)
        if message.cls is StunClass.INDICATION and message.method is StunMethod.SEND:
            return self._forwarding.send_indication(five_tuple, message, now)
        self._drops.drop("unexpected stun message", f"{message.method.name} {message.cls.name}")
        return []

    def channel_data_from_client(
        self, five_tuple: FiveTuple, data: bytes, now: float
    ) -> tuple[Address, Address, bytes] | None:
        """Hot path: a ChannelData message from a client -> (relayed, peer, payload) or drop
        (``relay.forwarding``)."""
        return self._forwarding.channel_data(five_tuple, data, now)

    def from_peer(
        self, relayed: Address, data: bytes, peer: Address, now: float
    ) -> tuple[FiveTuple, bytes] | None:
        """Hot path: a datagram arriving on a relayed address -> (client 5-tuple, bytes) or
        drop (``relay.forwarding``)."""
        return self._forwarding.peer_data(relayed, data, peer, now)

    def relay_opened(self, five_tuple: FiveTuple, address: Address, now: float) -> list[Output]:
        """The runner bound the relayed socket: complete the Allocate (RFC 8656 §7.2)."""
        self._now = now
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.pending is None:
            return [CloseRelay(address)]  # the allocation went away while binding
        pending = allocation.pending
        allocation.pending = None
        allocation.relayed = address
        self._by_relayed[address] = allocation
        self.allocations_created += 1
        self._note_deadline(allocation.expiry)
        response = self._responses.allocate_success(
            five_tuple, address, allocation.integrity_key, pending
        )
        allocation.success_response = response
        return [ToClient(five_tuple, response)]

    def relay_open_failed(self, five_tuple: FiveTuple, now: float) -> list[Output]:
        """The runner could not bind that port: try another, or answer 508."""
        self._now = now
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.pending is None:
            return []
        pending = allocation.pending
        failed_port = allocation.port
        retry = next_bind_attempt(pending)
        port = None if retry is None else self._ports.take(self._rng, even=pending.even_port)
        self._ports.release(failed_port)
        if retry is None or port is None:
            allocation.port = 0
            self._delete(allocation)
            request = StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST, pending.transaction_id)
            auth = Authenticated(
                allocation.username,
                Credential(allocation.integrity_key, allocation.credential_identity),
                pending.integrity_sha256,
            )
            code = TurnErrorCode.INSUFFICIENT_CAPACITY
            return [self._responses.error(five_tuple, request, code, auth)]
        allocation.port = port
        allocation.pending = retry
        return [OpenRelay(five_tuple, (self._config.relay_ip, port))]

    def client_closed(self, five_tuple: FiveTuple, now: float) -> list[Output]:
        """A TCP client connection closed: its allocation goes with it (RFC 8656 §3.1)."""
        self._now = now
        allocation = self._allocations.get(five_tuple)
        return [] if allocation is None else self._delete(allocation)

    def handle_timer(self, now: float) -> list[Output]:
        """Delete expired allocations and forget expired permissions and channels."""
        self._now = now
        self._last_sweep = now
        outputs: list[Output] = []
        deadline: float | None = None
        for allocation in list(self._allocations.values()):
            if allocation.expiry <= now:
                outputs.extend(self._delete(allocation))
                continue
            if allocation.pending is not None:
                continue
            self._forget_routes(allocation)  # routes to swept state go; live ones are rebuilt
            next_due = allocation.sweep(now)
            deadline = next_due if deadline is None else min(deadline, next_due)
        self._deadline = deadline
        return outputs

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` should run next (None: nothing will expire)."""
        if self._deadline is None:
            return None
        return max(self._deadline, self._last_sweep + SWEEP_INTERVAL)

    # ------------------------------------------------------------ introspection

    def auth_refusals(self) -> list[tuple[Address, int]]:
        """Drain the 401s (with credentials) and 403s since the last call, for the log."""
        refused = list(self._responses.auth_refusals)
        self._responses.auth_refusals.clear()
        return refused

    def statistics(self) -> RelayStatistics:
        now = self._now
        live = [a for a in self._allocations.values() if a.pending is None]
        return RelayStatistics(
            allocations=len(live),
            allocations_created=self.allocations_created,
            permissions=sum(a.live_permissions(now) for a in live),
            channels=sum(a.live_channels(now) for a in live),
            packets_to_peer=self._traffic.packets_to_peer,
            bytes_to_peer=self._traffic.bytes_to_peer,
            packets_to_client=self._traffic.packets_to_client,
            bytes_to_client=self._traffic.bytes_to_client,
            dropped_over_bandwidth=self._traffic.dropped_over_bandwidth,
            refusals=tuple(sorted(self._responses.refusals.items())),
            drops=tuple(sorted(self._drops.counts().items())),
        )

    def client_routes(self, listener: Address) -> dict[tuple[Address, int], ClientRoute]:
        """The fast path for ChannelData arriving on ``listener`` (UDP), keyed by
        (client address, channel number); see ``relay.routes`` for how to use a route."""
        return self._routes.client_routes(listener)

    def peer_routes(self, relayed: Address) -> dict[Address, PeerRoute]:
        """The fast path for peer data arriving on ``relayed``, keyed by peer address."""
        return self._routes.peer_routes(relayed)

    def routes_held(self) -> int:
        return len(self._routes)

    def relayed_address(self, five_tuple: FiveTuple) -> Address | None:
        allocation = self._allocations.get(five_tuple)
        return None if allocation is None else allocation.relayed

    # ----------------------------------------------------------------- requests

    def _request(
        self, five_tuple: FiveTuple, message: StunMessage, data: bytes, now: float
    ) -> list[Output]:
        if message.method is StunMethod.BINDING:
            return self._binding(five_tuple, message, data)
        handler = self._handlers.get(message.method)
        if handler is None:
            # RFC 8489 §6.3.1: a request for a method the server does not serve.
            return [self._responses.error(five_tuple, message, TurnErrorCode.BAD_REQUEST, None)]
        auth = self._authenticate(five_tuple, message, data, now)
        if not isinstance(auth, Authenticated):
            return auth
        unknown = list(message.unknown_comprehension_required())
        if message.method is StunMethod.ALLOCATE and message.get(DontFragment) is not None:
            # RFC 8656 §7.2 step 4: a server that cannot set DF "treats the
            # DONT-FRAGMENT attribute ... as an unknown comprehension-required attribute".
            unknown.append(AttributeType.DONT_FRAGMENT)
        if unknown:
            # RFC 8489 §6.3.1.1: 420 listing them in UNKNOWN-ATTRIBUTES.
            return [
                self._responses.error(
                    five_tuple,
                    message,
                    TurnErrorCode.UNKNOWN_ATTRIBUTE,
                    auth,
                    [UnknownAttributes(tuple(unknown))],
                )
            ]
        return handler(five_tuple, message, auth)

    def _binding(self, five_tuple: FiveTuple, message: StunMessage, data: bytes) -> list[Output]:
        """RFC 8489 §6.3.1: answer with the reflexive address; no authentication."""
        if self._stun is not None and five_tuple.transport is Transport.UDP:
            outputs: list[Output] = []
            for transmit in self._stun.handle_datagram(
                data, five_tuple.client, five_tuple.server, self._now
            ):
                if transmit.local is None:  # a DIAL-BACK probe: no such socket here
                    self._drops.drop("dial-back not served by the relay")
                    continue
                outputs.append(
                    ToClient(
                        FiveTuple(Transport.UDP, transmit.remote, transmit.local), transmit.data
                    )
                )
            return outputs
        return [self._responses.binding(five_tuple, message)]

    def _authenticate(
        self, five_tuple: FiveTuple, message: StunMessage, data: bytes, now: float
    ) -> Authenticated | list[Output]:
        client = five_tuple.client
        config = self._config
        result = authenticate(
            message,
            data,
            client,
            now,
            realm=config.realm,
            credentials=config.credentials,
            nonces=self._nonces,
            wall=self._wall,
        )
        if isinstance(result, AuthFailure):
            challenge: list[Attribute] | None = None
            if result.challenge:
                challenge = [Realm(config.realm), Nonce(self._nonces.issue(client, now))]
            return [self._responses.error(five_tuple, message, result.code, None, challenge)]
        allocation = self._allocations.get(five_tuple)
        if allocation is not None and allocation.username != result.username:
            # RFC 8656 §5: requests on an allocation must use the credentials that
            # created it, "else the server MUST reject it with a 441 (Wrong Credentials)".
            return [
                self._responses.error(five_tuple, message, TurnErrorCode.WRONG_CREDENTIALS, None)
            ]
        return result

    def _allocate(
        self, five_tuple: FiveTuple, message: StunMessage, auth: Authenticated
    ) -> list[Output]:
        """RFC 8656 §7.2, steps after authentication (step 1); the decision is
        ``relay.allocate.new_allocation``."""
        config = self._config
        existing = self._allocations.get(five_tuple)
        if existing is not None:
            if existing.transaction_id == message.transaction_id:
                # A retransmitted Allocate: the same answer again (or none while binding).
                return [] if existing.pending else [ToClient(five_tuple, existing.success_response)]
            # Step 2: "If yes, the server rejects the request with a 437 (Allocation Mismatch)."
            return self._refuse(five_tuple, message, TurnErrorCode.ALLOCATION_MISMATCH, auth)
        allocation = new_allocation(
            five_tuple,
            message,
            auth,
            config=config,
            family=self._family,
            held=len(self._allocations),
            counter=self._counter,
            ports=self._ports,
            rng=self._rng,
            now=self._now,
        )
        if isinstance(allocation, TurnErrorCode):
            return self._refuse(five_tuple, message, allocation, auth)
        self._allocations[five_tuple] = allocation
        self._counter.add(allocation.credential_identity, five_tuple.client[0])
        return [OpenRelay(five_tuple, (config.relay_ip, allocation.port))]

    def _desired_lifetime(self, message: StunMessage) -> int:
        return desired_lifetime(message, self._config.default_lifetime, self._config.max_lifetime)

    def _refresh(
        self, five_tuple: FiveTuple, message: StunMessage, auth: Authenticated
    ) -> list[Output]:
        """RFC 8656 §7.3."""
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.pending is not None:
            # "If the server receives a Refresh Request for an allocation that does not
            # exist, it ... rejects with 437 (Allocation Mismatch)".
            return self._refuse(five_tuple, message, TurnErrorCode.ALLOCATION_MISMATCH, auth)
        family = message.get(RequestedAddressFamily)
        if family is not None and family.family != self._family:
            # "If the REQUESTED-ADDRESS-FAMILY ... does not match the address family of the
            # allocation, the server MUST reply with a 443 (Peer Address Family Mismatch)".
            return self._refuse(
                five_tuple, message, TurnErrorCode.PEER_ADDRESS_FAMILY_MISMATCH, auth
            )
        lifetime = self._desired_lifetime(message)
        self._forget_routes(allocation)
        outputs: list[Output] = []
        if lifetime == 0:
            # "If the 'desired lifetime' is zero, then the request succeeds and the
            # allocation is deleted."
            outputs.extend(self._delete(allocation))
        else:
            allocation.refresh(lifetime, self._now)
            self._note_deadline(allocation.expiry)
        outputs.insert(0, self._responses.success(five_tuple, message, auth, [Lifetime(lifetime)]))
        return outputs

    def _create_permission(
        self, five_tuple: FiveTuple, message: StunMessage, auth: Authenticated
    ) -> list[Output]:
        """RFC 8656 §9.2 (``relay.permissions``)."""
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.pending is not None:
            return self._refuse(five_tuple, message, TurnErrorCode.ALLOCATION_MISMATCH, auth)
        config = self._config
        refusal = create_permission(
            allocation,
            message,
            self._now,
            family=self._family,
            policy=config.policy,
            quota=config.quota,
            before_change=lambda: self._forget_routes(allocation),
        )
        if refusal is not None:
            return self._refuse(five_tuple, message, refusal, auth)
        self._note_deadline(self._now + PERMISSION_LIFETIME)
        return [self._responses.success(five_tuple, message, auth, [])]

    def _channel_bind(
        self, five_tuple: FiveTuple, message: StunMessage, auth: Authenticated
    ) -> list[Output]:
        """RFC 8656 §11.2 (``relay.permissions``)."""
        allocation = self._allocations.get(five_tuple)
        if allocation is None or allocation.pending is not None:
            return self._refuse(five_tuple, message, TurnErrorCode.ALLOCATION_MISMATCH, auth)
        config = self._config
        refusal = channel_bind(
            allocation,
            message,
            self._now,
            family=self._family,
            policy=config.policy,
            quota=config.quota,
            channel_max=self.channel_max,
            before_change=lambda: self._forget_routes(allocation),
        )
        if refusal is not None:
            return self._refuse(five_tuple, message, refusal, auth)
        self._note_deadline(self._now + PERMISSION_LIFETIME)
        return [self._responses.success(five_tuple, message, auth, [])]

    # ---------------------------------------------------------------- plumbing

    def _delete(self, allocation: Allocation) -> list[Output]:
        five_tuple = allocation.five_tuple
        if self._allocations.get(five_tuple) is not allocation:
            return []
        del self._allocations[five_tuple]
        self._counter.remove(allocation.credential_identity, five_tuple.client[0])
        if allocation.port:
            self._ports.release(allocation.port)
        if allocation.relayed is None:
            return []
        self._forget_routes(allocation)
        self._routes.release(allocation.relayed)
        self._by_relayed.pop(allocation.relayed, None)
        return [CloseRelay(allocation.relayed)]

    def _forget_routes(self, allocation: Allocation) -> None:
        self._routes.forget(allocation.five_tuple, allocation.relayed)

    def _note_deadline(self, when: float) -> None:
        if self._deadline is None or when < self._deadline:
            self._deadline = when

    def _refuse(
        self, five_tuple: FiveTuple, request: StunMessage, code: TurnErrorCode, auth: Authenticated
    ) -> list[Output]:
        return [self._responses.error(five_tuple, request, code, auth)]
