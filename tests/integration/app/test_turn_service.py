"""The standalone TURN server as a service ([turn]) beside a supernode and a STUN server:
an aioice client allocates with an operator user over UDP and over TLS; metrics name each
relay once; a stop drains the live allocation before the relay closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aioice.turn import create_turn_endpoint
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.app.config import parse_config
from p2pnode.app.roles import RoleChanged
from p2pnode.app.runtime import assemble
from p2pnode.app.service import ServiceState
from p2pnode.identity import Identity
from relay.supernode import Role
from tests.harness.tls import make_certificates


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), f"a metric family appears twice: {names}"
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def _scenario(home: Path) -> None:
    identity = Identity.load_or_create(home)
    files = make_certificates(home)
    config = parse_config(
        {
            "node": {"listen": "127.0.0.1:0"},
            "supernode": {"public_ip": "127.0.0.1", "relay_search": False,
                          "serve_stun": "127.0.0.1:0"},
            "relay": {"listen": "127.0.0.1:0", "drain_limit": 20.0},
            "turn": {"enabled": True, "listen": "127.0.0.1:0", "users": ["alice:secret"],
                     "realm": "example.org", "allow_peers": ["127.0.0.0/8"],
                     "tls_listen": "127.0.0.1:0", "tls_cert": str(files.certificate),
                     "tls_key": str(files.key)},
            "control": {"enabled": False},
            "metrics": {"listen": "127.0.0.1:0"},
        }
    )  # fmt: skip
    assembly = assemble(home, config, identity)
    node, turn, metrics = assembly.node, assembly.turn, assembly.metrics
    assert turn is not None and metrics is not None
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        with node.subscribe() as events:
            running = tasks.create_task(node.run(stop))
            async with asyncio.timeout(30):  # the supernode announces its promotion
                while True:
                    event = await events.get()
                    if isinstance(event, RoleChanged) and event.role is Role.SUPERNODE:
                        break
        assert "3 in a row" in event.reason
        relay_address = turn.bound.udp[0]
        async with asyncio.timeout(30):
            transport, inbox = await create_turn_endpoint(
                _Inbox, relay_address, "alice", "secret", lifetime=600
            )
        async with asyncio.timeout(30):  # and over TLS, verifying the test CA
            tls_transport, tls_inbox = await create_turn_endpoint(
                _Inbox, turn.bound.tls[0], "alice", "secret", lifetime=600, transport="tcp",
                ssl=files.client_context(),
            )  # fmt: skip
        tls_transport.close()
        async with asyncio.timeout(30):
            await tls_inbox.closed.wait()
        samples = await _scrape(metrics.url)
        created = dict(
            (labels["relay"], value)
            for labels, value in samples["p2pnode_relay_allocations_created_total"]
        )
        assert created["standalone"] == 2.0  # UDP and TLS
        assert {labels["server"] for labels, _ in samples["p2pnode_stun_responses_total"]} >= {
            "serve_stun"
        }
        with node.subscribe() as events:
            node.request_stop("test")
            async with asyncio.timeout(30):
                while {s.name: s.state for s in node.status()}["turn"] is not (
                    ServiceState.DRAINING
                ):
                    await events.get()
        assert not running.done() and turn.relay is not None  # the allocation is live
        transport.close()  # Refresh with lifetime 0: the last allocation is gone
        async with asyncio.timeout(30):
            await inbox.closed.wait()
            await running
    assert {s.state for s in node.status()} == {ServiceState.STOPPED}


def test_standalone_turn_service_allocates_is_measured_and_drains(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))
