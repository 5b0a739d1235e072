"""PeerLink on loopback: two identities connect through our own TURN relay (real sockets, port 0).

aioice skips 127.0.0.1 when gathering host candidates, so on loopback the only
path is relayed through our relay (``relay.service``): that exercises the
relayed path end to end, TURN over UDP and over TCP. Direct paths through every
NAT pair are the lab matrix's job (tests/lab/test_reach_matrix_lab.py).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import pytest
from aiortc import RTCPeerConnection

from p2pnode.connectivity.credentials import TurnCredentials
from p2pnode.connectivity.ice_servers import IcePlan, TurnTransport, choose_ice_plan
from p2pnode.connectivity.peerlink import (
    CandidateKind,
    LinkConfig,
    PeerLink,
    PeerLinkError,
    PreparedConnection,
    SignalKind,
    SignalMessage,
    decode_signal,
    encode_signal,
)
from relay.auth import rest_api_credentials, rest_api_password, rest_api_username
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService
from tests.harness.signal_pipe import MemoryHub

P = ParamSpec("P")
SECRET = b"peerlink-secret"
REALM = "test"
Address = tuple[str, int]


def run_async(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(function(*args, **kwargs))

    return wrapper


async def start_relay() -> tuple[RelayService, Address]:
    loop = asyncio.get_running_loop()
    config = TurnConfig(
        realm=REALM,
        credentials=rest_api_credentials(SECRET),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    service = RelayService(
        TurnServer(config, random.Random(), loop.time()),
        udp=[("127.0.0.1", 0)],
        tcp=[("127.0.0.1", 0)],
    )
    addresses = await service.start()
    return service, addresses.udp[0]


def credentials_for(peer: str) -> TurnCredentials:
    """What the supernode's credentials RPC hands out (same REST formula, same secret)."""
    expires = int(time.time()) + 600
    username = rest_api_username(expires, peer)
    return TurnCredentials(username, rest_api_password(SECRET, username), REALM, expires)


def relay_config(relay: Address, peer: str, transport: TurnTransport) -> LinkConfig:
    plan = IcePlan(
        stun=relay,
        turn=relay,
        turn_transport=transport,
        credentials=credentials_for(peer),
        relay_id="relay-1",
    )
    return LinkConfig(ice=plan, relay_only=True, setup_timeout=15.0)


async def connect(
    config_a: LinkConfig, config_b: LinkConfig, *, prepared_b: bool = False
) -> tuple[PeerLink, PeerLink]:
    hub = MemoryHub()
    alice, bob = hub.endpoint("alice"), hub.endpoint("bob")

    async def answer() -> PeerLink:
        prepared = await PreparedConnection.create(config_b) if prepared_b else None
        delivery = await bob.receive()
        return await PeerLink.answer(delivery, bob, config_b, prepared=prepared)

    async with asyncio.TaskGroup() as group:
        answering = group.create_task(answer())
        if prepared_b:
            await asyncio.sleep(0.3)  # let bob gather first: that is the point
        dialing = group.create_task(PeerLink.dial("bob", alice, config_a))
    return dialing.result(), answering.result()


@pytest.mark.parametrize("transport", [TurnTransport.UDP, TurnTransport.TCP])
@run_async
async def test_relayed_link_opens_carries_data_and_reports_its_path(
    transport: TurnTransport,
) -> None:
    service, relay = await start_relay()
    try:
        link_a, link_b = await connect(
            relay_config(relay, "alice", transport), relay_config(relay, "bob", transport)
        )
        try:
            assert link_a.peer == "bob" and link_b.peer == "alice"
            assert link_a.link_id == link_b.link_id
            path = link_a.path()
            assert path.local_kind is CandidateKind.RELAY
            assert path.remote_kind is CandidateKind.RELAY
            assert not path.direct
            assert path.relay == relay and path.relay_id == "relay-1"
            assert path.turn_transport is transport
            assert "relayed via relay-1" in path.describe()
            link_a.send(b"hello bob")
            assert await asyncio.wait_for(link_b.receive(), 5) == b"hello bob"
            link_b.send(b"hello alice")
            assert await asyncio.wait_for(link_a.receive(), 5) == b"hello alice"
            rtt = await link_a.ping()
            assert 0 < rtt < 5
            assert link_a.timings.setup_ms > 0
            link_a.verify_remote_fingerprint()
            link_b.verify_remote_fingerprint()
            # Our own check, independent of aiortc's: a forged SDP is caught.
            link_a.remote_sdp = "\r\n".join(map(forge_fingerprint, link_a.remote_sdp.split("\r\n")))
            with pytest.raises(PeerLinkError, match="not the signalled one"):
                link_a.verify_remote_fingerprint()
            link_a.remote_sdp = "v=0\r\n"
            with pytest.raises(PeerLinkError, match="no DTLS fingerprint"):
                link_a.verify_remote_fingerprint()
        finally:
            await link_a.close()
            await link_b.close()
    finally:
        service.close()


@run_async
async def test_tracks_bundle_onto_the_link_and_a_restart_is_a_new_link() -> None:
    """What calls build on: a transceiver added before the offer shares the link's one
    ICE/DTLS transport (max-bundle), and an ICE restart gives a new working link."""
    service, relay = await start_relay()
    try:
        hub = MemoryHub()
        alice, bob = hub.endpoint("alice"), hub.endpoint("bob")
        config_a = relay_config(relay, "alice", TurnTransport.UDP)
        config_b = relay_config(relay, "bob", TurnTransport.UDP)

        def add_audio(pc: RTCPeerConnection) -> None:
            pc.addTransceiver("audio", direction="sendrecv")

        async def answer_two() -> list[PeerLink]:
            links = []
            for _ in range(2):
                delivery = await bob.receive()
                links.append(await PeerLink.answer(delivery, bob, config_b))
            return links

        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer_two())
            first = await PeerLink.dial("bob", alice, config_a, prepare=add_audio)
            assert "m=audio" in first.remote_sdp and "m=application" in first.remote_sdp
            (transceiver,) = first.pc.getTransceivers()
            assert first.pc.sctp is not None
            assert transceiver.receiver.transport is first.pc.sctp.transport  # bundled
            second = await first.restart(alice, prepare=add_audio)
        old_b, new_b = answering.result()
        try:
            assert second.link_id != first.link_id and new_b.link_id == second.link_id
            assert first.pc.connectionState == "closed"
            second.send(b"after restart")
            assert await asyncio.wait_for(new_b.receive(), 5) == b"after restart"
        finally:
            for link in (second, old_b, new_b):
                await link.close()
    finally:
        service.close()


@run_async
async def test_signals_from_others_or_for_other_links_are_dropped_and_counted() -> None:
    """Only the answer for this link, from the dialled peer, is applied; the rest is counted."""
    service, relay = await start_relay()
    try:
        hub = MemoryHub()
        alice, bob = hub.endpoint("alice"), hub.endpoint("bob")
        mallory = hub.endpoint("mallory")
        config_a = relay_config(relay, "alice", TurnTransport.UDP)
        config_b = relay_config(relay, "bob", TurnTransport.UDP)

        async def answer_after_noise() -> PeerLink:
            delivery = await bob.receive()
            offer = decode_signal(delivery.payload)
            other_link = SignalMessage(SignalKind.ANSWER, bytes(16), "v=0\r\n")
            await mallory.send("alice", encode_signal(other_link))  # another sender
            await bob.send("alice", b"\xc1 not msgpack")  # undecodable
            await bob.send("alice", encode_signal(other_link))  # another link
            wrong_kind = SignalMessage(SignalKind.OFFER, offer.link_id, "v=0\r\n")
            await bob.send("alice", encode_signal(wrong_kind))  # not an answer
            return await PeerLink.answer(delivery, bob, config_b)

        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer_after_noise())
            link_a = await PeerLink.dial("bob", alice, config_a)
        link_b = answering.result()
        try:
            assert link_a.drops == {
                "signal-other-sender": 1,
                "signal-undecodable": 1,
                "signal-other-link": 2,
            }
            link_a.send(b"still fine")
            assert await asyncio.wait_for(link_b.receive(), 5) == b"still fine"
        finally:
            await link_a.close()
            await link_b.close()
    finally:
        service.close()


@run_async
async def test_prepared_connection_answers_with_candidates_gathered_ahead() -> None:
    service, relay = await start_relay()
    try:
        config_a = relay_config(relay, "alice", TurnTransport.UDP)
        config_b = relay_config(relay, "bob", TurnTransport.UDP)
        link_a, link_b = await connect(config_a, config_b, prepared_b=True)
        try:
            assert link_b.path().local_kind is CandidateKind.RELAY
            link_b.send(b"x" * 1000)
            assert await asyncio.wait_for(link_a.receive(), 5) == b"x" * 1000
        finally:
            await link_a.close()
            await link_b.close()
    finally:
        service.close()


def forge_fingerprint(line: str) -> str:
    """The same a=fingerprint line with its last byte changed (a substituted certificate)."""
    if not line.startswith("a=fingerprint"):
        return line
    return line[:-2] + ("00" if line[-2:] != "00" else "11")


@run_async
async def test_a_tampered_fingerprint_is_refused() -> None:
    """A signaller that swaps the SDP's fingerprint (a man in the middle) gets no link."""
    service, relay = await start_relay()
    try:
        hub = MemoryHub()
        alice, bob = hub.endpoint("alice"), hub.endpoint("bob")
        config_a = relay_config(relay, "alice", TurnTransport.UDP)
        config_b = relay_config(relay, "bob", TurnTransport.UDP)
        config_a = LinkConfig(ice=config_a.ice, relay_only=True, setup_timeout=2.0)
        config_b = LinkConfig(ice=config_b.ice, relay_only=True, setup_timeout=2.0)

        async def answer_tampered() -> None:
            delivery = await bob.receive()
            offer = decode_signal(delivery.payload)
            lines = offer.sdp.split("\r\n")
            forged = [
                line[: line.rindex(":") - 2] + ":00:00"
                if line.startswith("a=fingerprint")
                else line
                for line in lines
            ]
            tampered = SignalMessage(SignalKind.OFFER, offer.link_id, "\r\n".join(forged))
            delivery = type(delivery)(delivery.sender, encode_signal(tampered))
            with pytest.raises(PeerLinkError):
                await PeerLink.answer(delivery, bob, config_b)

        async with asyncio.TaskGroup() as group:
            group.create_task(answer_tampered())
            with pytest.raises(PeerLinkError):
                await PeerLink.dial("bob", alice, config_a)
    finally:
        service.close()


@run_async
async def test_udp_probe_falls_back_to_turn_over_tcp_when_udp_is_silent() -> None:
    service, relay = await start_relay()
    try:
        creds = credentials_for("alice")

        async def silent(_transport: str, _address: Address) -> float | None:
            return None

        blocked = await choose_ice_plan(
            stun=relay, turn_udp=relay, turn_tcp=relay, credentials=creds, probe=silent
        )
        assert blocked.stun is None and blocked.turn_transport is TurnTransport.TCP
        open_plan = await choose_ice_plan(
            stun=relay, turn_udp=relay, turn_tcp=relay, credentials=creds
        )
        assert open_plan.stun == relay and open_plan.turn_transport is TurnTransport.UDP
        assert [server.urls for server in IcePlan().rtc_servers()] == []
    finally:
        service.close()
