"""sipvicious against the running gateway: svmap and svwar learn nothing, svcrack gets banned.

With the default recipe every request carrying sipvicious' User-Agent
(``friendly-scanner``) is dropped unanswered: svmap sees no SIP device and
svwar no extension. With that filter off (a scanner that lies about its
User-Agent), svwar still cannot tell accounts from made-up names (the same
401 for both) and svcrack is banned after five wrong passwords, so it never
reaches the right one even though its dictionary holds it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.security import GuardConfig
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
ACCOUNTS = ("alice", "bob")
MADE_UP = ("nosuchuser1", "zed9", "carol7", "dave3")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "timeout", "40", *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


def reported_names(output: str) -> set[str]:
    names = set()
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|") if cell.strip()]
        if cells and cells[0] in (*ACCOUNTS, *MADE_UP):
            names.add(cells[0])
    return names


async def started(tmp: Path, guard: GuardConfig) -> tuple[SipGateway, str]:
    store = AccountStore(tmp / f"node-{guard.drop_scanners}.sqlite", HOST)
    _, password = store.add("alice", None, randbytes=os.urandom)
    store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(HOST, guard=guard), store)
    await gateway.start()
    return gateway, password


@pytest.mark.slow
def test_scanners_learn_nothing_and_the_cracker_is_banned(tmp_path: Path) -> None:
    svmap = require_tool("svmap", "sipvicious")
    svwar = require_tool("svwar", "sipvicious")
    svcrack = require_tool("svcrack", "sipvicious")
    names = tmp_path / "names.txt"
    names.write_text("\n".join((*MADE_UP[:2], *ACCOUNTS, *MADE_UP[2:])) + "\n")

    async def scenario() -> None:
        gateway, _ = await started(tmp_path, GuardConfig())
        assert gateway.address is not None
        port = str(gateway.address[1])
        try:
            mapped = await run(svmap, "-p", port, "-b", HOST, "-P", str(free_udp_port()), HOST)
            warred = await run(
                svwar, "-d", str(names), "-p", port, "-b", HOST, "-P", str(free_udp_port()),
                "--maximumtime", "3", "--force", HOST,
            )  # fmt: skip
            assert f"{HOST}:{port}" not in mapped, mapped
            assert reported_names(warred) == set(), warred
            dropped = dict(gateway.statistics().dropped_requests)
            assert dropped.get("scanner user-agent", 0) >= 2  # they did reach us
        finally:
            await gateway.stop()

        # A scanner that hides its User-Agent: the same 401 for everyone, and a ban.
        gateway, password = await started(tmp_path, GuardConfig(drop_scanners=False))
        assert gateway.address is not None
        port = str(gateway.address[1])
        guesses = tmp_path / "passwords.txt"
        wrong = [f"guess{index:02d}" for index in range(12)]
        guesses.write_text("\n".join((*wrong, password, "zzz")) + "\n")
        try:
            warred = await run(
                svwar, "-d", str(names), "-p", port, "-b", HOST, "-P", str(free_udp_port()),
                "--maximumtime", "3", "--force", HOST,
            )  # fmt: skip
            assert reported_names(warred) in (set(), {*ACCOUNTS, *MADE_UP}), warred
            cracked = await run(
                svcrack, "-u", "alice", "-d", str(guesses), "-p", port, "-b", HOST,
                "-P", str(free_udp_port()), "-t", "0.05", "--maximumtime", "3", HOST,
            )  # fmt: skip
            assert password not in cracked, cracked
            statistics = gateway.statistics()
            assert statistics.banned_sources == 1 and statistics.registered_accounts == 0
            assert 5 <= statistics.auth_failures <= 12
        finally:
            await gateway.stop()

    asyncio.run(scenario())
