"""sipp registers with our registrar over UDP and TCP: 401, then 200; a wrong password fails.

The gateway side is the real stack: SipStack (asyncio UDP/TCP adapter +
transaction layer) with the sans-IO Registrar as its TU, on 127.0.0.1 and a
port chosen by the kernel; sipp gets a free local port too (its default is 5060).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from p2pnode.gateways.sip.digest import Algorithm, DigestServer, stored_credentials
from p2pnode.gateways.sip.registrar import RegisterOutcome, Registrar, RegistrarConfig
from p2pnode.gateways.sip.transaction import Effect, RequestReceived
from p2pnode.gateways.sip.transport import SipStack
from tests.harness.sipp import register_scenario, sipp_register
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

DOMAIN = "gw.test"

# A REGISTER answered by a 401 (sipp computes MD5 digest credentials from it), then 200.
SCENARIO = register_scenario(120, 200, "register with digest")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_registers_with_md5_digest_and_a_wrong_password_is_refused(
    tmp_path: Path, transport: str
) -> None:
    sipp = require_tool("sipp", "sip-tester")
    scenario = tmp_path / "register.xml"
    scenario.write_text(SCENARIO)
    accounts = {
        "alice": stored_credentials("alice", DOMAIN, "alice-secret-1"),
        "bob": stored_credentials("bob", DOMAIN, "bob-secret-1"),
    }
    # sipp 3.6.1 answers only the first challenge and only with MD5: list MD5 first.
    digest = DigestServer(
        DOMAIN,
        random.Random(3).randbytes(32),
        randbytes=random.Random(4).randbytes,
        algorithms=(Algorithm.MD5, Algorithm.SHA256),
    )
    registrar = Registrar(RegistrarConfig(DOMAIN), digest, accounts.get)
    outcomes: list[RegisterOutcome] = []

    def on_event(stack: SipStack, effect: Effect) -> None:
        if isinstance(effect, RequestReceived) and effect.request.method == "REGISTER":
            now = asyncio.get_running_loop().time()
            outcome = registrar.handle(effect.request, effect.source, now, reliable=effect.reliable)
            outcomes.append(outcome)
            stack.respond(effect.key, outcome.response)

    async def scenario_run() -> None:
        stack = SipStack(on_event)
        _, port = await stack.start("127.0.0.1")
        try:
            now = asyncio.get_running_loop().time
            server = ("127.0.0.1", port)
            alice = await sipp_register(
                sipp, scenario, server, "alice", "alice-secret-1", transport
            )
            assert alice[0] == 0
            (binding,) = registrar.bindings("alice", now())
            assert binding.source[0] == "127.0.0.1"
            assert binding.reliable is (transport == "tcp")
            assert str(binding.contact).startswith("sip:alice@127.0.0.1:")
            assert binding.remaining(now()) > 100
            bob = await sipp_register(sipp, scenario, server, "bob", "not-the-password", transport)
            assert bob[0] != 0
            assert registrar.bindings("bob", now()) == ()
            assert any(o.result.value == "auth failed" and o.username == "bob" for o in outcomes)
        finally:
            await stack.close()

    asyncio.run(scenario_run())
