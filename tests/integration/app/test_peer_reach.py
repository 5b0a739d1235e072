"""Reach in the running node, on loopback: two supernodes serving as homes and two peers
attaching to them, each a whole node built by ``assemble`` from its config (DHT,
signalling, peer app, control API); the CLI runs as a real ``p2pnode`` process
against the peers' control APIs.

alice adds bob as a contact (watching him), pings him by contact name (a PeerLink
through sealed signalling: path, set-up time, RTT printed); bob sets "away" and
alice's WebSocket event stream shows it, as does her contact list. alice calls bob
(``p2pnode call bob --tone 440 --record``); bob's node answers by config with 660 Hz
and records: the FFT of each recording finds the other side's tone. Every wait is
bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.app.config import parse_config
from p2pnode.app.homefiles import TOKEN_FILE
from p2pnode.app.peer_calls import CALLS_DIR
from p2pnode.app.peer_services import PeerApp
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.connectivity.signalling import SignallingService, fetch_contact
from p2pnode.identity import Identity
from tests.harness.audio import read_wav, spectrum

WAIT = 30.0  # a bound on every wait, never a speed assertion
CALLS = {  # bob is unattended: he answers with 660 Hz and records what he hears
    "alice": {"enabled": True},
    "bob": {"enabled": True, "auto_answer": True, "answer_tone": 660.0, "record": True},
}
P2PNODE = [sys.executable, "-m", "p2pnode"]


def _config(bootstrap: str | None, presence: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": {"listen": "127.0.0.1:0", "bootstrap": [bootstrap] if bootstrap else []},
        "supernode": {"enabled": False, "relay_search": False},
        "control": {"port": 0},
        "presence": {"enabled": True, "listen": "127.0.0.1:0", **presence},
    }


def signalling_of(assembly: Assembly) -> SignallingService:
    service = assembly.node.service("signalling")
    assert isinstance(service, SignallingService)
    return service


async def until_contact(assembly: Assembly, key: bytes, homes: int) -> None:
    """Until the DHT holds ``key``'s CONTACT with ``homes`` homes."""
    async with asyncio.timeout(WAIT):
        while True:
            contact = await fetch_contact(assembly.dht.node, key)
            if contact is not None and len(contact.homes) >= homes:
                return
            await asyncio.sleep(0.1)


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[dict[str, Assembly]]:
    """Two serving homes, then alice and bob attached to both."""
    stop = asyncio.Event()
    nodes: dict[str, Assembly] = {}
    async with asyncio.TaskGroup() as tasks:

        async def start(name: str, config: dict[str, Any]) -> Assembly:
            home = root / name
            home.mkdir()
            assembly = assemble(home, parse_config(config), Identity.load_or_create(home))
            tasks.create_task(assembly.node.run(stop))
            async with asyncio.timeout(WAIT):
                await assembly.node.ready.wait()
            nodes[name] = assembly
            return assembly

        try:
            first = await start("home1", _config(None, {"home": "serve"}))
            host, port = first.dht.address
            bootstrap = f"{host}:{port}"
            second = await start("home2", _config(bootstrap, {"home": "serve"}))
            for assembly in (first, second):
                await until_contact(second, assembly.identity.public_key, 1)
            homes = [first.identity.peer_id, second.identity.peer_id]
            for name in ("alice", "bob"):
                config = _config(bootstrap, {"homes": homes, "home": "attach"})
                config["calls"] = CALLS[name]
                peer = await start(name, config)
                async with asyncio.timeout(WAIT):
                    while len(signalling_of(peer).homes()) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await until_contact(peer, peer.identity.public_key, 2)
            yield nodes
        finally:
            stop.set()


async def cli(home: Path, *args: str) -> str:
    """Run ``p2pnode ARGS --home HOME``; its stdout (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(
        *P2PNODE, *args, "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def event_of(events: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            event: dict[str, Any] = await events.receive_json()
            if event["type"] == kind:
                return event


async def presence_event(events: aiohttp.ClientWebSocketResponse, peer: str, status: str) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            event = await events.receive_json()
            if (
                event["type"] == "PresenceChanged"
                and event["peer"] == peer
                and event["status"] == status
            ):
                return


async def scenario(root: Path) -> None:
    async with network(root) as nodes:
        alice, bob = nodes["alice"], nodes["bob"]
        bob_id = bob.identity.peer_id
        assert alice.config.node.client  # attaching: its DHT runs as a client
        assert not nodes["home1"].config.node.client
        assert alice.control is not None
        token = (root / "alice" / TOKEN_FILE).read_text().strip()
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{alice.control.url}/api/events?token={token}") as events,
        ):
            auth = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{alice.control.url}/api/openapi.json", headers=auth) as spec:
                paths = (await spec.json())["paths"]
            for route in ("/api/ping", "/api/presence", "/api/contacts", "/api/messages",
                         "/api/inbox", "/api/calls", "/api/calls/{call_id}/hangup"):  # fmt: skip
                assert route in paths, route
            async with session.post(
                f"{alice.control.url}/api/messages", json={"to": bob_id, "text": "x"},
                headers=auth,
            ) as refused:  # fmt: skip
                assert refused.status == 404  # [chat] is off in this network: said so
                assert "[chat]" in (await refused.json())["detail"]
            added = await cli(root / "alice", "contacts", "add", "bob", bob_id)
            assert bob_id in added
            await presence_event(events, bob_id, "online")

            out = await cli(root / "alice", "ping", "bob", "--count", "2")
            path = re.search(r"link to (\S+): (direct|relayed) (\S+)", out)
            assert path is not None, out
            assert path.group(1) == bob_id
            setup = re.search(r"set-up (\d+) ms", out)
            rtt = re.search(r"rtt ([0-9.]+) ms \(min of 2", out)
            assert setup is not None and rtt is not None, out
            assert float(rtt.group(1)) > 0
            opened = await event_of(events, "LinkOpened")
            assert opened["peer"] == bob_id and opened["dialled"] and opened["path"]
            app = bob.node.service("peer")
            assert isinstance(app, PeerApp)
            assert app.statistics().links_answered == 1

            await cli(root / "bob", "presence", "set", "away", "--note", "lunch")
            await presence_event(events, bob_id, "away")
            listed = await cli(root / "alice", "contacts", "list")
            assert re.search(r"^bob\s+away \(lunch\)\s+" + bob_id, listed, re.MULTILINE), listed

            await call_with_tones(root, bob)

            await cli(root / "alice", "contacts", "remove", "bob")
            assert "no contacts" in await cli(root / "alice", "contacts", "list")


async def call_with_tones(root: Path, bob: Assembly) -> None:
    """alice calls bob with 440 Hz for 2 s; each recording's FFT finds the other's tone."""
    mine = root / "alice.wav"
    out = await cli(root / "alice", "call", "bob", "--tone", "440", "--record", str(mine),
                    "--duration", "2")  # fmt: skip
    assert re.search(r": answered \(audio/(opus|PCMU|PCMA)", out), out
    assert re.search(r": hung-up \(", out.splitlines()[-1]), out
    async with asyncio.timeout(WAIT):  # the recorders close when the call ends
        while not (list((root / "bob" / CALLS_DIR).glob("*.wav")) and mine.exists()):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    theirs = next((root / "bob" / CALLS_DIR).glob("*.wav"))
    for path, expected in ((mine, 660.0), (theirs, 440.0)):
        samples, rate = read_wav(path)
        heard = spectrum(samples[rate // 2 :], rate)  # the first half second: set-up
        assert abs(heard.dominant_hz - expected) < 15, (path.name, heard)
        assert heard.dominance > 10, (path.name, heard)


@pytest.mark.slow
def test_ping_presence_and_contacts_through_running_nodes(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))
