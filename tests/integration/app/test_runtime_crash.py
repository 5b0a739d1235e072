"""A service that crashes is restarted and reported while the node keeps answering DHT gets;
a restarted supernode service answers the credentials RPC through its new controller.

In-process on loopback: the runtime assembled from a config (real DHT socket),
plus a service that raises three times before it runs steadily. A separate DHT
node asks the runtime's DHT for a record again and again meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pnode.app.config import parse_config
from p2pnode.app.node import RestartPolicy
from p2pnode.app.roles import SupernodeService, role_options
from p2pnode.app.runtime import assemble
from p2pnode.app.service import ServiceState, ServiceStateChanged
from p2pnode.app.services import DhtService
from p2pnode.connectivity.credentials import CredentialsError, request_credentials
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, sign_record


@dataclass(frozen=True)
class CrashCounts:
    runs: int


class Crashing:
    """Raises from ``run`` the first ``crashes`` times, then runs until cancelled."""

    name = "crashing"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.steady = asyncio.Event()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        self.runs += 1
        await asyncio.sleep(0.05)
        if self.runs <= self.crashes:
            raise RuntimeError(f"made to crash ({self.runs})")
        self.steady.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass

    def statistics(self) -> CrashCounts:
        return CrashCounts(self.runs)


async def _scenario(home: Path) -> None:
    identity = Identity.load_or_create(home)
    config = parse_config(
        {
            "node": {"listen": "127.0.0.1:0"},
            "supernode": {"enabled": False, "relay_search": False},
            "control": {"enabled": False},
        }
    )
    assembly = assemble(home, config, identity)
    node = assembly.node
    node.policy = RestartPolicy(initial_backoff=0.05, max_backoff=0.1, max_failures=10)
    crashing = Crashing(crashes=3)
    node.add(crashing)
    record = sign_record(
        identity, RecordKind.PRESENCE, "online", b"up", seq=1, now=time.time(), ttl=600
    )
    stop = asyncio.Event()
    events: list[object] = []
    answered = 0
    async with asyncio.TaskGroup() as tasks:
        with node.subscribe() as queue:
            tasks.create_task(node.run(stop))
            async with asyncio.timeout(30):
                await node.ready.wait()
            await assembly.dht.put(record)
            client = DhtNode(
                Identity.generate(),
                listen=("127.0.0.1", 0),
                bootstrap=[assembly.dht.address],
                client_mode=True,
            )
            await client.start()
            try:
                async with asyncio.timeout(30):
                    while not crashing.steady.is_set():
                        result = await client.get(record.key)
                        assert [r.payload for r in result.records] == [b"up"]
                        answered += 1
                        await asyncio.sleep(0.2)  # stay under the DHT's per-source rate limit
            finally:
                await client.close()
            while not queue.empty():
                events.append(queue.get_nowait())
        status = {s.name: s for s in node.status()}
        stop.set()
    assert answered >= 1
    assert status["crashing"].state is ServiceState.RUNNING
    assert status["crashing"].restarts == 3
    assert status["dht"].state is ServiceState.RUNNING and status["dht"].restarts == 0
    failures = [
        e
        for e in events
        if isinstance(e, ServiceStateChanged)
        and e.service == "crashing"
        and e.state is ServiceState.FAILED
    ]
    assert [e.reason for e in failures] == [f"RuntimeError: made to crash ({n})" for n in (1, 2, 3)]


def test_a_crashing_service_is_restarted_while_the_dht_answers(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _restart_supernode(home: Path) -> None:
    identity = Identity.load_or_create(home)
    config = parse_config(
        {
            "node": {"listen": "127.0.0.1:0"},
            "supernode": {"relay_search": False},
            "relay": {"listen": "127.0.0.1:0"},
        }
    )
    dht = DhtService(identity, home, config)
    await dht.start()
    client = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
    await client.start()
    try:
        supernode = SupernodeService(
            identity, dht, role_options(config), learned=None, stun=None, emit=lambda e: None
        )
        controllers = []
        for _ in range(2):  # a restart builds a new controller on the same DHT
            await supernode.start()
            controllers.append(supernode.controller)
            with pytest.raises(CredentialsError, match="unavailable: client"):
                await request_credentials(client, dht.address, identity.public_key, attempts=2)
            await supernode.stop()
        assert controllers[0] is not controllers[1]
    finally:
        await client.close()
        await dht.stop()


def test_a_restarted_supernode_service_still_answers_credential_requests(tmp_path: Path) -> None:
    asyncio.run(_restart_supernode(tmp_path))
