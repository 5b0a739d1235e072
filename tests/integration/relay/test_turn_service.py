"""The TURN service on loopback sockets, driven by aioice's TURN client and ICE agents.

Ports are always 0 (the relayed range is the OS's ephemeral-free dynamic range,
with bind retries); 127.0.0.0/8 is allowed as a peer range for these tests only.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec

import aioice
import pytest
from aioice import stun as aioice_stun
from aioice import turn

from nat.stun import (
    RequestedTransport,
    StunClass,
    StunMessage,
    StunMethod,
    XorMappedAddress,
    decode_message,
    encode_message,
)
from relay.auth import first_match, rest_api_credentials, rest_api_password, static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService
from relay.tls import server_context
from tests.harness.tls import CertificateFiles, make_certificates

Address = tuple[str, int]
WAIT = 5.0  # seconds before a loopback answer is called lost
P = ParamSpec("P")
SECRET = b"integration-secret"


def run_async(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in a fresh event loop (no asyncio plugin is installed)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(function(*args, **kwargs))

    return wrapper


async def start_relay(**config: Any) -> tuple[RelayService, Address]:
    loop = asyncio.get_running_loop()
    turn_config = TurnConfig(
        realm="test",
        credentials=first_match(static_users({"user": "pass"}), rest_api_credentials(SECRET)),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
        **config,
    )
    server = TurnServer(turn_config, random.Random(), loop.time())
    service = RelayService(server, udp=[("127.0.0.1", 0)], tcp=[("127.0.0.1", 0)])
    addresses = await service.start()
    assert addresses.udp[0][1] == addresses.tcp[0][1]  # one port number for both
    return service, addresses.udp[0]


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    async def get(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.queue.get(), WAIT)


async def open_peer() -> tuple[asyncio.DatagramTransport, Inbox]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    return transport, peer


@run_async
async def test_binding_over_udp() -> None:
    service, address = await start_relay()
    try:
        transport, inbox = await open_peer()
        request = StunMessage(StunMethod.BINDING, StunClass.REQUEST, b"b" * 12)
        transport.sendto(encode_message(request), address)
        data, source = await inbox.get()
        response = decode_message(data)
        mapped = response.get(XorMappedAddress)
        assert source == address and mapped is not None
        assert mapped.address == transport.get_extra_info("sockname")
        transport.close()
    finally:
        service.close()


async def exchange_through_aioice(
    address: Address, transport_name: str, username: str, password: str, count: int = 20
) -> None:
    """aioice allocates, sends ``count`` datagrams to a peer, the peer echoes each back."""
    peer_transport, peer = await open_peer()
    peer_address = peer_transport.get_extra_info("sockname")
    turn_transport, client = await turn.create_turn_endpoint(
        Inbox, address, username, password, transport=transport_name
    )
    try:
        for index in range(count):
            payload = f"packet {index}".encode()
            turn_transport.sendto(payload, peer_address)
            data, source = await peer.get()
            assert data == payload
            assert source[0] == "127.0.0.1" and source != address
            peer_transport.sendto(b"echo " + data, source)
            echoed, origin = await client.get()
            assert echoed == b"echo " + payload
            assert origin == peer_address
    finally:
        turn_transport.close()
        peer_transport.close()


@pytest.mark.parametrize("transport_name", ["udp", "tcp"])
@run_async
async def test_aioice_turn_client_relays_both_ways(transport_name: str) -> None:
    service, address = await start_relay()
    try:
        await exchange_through_aioice(address, transport_name, "user", "pass")
        stats = service.statistics()
        assert stats.allocations_created == 1
        assert stats.packets_to_peer == 20 and stats.packets_to_client == 20
        assert stats.channels == 1  # aioice binds a channel for its peer
    finally:
        service.close()


@run_async
async def test_aioice_with_rest_api_credentials() -> None:
    service, address = await start_relay()
    try:
        username = f"{int(time.time()) + 3600}:peer-42"
        password = rest_api_password(SECRET, username)
        await exchange_through_aioice(address, "udp", username, password, count=3)
        assert service.statistics().allocations_created == 1
    finally:
        service.close()


@run_async
async def test_wrong_password_is_refused() -> None:
    service, address = await start_relay()
    try:
        with pytest.raises(aioice_stun.TransactionFailed):
            await turn.create_turn_endpoint(Inbox, address, "user", "wrong")
        assert service.statistics().refused(401) >= 2
        assert service.statistics().allocations_created == 0
    finally:
        service.close()


@run_async
async def test_tcp_close_frees_the_allocation() -> None:
    service, address = await start_relay()
    try:
        peer_transport, peer = await open_peer()
        turn_transport, _ = await turn.create_turn_endpoint(
            Inbox, address, "user", "pass", transport="tcp"
        )
        turn_transport.sendto(b"hi", peer_transport.get_extra_info("sockname"))
        assert (await peer.get())[0] == b"hi"
        assert service.statistics().allocations == 1
        turn_transport.close()
        for _ in range(100):  # bounded: up to ~2 s for the close to arrive
            if service.statistics().allocations == 0:
                break
            await asyncio.sleep(0.02)
        assert service.statistics().allocations == 0
        peer_transport.close()
    finally:
        service.close()


@run_async
async def test_garbage_on_tcp_hangs_up() -> None:
    service, address = await start_relay()
    try:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"\xff" * 64)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
        writer.close()
        # The service still serves others.
        request = StunMessage(
            StunMethod.ALLOCATE, StunClass.REQUEST, b"c" * 12, (RequestedTransport(17),)
        )
        transport, inbox = await open_peer()
        transport.sendto(encode_message(request), address)
        reply = decode_message((await inbox.get())[0])
        transport.close()
        assert reply.cls is StunClass.ERROR  # 401 challenge
    finally:
        service.close()


async def ice_pair_relay_only(address: Address, transport_name: str) -> None:
    """Two aioice agents with relay candidates only connect and exchange data."""
    kwargs: dict[str, Any] = {
        "turn_server": address,
        "turn_username": "user",
        "turn_password": "pass",
        "turn_transport": transport_name,
        "transport_policy": aioice.TransportPolicy.RELAY,
    }
    a = aioice.Connection(ice_controlling=True, **kwargs)
    b = aioice.Connection(ice_controlling=False, **kwargs)
    try:
        await asyncio.wait_for(asyncio.gather(a.gather_candidates(), b.gather_candidates()), WAIT)
        assert a.local_candidates and all(c.type == "relay" for c in a.local_candidates)
        assert b.local_candidates and all(c.type == "relay" for c in b.local_candidates)
        for candidate in b.local_candidates:
            await a.add_remote_candidate(candidate)
        await a.add_remote_candidate(None)
        for candidate in a.local_candidates:
            await b.add_remote_candidate(candidate)
        await b.add_remote_candidate(None)
        a.remote_username, a.remote_password = b.local_username, b.local_password
        b.remote_username, b.remote_password = a.local_username, a.local_password
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 3 * WAIT)
        await a.send(b"over the relay")
        assert await asyncio.wait_for(b.recv(), WAIT) == b"over the relay"
        await b.send(b"and back")
        assert await asyncio.wait_for(a.recv(), WAIT) == b"and back"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("transport_name", ["udp", "tcp"])
@run_async
async def test_two_ice_agents_connect_relay_only(transport_name: str) -> None:
    service, address = await start_relay()
    try:
        await ice_pair_relay_only(address, transport_name)
        assert service.statistics().allocations_created == 2
    finally:
        service.close()


async def start_tls_relay(directory: Path) -> tuple[RelayService, Address, CertificateFiles]:
    loop = asyncio.get_running_loop()
    files = make_certificates(directory)
    turn_config = TurnConfig(
        realm="test",
        credentials=static_users({"user": "pass"}),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    server = TurnServer(turn_config, random.Random(), loop.time())
    service = RelayService(
        server,
        udp=[("127.0.0.1", 0)],
        tcp=[],
        tls=[("127.0.0.1", 0)],
        ssl_context=server_context(files.certificate, files.key),
    )
    addresses = await service.start()
    assert addresses.tcp == () and len(addresses.tls) == 1
    return service, addresses.tls[0], files


@run_async
async def test_aioice_turn_over_tls_relays_both_ways(tmp_path: Path) -> None:
    """aioice's TURN client over TLS, verifying our certificate against the test CA."""
    service, address, files = await start_tls_relay(tmp_path)
    try:
        peer_transport, peer = await open_peer()
        peer_address = peer_transport.get_extra_info("sockname")
        turn_transport, client = await turn.create_turn_endpoint(
            Inbox, address, "user", "pass", transport="tcp", ssl=files.client_context()
        )
        try:
            for index in range(10):
                payload = f"tls {index}".encode()
                turn_transport.sendto(payload, peer_address)
                data, source = await peer.get()
                assert data == payload
                peer_transport.sendto(b"echo " + data, source)
                assert (await client.get())[0] == b"echo " + payload
        finally:
            turn_transport.close()
            peer_transport.close()
        stats = service.statistics()
        assert stats.allocations_created == 1
        assert stats.packets_to_peer == 10 and stats.packets_to_client == 10
    finally:
        service.close()


@run_async
async def test_plain_tcp_or_a_distrusting_client_on_the_tls_port_gets_nothing(
    tmp_path: Path,
) -> None:
    service, address, files = await start_tls_relay(tmp_path)
    try:
        # Plain TURN bytes (no handshake) on the TLS port: the handshake fails, no answer.
        # (Read as a TLS record header they announce ~2 KiB; the padding completes that
        # record so the failure is immediate, not the handshake time limit's.)
        reader, writer = await asyncio.open_connection(*address)
        request = StunMessage(
            StunMethod.ALLOCATE, StunClass.REQUEST, b"d" * 12, (RequestedTransport(17),)
        )
        writer.write(encode_message(request) + bytes(4096))
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        # A client that does not trust our CA refuses us (its side of the bargain).
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(*address, ssl=ssl.create_default_context())
        # And the service still serves a proper TLS client.
        reader, writer = await asyncio.open_connection(*address, ssl=files.client_context())
        writer.write(encode_message(request))
        reply = decode_message(await asyncio.wait_for(reader.read(2048), WAIT))
        assert reply.cls is StunClass.ERROR  # 401 challenge, as over UDP and TCP
        writer.close()
        assert service.statistics().allocations == 0
    finally:
        service.close()
