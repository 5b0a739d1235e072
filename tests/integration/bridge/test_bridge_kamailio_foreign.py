"""A foreign SIP network (sipp behind a Kamailio proxy) calls a P2P login hosted nowhere here.

sipp, as ``carrier@other.example``, sends ``INVITE sip:bob@gw.test`` to a
Kamailio proxy (the other network's), which relays it to our gateway. ``bob``
is no account at the gateway: the gateway rings its bridge account, the
FOREIGN bridge resolves ``bob`` through a real DHT directory (a verified
claim) and calls bob's P2P identity as the gateway. sipp plays RFC 4733
digits 1, 5, 9 (Debian pcaps). Bob's own call events must show the digits in
order and the carrier's From marked unverified; Kamailio's log must show it
relayed the INVITE.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from p2pnode.directory.lookup import DhtNetwork, Directory
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.bridge_routing import BridgeCallers, PeerResolver
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource
from tests.harness.tools import require_tool
from tests.integration.bridge.board import Board
from tests.integration.bridge.test_bridge_call_loopback import loopback_ice
from tests.integration.bridge.test_bridge_sipp_dtmf import DIGITS, UAC, free_udp_port
from tests.integration.directory.test_directory_dht import dht
from tests.interop.test_sip_kamailio_digest import wait_ready

pytestmark = pytest.mark.interop
DOMAIN = "gw.test"
GATEWAY_ID = "gateway-identity"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
WAIT = 20.0


def kamailio_config(port: int, gateway_port: int) -> str:
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{MODULES}"
dns=no
rev_dns=no
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("INVITE") && !has_totag()) {{
        xlog("L_NOTICE", "P2PNODE-FOREIGN relaying $rU from $fd\\n");
    }}
    $du = "sip:127.0.0.1:{gateway_port}";
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""


async def scenario(sipp: str, kamailio: str, tmp_path: Path) -> None:
    bob, verifier = Identity.generate(), Identity.generate()
    trusted = frozenset({verifier.public_key})
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, bridge_password = store.add("p2p", None, randbytes=os.urandom)
    gateway_port, proxy_port = free_udp_port(), free_udp_port()
    gateway = SipGateway(GatewayConfig(DOMAIN, port=gateway_port), store, p2p_login="p2p")
    await gateway.start()
    assert gateway.address is not None
    (tmp_path / "kamailio.cfg").write_text(kamailio_config(proxy_port, gateway.address[1]))
    proxy = await asyncio.create_subprocess_exec(
        kamailio, "-f", str(tmp_path / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
        "-Y", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    bridge_ua = BridgeUserAgent("p2p", bridge_password, DOMAIN, gateway.address)
    board = Board((GATEWAY_ID, bob.peer_id))
    config = CallConfig(audio_codecs=("PCMU",))
    heard: list[str] = []
    relayed: set[tuple[str, str]] = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            probe.settimeout(1.0)
            await asyncio.to_thread(wait_ready, probe, proxy_port)
        await bridge_ua.start()
        await bridge_ua.register()
        async with dht(4) as nodes:
            writer = Directory(DhtNetwork(nodes[1]), trusted=trusted, clock=time.time)
            vouch = countersign(
                verifier, RecordKind.NAME_CLAIM, "bob", bob.public_key, now=time.time()
            )
            await writer.claim_name(bob, "bob", add=[vouch])
            reader = Directory(DhtNetwork(nodes[-1]), trusted=trusted, clock=time.time)
            resolver = PeerResolver(reader, gateway_domain=DOMAIN)
            as_gateway = BridgedCallService(GATEWAY_ID, config, board.sender(GATEWAY_ID))
            async with (
                as_gateway,
                CallService(
                    bob.peer_id,
                    CallConfig(audio_codecs=("PCMU",), auto_answer=True),
                    board.sender(bob.peer_id),
                    answer_media=lambda: CallMedia(ToneSource(550.0)),
                ) as bob_calls,
                asyncio.TaskGroup() as group,
            ):
                board.services = {GATEWAY_ID: as_gateway, bob.peer_id: bob_calls}
                tasks = [group.create_task(board.pump(name)) for name in board.queues]
                bridge = SipP2pBridge(
                    as_gateway, bridge_ua, "p2p", resolve=resolver.peer_id,
                    callers=BridgeCallers.FOREIGN,
                )  # fmt: skip
                tasks.append(group.create_task(bridge.run()))
                script = tmp_path / "uac.xml"
                script.write_text(UAC)
                process = await asyncio.create_subprocess_exec(
                    "timeout", "40", sipp, "-sf", str(script), f"127.0.0.1:{proxy_port}",
                    "-s", "bob", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                    "-mp", str(free_udp_port()), "-m", "1", "-nostdin", "-timeout", "30",
                    "-timeout_error",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                    cwd=tmp_path,
                )  # fmt: skip
                _, errors = await asyncio.wait_for(process.communicate(), 45)
                assert process.returncode == 0, errors.decode(errors="replace")[-800:]
                async with asyncio.timeout(WAIT):
                    while (update := await bob_calls.wait_update()).state is not CallState.HUNG_UP:
                        if update.dtmf is not None:
                            heard.append(update.dtmf)
                        if update.relayed_caller is not None:
                            relayed.add((update.relayed_caller, update.detail))
                for task in tasks:
                    task.cancel()
    finally:
        await bridge_ua.close()
        await gateway.stop()
        if proxy.returncode is None:
            proxy.terminate()
        try:
            output, _ = await asyncio.wait_for(proxy.communicate(), 10)
        except TimeoutError:
            proxy.kill()
            output, _ = await proxy.communicate()
    assert "P2PNODE-FOREIGN relaying bob from other.example" in output.decode(errors="replace")
    assert heard == list(DIGITS)  # in bob's own call events, in order
    assert ("sip:carrier@other.example", "unverified") in relayed
    assert {uri for uri, _ in relayed} == {"sip:carrier@other.example"}


@pytest.mark.slow
def test_a_foreign_network_behind_kamailio_reaches_an_unhosted_p2p_login(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")
    kamailio = require_tool("kamailio")
    with loopback_ice():
        asyncio.run(scenario(sipp, kamailio, tmp_path))
