"""Contact requests and reach settings from the CLI, against running nodes on loopback.

A serving home (also a mailbox), alice (chat and calls) and carol (chat) attached,
each a whole node from ``assemble``; every command is the real ``p2pnode`` process
against alice's control API.

- carol writes as a stranger: ``contacts requests`` lists her with the text (and
  ``--json``); accepting an id without a request is a negative answer (1), a
  malformed id a usage error (2).
- ``contacts decline``: carol is blocked (listed so), her next text is dropped and
  makes no request. alice's node stops, carol writes again (a copy in the home's
  mailbox), alice's node starts again and drains it: the copy is deleted from the
  mailbox, but no delivered receipt reaches carol (still blocked after the restart).
  ``contacts unblock`` lifts it (twice: 1), her next text is a request again;
  ``contacts accept --name carol`` makes her a contact.
- ``settings``: defaults shown with where they come from; ``set presence contacts``
  keeps who-may-call with the config; who-may-call and auto-answer reach alice's
  running call service and her home's settings.json; ``default`` hands auto-answer
  back to the config; an unknown key is a usage error (2).
Every wait is bounded; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from p2pnode.app.peer_calls import CallsNodeService
from p2pnode.app.peer_chat import MailboxServerService
from p2pnode.app.peer_contacts import SETTINGS_FILE
from p2pnode.app.peer_services import PeerApp
from p2pnode.app.runtime import Assembly
from p2pnode.identity import Identity, public_key_from_peer_id
from p2pnode.sessions.call_config import NonContactPolicy
from tests.integration.app.test_peer_reach import P2PNODE
from tests.integration.web.test_app_browser import WAIT, Lab, _config, chat_of

pytestmark = pytest.mark.slow


@asynccontextmanager
async def network(root: Path) -> AsyncIterator[Lab]:
    async with asyncio.TaskGroup() as tasks:
        lab = Lab(root, tasks)
        try:
            config = _config(None, {"home": "serve"}, web=False)
            config["mailbox"] = {"serve": True, "listen": "127.0.0.1:0"}
            home = await lab.start("home1", config)
            host, port = home.dht.address
            mailbox = home.node.service("mailbox")
            address = mailbox.server.address  # type: ignore[attr-defined]
            entry = f"{home.identity.peer_id}@127.0.0.1:{address[1]}"
            attach = {"homes": [home.identity.peer_id], "home": "attach"}
            for name in ("alice", "carol"):
                peer: dict[str, Any] = _config(f"{host}:{port}", attach, web=False)
                peer["chat"] = {
                    "enabled": True, "mailboxes": [entry], "retry_first": 0.5, "drain_every": 1.0,
                }  # fmt: skip
                peer["calls"] = {"enabled": name == "alice"}
                await lab.start_peer(name, peer)
            yield lab
        finally:
            lab.stop_all()


async def p2pnode(home: Path, *args: str) -> tuple[int, str, str]:
    """``p2pnode ARGS --home HOME``: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *P2PNODE, *args, "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ok(home: Path, *args: str) -> str:
    code, out, err = await p2pnode(home, *args)
    assert code == 0, err
    return out


async def until(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert check(), what


def peer_app(assembly: Assembly) -> PeerApp:
    service = assembly.node.service("peer")
    assert isinstance(service, PeerApp)
    return service


def auto_answering(calls: CallsNodeService) -> bool:
    """What the running call service does (a function: mypy would narrow the attribute)."""
    assert calls.calls is not None
    return calls.calls.config.auto_answer


async def scenario(root: Path) -> None:
    async with network(root) as lab:
        alice, carol = lab.nodes["alice"], lab.nodes["carol"]
        home = root / "alice"
        carol_id = carol.identity.peer_id
        alice_key = public_key_from_peer_id(alice.identity.peer_id)
        app = peer_app(alice)
        chat = chat_of(alice)
        mailbox = lab.nodes["home1"].node.service("mailbox")
        assert isinstance(mailbox, MailboxServerService) and mailbox.server is not None
        held = mailbox.server.core.held_for

        await chat_of(carol).send(alice_key, "hello, it is carol")
        await until(lambda: len(app.book.pending()) == 1, "carol's text is a request")
        listing = await ok(home, "contacts", "requests")
        assert f"{carol_id}  1 message, 0 calls, last " in listing, listing
        assert '"hello, it is carol"' in listing, listing
        answer = json.loads(await ok(home, "contacts", "requests", "--json"))
        assert [r["peer_id"] for r in answer["requests"]] == [carol_id] and answer["blocked"] == []

        stranger = Identity.generate().peer_id  # no request from it: a negative answer
        code, _, err = await p2pnode(home, "contacts", "accept", stranger)
        assert code == 1 and "no pending request" in err, err
        code, _, err = await p2pnode(home, "contacts", "accept", "not-a-peer-id")
        assert code == 2 and "not a peer id" in err, err

        # decline: blocked; carol's next text is dropped and makes no request
        assert "blocked" in await ok(home, "contacts", "decline", carol_id)
        assert f"blocked: {carol_id}" in await ok(home, "contacts", "requests")
        assert app.book.pending() == ()
        dropped = chat.blocked_dropped
        await chat_of(carol).send(alice_key, "are you there?")
        await until(lambda: chat.blocked_dropped > dropped, "carol's text dropped")
        assert app.book.pending() == ()
        # a mailbox copy from a blocked peer: fetched and deleted, never receipted
        await lab.stop("alice")
        queued = await chat_of(carol).send(alice_key, "while you were away")
        await until(lambda: held(alice_key) >= 1, "carol's copy in alice's mailbox")
        alice = await lab.start_peer("alice", lab.configs["alice"])  # drained at start
        app, chat = peer_app(alice), chat_of(alice)
        statistics = chat.statistics()
        assert statistics is not None and statistics.receipts_withheld >= 1
        assert statistics.drained >= 1 and held(alice_key) == 0
        assert not chat_of(carol).status(queued).delivered
        assert app.book.pending() == ()  # still blocked: no request either
        assert "unblocked" in await ok(home, "contacts", "unblock", carol_id)
        code, _, err = await p2pnode(home, "contacts", "unblock", carol_id)
        assert code == 1 and "not blocked" in err, err
        await chat_of(carol).send(alice_key, "third try")
        await until(lambda: len(app.book.pending()) == 1, "a request again after unblock")
        out = await ok(home, "contacts", "accept", carol_id, "--name", "carol")
        assert f"accepted {carol_id} as carol" in out, out
        assert app.is_contact(carol_id) and app.book.pending() == ()
        assert "no contact requests" in await ok(home, "contacts", "requests")

        # settings: one key at a time, the others kept (with the config where they were)
        calls = alice.node.service("calls")
        assert isinstance(calls, CallsNodeService) and calls.calls is not None
        shown = await ok(home, "settings")
        assert "presence-visibility  everyone" in shown, shown
        assert "who-may-call         ring (from config)" in shown, shown
        assert "auto-answer          off (from config)" in shown, shown
        shown = await ok(home, "settings", "set", "presence", "contacts")
        assert "presence-visibility  contacts" in shown and "(from config)" in shown, shown
        kept = json.loads((home / SETTINGS_FILE).read_text())
        assert kept == {
            "presence_visibility": "contacts", "who_may_call": None, "auto_answer": None
        }  # fmt: skip
        await ok(home, "settings", "set", "who-may-call", "refuse")
        assert calls.calls.config.non_contacts is NonContactPolicy.REFUSE
        answer = json.loads(await ok(home, "settings", "set", "auto-answer", "on", "--json"))
        assert answer["auto_answer"] is True and answer["auto_answer_from"] == "settings"
        assert answer["presence_visibility"] == "contacts" and answer["who_may_call"] == "refuse"
        assert auto_answering(calls)
        shown = await ok(home, "settings", "set", "auto-answer", "default")
        assert "auto-answer          off (from config)" in shown, shown
        assert not auto_answering(calls)
        kept = json.loads((home / SETTINGS_FILE).read_text())
        assert kept == {
            "presence_visibility": "contacts", "who_may_call": "refuse", "auto_answer": None
        }  # fmt: skip
        code, _, err = await p2pnode(home, "settings", "set", "colour", "blue")
        assert code == 2 and "unknown setting" in err, err


def test_requests_and_settings_from_the_cli(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))
