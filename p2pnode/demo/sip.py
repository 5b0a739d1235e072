"""The demo's SIP step: phones on the gateway, as ``p2pnode run`` hosts it with ``[sip]``.

Why our own user agent for the phones: the demo runs on a fresh machine with
no Debian packages, and ``p2pnode sip try-call`` is the same code an operator
uses to try a gateway. The gateway is the node's ``SipService`` (the home's
accounts file, the ``[sip]`` section), on 127.0.0.1 with a port the system
picks. Then:

1. two accounts are created and their three settings (login, password,
   server) printed, as ``p2pnode sip account add`` prints them;
2. a phone registers with each account (digest, MD5 as desk phones answer);
3. alice's phone calls bob's; both play a tone through the gateway's RTP
   relay, and an FFT of each recording names the frequency each side heard.

And (``run_bridge_step``, issue 15) a phone calls a P2P peer and back: ``bob`` is now a
peer of the network (a calls service with its own key, answering with
660 Hz); the bridge (``gateways/sip/bridge.py``) is the registered device of
the login ``bob`` and dials the peer as alice's hosted identity; then the peer
calls alice and the bridge rings her phone. The two calls
services exchange their signals in memory (the in-process stand-in for the
peer link that ``demo/peers.py`` shows); the media is aiortc over UDP.

Invariants: the gateway and both phones are closed on return; every wait is
bounded (``LIMIT``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from p2pnode.app.sip_config import SipSection
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.demo.calls import dominant_frequency
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.identity import Identity
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource

__all__ = ["ALICE_HZ", "BOB_HZ", "DOMAIN", "LIMIT", "heard_hz", "run_bridge_step", "run_sip_step"]

LIMIT = 10.0  # seconds any one wait may take
DOMAIN = "sip.demo.p2pnode.test"
ALICE_HZ = 440.0
BOB_HZ = 660.0
TONE_SECONDS = 1.5
TOLERANCE_HZ = 10.0
RATE = 8000  # G.711

Say = Callable[[str], None]


def heard_hz(samples: np.ndarray) -> float:
    """The strongest frequency in a recording (the first 0.1 s skipped: jitter start-up)."""
    audio = samples[RATE // 10 :].astype(np.float64)
    if audio.size < RATE // 10:
        return 0.0
    power = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
    power[np.fft.rfftfreq(audio.size, 1 / RATE) < 60] = 0.0
    return float(np.fft.rfftfreq(audio.size, 1 / RATE)[int(np.argmax(power))])


async def run_sip_step(say: Say, label: str) -> bool:
    """Step ``label``: two accounts, two phones registering, a call with audio both ways."""
    with tempfile.TemporaryDirectory() as home:
        section = SipSection.model_validate(
            {"enabled": True, "domain": DOMAIN, "listen": "127.0.0.1:0", "digest": ["MD5"]}
        )
        store = AccountStore.open(Path(home) / ACCOUNTS_FILE, DOMAIN)
        try:
            passwords = {
                login: store.add(login, None, randbytes=os.urandom)[1] for login in ("alice", "bob")
            }
        finally:
            store.close()
        service = SipService(Path(home), section)
        await service.start()
        phones: list[SipUserAgent] = []
        try:
            return await _calls(say, label, service, passwords, phones)
        finally:
            for phone in phones:
                await phone.close()
            await service.stop()


async def _calls(
    say: Say,
    label: str,
    service: SipService,
    passwords: dict[str, str],
    phones: list[SipUserAgent],
) -> bool:
    gateway = service.gateway
    assert gateway is not None and gateway.address is not None
    server = service.statistics().address
    say(f"{label} the SIP gateway (as `p2pnode run` hosts it with [sip]) on {server}:")
    for login, password in passwords.items():
        say(f"  account {login}: login={login}  password={password}  server={DOMAIN}")
    for login, password in passwords.items():
        phone = SipUserAgent(login, password, DOMAIN, gateway.address, host="127.0.0.1")
        phones.append(phone)
        await phone.start()
        await asyncio.wait_for(phone.register(), LIMIT)
    listed = service.status(asyncio.get_running_loop().time()).registrations
    say(f"  phones registered: {', '.join(f'{r.login} from {r.source}' for r in listed)}")
    alice, bob = phones
    call = await asyncio.wait_for(alice.call("bob"), LIMIT)
    answered = await asyncio.wait_for(bob.incoming.get(), LIMIT)
    say(f"  alice's phone calls bob's: answered; tones {ALICE_HZ:.0f} Hz and {BOB_HZ:.0f} Hz")
    await asyncio.wait_for(
        asyncio.gather(
            call.play_tone(ALICE_HZ, TONE_SECONDS), answered.play_tone(BOB_HZ, TONE_SECONDS)
        ),
        LIMIT,
    )
    await asyncio.wait_for(call.hangup(), LIMIT)
    alice_heard, bob_heard = heard_hz(call.recording()), heard_hz(answered.recording())
    relayed = service.statistics().gateway
    say(
        f"  alice's phone heard {alice_heard:.1f} Hz, bob's phone heard {bob_heard:.1f} Hz; "
        f"{0 if relayed is None else relayed.rtp_forwarded} RTP packets relayed by the gateway"
    )
    return (
        len(listed) == 2
        and abs(alice_heard - BOB_HZ) < TOLERANCE_HZ
        and abs(bob_heard - ALICE_HZ) < TOLERANCE_HZ
    )


class _Board:
    """Call signalling between the two calls services, in memory (media goes over UDP)."""

    def __init__(self) -> None:
        self.services: dict[str, CallService] = {}
        self.queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}

    def sender(self, me: str) -> Callable[[str, bytes], Awaitable[None]]:
        self.queues[me] = asyncio.Queue()

        async def send(peer: str, payload: bytes) -> None:
            if peer in self.queues:
                self.queues[peer].put_nowait((me, payload))

        return send

    async def pump(self, me: str) -> None:
        while True:
            sender, payload = await self.queues[me].get()
            await self.services[me].handle_signal(sender, payload)


async def run_bridge_step(say: Say, label: str) -> bool:
    """Step ``label``: alice's phone dials ``bob``, a P2P peer, through the SIP<->P2P bridge."""
    with tempfile.TemporaryDirectory() as home:
        root = Path(home)
        section = SipSection.model_validate(
            {"enabled": True, "domain": DOMAIN, "listen": "127.0.0.1:0", "digest": ["MD5"]}
        )
        store = AccountStore.open(root / ACCOUNTS_FILE, DOMAIN)
        try:
            alice_account, alice_password = store.add("alice", None, randbytes=os.urandom)
            _, bob_password = store.add("bob", None, randbytes=os.urandom)  # the bridge's device
        finally:
            store.close()
        service = SipService(root, section)
        await service.start()
        gateway = service.gateway
        assert gateway is not None and gateway.address is not None
        phone = SipUserAgent("alice", alice_password, DOMAIN, gateway.address, host="127.0.0.1")
        bridge_ua = BridgeUserAgent("bob", bob_password, DOMAIN, gateway.address)
        try:
            for ua in (phone, bridge_ua):
                await ua.start()
                await asyncio.wait_for(ua.register(), LIMIT)
            alice_id, bob_id = identity_of(alice_account).peer_id, Identity.generate().peer_id
            say(
                f"{label} alice's phone dials bob, a P2P peer ({bob_id[:12]}...): the gateway's "
                "bridge calls him as alice's hosted identity (call signals in memory, media UDP)"
            )
            heard = await _bridged_call(root, phone, bridge_ua, alice_id, bob_id)
        finally:
            await phone.close()
            await bridge_ua.close()
            await service.stop()
    phone_heard, peer_heard, phone_back, peer_back = heard
    say(
        f"  alice's phone heard {phone_heard:.1f} Hz (bob's {BOB_HZ:.0f} Hz), "
        f"bob's P2P node heard {peer_heard:.1f} Hz (the phone's {ALICE_HZ:.0f} Hz)"
    )
    say(
        f"  and back, bob's P2P node calls alice, her phone rings and answers: it heard "
        f"{phone_back:.1f} Hz, bob's node heard {peer_back:.1f} Hz"
    )
    phone_ok = all(abs(hz - BOB_HZ) < TOLERANCE_HZ for hz in (phone_heard, phone_back))
    return phone_ok and all(abs(hz - ALICE_HZ) < TOLERANCE_HZ for hz in (peer_heard, peer_back))


async def _bridged_call(
    root: Path, phone: SipUserAgent, bridge_ua: BridgeUserAgent, alice_id: str, bob_id: str
) -> tuple[float, float, float, float]:
    board = _Board()
    config = CallConfig(audio_codecs=("PCMU",))
    recording = root / "bob-heard.wav"
    hosted = BridgedCallService(alice_id, config, board.sender(alice_id))
    peer = CallService(
        bob_id,
        dataclasses.replace(config, auto_answer=True),
        board.sender(bob_id),
        answer_media=lambda: CallMedia(ToneSource(BOB_HZ), recording),
    )
    async with hosted, peer, asyncio.TaskGroup() as group:
        board.services = {alice_id: hosted, bob_id: peer}
        bridge = SipP2pBridge(hosted, bridge_ua, "alice", peers={"bob": bob_id}.get)
        tasks = [group.create_task(board.pump(name)) for name in (alice_id, bob_id)]
        tasks.append(group.create_task(bridge.run()))
        try:
            call = await asyncio.wait_for(phone.call("bob"), LIMIT)
            await asyncio.wait_for(call.play_tone(ALICE_HZ, TONE_SECONDS), LIMIT)
            await asyncio.wait_for(call.hangup(), LIMIT)
            await asyncio.wait_for(peer.wait_state(None, {CallState.HUNG_UP}), LIMIT)
            # And back: the peer calls alice; her hosted identity rings her phone (auto-answer).
            back = root / "bob-heard-back.wav"
            call_id = await peer.dial(alice_id, CallMedia(ToneSource(BOB_HZ), back))
            ringing = await asyncio.wait_for(phone.incoming.get(), LIMIT)
            await asyncio.wait_for(peer.wait_state(call_id, {CallState.ANSWERED}), LIMIT)
            await asyncio.wait_for(ringing.play_tone(ALICE_HZ, TONE_SECONDS), LIMIT)
            await peer.hangup(call_id)
            await asyncio.wait_for(ringing.ended.wait(), LIMIT)
        finally:
            for task in tasks:
                task.cancel()
    return (
        heard_hz(call.recording()),
        dominant_frequency(recording),
        heard_hz(ringing.recording()),
        dominant_frequency(back),
    )
