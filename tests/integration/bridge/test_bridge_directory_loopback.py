"""Phones reach P2P logins the gateway does not host, resolved through a real DHT directory.

Real parts: six DHT nodes on loopback holding carol's login claim and her ENUM
record (both countersigned by a verifier the gateway trusts) and dave's
unverified claim; the SIP gateway with a bridge account ``p2p``; two bridges
registered as ``p2p`` (alice's, dialling as alice's P2P identity and taking
only alice's phone calls, and the gateway's own, taking only foreign SIP
networks' calls, within an allow-list); alice's phone (our UA); carol's calls
service (aiortc, auto-answer, 550 Hz), signalling in memory.

What must hold: alice's phone dials ``carol`` (hosted nowhere here) and carol
hears its 440 Hz (FFT) from alice's identity; the number whose trusted ENUM
record points at ``sip:carol@gw.test``, and a DID the gateway maps to carol,
reach carol too; a carrier's INVITE to ``carol@gw.test`` reaches her from the
gateway's identity, never alice's, and carol's call events show the carrier's
From marked unverified; a caller outside the allow-list gets 403;
an unverified login and an unknown one get 404.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import (
    BridgedCallService,
    BridgeUserAgent,
    ForeignCallPolicy,
    SipP2pBridge,
)
from p2pnode.gateways.sip.bridge_routing import BridgeCallers, PeerResolver
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent, UaCall, UaError
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService, CallUpdate
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_call_loopback import assert_tone, loopback_ice
from tests.integration.directory.test_directory_dht import dht

DOMAIN = "gw.test"
NUMBER = "+442079460018"  # carol's, ENUM -> sip:carol@gw.test, verified
DID = "+4930556"  # configured on the gateway for carol
ALICE_ID = "alice-hosted-identity"
GATEWAY_ID = "gateway-identity"
WAIT = 15.0


async def publish(
    directory: Directory, verifier: Identity, carol: Identity, dave: Identity
) -> None:
    """carol: a verified login and a verified ENUM record into the gateway; dave: unverified."""
    now = time.time()
    login = countersign(verifier, RecordKind.NAME_CLAIM, "carol", carol.public_key, now=now)
    await directory.claim_name(carol, "carol", add=[login])
    await directory.publish_enum(carol, NUMBER, [sip_directive(f"sip:carol@{DOMAIN}")])
    number = countersign(verifier, RecordKind.ENUM_ENTRY, NUMBER, carol.public_key, now=now)
    await directory.publish_enum(carol, NUMBER, None, add=[number])
    await directory.claim_name(dave, "dave")


async def answered_call(carol: CallService) -> CallUpdate:
    async with asyncio.timeout(WAIT):
        return await carol.wait_state(None, {CallState.ANSWERED})


async def hang_up(call: UaCall, carol: CallService, call_id: bytes) -> set[tuple[str, str]]:
    """The phone hangs up; returns the (relayed caller, detail) pairs carol's events showed."""
    await call.hangup()
    relayed: set[tuple[str, str]] = set()
    async with asyncio.timeout(WAIT):
        while True:
            update = await carol.wait_update()
            if update.call_id == call_id and update.relayed_caller is not None:
                relayed.add((update.relayed_caller, update.detail))
            if update.call_id == call_id and update.state is CallState.HUNG_UP:
                return relayed


async def scenario(tmp_path: Path) -> None:
    carol_identity, dave, verifier = Identity.generate(), Identity.generate(), Identity.generate()
    carol_id = carol_identity.peer_id
    trusted = frozenset({verifier.public_key})
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom, allow_e164=True)
    _, bridge_password = store.add("p2p", None, randbytes=os.urandom)
    gateway = SipGateway(
        GatewayConfig(DOMAIN, account_dids=((DID, "carol"),)), store, p2p_login="p2p"
    )
    await gateway.start()
    assert gateway.address is not None
    phone = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
    carrier = SipUserAgent("carrier", "unused", "carrier.example", gateway.address)
    stranger = SipUserAgent("mallory", "unused", "elsewhere.example", gateway.address)
    alice_ua = BridgeUserAgent("p2p", bridge_password, DOMAIN, gateway.address)
    gateway_ua = BridgeUserAgent("p2p", bridge_password, DOMAIN, gateway.address)
    user_agents = (phone, carrier, stranger, alice_ua, gateway_ua)
    board = Board((ALICE_ID, GATEWAY_ID, carol_id))
    config = CallConfig(audio_codecs=("PCMU",))
    try:
        for ua in user_agents:
            await ua.start()
        for ua in (phone, alice_ua, gateway_ua):
            await ua.register()
        async with dht(6) as nodes:
            await publish(Directory(DhtNetwork(nodes[1]), trusted=trusted, clock=time.time),
                          verifier, carol_identity, dave)  # fmt: skip
            directory = Directory(DhtNetwork(nodes[-1]), trusted=trusted, clock=time.time)
            resolver = PeerResolver(directory, gateway_domain=DOMAIN)
            as_alice = BridgedCallService(ALICE_ID, config, board.sender(ALICE_ID))
            as_gateway = BridgedCallService(GATEWAY_ID, config, board.sender(GATEWAY_ID))
            async with (
                as_alice,
                as_gateway,
                CallService(
                    carol_id,
                    replace(config, auto_answer=True),
                    board.sender(carol_id),
                    answer_media=lambda: CallMedia(ToneSource(550.0), tmp_path / "carol.wav"),
                ) as carol,
                asyncio.TaskGroup() as group,
            ):
                board.services = {ALICE_ID: as_alice, GATEWAY_ID: as_gateway, carol_id: carol}
                tasks = [group.create_task(board.pump(name)) for name in board.queues]
                bridges = (
                    SipP2pBridge(
                        as_alice, alice_ua, "alice", resolve=resolver.peer_id,
                        callers=BridgeCallers.HOSTED,
                    ),
                    SipP2pBridge(
                        as_gateway, gateway_ua, "p2p", resolve=resolver.peer_id,
                        callers=BridgeCallers.FOREIGN,
                        foreign=ForeignCallPolicy(allow_domains=frozenset({"carrier.example"})),
                    ),
                )  # fmt: skip
                tasks += [group.create_task(bridge.run()) for bridge in bridges]

                # alice's phone dials a login hosted nowhere here: the directory has it.
                async with asyncio.timeout(WAIT):
                    by_login = await phone.call("carol")
                first = await answered_call(carol)
                await by_login.play_tone(440.0, 1.5)
                shown = [await hang_up(by_login, carol, first.call_id)]
                callers = [first.peer]
                # ...the number whose verified ENUM record points at carol@gw.test, the DID.
                for dialled in (NUMBER, DID):
                    async with asyncio.timeout(WAIT):
                        call = await phone.call(dialled)
                    update = await answered_call(carol)
                    callers.append(update.peer)
                    shown.append(await hang_up(call, carol, update.call_id))
                # A carrier (another SIP network) calls carol@gw.test: the gateway's identity.
                async with asyncio.timeout(WAIT):
                    foreign = await carrier.call(f"sip:carol@{DOMAIN}")
                update = await answered_call(carol)
                callers.append(update.peer)
                shown.append(await hang_up(foreign, carol, update.call_id))
                refusals = []
                for ua, dialled in (
                    (stranger, f"sip:carol@{DOMAIN}"),  # not on the allow-list
                    (phone, "dave"),  # unverified claim
                    (phone, "nobody"),  # no claim
                ):
                    with pytest.raises(UaError) as refused:
                        async with asyncio.timeout(WAIT):
                            await ua.call(dialled)
                    refusals.append(refused.value.status)
                for task in tasks:
                    task.cancel()
        samples, rate = read_wav(tmp_path / "carol.wav")
        assert_tone(samples, rate, 440.0)  # carol heard alice's phone
        assert_tone(by_login.recording().astype("float64") / 32768.0, 8000, 550.0)
        assert callers == [ALICE_ID, ALICE_ID, ALICE_ID, GATEWAY_ID]
        # alice's calls come from her own identity; the carrier's shows its unverified From.
        assert shown[:3] == [set(), set(), set()]
        assert {uri for uri, _ in shown[3]} == {"sip:carrier@carrier.example"}
        assert ("sip:carrier@carrier.example", "unverified") in shown[3]
        assert refusals == [403, 404, 404]
    finally:
        for ua in user_agents:
            await ua.close()
        await gateway.stop()


@pytest.mark.slow
def test_phones_and_foreign_networks_reach_p2p_logins_through_the_directory(
    tmp_path: Path,
) -> None:
    with loopback_ice():
        asyncio.run(scenario(tmp_path))
