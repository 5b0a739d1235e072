"""Messaging figures where operators look, and ``p2pnode mailboxes``, on loopback.

One supernode (home and mailbox server), alice (with ``[metrics]``) and bob
attached to it, each a whole node built by ``assemble``; the CLI is the real
``p2pnode`` process. One topology for both checks:

- alice writes to bob: ``GET /api/messaging`` and the ``p2pnode_messaging_*``
  families on /metrics both move (sent online, one new session: with a one-time
  prekey or a fallback, counted once), agree with each other, and the fallback
  reasons are exactly the bounded label set;
- ``p2pnode mailboxes`` lists alice's mailbox (the supernode, its address, named
  by the config), ``--json`` gives the API's answer, ``--check`` is accepted; a
  node without ``[chat]`` is a usage error (2), a home without a node a network
  failure (3).
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.app.api_messaging import MessagingAnswer
from p2pnode.app.messaging_metrics import OPK_FALLBACK_LABELS
from p2pnode.app.metrics import MetricsService
from p2pnode.app.runtime import Assembly
from p2pnode.cli.control_client import running_node
from tests.harness.app_nodes import mailbox_entry
from tests.integration.app.test_peer_reach import P2PNODE, WAIT, _config, signalling_of
from tests.integration.web.test_app_browser import chat_of, running_lab

ROOT = Path(__file__).parents[3]


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[dict[str, Assembly]]:
    """The supernode ``sn``, then alice (metrics on) and bob with chat, attached to it."""
    async with running_lab(root) as lab:
        config = _config(None, {"home": "serve"})
        config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
        sn = await lab.start("sn", config)
        host, port = sn.dht.address
        mailbox = mailbox_entry(sn)
        for name in ("alice", "bob"):
            config = _config(f"{host}:{port}", {"homes": [sn.identity.peer_id]})
            config["chat"] = {"enabled": True, "mailboxes": [mailbox], "retry_first": 0.5}
            if name == "alice":
                config["metrics"] = {"listen": "127.0.0.1:0"}
            node = await lab.start(name, config)
            async with asyncio.timeout(WAIT):
                while not signalling_of(node).homes():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await chat_of(node).attached.wait()  # bundle published, mailbox drained
        yield lab.nodes


async def api_messaging(home: Path) -> MessagingAnswer:
    node = running_node(home)
    assert node is not None
    return await asyncio.to_thread(node.request, "GET", "/api/messaging", MessagingAnswer)


async def scrape(assembly: Assembly) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every messaging sample on /metrics: (name, sorted labels) -> value."""
    service = assembly.node.service("metrics")
    assert isinstance(service, MetricsService) and service.url
    async with aiohttp.ClientSession() as session, session.get(service.url) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("p2pnode_messaging_")
        for sample in family.samples
    }


async def p2pnode(home: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *P2PNODE, *args, "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def fallbacks(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "p2pnode_messaging_opk_fallbacks_total"
    }


async def figures_move(root: Path) -> None:
    async with network(root) as nodes:
        alice, bob = nodes["alice"], nodes["bob"]
        before_api = await api_messaging(root / "alice")
        before = await scrape(alice)
        assert set(fallbacks(before)) == set(OPK_FALLBACK_LABELS)  # bounded, zeros included
        sent = ("p2pnode_messaging_sent_total", (("path", "online"),))
        assert before[sent] == before_api.online_sent

        message_id = await chat_of(alice).send(bob.identity.public_key, "figures")
        async with asyncio.timeout(WAIT):
            while not chat_of(alice).status(message_id).delivered:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        after_api = await api_messaging(root / "alice")
        after = await scrape(alice)
        assert after_api.online_sent > before_api.online_sent  # bob was online
        assert after[sent] >= after_api.online_sent > before[sent]
        opened = after_api.opk_sessions + after_api.opk_fallbacks
        assert opened == before_api.opk_sessions + before_api.opk_fallbacks + 1  # one session
        scraped = after[("p2pnode_messaging_opk_sessions_total", ())] + sum(
            fallbacks(after).values()
        )
        assert scraped == opened
        assert after_api.opk_fallbacks == sum(r.count for r in after_api.opk_fallback_reasons)
        assert set(fallbacks(after)) == set(OPK_FALLBACK_LABELS)
        assert after[("p2pnode_messaging_outbox", ())] == after_api.outbox == 0
        bob_api = await api_messaging(root / "bob")
        assert bob_api.refused == 0 and bob_api.opk_uploaded > 0  # its mailbox took its keys

        # p2pnode mailboxes, through the same nodes
        sn = nodes["sn"]
        code, out, err = await p2pnode(root / "alice", "mailboxes")
        assert code == 0, err
        assert sn.identity.peer_id[:20] in out and "config" in out, out
        code, out, err = await p2pnode(root / "alice", "mailboxes", "--json")
        assert code == 0, err
        listed = json.loads(out)["mailboxes"]
        assert [m["peer_id"] for m in listed] == [sn.identity.peer_id]
        assert listed[0]["pinned"] is True
        code, out, err = await p2pnode(root / "alice", "mailboxes", "--check")
        assert code == 0 and "before the check" in out, err
        code, out, err = await p2pnode(root / "sn", "mailboxes")  # no [chat] there
        assert code == 2 and "chat not enabled" in err, (out, err)
        code, out, err = await p2pnode(root / "nobody", "mailboxes")
        assert code == 3 and "no node is running" in err, (out, err)


@pytest.mark.slow
def test_messaging_figures_and_mailboxes_command(tmp_path: Path) -> None:
    asyncio.run(figures_move(tmp_path))
