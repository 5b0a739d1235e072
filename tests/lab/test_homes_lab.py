"""Home supernodes across real NATs: attach, keepalives that outlive the NAT binding,
a sealed 6 KB signal fragmented through two NATs, and a SIGKILLed home replaced.

Four supernodes on the public segment (each a DHT node plus a public
``SignallingService``: its own home); alice and bob attach to different pairs.
Alice sits behind a port-restricted cone NAT, bob behind a symmetric NAT, both
routers forgetting idle UDP bindings after ``BINDING_LIFETIME`` seconds; their
keepalives (every ``KEEPALIVE`` s) must keep the binding their homes forward
through, and alice's watch renewals the one bob's homes notify her through.
Each node is a small Python process in its namespace, driven over stdin/stdout
with JSON lines.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.netns import Host, Lab, NatType, read_line
from tests.lab.conftest import require_lab_tools

pytestmark = pytest.mark.lab

BINDING_LIFETIME = 6  # s: the routers forget an idle UDP binding after this
KEEPALIVE = 2.0  # s: the peers' keepalive interval, well inside the binding lifetime
NEW_HOME_BOUND = 30.0  # s: the bound for a new second home
NOTIFY_BOUND = 8.0  # s: a wait bound for a status change (the issue: < 2 s; renewals: 20 s)

SUPERNODE = r"""
import asyncio, sys
from p2pnode.connectivity.attach import HomeConfig
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity

async def main(ip: str, seed: str) -> None:
    identity = Identity.generate_meeting(16)  # a DHT server at a lab address: id puzzle
    bootstrap = [(seed.split(":")[0], int(seed.split(":")[1]))] if seed != "-" else []
    dht = DhtNode(identity, listen=(ip, 0), bootstrap=bootstrap)
    await dht.start()
    service = SignallingService(
        identity, dht, listen=(ip, 0), public=True,
        home_config=HomeConfig(min_keepalive=0.5),
    )
    await service.start()
    print(f"{dht.address[1]} {service.address[1]} {identity.public_key.hex()}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

PEER = r"""
import asyncio, hashlib, json, os, sys
from p2pnode.connectivity.contact import PresenceStatus
from p2pnode.connectivity.homes import PeerConfig
from p2pnode.connectivity.signalling import (
    HomeDown, HomeUp, PeerUnreachableError, PresenceChanged, SignallingService, contact_homes,
    fetch_contact,
)
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity

def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)

async def main(seed: str, keys_hex: str, keepalive: float) -> None:
    identity = Identity.generate()
    host, port = seed.split(":")
    dht = DhtNode(identity, listen=("0.0.0.0", 0), bootstrap=[(host, int(port))], client_mode=True)
    await dht.start()
    keys = [bytes.fromhex(k) for k in keys_hex.split(",")]

    async def find():
        return await contact_homes(dht, keys)

    service: SignallingService

    def on_event(event: object) -> None:
        if isinstance(event, (HomeUp, HomeDown)):
            say(homes=[f"{h}:{p}" for h, p in (x.signal for x in service.homes())])
        elif isinstance(event, PresenceChanged):
            say(presence=event.peer, online=event.online, status=event.status, note=event.note)

    service = SignallingService(
        identity, dht, listen=("0.0.0.0", 0), find_homes=find, emit=on_event,
        peer_config=PeerConfig(keepalive=keepalive),
    )
    await service.start()
    while True:
        contact = await fetch_contact(dht, identity.public_key)
        homes = service.homes()
        if len(homes) == 2 and contact is not None and set(contact.homes) == set(homes):
            break
        await asyncio.sleep(0.1)
    say(ready=identity.peer_id, homes=[f"{h}:{p}" for h, p in (x.signal for x in service.homes())])

    async def receiver() -> None:
        while True:
            delivery = await service.receive()
            say(received=delivery.sender, sha=hashlib.sha256(delivery.payload).hexdigest(),
                size=len(delivery.payload))

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            if "watch" in command:
                say(watching=await service.watch(command["watch"]))
                continue
            if "status" in command:
                service.set_presence(PresenceStatus[command["status"]], command["note"])
                continue
            payload = os.urandom(command["size"])
            try:
                report = await service.send_signal(command["to"], payload)
            except PeerUnreachableError as error:
                say(sent=False, error=str(error))
                continue
            say(sent=True, via=f"{report.via[0]}:{report.via[1]}",
                attempts=[outcome for _, outcome in report.attempts],
                sha=hashlib.sha256(payload).hexdigest())

    receiving = asyncio.create_task(receiver())
    await commands()
    receiving.cancel()
    await service.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


@dataclass
class Node:
    host: Host
    process: subprocess.Popen[str]

    def expect(
        self, accept: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The next JSON line ``accept`` takes (other lines are skipped) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            line = read_line(self.process, timeout=max(deadline - time.monotonic(), 0.1))
            message: dict[str, Any] = json.loads(line)
            if accept(message):
                return message

    def command(self, **fields: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()


@dataclass
class HomesLab:
    supernodes: list[tuple[Host, subprocess.Popen[str], str]]  # host, process, "ip:signal_port"
    alice: Node
    bob: Node
    alice_id: str
    bob_id: str
    bob_homes: list[str]
    alice_homes: list[str]


@pytest.fixture(scope="module")
def homes_lab() -> Iterator[HomesLab]:
    require_lab_tools()
    with Lab() as lab:
        supernodes = []
        seed = "-"
        keys = []
        for index in range(4):
            host = lab.public_host(f"super{index}")
            process = host.popen(host.python("-c", SUPERNODE, host.addresses[0], seed))
            dht_port, signal_port, key = read_line(process, timeout=20).split()
            if seed == "-":
                seed = f"{host.addresses[0]}:{dht_port}"
            keys.append(key)
            supernodes.append((host, process, f"{host.addresses[0]}:{signal_port}"))
        peers = {}
        # Candidates in opposite orders: alice's homes are not bob's, so nothing alice
        # sends to her own homes keeps her NAT open towards bob's.
        orders = {"alice": keys[::-1], "bob": keys}
        for name, nat in (("alice", NatType.PORT_RESTRICTED), ("bob", NatType.SYMMETRIC)):
            host = lab.private_host(name, nat, binding_lifetime=BINDING_LIFETIME)
            process = host.popen(
                host.python("-c", PEER, seed, ",".join(orders[name]), str(KEEPALIVE)),
                stdin=subprocess.PIPE,
            )
            peers[name] = Node(host, process)
        ready = {name: node.expect(lambda m: "ready" in m, 30) for name, node in peers.items()}
        yield HomesLab(
            supernodes,
            peers["alice"],
            peers["bob"],
            ready["alice"]["ready"],
            ready["bob"]["ready"],
            ready["bob"]["homes"],
            ready["alice"]["homes"],
        )


def exchange(lab: HomesLab, size: int) -> dict[str, Any]:
    """Alice sends ``size`` random bytes to bob; bob must receive exactly them."""
    lab.alice.command(to=lab.bob_id, size=size)
    sent = lab.alice.expect(lambda m: "sent" in m)
    assert sent["sent"], sent
    received = lab.bob.expect(lambda m: "received" in m)
    assert received == {"received": lab.alice_id, "sha": sent["sha"], "size": size}
    return sent


def test_sealed_signals_cross_both_nats_and_outlive_the_binding(homes_lab: HomesLab) -> None:
    sent = exchange(homes_lab, 6000)  # four or five IP fragments through two NATs
    assert sent["via"] in homes_lab.bob_homes
    homes_lab.bob.command(to=homes_lab.alice_id, size=200)
    back = homes_lab.bob.expect(lambda m: "sent" in m)
    assert back["sent"], back
    assert homes_lab.alice.expect(lambda m: "received" in m)["received"] == homes_lab.bob_id
    # Idle longer than the routers keep a binding: only the keepalives keep it open.
    time.sleep(BINDING_LIFETIME + 2)
    exchange(homes_lab, 3000)


def test_a_watcher_behind_nat_hears_status_changes_after_idling(homes_lab: HomesLab) -> None:
    """Alice's watch renewals keep her NAT binding towards bob's homes open for their
    notifications, as her keepalives do towards her own."""
    assert not set(homes_lab.alice_homes) & set(homes_lab.bob_homes)
    homes_lab.alice.command(watch=homes_lab.bob_id)
    assert homes_lab.alice.expect(lambda m: "watching" in m) == {"watching": True}
    first = homes_lab.alice.expect(lambda m: "presence" in m)
    assert (first["presence"], first["online"]) == (homes_lab.bob_id, True)
    time.sleep(BINDING_LIFETIME + 2)
    homes_lab.bob.command(status="BUSY", note="in the lab")
    # The notification itself must get through: the next renewal (which would also carry
    # the status) is more than NOTIFY_BOUND away. The issue asks for under 2 s.
    changed = homes_lab.alice.expect(
        lambda m: "presence" in m and m["status"] == "busy", NOTIFY_BOUND
    )
    assert changed == {
        "presence": homes_lab.bob_id,
        "online": True,
        "status": "busy",
        "note": "in the lab",
    }


def test_a_sigkilled_home_leaves_bob_reachable_and_is_replaced(homes_lab: HomesLab) -> None:
    """Last in the module: it kills one of the shared supernodes."""
    victim_address = homes_lab.bob_homes[0]
    _, victim, _ = next(s for s in homes_lab.supernodes if s[2] == victim_address)
    victim.kill()  # SIGKILL: no goodbye to anyone
    victim.wait(timeout=10)
    killed_at = time.monotonic()
    sent = exchange(homes_lab, 2000)
    assert sent["via"] != victim_address
    # Bob detects the silence after his next keepalive and attaches to the third supernode.
    homes = homes_lab.bob.expect(
        lambda m: (
            "homes" in m
            and "ready" not in m
            and len(m["homes"]) == 2
            and victim_address not in m["homes"]
        ),
        NEW_HOME_BOUND,
    )
    print(f"bob's new homes {homes['homes']} after {time.monotonic() - killed_at:.1f} s")
    exchange(homes_lab, 2000)
