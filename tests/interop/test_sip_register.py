"""sipp registers with our registrar over UDP and TCP: 401, then 200; a wrong password fails.

The gateway side is the real stack: SipStack (asyncio UDP/TCP adapter +
transaction layer) with the sans-IO Registrar as its TU, on 127.0.0.1 and a
port chosen by the kernel; sipp gets a free local port too (its default is 5060).
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from p2pnode.gateways.sip.digest import Algorithm, DigestServer, stored_credentials
from p2pnode.gateways.sip.registrar import RegisterOutcome, Registrar, RegistrarConfig
from p2pnode.gateways.sip.transaction import Effect, RequestReceived
from p2pnode.gateways.sip.transport import SipStack
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

DOMAIN = "gw.test"

# A REGISTER answered by a 401 (sipp computes MD5 digest credentials from it), then 200.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[service]@gw.test>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@gw.test>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 120
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[service]@gw.test>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@gw.test>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      [authentication]
      Max-Forwards: 70
      Expires: 120
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_sipp(
    sipp: str, scenario: Path, port: int, user: str, password: str, transport: str
) -> int:
    local_port = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        "timeout",
        "20",
        sipp,
        "-sf",
        str(scenario),
        f"127.0.0.1:{port}",
        "-m",
        "1",
        "-nostdin",
        "-s",
        user,
        "-au",
        user,
        "-ap",
        password,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-timeout",
        "10",
        "-timeout_error",
        "-t",
        "t1" if transport == "tcp" else "u1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=scenario.parent,
    )
    return await asyncio.wait_for(process.wait(), 30)


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
            assert await run_sipp(sipp, scenario, port, "alice", "alice-secret-1", transport) == 0
            (binding,) = registrar.bindings("alice", now())
            assert binding.source[0] == "127.0.0.1"
            assert binding.reliable is (transport == "tcp")
            assert str(binding.contact).startswith("sip:alice@127.0.0.1:")
            assert binding.remaining(now()) > 100
            assert await run_sipp(sipp, scenario, port, "bob", "not-the-password", transport) != 0
            assert registrar.bindings("bob", now()) == ()
            assert any(o.result.value == "auth failed" and o.username == "bob" for o in outcomes)
        finally:
            await stack.close()

    asyncio.run(scenario_run())
