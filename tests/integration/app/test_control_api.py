"""The control API in-process on loopback: bad requests get their defined answers, the
WebSocket streams the services' states and events, the token file is private."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from p2pnode.app.config import parse_config
from p2pnode.app.control import MAX_BODY
from p2pnode.app.homefiles import CONTROL_FILE, TOKEN_FILE
from p2pnode.app.runtime import assemble
from p2pnode.identity import Identity


async def _scenario(home: Path) -> None:
    identity = Identity.load_or_create(home)
    config = parse_config(
        {
            "node": {"listen": "127.0.0.1:0"},
            "supernode": {"enabled": False, "relay_search": False},
            "control": {"port": 0},
        }
    )
    assembly = assemble(home, config, identity)
    node = assembly.node
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(node.run(stop))
        async with asyncio.timeout(30):
            await node.ready.wait()
        assert assembly.control is not None
        url = assembly.control.url
        assert json.loads((home / CONTROL_FILE).read_text())["url"] == url
        assert os.stat(home / TOKEN_FILE).st_mode & 0o777 == 0o600
        token = (home / TOKEN_FILE).read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/api/records", json={"kind": "nonsense", "subject": "s", "payload": "p"},
                headers=auth,
            ) as bad_kind:  # fmt: skip
                assert bad_kind.status == 400
                assert (await bad_kind.json())["error"] == "unknown kind"
            async with session.post(
                f"{url}/api/records", data=b"{" * (MAX_BODY + 1), headers=auth
            ) as too_big:
                assert too_big.status == 413
            async with session.post(
                f"{url}/api/records", json={"kind": "presence", "ttl": 0}, headers=auth
            ) as invalid:
                assert invalid.status == 400
            async with session.get(
                f"{url}/api/records", params={"kind": "presence", "subject": "x"}, headers=auth
            ) as no_owner:
                assert no_owner.status == 400
            async with session.get(f"{url}/api/names/NOT%20A%20LOGIN", headers=auth) as login:
                assert login.status == 400
            async with session.get(f"{url}/api/relay", headers=auth) as relay:
                assert relay.status == 404  # no supernode controller configured
            await assembly.dht.stop()  # as while the runtime restarts it
            async with session.get(
                f"{url}/api/records", params={"kind": "name-claim", "subject": "x"}, headers=auth
            ) as down:
                assert down.status in (500, 504)
                assert (await down.json())["error"] in ("internal error", "network timeout")
            await assembly.dht.start()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{url}/api/events?token=wrong")
            assert refused.value.status == 401
            async with session.ws_connect(f"{url}/api/events?token={token}") as events:
                first = [await events.receive_json(timeout=10) for _ in node.status()]
                assert {m["type"] for m in first} == {"ServiceStatus"}
                assert {m["name"] for m in first} == {"dht", "control"}
                assert all(m["state"] == "running" for m in first)
                node.request_stop("test")
                stopping = await events.receive_json(timeout=10)
                assert stopping == {"type": "NodeStopping", "reason": "test"}
    assert not (home / CONTROL_FILE).exists()


def test_control_api_answers_bad_requests_and_streams_events(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))
