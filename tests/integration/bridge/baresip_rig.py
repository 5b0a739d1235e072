"""One gateway, one bridge and two calls services on loopback, for the baresip bridge tests.

test_bridge_baresip_codecs.py, test_bridge_codec_preference.py and
test_bridge_baresip_rtcp.py each run a module's calls through the same set-up:
a gateway with accounts ``alice`` and ``bob`` (MD5 digest, sipp's and baresip's
only algorithm), the bridge's user agent registered as ``bob`` (a phone's call
to bob reaches the bridge), the hosted calls service of ``alice`` and a peer on
an in-memory Board, the bridge between them. baresip phones are configured with
``net_interface 127.0.0.1`` (as in test_bridge_baresip.py) and run as
processes; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import (
    BridgedCallService,
    BridgedCallSummary,
    BridgeEvent,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from tests.harness.baresip import write_baresip_config
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_baresip import free_udp_port
from tests.integration.bridge.test_bridge_call_loopback import ALICE_ID, PEER_ID

__all__ = [
    "DOMAIN",
    "WAIT",
    "Heard",
    "Rig",
    "bridge_rig",
    "ended",
    "next_event",
    "phone_config",
    "registered",
    "spawn",
    "stop",
]

DOMAIN = "gw.test"
WAIT = 20.0


@dataclass(frozen=True)
class Heard:
    """One call: what each side recorded and the bridge's end-of-call summary."""

    phone_wav: Path
    peer_wav: Path
    summary: BridgedCallSummary


@dataclass(frozen=True)
class Rig:
    """The running set-up; ``peer`` is the P2P side, ``hosted`` the bridge's calls service."""

    gateway: SipGateway
    address: tuple[str, int]
    alice_password: str
    bridge_ua: BridgeUserAgent
    hosted: BridgedCallService
    peer: CallService
    bridge: SipP2pBridge


@asynccontextmanager
async def bridge_rig(
    tmp: Path,
    config: CallConfig,
    answering: CallConfig,
    answer_media: Callable[[], CallMedia],
) -> AsyncIterator[Rig]:
    """The set-up with ``config`` for the bridge's calls and ``answering`` for the peer's."""
    store = AccountStore(tmp / "node.sqlite", DOMAIN)
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN, digest_algorithms=(Algorithm.MD5,)), store)
    await gateway.start()
    assert gateway.address is not None
    bridge_ua = BridgeUserAgent("bob", bob_password, DOMAIN, gateway.address)
    board = Board((ALICE_ID, PEER_ID))
    try:
        await bridge_ua.start()
        await bridge_ua.register()  # as bob: the phone's calls to bob reach the bridge
        hosted = BridgedCallService(ALICE_ID, config, board.sender(ALICE_ID))
        peer_service = CallService(
            PEER_ID, answering, board.sender(PEER_ID), answer_media=answer_media
        )
        async with hosted, peer_service as peer, asyncio.TaskGroup() as group:
            board.services = {ALICE_ID: hosted, PEER_ID: peer}
            tasks = [group.create_task(board.pump(name)) for name in (ALICE_ID, PEER_ID)]
            bridge = SipP2pBridge(hosted, bridge_ua, "alice", peers={"bob": PEER_ID}.get)
            tasks.append(group.create_task(bridge.run()))
            yield Rig(gateway, gateway.address, alice_password, bridge_ua, hosted, peer, bridge)
            for task in tasks:
                task.cancel()
    finally:
        await bridge_ua.close()
        await gateway.stop()


def phone_config(
    directory: Path, password: str, server: tuple[str, int], codecs: str, *, mux: bool = False
) -> Path:
    """alice's baresip offering ``codecs``; its recordings' folder."""
    return write_baresip_config(
        directory,
        listen=f"127.0.0.1:{free_udp_port()}",
        account=f"alice@{DOMAIN}",
        password=password,
        outbound=f"{server[0]}:{server[1]}",
        net_interface="127.0.0.1",
        audio_codecs=codecs,
        rtcp_mux=mux,
    )


async def spawn(*command: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), 5)


async def next_event(bridge: SipP2pBridge, what: str) -> BridgeEvent:
    """The bridge's next event named ``what`` (others are passed over)."""
    async with asyncio.timeout(WAIT):
        while True:
            event: BridgeEvent = await bridge.events.get()
            if event.what == what:
                return event


async def ended(bridge: SipP2pBridge) -> BridgedCallSummary:
    summary = (await next_event(bridge, "ended")).summary
    assert summary is not None
    return summary


async def registered(gateway: SipGateway, bound: int) -> None:
    async with asyncio.timeout(WAIT):
        # baresip registers (challenge, MD5); the gateway has no event to await
        while len(gateway.registrar.bindings("alice", gateway._now())) < bound:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
