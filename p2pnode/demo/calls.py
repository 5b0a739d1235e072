"""The demo's call step: alice calls bob through our own TURN relay; each says what it heard.

Everything runs in this process on 127.0.0.1: a ``relay`` TURN server (port 0,
loopback peers allowed for the demo only), two ``CallService``s whose media is
restricted to relayed candidates (so the call goes through the relay even on
one machine), and an in-memory signalling channel in place of the sealed
envelopes. Alice sends 440 Hz, bob 660 Hz; each records what it receives and
an FFT of each recording names the frequency heard.

Invariants: every socket and task is owned by ``run_call_demo`` and closed on
return; every wait is bounded (``LIMIT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_config import CallConfig, CallMedia, IceServer, MediaPath
from p2pnode.sessions.calls import CallService, SignalSender
from p2pnode.sessions.media import ToneSource
from relay.auth import static_users
from relay.policy import PeerAddressPolicy, parse_networks
from relay.server import TurnConfig, TurnServer
from relay.service import RelayService

__all__ = ["LIMIT", "CallDemoResult", "dominant_frequency", "run_call_demo"]

LIMIT = 20.0  # seconds any one wait of the demo may take
ALICE_HZ = 440.0
BOB_HZ = 660.0


@dataclass(frozen=True, slots=True)
class CallDemoResult:
    alice_heard_hz: float
    bob_heard_hz: float
    setup_ms: float
    codec: str | None
    path: str | None
    bob_end: CallState

    @property
    def ok(self) -> bool:
        return (
            abs(self.alice_heard_hz - BOB_HZ) < 5
            and abs(self.bob_heard_hz - ALICE_HZ) < 5
            and self.bob_end is CallState.HUNG_UP
        )


def dominant_frequency(path: Path, skip_s: float = 0.3) -> float:
    """The strongest frequency in a 16-bit mono WAV (Hann window, parabolic peak)."""
    with wave.open(str(path), "rb") as reader:
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)[int(skip_s * rate) :]
    if samples.size < rate // 10:
        return 0.0
    power = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    power[:5] = 0.0
    peak = int(np.argmax(power))
    offset = 0.0
    if 0 < peak < power.size - 1:
        a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-30)
        if a - 2 * b + c != 0:
            offset = float(0.5 * (a - c) / (a - 2 * b + c))
    return (peak + offset) * rate / samples.size


async def run_call_demo(seconds: float = 1.5) -> CallDemoResult:
    """Place one relayed call on loopback and report what each side heard."""
    loop = asyncio.get_running_loop()
    users = {"alice": "alice-demo", "bob": "bob-demo"}
    turn = TurnConfig(
        realm="demo",
        credentials=static_users(users),
        relay_ip="127.0.0.1",
        policy=PeerAddressPolicy(allow=parse_networks(["127.0.0.0/8"])),
    )
    relay = RelayService(
        TurnServer(turn, random.Random(), loop.time()), udp=[("127.0.0.1", 0)], tcp=[]
    )
    port = (await relay.start()).udp[0][1]
    inboxes: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
        "alice": asyncio.Queue(),
        "bob": asyncio.Queue(),
    }

    def config(user: str, answer: bool) -> CallConfig:
        server = IceServer(f"turn:127.0.0.1:{port}?transport=udp", user, users[user])
        path = MediaPath((server,), relay_only=True, name="demo relay")
        return CallConfig(paths=(path,), auto_answer=answer)

    def sender(me: str) -> SignalSender:
        async def send(peer: str, payload: bytes) -> None:
            inboxes[peer].put_nowait((me, payload))

        return send

    async def pump(me: str, service: CallService) -> None:
        while True:
            peer, payload = await inboxes[me].get()
            await service.handle_signal(peer, payload)

    try:
        with tempfile.TemporaryDirectory(prefix="p2pnode-call-demo-") as tmp:
            heard_by_alice, heard_by_bob = Path(tmp) / "alice.wav", Path(tmp) / "bob.wav"
            bob_media = CallMedia(ToneSource(BOB_HZ), heard_by_bob)
            # Exits in reverse: the services hang up before the pumps' group ends.
            async with (
                asyncio.TaskGroup() as pumps,
                CallService("alice", config("alice", False), sender("alice")) as alice,
                CallService(
                    "bob", config("bob", True), sender("bob"), answer_media=lambda: bob_media
                ) as bob,
            ):
                tasks = [
                    pumps.create_task(pump("alice", alice)),
                    pumps.create_task(pump("bob", bob)),
                ]
                try:
                    started = time.monotonic()
                    alice_media = CallMedia(ToneSource(ALICE_HZ), heard_by_alice)
                    call_id = await alice.dial("bob", alice_media)
                    async with asyncio.timeout(LIMIT):
                        first = await alice.wait_first_frame(call_id)
                    await asyncio.sleep(seconds)
                    await alice.hangup(call_id)
                    async with asyncio.timeout(LIMIT):
                        await bob.wait_state(call_id, {CallState.HUNG_UP, CallState.FAILED})
                    update_codec = alice.statistics(call_id).codec
                    bob_end = bob.state(call_id)
                    path = alice.path(call_id)
                finally:
                    for task in tasks:
                        task.cancel()
            return CallDemoResult(
                alice_heard_hz=dominant_frequency(heard_by_alice),
                bob_heard_hz=dominant_frequency(heard_by_bob),
                setup_ms=(first - started) * 1000.0,
                codec=update_codec,
                path=path,
                bob_end=bob_end,
            )
    finally:
        with contextlib.suppress(Exception):
            relay.close()
