"""A virtual-time harness around the sans-IO TURN core: a scripted client, no sockets.

``Harness.open`` plays the runner: every ``OpenRelay`` is answered with
``relay_opened`` at once (or ``relay_open_failed`` for ports in ``busy_ports``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from nat.stun import (
    ChannelNumber,
    ErrorCode,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
)
from nat.stun.attributes import Attribute
from relay.allocation import FiveTuple, Transport
from relay.auth import long_term_key, static_users
from relay.messages import CloseRelay, OpenRelay, Output, ToClient, ToPeer
from relay.policy import PeerAddressPolicy, parse_networks
from relay.quota import QuotaConfig
from relay.server import TurnConfig, TurnServer

REALM = "test.realm"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
SERVER = ("192.0.2.1", 3478)
RELAY_IP = "192.0.2.1"
PEER = ("198.51.100.7", 5000)


def make_server(
    *,
    quota: QuotaConfig | None = None,
    allow: tuple[str, ...] = ("198.51.100.0/24",),
    port_range: tuple[int, int] = (50000, 50099),
    seed: int = 1,
    now: float = 1000.0,
) -> TurnServer:
    config = TurnConfig(
        realm=REALM,
        credentials=static_users(USERS),
        relay_ip=RELAY_IP,
        quota=quota or QuotaConfig(),
        policy=PeerAddressPolicy(allow=parse_networks(allow)),
        port_range=port_range,
    )
    return TurnServer(config, random.Random(seed), now)


@dataclass
class Harness:
    server: TurnServer
    now: float = 1000.0
    busy_ports: set[int] = field(default_factory=set)
    open_relays: set[tuple[str, int]] = field(default_factory=set)
    to_peers: list[ToPeer] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    wall: float | None = None  # unix time the adapter would pass (REST credentials)

    def run(self, outputs: list[Output]) -> list[ToClient]:
        """Execute outputs the way the service would; return what went to clients."""
        pending = list(outputs)
        to_clients: list[ToClient] = []
        while pending:
            output = pending.pop(0)
            if isinstance(output, OpenRelay):
                if output.address[1] in self.busy_ports:
                    pending.extend(self.server.relay_open_failed(output.five_tuple, self.now))
                else:
                    self.open_relays.add(output.address)
                    pending.extend(
                        self.server.relay_opened(output.five_tuple, output.address, self.now)
                    )
            elif isinstance(output, CloseRelay):
                self.open_relays.discard(output.address)
            elif isinstance(output, ToPeer):
                self.to_peers.append(output)
            else:
                to_clients.append(output)
        return to_clients

    def send(self, client: Client, data: bytes) -> list[ToClient]:
        return self.run(self.server.handle_client(client.five_tuple, data, self.now, self.wall))

    def advance(self, seconds: float) -> list[Output]:
        self.now += seconds
        outputs: list[Output] = []
        deadline = self.server.next_deadline()
        if deadline is not None and deadline <= self.now:
            outputs = self.server.handle_timer(self.now)
            self.run(list(outputs))
        return outputs

    def client(
        self,
        address: tuple[str, int] = ("203.0.113.5", 40000),
        username: str = "alice",
        password: str | None = None,
        transport: Transport = Transport.UDP,
    ) -> Client:
        return Client(
            self,
            FiveTuple(transport, address, SERVER),
            username,
            USERS.get(username, "x") if password is None else password,
        )


@dataclass
class Client:
    harness: Harness
    five_tuple: FiveTuple
    username: str
    password: str
    nonce: str | None = None
    relayed: tuple[str, int] | None = None

    def tid(self) -> bytes:
        return self.harness.rng.randbytes(12)

    def request(
        self,
        method: StunMethod,
        attributes: list[Attribute],
        *,
        authenticated: bool = True,
        transaction_id: bytes | None = None,
        sha256: bool = False,
        fingerprint: bool = False,
    ) -> StunMessage:
        """Send one request (authenticating after a 401 challenge) and return the answer."""
        tid = transaction_id or self.tid()
        for _ in range(3):
            extra: list[Attribute] = []
            key = None
            if authenticated and self.nonce is not None:
                extra = [Username(self.username), Realm(REALM), Nonce(self.nonce)]
                key = long_term_key(self.username, REALM, self.password)
            message = StunMessage(method, StunClass.REQUEST, tid, (*attributes, *extra))
            data = encode_message(
                message, integrity_key=key, integrity_sha256=sha256, fingerprint=fingerprint
            )
            replies = self.harness.send(self, data)
            assert len(replies) == 1, replies
            response = decode_message(replies[0].data)
            assert response.transaction_id == tid
            error = response.get(ErrorCode)
            nonce = response.get(Nonce)
            if authenticated and error is not None and error.code in (401, 438) and nonce:
                if self.nonce is not None and error.code == 401:
                    return response
                self.nonce = nonce.value
                continue
            return response
        raise AssertionError("no answer after three tries")

    def allocate(self, *extra: Attribute) -> StunMessage:
        response = self.request(StunMethod.ALLOCATE, [RequestedTransport(17), *extra])
        relayed = response.get(XorRelayedAddress)
        if relayed is not None:
            self.relayed = relayed.address
        return response

    def refresh(self, lifetime: int | None = None) -> StunMessage:
        attributes: list[Attribute] = [] if lifetime is None else [Lifetime(lifetime)]
        return self.request(StunMethod.REFRESH, attributes)

    def permit(self, *peers: tuple[str, int]) -> StunMessage:
        return self.request(StunMethod.CREATE_PERMISSION, [XorPeerAddress(p) for p in peers])

    def bind(self, number: int, peer: tuple[str, int]) -> StunMessage:
        return self.request(StunMethod.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(peer)])


def error_code(response: StunMessage) -> int | None:
    error = response.get(ErrorCode)
    return None if error is None else error.code
