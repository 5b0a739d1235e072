"""Kamailio's enum module resolves a number through our gateway and routes a sipp INVITE.

Everything runs inside a network namespace this test creates, so the gateway
can own port 53 (a resolver's nameserver line has no port) and Kamailio's
libc resolver is pointed at it with ``/etc/netns/NS/resolv.conf``. Fixed SIP
ports are used only inside that private namespace, where nothing else listens.

Inside: a real DHT of four nodes; an owner publishes +1 800 935 9935 ->
sip:bob@127.0.0.1:UAS (countersigned by the verifier the gateway trusts) and a
squatter publishes other routes beside it and alone on +1 800 555 0199; our
gateway serves e164.arpa on 127.0.0.1:53. Kamailio ``enum_query()`` rewrites
the INVITE's R-URI from the NAPTR answer and relays it to a sipp UAS, which
answers; the squatter-only number gets Kamailio's 404.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns import read_line
from tests.harness.tools import require_root, require_tool

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
NUMBER = "+18009359935"
SQUATTED = "+18005550199"
KAMAILIO_PORT = 5062
UAS_PORT = 5072
UAC_PORT = 5082
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
STEP_TIMEOUT = 40

SCENARIO = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from p2pnode.dht import DhtNode
    from p2pnode.directory.lookup import DhtNetwork, Directory
    from p2pnode.directory.naptr import sip_directive
    from p2pnode.directory.verifiers import countersign
    from p2pnode.gateways.enumdns import EnumDnsCore, EnumDnsServer, GatewayConfig, RouteCache
    from p2pnode.identity import Identity
    from p2pnode.records import RecordKind

    async def main(number, uri, squatted):
        verifier, owner, squatter = Identity.generate(), Identity.generate(), Identity.generate()
        seed = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
        await seed.start()
        nodes = [seed]
        for _ in range(3):
            node = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), bootstrap=[seed.address])
            await node.start()
            nodes.append(node)
        trusted = frozenset({verifier.public_key})
        writer = Directory(DhtNetwork(nodes[1]), trusted=trusted, clock=time.time)
        token = countersign(
            verifier, RecordKind.ENUM_ENTRY, number, owner.public_key, now=time.time()
        )
        await writer.publish_enum(owner, number, [sip_directive(uri)], add=[token])
        evil = [sip_directive("sip:evil@127.0.0.1:9")]
        await writer.publish_enum(squatter, number, evil)
        await writer.publish_enum(squatter, squatted, evil)
        reader = Directory(DhtNetwork(nodes[-1]), trusted=trusted, clock=time.time)
        loop = asyncio.get_running_loop()
        routes = RouteCache(reader.route, loop.time)
        core = EnumDnsCore(GatewayConfig(rate_limit=0), routes.route_nowait, clock=loop.time)
        server = EnumDnsServer(core, routes)
        async with server.running("127.0.0.1", 53):
            print("READY", flush=True)
            await loop.run_in_executor(None, sys.stdin.read)  # until the test closes stdin
        print(json.dumps({"queries": core.statistics().queries}), flush=True)
        for node in nodes:
            await node.close()

    asyncio.run(main(*sys.argv[1:4]))
    """
)


def kamailio_config() -> str:
    return textwrap.dedent(
        f"""\
        #!KAMAILIO
        debug=2
        log_stderror=yes
        children=1
        auto_aliases=no
        listen=udp:127.0.0.1:{KAMAILIO_PORT}
        mpath="{MODULES}"
        dns=no
        rev_dns=no
        loadmodule "tm.so"
        loadmodule "pv.so"
        loadmodule "xlog.so"
        loadmodule "maxfwd.so"
        loadmodule "siputils.so"
        loadmodule "textops.so"
        loadmodule "sl.so"
        loadmodule "enum.so"
        modparam("enum", "domain_suffix", "e164.arpa.")
        request_route {{
            if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
            # sipp's built-in uac sends ACK/BYE to the first R-URI (ours), not the Contact:
            # every request for +digits@us is routed through ENUM, in-dialog ones too.
            if (uri == myself && $rU =~ "^\\+[0-9]+$") {{
                if (!enum_query()) {{
                    xlog("L_NOTICE", "P2PNODE-ENUM no route for $rU\\n");
                    if (!is_method("ACK")) {{ sl_send_reply("404", "No ENUM route"); }}
                    exit;
                }}
                if (is_method("INVITE")) {{ xlog("L_NOTICE", "P2PNODE-ENUM routed to $ru\\n"); }}
            }}
            if (!t_relay()) {{ sl_reply_error(); }}
        }}
        """
    )


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A fresh namespace with loopback up and its own resolv.conf -> 127.0.0.1."""
    name = f"p2pn-enum-{os.getpid()}-{secrets.token_hex(3)}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=10
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
        shutil.rmtree(etc, ignore_errors=True)


def in_ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def stop(process: subprocess.Popen[str], *, graceful: bool = False) -> str:
    """Stop ``process`` (``graceful``: close its stdin and let it finish); its stdout + stderr."""
    if process.poll() is None and not graceful:
        process.terminate()
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=5)
    return (out or "") + (err or "")


def test_kamailio_routes_invite_via_enum_through_gateway(tmp_path: Path) -> None:
    require_root()
    kamailio = require_tool("kamailio")
    sipp = require_tool("sipp", "sip-tester")
    dig = require_tool("dig", "dnsutils")
    require_tool("ip", "iproute2")
    (tmp_path / "kamailio.cfg").write_text(kamailio_config())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    uri = f"sip:bob@127.0.0.1:{UAS_PORT}"
    processes: list[subprocess.Popen[str]] = []
    with namespace() as ns:
        try:
            scenario = subprocess.Popen(
                in_ns(ns, sys.executable, "-c", SCENARIO, NUMBER, uri, SQUATTED),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            processes.append(scenario)
            assert read_line(scenario, timeout=STEP_TIMEOUT) == "READY"

            # the namespace's libc resolver (resolv.conf -> our gateway on :53)
            answer = subprocess.run(
                in_ns(
                    ns,
                    dig,
                    "+short",
                    "+tries=2",
                    "+time=5",
                    "-t",
                    "NAPTR",
                    "5.3.9.9.5.3.9.0.0.8.1.e164.arpa",
                ),
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT,
                check=False,
            ).stdout
            assert answer.strip() == f'100 10 "u" "E2U+sip" "!^.*$!{uri}!" .'

            uas = subprocess.Popen(
                in_ns(
                    ns,
                    "timeout",
                    str(STEP_TIMEOUT),
                    sipp,
                    "-sn",
                    "uas",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(UAS_PORT),
                    "-m",
                    "1",
                    "-nostdin",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            processes.append(uas)
            proxy = subprocess.Popen(
                in_ns(
                    ns,
                    kamailio,
                    "-f",
                    str(tmp_path / "kamailio.cfg"),
                    "-DD",
                    "-E",
                    "-m",
                    "64",
                    "-M",
                    "8",
                    "-Y",
                    str(tmp_path),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            processes.append(proxy)

            def call(number: str, port: int) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    in_ns(
                        ns,
                        "timeout",
                        str(STEP_TIMEOUT),
                        sipp,
                        "-sn",
                        "uac",
                        "-s",
                        number,
                        f"127.0.0.1:{KAMAILIO_PORT}",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-m",
                        "1",
                        "-nostdin",
                        "-recv_timeout",
                        "15000",
                        "-timeout",
                        "30s",
                        "-timeout_error",
                    ),
                    capture_output=True,
                    text=True,
                    timeout=STEP_TIMEOUT + 10,
                    check=False,
                    cwd=tmp_path,
                )

            # Kamailio may need a moment to bind: retry the call a bounded number of times
            result = call(NUMBER, UAC_PORT)
            for attempt in range(5):
                if result.returncode == 0 or proxy.poll() is not None:
                    break
                result = call(NUMBER, UAC_PORT + 1 + attempt)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            assert uas.wait(timeout=STEP_TIMEOUT) == 0  # the UAS behind the ENUM route answered

            squat = call(SQUATTED, UAC_PORT + 10)
            assert squat.returncode != 0  # 404 from Kamailio: the squatter's record is not trusted
        finally:
            outputs = {id(p): stop(p, graceful=p is scenario) for p in reversed(processes)}
        log = outputs[id(proxy)]
        assert f"P2PNODE-ENUM routed to {uri}" in log, log[-3000:]
        assert "P2PNODE-ENUM no route for +18005550199" in log, log[-3000:]
        stats = [line for line in outputs[id(scenario)].splitlines() if line.startswith("{")]
        assert stats, outputs[id(scenario)][-3000:]
        assert json.loads(stats[-1])["queries"] >= 3  # dig, and Kamailio for both numbers
