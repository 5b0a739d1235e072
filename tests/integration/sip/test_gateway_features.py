"""Loopback: RFC 4733 DTMF through the relay, per-account call limits, NAT keep-alives.

Real sockets on 127.0.0.1 (kernel-chosen ports), the real gateway and our UA.
The keep-alive test shortens the RFC 3261 timers and the ping interval so a
silent device is found in about a second instead of a minute.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.rtp import DTMF_EVENTS
from p2pnode.gateways.sip.transaction import Timers
from p2pnode.gateways.sip.trunks import IpTrunk
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError

DOMAIN = "gw.test"


async def _setup(
    tmp_path: Path, config: GatewayConfig, bob_calls: int = 4
) -> tuple[SipGateway, SipUserAgent, SipUserAgent]:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom, max_calls=bob_calls)
    gateway = SipGateway(config, store)
    await gateway.start()
    assert gateway.address is not None
    alice = SipUserAgent("alice", alice_password, DOMAIN, gateway.address)
    bob = SipUserAgent("bob", bob_password, DOMAIN, gateway.address)
    for ua in (alice, bob):
        await ua.start()
        await ua.register()
    return gateway, alice, bob


async def _teardown(gateway: SipGateway, *uas: SipUserAgent) -> None:
    for ua in uas:
        await ua.close()
    await gateway.stop()


def test_rfc4733_dtmf_passes_the_relay_unchanged(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, alice, bob = await _setup(tmp_path, GatewayConfig(DOMAIN))
        try:
            call = await asyncio.wait_for(alice.call("bob"), 10)
            answered = await asyncio.wait_for(bob.incoming.get(), 5)
            await call.play_tone(440, 0.2)  # latch the caller's side first
            sent = await call.send_dtmf("5")
            await asyncio.sleep(0.2)
            events = answered.events
            assert len(events) == sent
            assert {e.event for e in events} == {DTMF_EVENTS["5"]}
            assert sum(e.end for e in events) == 3  # RFC 4733's three end packets
            await call.hangup()
        finally:
            await _teardown(gateway, alice, bob)

    asyncio.run(scenario())


def test_a_callee_over_its_concurrent_call_limit_is_busy(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, alice, bob = await _setup(tmp_path, GatewayConfig(DOMAIN), bob_calls=1)
        try:
            first = await asyncio.wait_for(alice.call("bob"), 10)
            try:
                await asyncio.wait_for(alice.call("bob"), 10)
                raise AssertionError("a second concurrent call to bob was answered")
            except UaError as error:
                assert error.status == 486
            await first.hangup()
            await asyncio.sleep(0.1)
            again = await asyncio.wait_for(alice.call("bob"), 10)  # the slot is free again
            await again.hangup()
        finally:
            await _teardown(gateway, alice, bob)

    asyncio.run(scenario())


def test_keepalive_pings_keep_a_live_device_and_unregister_a_silent_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = GatewayConfig(DOMAIN, keepalive_interval=0.2, timers=Timers(t1=0.02, t2=0.1))
        gateway, alice, bob = await _setup(tmp_path, config)
        try:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(1.5)  # ~7 pings, each answered by bob's UA
            assert gateway.registrar.bindings("bob", loop.time()) != ()
            await bob.close()  # the device goes silent (its NAT mapping would be gone)
            await asyncio.sleep(2.5)  # two pings time out after 64 x T1 = 1.28 s each
            assert gateway.registrar.bindings("bob", loop.time()) == ()
            assert gateway.registrar.bindings("alice", loop.time()) != ()
            try:
                await alice.call("bob")
                raise AssertionError("a call reached an unregistered device")
            except UaError as error:
                assert error.status == 480
        finally:
            await _teardown(gateway, alice)

    asyncio.run(scenario())


def test_an_ip_trunk_is_pinged_and_its_dids_are_unavailable_while_it_is_down(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        pbx = SipUserAgent("pbx", "-", "pbx.example", ("127.0.0.1", 9), host="127.0.0.5")
        await pbx.start()
        assert pbx.address is not None
        trunk = IpTrunk("pbx", ("127.0.0.5/32",), dids=("4930888",), target=pbx.address)
        config = GatewayConfig(
            DOMAIN, ip_trunks=(trunk,), keepalive_interval=0.2, timers=Timers(t1=0.02, t2=0.1)
        )
        gateway, alice, bob = await _setup(tmp_path, config)
        try:
            await asyncio.sleep(0.6)  # pings answered by the PBX
            call = await asyncio.wait_for(alice.call("+4930888"), 10)
            answered = await asyncio.wait_for(pbx.incoming.get(), 5)
            assert str(answered.dialog.local_uri.uri) == f"sip:4930888@{DOMAIN}"
            await call.hangup()
            await pbx.close()  # the PBX goes away
            await asyncio.sleep(2.5)
            assert gateway.router.down_trunks == {"pbx"}
            try:
                await alice.call("+4930888")
                raise AssertionError("a call was routed to a trunk that is down")
            except UaError as error:
                assert error.status == 480
        finally:
            await _teardown(gateway, alice, bob)

    asyncio.run(scenario())
