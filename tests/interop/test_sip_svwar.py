"""sipvicious svwar (extension enumeration) learns no account names from our registrar.

Our stack answers a REGISTER for a known and an unknown user with the same 401
(digest challenge) and an OPTIONS to any user with the same 200, so svwar
cannot tell the accounts in its dictionary from made-up names.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.digest import DigestServer, stored_credentials
from p2pnode.gateways.sip.message import build_response
from p2pnode.gateways.sip.registrar import Registrar, RegistrarConfig
from p2pnode.gateways.sip.transaction import Effect, RequestReceived
from p2pnode.gateways.sip.transport import SipStack
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
ACCOUNTS = ("alice", "bob")
MADE_UP = ("nosuchuser1", "zed9", "1000", "2000")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def run_svwar(svwar: str, dictionary: Path, port: int, *extra: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "timeout",
        "60",
        svwar,
        "-d",
        str(dictionary),
        "-p",
        str(port),
        "-b",
        HOST,
        "-P",
        str(free_udp_port()),
        "--maximumtime",
        "5",
        *extra,
        HOST,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    return output.decode(errors="replace")


def reported_names(output: str) -> set[str]:
    """Extension names svwar lists in its result table (``| name | reqauth |``)."""
    names = set()
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("|") if cell.strip()]
        if len(cells) >= 2 and cells[0] in (*ACCOUNTS, *MADE_UP):
            names.add(cells[0])
    return names


@pytest.mark.slow
def test_svwar_cannot_tell_accounts_from_made_up_names(tmp_path: Path) -> None:
    svwar = require_tool("svwar", "sipvicious")
    dictionary = tmp_path / "names.txt"
    dictionary.write_text("\n".join((*MADE_UP[:2], *ACCOUNTS, *MADE_UP[2:])) + "\n")
    accounts = {name: stored_credentials(name, HOST, f"{name}-pw-9") for name in ACCOUNTS}
    digest = DigestServer(
        HOST, random.Random(5).randbytes(32), randbytes=random.Random(6).randbytes
    )
    registrar = Registrar(RegistrarConfig(HOST), digest, accounts.get)
    seen: list[str] = []

    def on_event(stack: SipStack, effect: Effect) -> None:
        if not isinstance(effect, RequestReceived):
            return
        request = effect.request
        seen.append(request.method)
        if request.method == "REGISTER":
            now = asyncio.get_running_loop().time()
            response = registrar.handle(request, effect.source, now).response
        else:
            response = build_response(request, 200, "OK", to_tag="gw")
        stack.respond(effect.key, response)

    async def scenario() -> list[str]:
        stack = SipStack(on_event)
        _, port = await stack.start(HOST)
        try:
            return [
                await run_svwar(svwar, dictionary, port),
                await run_svwar(svwar, dictionary, port, "--force"),
                await run_svwar(svwar, dictionary, port, "-m", "OPTIONS", "--force"),
            ]
        finally:
            await stack.close()

    outputs = asyncio.run(scenario())
    assert "REGISTER" in seen and "OPTIONS" in seen  # svwar really talked to us
    for output in outputs:
        names = reported_names(output)
        # Either nothing is reported, or every name is, alike: no account stands out.
        assert names in (set(), {*ACCOUNTS, *MADE_UP}), output
    assert "found nothing" in outputs[0]
    assert registrar.registered_accounts() == 0
