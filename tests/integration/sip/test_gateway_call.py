"""Loopback: two of our user agents register with the gateway and call each other through it.

Everything is real sockets on 127.0.0.1, ports chosen by the kernel: the
gateway (registrar, digest, B2BUA, media relay), two user agents. Each side
plays its own tone (440 Hz and 660 Hz) as PCMU; the gateway relays both ways;
an FFT of what each side received finds the *other* side's tone.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from tests.harness.audio import spectrum

DOMAIN = "gw.test"


async def _gateway(tmp_path: Path) -> tuple[SipGateway, dict[str, str]]:
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    passwords = {}
    for login in ("alice", "bob"):
        _, passwords[login] = store.add(login, None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store)
    await gateway.start()
    return gateway, passwords


def _tone(samples: np.ndarray) -> tuple[float, float]:
    audio = samples.astype(np.float64) / 32768.0
    result = spectrum(audio[800:], 8000)  # skip the first 100 ms (latching, jitter)
    return result.dominant_hz, result.dominance


def test_two_accounts_call_through_the_gateway_and_hear_each_others_tone(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, passwords = await _gateway(tmp_path)
        assert gateway.address is not None
        alice = SipUserAgent("alice", passwords["alice"], DOMAIN, gateway.address)
        bob = SipUserAgent("bob", passwords["bob"], DOMAIN, gateway.address)
        try:
            for ua in (alice, bob):
                await ua.start()
                await ua.register()
            call = await asyncio.wait_for(alice.call("bob"), 10)
            answered = await asyncio.wait_for(bob.incoming.get(), 5)
            await asyncio.gather(call.play_tone(440, 1.5), answered.play_tone(660, 1.5))
            await asyncio.sleep(0.2)
            await call.hangup()
            await asyncio.wait_for(answered.ended.wait(), 5)
            heard_by_alice, alice_dominance = _tone(call.recording())
            heard_by_bob, bob_dominance = _tone(answered.recording())
            assert abs(heard_by_alice - 660) < 10 and alice_dominance > 20
            assert abs(heard_by_bob - 440) < 10 and bob_dominance > 20
            statistics = gateway.statistics()
            assert statistics.calls_answered == 1 and statistics.active_calls == 0
            assert statistics.rtp_forwarded >= 2 * 60  # both directions went through the relay
        finally:
            await alice.close()
            await bob.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_wrong_password_and_unregistered_callee_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, passwords = await _gateway(tmp_path)
        assert gateway.address is not None
        mallory = SipUserAgent("alice", "not-the-password", DOMAIN, gateway.address)
        alice = SipUserAgent("alice", passwords["alice"], DOMAIN, gateway.address)
        try:
            await mallory.start()
            await alice.start()
            try:
                await mallory.register()
                raise AssertionError("a wrong password registered")
            except UaError as error:
                assert error.status == 401
            await alice.register()
            try:
                await alice.call("bob")  # bob exists but has no registered device
                raise AssertionError("a call to an unregistered account was answered")
            except UaError as error:
                assert error.status == 480
            try:
                await alice.call("nobody")
                raise AssertionError("a call to an unknown login was answered")
            except UaError as error:
                assert error.status == 404
            assert gateway.statistics().auth_failures == 1
        finally:
            await mallory.close()
            await alice.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_message_is_queued_for_an_offline_account_and_delivered_when_it_registers(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        gateway, passwords = await _gateway(tmp_path)
        assert gateway.address is not None
        alice = SipUserAgent("alice", passwords["alice"], DOMAIN, gateway.address)
        bob = SipUserAgent("bob", passwords["bob"], DOMAIN, gateway.address)
        try:
            await alice.start()
            await bob.start()
            # bob has no device: accepted for later delivery (RFC 3428 202).
            assert await alice.send_message("bob", "are you there?") == 202
            assert bob.messages.empty()
            await bob.register()
            sender, body = await asyncio.wait_for(bob.messages.get(), 5)
            assert sender == f"sip:alice@{DOMAIN}" and body == b"are you there?"
            # Online now: delivered at once, the device's 200 is the answer.
            assert await alice.send_message("bob", "hello") == 200
            assert (await asyncio.wait_for(bob.messages.get(), 5))[1] == b"hello"
            # Nobody may send as alice without her password; unknown logins get 404.
            mallory = SipUserAgent("alice", "wrong-password-9", DOMAIN, gateway.address)
            await mallory.start()
            try:
                assert await mallory.send_message("bob", "spoof") == 407
            finally:
                await mallory.close()
            assert await alice.send_message("nobody", "x") == 404
            assert bob.messages.empty()
        finally:
            await alice.close()
            await bob.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_accounts_call_another_domain_and_numbers_through_the_upstream_trunk(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
        _, password = store.add("alice", None, randbytes=os.urandom, allow_e164=True)
        # Elsewhere (an IP-literal domain, RFC 3263 §4.2) and an upstream carrier.
        carol = SipUserAgent("carol", "-", "other.example", ("127.0.0.1", 9), host="127.0.0.3")
        carrier = SipUserAgent(
            "carrier", "-", "carrier.example", ("127.0.0.1", 9), host="127.0.0.4"
        )
        await carol.start()
        await carrier.start()
        assert carol.address is not None and carrier.address is not None
        gateway = SipGateway(GatewayConfig(DOMAIN, upstream=carrier.address), store)
        await gateway.start()
        assert gateway.address is not None
        alice = SipUserAgent("alice", password, DOMAIN, gateway.address)
        try:
            await alice.start()
            call = await asyncio.wait_for(alice.call(f"sip:carol@127.0.0.3:{carol.address[1]}"), 10)
            answered = await asyncio.wait_for(carol.incoming.get(), 5)
            await asyncio.gather(call.play_tone(440, 1.0), answered.play_tone(660, 1.0))
            await call.hangup()
            assert abs(_tone(call.recording())[0] - 660) < 10
            assert abs(_tone(answered.recording())[0] - 440) < 10
            number = await asyncio.wait_for(alice.call("+4930123"), 10)
            upstream = await asyncio.wait_for(carrier.incoming.get(), 5)
            assert str(upstream.dialog.local_uri.uri) == f"sip:+4930123@{DOMAIN}"
            await number.hangup()
        finally:
            for ua in (alice, carol, carrier):
                await ua.close()
            await gateway.stop()

    asyncio.run(scenario())
