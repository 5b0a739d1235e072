"""A watcher refused by a "contacts only" allow-list hears "online" as soon as it is accepted.

One serving home; alice shows her presence to contacts only; carol (a stranger)
adds alice, so carol's node watches her: the home refuses the watch (FORBIDDEN)
and carol sees alice offline. carol writes, alice accepts the request: her node
pushes the new allow-list to the home, which admits carol's remembered watch and
notifies it at once. carol's WebSocket shows alice online while no watch lease at
the home has been renewed since (the renewal, every 20 s, was the only way before).
Real nodes on loopback, their control APIs and event streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pnode.connectivity.attach import HomeStatistics
from p2pnode.connectivity.signalling import SignallingService
from tests.harness.app_nodes import ControlApi
from tests.integration.web.test_app_browser import WAIT, Lab, _config, running_lab

pytestmark = pytest.mark.slow


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    async with running_lab(root) as lab:
        home = await lab.start_home()
        host, port = home.dht.address
        attach = {"homes": [home.identity.peer_id], "home": "attach"}
        for name in ("alice", "carol"):
            peer = _config(f"{host}:{port}", attach, web=False)
            peer["chat"] = {"enabled": True, "retry_first": 0.5}
            await lab.start_peer(name, peer)
        yield lab


def home_statistics(lab: Lab) -> HomeStatistics:
    signalling = lab.nodes["home1"].node.service("signalling")
    assert isinstance(signalling, SignallingService)
    home = signalling.statistics().home
    assert home is not None
    return home


async def presence_event(
    events: aiohttp.ClientWebSocketResponse, peer: str, online: bool
) -> dict[str, Any]:
    """The next ``PresenceChanged`` of ``peer`` saying ``online``."""
    async with asyncio.timeout(WAIT):
        while True:
            event: dict[str, Any] = await events.receive_json()
            if (
                event["type"] == "PresenceChanged"
                and event["peer"] == peer
                and event["online"] is online
            ):
                return event


async def scenario(root: Path) -> None:
    async with network(root) as lab, aiohttp.ClientSession() as session:
        alice, carol = lab.nodes["alice"], lab.nodes["carol"]
        alice_id, carol_id = alice.identity.peer_id, carol.identity.peer_id
        alice_api = ControlApi.at(session, root / "alice", alice)
        carol_api = ControlApi.at(session, root / "carol", carol)
        await alice_api.call("PUT", "/api/settings", {"presence_visibility": "contacts"})

        async with session.ws_connect(
            f"{carol_api.url}/api/events?token={carol_api.token}"
        ) as events:
            await carol_api.call("POST", "/api/contacts", {"name": "alice", "peer": alice_id})
            # refused by the home (or, had carol's watch come before alice's allow-list,
            # dropped by it: remembered the same way)
            await presence_event(events, alice_id, online=False)

            await carol_api.call("POST", "/api/messages", {"to": alice_id, "text": "hi, carol"})
            async with asyncio.timeout(WAIT):
                while True:
                    pending = await alice_api.call("GET", "/api/contacts/requests")
                    if any(r["peer_id"] == carol_id for r in pending["requests"]):
                        break
                    await asyncio.sleep(0.1)
            before = home_statistics(lab)
            assert before.watches_admitted == 0

            await alice_api.call(
                "POST", f"/api/contacts/requests/{carol_id}/accept", {"name": "carol"}
            )
            await presence_event(events, alice_id, online=True)
            after = home_statistics(lab)
        assert after.watches_admitted == 1  # carol's remembered watch, let in and told
        # no lease at the home was renewed in between: carol heard it before her renewal
        assert after.watches_renewed == before.watches_renewed
        contacts = await carol_api.call("GET", "/api/contacts")
        assert [c["online"] for c in contacts["contacts"]] == [True]


def test_accepted_watcher_hears_online_before_its_renewal(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))
