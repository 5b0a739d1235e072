"""The demo's peer steps: whole nodes (as ``p2pnode run`` builds them) reach, write and call.

Three supernodes serve as homes and mailboxes; alice and bob attach to two of
them, each node assembled from its config exactly as ``p2pnode run`` does (DHT,
signalling, peer app, chat, calls), in this process on 127.0.0.1 with homes in a
temporary directory. Then:

1. bob claims the login "bob"; alice resolves it, opens a peer link (sealed
   offer and answer through bob's homes) and prints its path, set-up and RTT;
2. bob's node stops; alice writes to him: the text is held in his mailboxes
   (copies counted); bob's node starts again from its home, drains them and
   shows the text, and its delivered receipt reaches alice;
3. alice calls bob (440 Hz); bob's node answers by config with 660 Hz and
   records; an FFT of each recording names the frequency each side heard.

Invariants: every node is stopped on return; every wait is bounded (``LIMIT``).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from p2pnode.app.config import parse_config
from p2pnode.app.peer_calls import CALLS_DIR, CallsNodeService, media_for
from p2pnode.app.peer_chat import ChatService, MailboxServerService
from p2pnode.app.peer_services import PeerApp
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.app.services import directory_of
from p2pnode.connectivity.signalling import SignallingService, fetch_contact
from p2pnode.demo.calls import dominant_frequency
from p2pnode.identity import Identity
from p2pnode.sessions.call import CallState
from p2pnode.sessions.call_config import CallUpdate

__all__ = ["LIMIT", "PeerDemo", "run_peer_steps"]

LIMIT = 20.0  # seconds any one wait may take
ALICE_HZ = 440.0
BOB_HZ = 660.0
CALL_SECONDS = 1.5
TEXT = "see you at six"

Say = Callable[[str], None]
T = TypeVar("T")


@dataclass
class PeerDemo:
    """Nodes each with their own stop event (bob's node is stopped and started again)."""

    root: Path
    group: asyncio.TaskGroup
    nodes: dict[str, Assembly] = field(default_factory=dict)
    stops: dict[str, asyncio.Event] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def start(self, name: str, config: dict[str, Any]) -> Assembly:
        home = self.root / name
        home.mkdir(exist_ok=True)
        assembly = assemble(home, parse_config(config), Identity.load_or_create(home))
        self.stops[name] = asyncio.Event()
        self.tasks[name] = self.group.create_task(assembly.node.run(self.stops[name]))
        async with asyncio.timeout(LIMIT):
            await assembly.node.ready.wait()
        self.nodes[name] = assembly
        return assembly

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        async with asyncio.timeout(LIMIT):
            await self.tasks[name]

    def stop_all(self) -> None:
        for stop in self.stops.values():
            stop.set()


def _service(assembly: Assembly, name: str, kind: type[T]) -> T:
    service = assembly.node.service(name)
    assert isinstance(service, kind)
    return service


def _base(bootstrap: str | None) -> dict[str, Any]:
    return {
        "node": {"listen": "127.0.0.1:0", "bootstrap": [bootstrap] if bootstrap else []},
        "supernode": {"enabled": False, "relay_search": False},
        "control": {"enabled": False},
    }


async def _network(demo: PeerDemo) -> dict[str, Any]:
    """Three homes with mailboxes; the config the peers use (homes and mailboxes named)."""
    bootstrap = None
    homes = []
    for index in range(3):
        config = _base(bootstrap)
        config["presence"] = {"enabled": True, "home": "serve", "listen": "127.0.0.1:0"}
        config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
        node = await demo.start(f"supernode{index + 1}", config)
        host, port = node.dht.address
        bootstrap = bootstrap or f"{host}:{port}"
        homes.append(node)
    async with asyncio.timeout(LIMIT):
        for node in homes:
            while await fetch_contact(homes[-1].dht.node, node.identity.public_key) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    mailboxes = []
    for node in homes:
        server = _service(node, "mailbox", MailboxServerService).server
        assert server is not None
        mailboxes.append(f"{node.identity.peer_id}@127.0.0.1:{server.address[1]}")
    peer = _base(bootstrap)
    peer["presence"] = {
        "enabled": True, "home": "attach", "listen": "127.0.0.1:0",
        "homes": [n.identity.peer_id for n in homes[:2]],
    }  # fmt: skip
    peer["chat"] = {
        "enabled": True, "mailboxes": mailboxes, "drain_every": 1.0, "retry_first": 0.5,
    }  # fmt: skip
    return peer


async def _peer(demo: PeerDemo, name: str, config: dict[str, Any]) -> Assembly:
    node = await demo.start(name, config)
    signalling = _service(node, "signalling", SignallingService)
    async with asyncio.timeout(LIMIT):
        while len(signalling.homes()) < 2:  # noqa: ASYNC110 - set by the signalling's timer
            await asyncio.sleep(0.05)
        await _service(node, "chat", ChatService).attached.wait()
        while True:
            contact = await fetch_contact(node.dht.node, node.identity.public_key)
            if contact is not None and len(contact.homes) == 2:
                return node
            await asyncio.sleep(0.05)


async def _link(alice: Assembly, bob: Assembly, say: Say) -> bool:
    directory = directory_of(bob.dht, frozenset())
    await directory.claim_name(bob.identity, "bob")
    app = _service(alice, "peer", PeerApp)
    peer_id = await app.resolve("bob")
    say(f"      alice looks up the login 'bob' -> {peer_id[:16]}... (unverified: no verifier)")
    result = await app.ping(peer_id, count=3)
    say(
        f"      link alice -> bob: {result.path}, set-up {result.setup_ms:.0f} ms, "
        f"rtt {min(result.rtt_ms):.2f} ms (sealed offer/answer through bob's homes)"
    )
    return peer_id == bob.identity.peer_id and result.rtt_ms[0] > 0


async def _offline(demo: PeerDemo, config: dict[str, Any], say: Say) -> bool:
    alice, bob = demo.nodes["alice"], demo.nodes["bob"]
    await demo.stop("bob")
    say("      bob's node stopped")
    chat = _service(alice, "chat", ChatService)
    message_id = await chat.send(bob.identity.public_key, TEXT)
    async with asyncio.timeout(LIMIT):
        while (status := chat.status(message_id)).copies < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    say(f"      alice writes {TEXT!r}: bob unreachable, {status.copies} copies held in mailboxes")
    bob = await _peer(demo, "bob", config)
    shown = [m.message.text for m in _service(bob, "chat", ChatService).inbox]
    say(f"      bob's node back: drained its mailboxes, shows {shown}")
    async with asyncio.timeout(LIMIT):
        while not (status := chat.status(message_id)).delivered:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    outbox = chat.statistics()
    left = outbox.outbox if outbox is not None else -1
    say(f"      bob's delivered receipt reached alice; her outbox holds {left} message(s)")
    return shown == [TEXT] and left == 0


def _settled(update: CallUpdate | None) -> bool:
    """Answered or ended: no longer dialling or ringing."""
    return update is not None and update.state not in (
        CallState.NEW,
        CallState.DIALLING,
        CallState.RINGING_REMOTE,
    )


async def _call(demo: PeerDemo, say: Say) -> bool:
    alice, bob = demo.nodes["alice"], demo.nodes["bob"]
    calls = _service(alice, "calls", CallsNodeService)
    recording = demo.root / "alice-heard.wav"
    call_id = await calls.service().dial(bob.identity.peer_id, media_for(ALICE_HZ, None, recording))
    async with asyncio.timeout(LIMIT):
        while not _settled(update := calls.last.get(call_id)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert update is not None
    if update.state is not CallState.ANSWERED:
        say(f"      the call ended {update.state.value}")
        return False
    await asyncio.sleep(CALL_SECONDS)
    await calls.service().hangup(call_id)
    theirs = demo.root / "bob" / CALLS_DIR
    async with asyncio.timeout(LIMIT):
        while not (recording.exists() and list(theirs.glob("*.wav"))):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the recorders close with the call
    alice_heard = dominant_frequency(recording)
    bob_heard = dominant_frequency(next(theirs.glob("*.wav")))
    final = calls.last[call_id]
    say(
        f"      alice calls bob: {final.codec or '?'}, {final.path or '?'}; alice sent "
        f"{ALICE_HZ:.0f} Hz, bob's node answered with {BOB_HZ:.0f} Hz"
    )
    say(f"      alice heard {alice_heard:.1f} Hz, bob heard {bob_heard:.1f} Hz (FFT)")
    return abs(alice_heard - BOB_HZ) < 5 and abs(bob_heard - ALICE_HZ) < 5


async def run_peer_steps(say: Say, labels: tuple[str, str, str]) -> list[bool]:
    """The three steps above; each label heads its step's lines. An error fails the
    steps not yet passed, in one line instead of a traceback."""
    passed: list[bool] = []
    try:
        await _run(say, labels, passed)
    except Exception as error:
        say(f"      failed: {type(error).__name__}: {error}")
    return passed + [False] * (len(labels) - len(passed))


async def _run(say: Say, labels: tuple[str, str, str], passed: list[bool]) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pnode-demo-") as directory:
        async with asyncio.TaskGroup() as group:
            demo = PeerDemo(Path(directory), group)
            try:
                config = await _network(demo)
                await _peer(demo, "alice", {**config, "calls": {"enabled": True}})
                bob_config = {
                    **config,
                    "calls": {"enabled": True, "auto_answer": True, "answer_tone": BOB_HZ,
                              "record": True},
                }  # fmt: skip
                await _peer(demo, "bob", bob_config)
                say(f"{labels[0]} 3 supernodes (homes + mailboxes) and 2 peers as whole nodes")
                passed.append(await _link(demo.nodes["alice"], demo.nodes["bob"], say))
                say(labels[1])
                passed.append(await _offline(demo, bob_config, say))
                say(labels[2])
                passed.append(await _call(demo, say))
            finally:
                demo.stop_all()
