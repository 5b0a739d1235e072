"""baresip registers with our registrar, and the gateway's keep-alive OPTIONS reach it.

Measured while writing this test: baresip 1.0.0 (libre) refuses to register
("Register: Function not implemented") as soon as one of the 401's challenges
is SHA-256, even when MD5 is offered first; so the registrar here offers MD5
only (``DigestServer(algorithms=(MD5,))``), which a deployment with such
phones must do too.

Two settings: on loopback, and in the netns lab behind a port-restricted NAT,
where the binding must keep the NAT's public address as its path (the
Contact is private) and the OPTIONS sent to that path must come back answered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.netns import Host, Lab, read_line
from tests.harness.tools import require_root, require_tool

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-baresip-1"  # noqa: S105  (a test account)

# The gateway side: SipStack + Registrar (MD5 only) + one keep-alive OPTIONS to the binding.
GATEWAY = """
import asyncio, json, random, sys
from p2pnode.gateways.sip.digest import Algorithm, DigestServer, stored_credentials
from p2pnode.gateways.sip.keepalive import PingTarget, options_ping
from p2pnode.gateways.sip.message import build_response
from p2pnode.gateways.sip.registrar import Registrar, RegistrarConfig
from p2pnode.gateways.sip.transaction import RequestReceived, ResponseReceived, TimedOut
from p2pnode.gateways.sip.transport import SipStack


async def main(host, port, password):
    accounts = {"alice": stored_credentials("alice", "gw.test", password)}
    digest = DigestServer(
        "gw.test", random.Random(1).randbytes(32), randbytes=random.Random(2).randbytes,
        algorithms=(Algorithm.MD5,),
    )
    registrar = Registrar(RegistrarConfig(host), digest, accounts.get)
    loop = asyncio.get_running_loop()
    registered, pinged = loop.create_future(), loop.create_future()

    def on_event(stack, effect):
        if isinstance(effect, RequestReceived):
            request = effect.request
            if request.method == "REGISTER":
                outcome = registrar.handle(request, effect.source, loop.time())
                stack.respond(effect.key, outcome.response)
                if registrar.bindings("alice", loop.time()) and not registered.done():
                    registered.set_result(None)
            else:
                stack.respond(effect.key, build_response(request, 200, "OK", to_tag="gw"))
        elif isinstance(effect, ResponseReceived) and effect.response.status >= 200:
            if not pinged.done():
                pinged.set_result(effect.response.status)
        elif isinstance(effect, TimedOut) and not pinged.done():
            pinged.set_result(None)

    stack = SipStack(on_event)
    await stack.start(host, port)
    print("READY", flush=True)
    await asyncio.wait_for(registered, 30)
    (binding,) = registrar.bindings("alice", loop.time())
    target = PingTarget("alice", binding.contact, binding.source, binding.reliable)
    ping = options_ping(
        target, via=f"SIP/2.0/UDP {host}:{port}", from_uri="sip:gateway@gw.test",
        branch_id="ka1", call_id="ka-1", tag="g1",
    )
    stack.send_request(ping, binding.source)
    status = await asyncio.wait_for(pinged, 40)
    print(json.dumps({
        "contact": str(binding.contact), "source": list(binding.source), "options": status,
    }), flush=True)
    await stack.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def baresip_config(directory: Path, listen: str, registrar: str) -> Path:
    """A headless baresip: no audio device modules, one account (login, password, server)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config").write_text(
        "module_path /usr/lib/baresip/modules\n"
        f"sip_listen {listen}\n"
        "module g711.so\n"
        "module_tmp uuid.so\n"
        "module_tmp account.so\n"
    )
    (directory / "accounts").write_text(
        f"<sip:alice@{registrar}>;auth_pass={PASSWORD};regint=120\n"
    )
    return directory


def finish(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=5)


@pytest.mark.slow
def test_baresip_registers_on_loopback_and_answers_keepalives(tmp_path: Path) -> None:
    baresip = require_tool("baresip")
    (tmp_path / "gateway.py").write_text(GATEWAY)
    port = free_udp_port()
    gateway = subprocess.Popen(
        [sys.executable, str(tmp_path / "gateway.py"), "127.0.0.1", str(port), PASSWORD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    config = baresip_config(
        tmp_path / "baresip", f"127.0.0.1:{free_udp_port()}", f"127.0.0.1:{port}"
    )
    phone = subprocess.Popen(
        [baresip, "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(gateway, 15) == "READY"
        result = json.loads(read_line(gateway, 60))
    finally:
        finish(phone)
        finish(gateway)
    assert result["options"] == 200
    assert result["contact"].startswith("sip:alice")
    assert result["source"][0] == "127.0.0.1"


@pytest.mark.lab
@pytest.mark.slow
def test_baresip_behind_port_restricted_nat_is_reached_at_its_public_path(
    tmp_path: Path,
) -> None:
    require_root()
    baresip = require_tool("baresip")
    require_tool("nft", "nftables")
    from tests.harness.lab_nat import NatType

    (tmp_path / "gateway.py").write_text(GATEWAY)
    with Lab() as lab:
        gw: Host = lab.public_host("gw")
        phone_host: Host = lab.private_host("phone", NatType.PORT_RESTRICTED)
        # Fixed ports only inside the lab's own namespaces, where nothing else listens.
        gateway = gw.popen(
            gw.python(str(tmp_path / "gateway.py"), gw.public_address, "5060", PASSWORD)
        )
        assert read_line(gateway, 15) == "READY"
        config = baresip_config(
            tmp_path / "baresip", f"{phone_host.addresses[0]}:5060", gw.public_address
        )
        phone_host.popen([baresip, "-f", str(config)], stdin=subprocess.DEVNULL)
        result = json.loads(read_line(gateway, 60))
    private = phone_host.addresses[0]
    assert private in result["contact"]  # the phone wrote its private address
    assert result["source"][0] == phone_host.public_address  # the registrar kept the NAT's
    assert result["source"][0] != private
    assert result["options"] == 200  # and the path through the NAT works
