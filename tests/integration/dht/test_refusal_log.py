"""The DHT adapter's fail2ban-style refusal log, on real UDP sockets.

Proves: a flood of requests over the per-IP rate limit from two source
addresses writes exactly one ``refused what=dht-request`` line per source in
the interval (not one per dropped datagram), and STOREs whose proof of key does
not verify write one ``refused what=dht-store reason=bad-proof`` line for their
source. Attackers are raw sockets on other loopback addresses (127.0.0.x).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket

import pytest

from p2pnode.dht import DhtConfig, DhtNode
from p2pnode.dht.keys import Address
from p2pnode.dht.messages import Frame, Message, Ping, Store, encode_frame
from p2pnode.identity import Identity

FLOOD = 20  # PINGs per flooding source
STORES = 4  # STOREs with a bad proof
WAIT = 10.0  # a bound on waiting, not a speed assertion
LINE = re.compile(r"^refused what=(\S+) reason=(\S+) source=(\S+) count=(\d+)$")


def _send(sock: socket.socket, identity: Identity, message: Message, to: Address) -> None:
    frame = Frame(message, os.urandom(8), identity.public_key, identity.node_id, 0)
    sock.sendto(encode_frame(frame), to)


async def _until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_one_refusal_line_per_source(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_scenario(caplog))


async def _scenario(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="p2pnode.dht.node")
    config = DhtConfig(request_rate=0.5, request_burst=6.0)
    node = DhtNode(Identity.generate(), listen=("127.0.0.1", 0), config=config)
    await node.start(wait_bootstrap=False)
    sockets: list[socket.socket] = []
    try:
        flooders = ("127.0.0.2", "127.0.0.3")
        for host in (*flooders, "127.0.0.4"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sockets.append(sock)
        attacker = Identity.generate()
        for sock in sockets[:2]:
            for _ in range(FLOOD):
                _send(sock, attacker, Ping(os.urandom(16)), node.address)
        key = os.urandom(20)
        for _ in range(STORES):
            bad = Store(key, b"\x90" * 40, token=os.urandom(16), proof=os.urandom(64))
            _send(sockets[2], attacker, bad, node.address)
        limited = 2 * (FLOOD - int(config.request_burst))
        await _until(
            lambda: (
                node.statistics().drops.get("rate limited", 0) >= limited
                and node.statistics().store_rejects.get("bad-proof", 0) >= STORES
            ),
            "the node to refuse the flood and the STOREs",
        )
        await asyncio.sleep(0.1)  # anything still queued would have been logged by now
    finally:
        for sock in sockets:
            sock.close()
        await node.close()
    lines = [
        match.groups()
        for record in caplog.records
        if (match := LINE.match(record.getMessage())) is not None
    ]
    requests = sorted(source for what, _, source, _ in lines if what == "dht-request")
    assert requests == list(flooders)  # one line per source, not one per dropped datagram
    flood_lines = {(what, reason, n) for what, reason, source, n in lines if source in flooders}
    assert flood_lines == {("dht-request", "rate-limited", "1")}
    stores = [(what, reason, source) for what, reason, source, _ in lines if what == "dht-store"]
    assert stores == [("dht-store", "bad-proof", "127.0.0.4")]
    assert node.refusal_log.total == limited + STORES
