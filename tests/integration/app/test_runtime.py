"""`p2pnode run --config FILE` on loopback: DHT + supernode relay + ENUM gateway + control
API + metrics in one process, driven by the CLI, scraped, and stopped with SIGTERM.

One node process is shared by the module's tests (started once, ~3 s to promote
itself); the last test ends it with SIGTERM while a TURN allocation is live.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import pytest
from aioice.turn import TurnTransport, create_turn_endpoint
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.connectivity.credentials import request_credentials
from p2pnode.dht import DhtNode
from p2pnode.identity import Identity

pytestmark = pytest.mark.slow  # one node process and ~10 CLI processes: ~20 s

WAIT = 60.0  # bound on any one wait, not a speed assertion


def p2pnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@dataclass
class RunningNode:
    home: Path
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    seen: list[str] = field(default_factory=list)

    def wait_line(self, pattern: str) -> re.Match[str]:
        for line in self.seen:
            found = re.search(pattern, line)
            if found:
                return found
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern!r}: {self.seen}") from None
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    @property
    def control_url(self) -> str:
        return self.wait_line(r"control API on (\S+)").group(1)

    @property
    def token(self) -> str:
        return (self.home / "control.token").read_text().strip()

    def api(self, path: str, token: str | None = None) -> object:
        request = urllib.request.Request(self.control_url + path)  # noqa: S310
        request.add_header("Authorization", f"Bearer {token or self.token}")
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            return json.loads(response.read())

    def status(self) -> dict[str, object]:
        answer = self.api("/api/status")
        assert isinstance(answer, dict)
        return answer


CONFIG = """
[node]
listen = "127.0.0.1:0"

[supernode]
public_ip = "127.0.0.1"
relay_search = false

[relay]
listen = "127.0.0.1:0"
capacity = 5
allow_peers = ["127.0.0.0/8"]
drain_limit = 20.0

[enum]
enabled = true
listen = "127.0.0.1:0"

[control]
port = 0

[metrics]
listen = "127.0.0.1:0"

[log]
level = "info"
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    home = tmp_path_factory.mktemp("node")
    assert p2pnode("init", "--home", str(home)).returncode == 0
    config = home / "node.toml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(home), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream: object) -> None:
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            lines.put(line.rstrip("\n"))

    readers = [
        threading.Thread(target=pump, args=(s,), daemon=True)
        for s in (process.stdout, process.stderr)
    ]
    for reader in readers:
        reader.start()
    running = RunningNode(home, process, lines)
    try:
        running.wait_line(r"role: supernode .* relay on 127\.0\.0\.1:\d+")
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


def _counter(node: RunningNode, metric: str, **labels: str) -> float:
    url = node.wait_line(r"metrics on (\S+)").group(1)
    with urllib.request.urlopen(url, timeout=WAIT) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_cli_goes_through_the_running_node_and_causes_no_join(node: RunningNode) -> None:
    home = str(node.home)
    dht_address = node.wait_line(r"listening on (127\.0\.0\.1:\d+)").group(1)
    before = node.status()
    put = p2pnode(
        "record", "put", "--home", home, "--bootstrap", dht_address,
        "--kind", "presence", "--subject", "online", "--payload", "hello via the API",
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert "using the running node" in put.stderr and "stored: 1 of" in put.stdout
    owner = re.search(r"owner:\s+(\S+)", put.stdout)
    assert owner is not None
    got = p2pnode(
        "record", "get", "--home", home, "--bootstrap", dht_address, "--json",
        "--kind", "presence", "--owner", owner.group(1), "--subject", "online",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    records = json.loads(got.stdout)["records"]
    assert bytes.fromhex(records[0]["payload_hex"]) == b"hello via the API"
    missing = p2pnode("name", "lookup", "nobody-here", "--home", home)
    assert "using the running node" in missing.stderr
    assert "nobody claims 'nobody-here'" in missing.stderr
    as_json = p2pnode("name", "lookup", "nobody-here", "--home", home, "--json")
    assert as_json.returncode == 1, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "subject": "nobody-here", "outcome": "not-found", "conflict": False, "candidates": []
    }  # fmt: skip
    number = p2pnode("enum", "lookup", "+1 800 935 9935", "--home", home)
    assert "using the running node" in number.stderr
    assert "nobody claims '+18009359935'" in number.stderr
    status = p2pnode("status", "--home", home)
    assert status.returncode == 0, status.stderr
    assert re.search(r"role: supernode", status.stdout)
    assert re.search(r"service enum: running", status.stdout)
    after = node.status()
    # The CLI was given the node's own DHT address: a join would have reached it.
    table_before, table_after = before["table"], after["table"]
    assert isinstance(table_before, dict) and isinstance(table_after, dict)
    assert table_after["datagrams_in"] == table_before["datagrams_in"]
    services = {s["name"]: s for s in after["services"]}  # type: ignore[attr-defined]
    assert services["dht"]["statistics"]["joins"] == 1
    assert services["dht"]["statistics"]["gets"] >= before_gets(before) + 4  # get + 3 lookups
    assert services["control"]["statistics"]["requests"] >= 4


def before_gets(status: dict[str, object]) -> int:
    services = {s["name"]: s for s in status["services"]}  # type: ignore[attr-defined]
    gets = services["dht"]["statistics"]["gets"]
    assert isinstance(gets, int)
    return gets


def test_requests_without_the_token_get_401_and_openapi_comes_from_the_models(
    node: RunningNode,
) -> None:
    for path in ("/api/status", "/api/openapi.json", "/api/records?kind=presence"):
        request = urllib.request.Request(node.control_url + path)  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=WAIT)  # noqa: S310
        assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        node.api("/api/status", token="not-the-token")  # noqa: S106
    assert wrong.value.code == 401
    node.wait_line(r"refused what=control-api reason=no-token source=127\.0\.0\.1 count=1")
    assert oct(os.stat(node.home / "control.token").st_mode & 0o777) == "0o600"
    document = node.api("/api/openapi.json")
    assert isinstance(document, dict) and document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    assert set(schemas["RecordPutRequest"]["properties"]) == {
        "kind", "subject", "payload", "ttl", "seq"
    }  # fmt: skip
    post = document["paths"]["/api/records"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RecordPutRequest"
    )


def test_sighup_reloads_refusing_a_broken_file_and_naming_what_needs_a_restart(
    node: RunningNode,
) -> None:
    config = node.home / "node.toml"
    config.write_text(CONFIG.replace("capacity = 5", "capacity = 0"))
    node.process.send_signal(signal.SIGHUP)
    node.wait_line(r"reload refused: .*relay\.capacity")
    config.write_text(CONFIG.replace("capacity = 5", "capacity = 6"))
    node.process.send_signal(signal.SIGHUP)
    node.wait_line(r"config section=relay changed")
    config.write_text(CONFIG)
    assert node.process.poll() is None
    assert node.status()["relay"]["capacity"] == 5  # type: ignore[index]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _round_trip(turn: TurnTransport, inbox: _Inbox, peer: tuple[str, int]) -> None:
    for attempt in range(20):
        text = f"ping {attempt}".encode()
        turn.sendto(text, peer)
        try:
            async with asyncio.timeout(0.5):
                while await inbox.queue.get() != text:
                    pass
                return
        except TimeoutError:
            continue
    raise AssertionError("nothing came back through the relay")


def test_metrics_move_with_traffic_and_sigterm_drains_a_live_allocation(
    node: RunningNode,
) -> None:
    gets = _counter(node, "p2pnode_dht_operations_total", op="get")
    dns_queries = _counter(node, "p2pnode_enum_dns_queries_received_total")
    allocations = _counter(node, "p2pnode_relay_allocations_created_total")
    assert _counter(node, "p2pnode_supernode_role", role="supernode") == 1.0

    got = p2pnode("record", "get", "--home", str(node.home), "--kind", "name-claim",
                  "--subject", "someone")  # fmt: skip
    assert got.returncode == 1, got.stderr
    assert _counter(node, "p2pnode_dht_operations_total", op="get") == gets + 1

    enum_host, enum_port = node.wait_line(r"ENUM DNS gateway on udp\+tcp (\S+):(\d+)").groups()
    query = dns.message.make_query("5.3.9.9.5.3.9.0.0.8.1.e164.arpa.", "NAPTR")
    answer = dns.query.udp(query, enum_host, port=int(enum_port), timeout=10)
    assert answer.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR)
    # a query whose route is not cached yet is handled twice (parked, then answered)
    assert _counter(node, "p2pnode_enum_dns_queries_received_total") >= dns_queries + 1

    relay_port = int(node.wait_line(r"relay on 127\.0\.0\.1:(\d+)").group(1))
    dht_port = int(node.wait_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    relay_key = Identity.load(node.home).public_key

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
        peer = echo.get_extra_info("sockname")
        client = DhtNode(Identity.generate(), listen=("127.0.0.1", 0))
        await client.start()
        try:
            credentials = await request_credentials(client, ("127.0.0.1", dht_port), relay_key)
            async with asyncio.timeout(WAIT):
                turn, inbox = await create_turn_endpoint(
                    _Inbox, ("127.0.0.1", relay_port), credentials.username,
                    credentials.password, lifetime=600,
                )  # fmt: skip
            await _round_trip(turn, inbox, peer)
            assert _counter(node, "p2pnode_relay_allocations_created_total") == allocations + 1
            assert _counter(node, "p2pnode_relay_packets_total", direction="to_peer") >= 1
            # the credentials request over the DHT was an RPC the node served
            assert _counter(node, "p2pnode_dht_rpcs_total", outcome="served") >= 1
            node.process.send_signal(signal.SIGTERM)
            node.wait_line(r"state=draining")
            await _round_trip(turn, inbox, peer)  # the live allocation still relays
            assert node.process.poll() is None
            turn.close()  # RFC 8656 Refresh with lifetime 0: the last allocation is gone
            async with asyncio.timeout(WAIT):
                await inbox.closed.wait()
        finally:
            await client.close()
            echo.close()

    asyncio.run(scenario())
    assert node.process.wait(timeout=WAIT) == 0
    node.wait_line(r"drained relay: allocations_left=0")
