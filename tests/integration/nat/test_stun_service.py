"""The STUN server on real loopback sockets: 127.0.0.1 and 127.0.0.2 as its two IPs.

Linux routes all of 127/8 to lo, so a second IP needs no setup. Ports are always 0.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import pytest

from nat.endpoint import DatagramSocket, StunService, open_datagram_socket
from nat.stun import (
    Attribute,
    ChangeRequest,
    DialBack,
    OtherAddress,
    ResponseOrigin,
    StunClass,
    StunMessage,
    StunMethod,
    XorMappedAddress,
    decode_message,
    encode_message,
)

Address = tuple[str, int]
WAIT = 2.0  # seconds to wait for an answer on loopback before calling it lost
P = ParamSpec("P")


def run_async(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in a fresh event loop (no asyncio plugin is installed)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(function(*args, **kwargs))

    return wrapper


class Client:
    """A UDP socket that queues what it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.sock: DatagramSocket | None = None

    async def open(self, host: str = "127.0.0.1") -> Client:
        self.sock = await open_datagram_socket(
            (host, 0), lambda data, source: self.inbox.put_nowait((data, source))
        )
        return self

    @property
    def local(self) -> Address:
        assert self.sock is not None
        return self.sock.local

    async def ask(
        self, server: Address, *attributes: Attribute, tid: bytes | None = None
    ) -> tuple[StunMessage, Address]:
        assert self.sock is not None
        tid = tid or os.urandom(12)
        message = StunMessage(StunMethod.BINDING, StunClass.REQUEST, tid, tuple(attributes))
        loop = asyncio.get_running_loop()
        # Retransmit like a STUN client would (a loaded socket may lose a datagram).
        for _attempt in range(4):
            self.sock.send(encode_message(message), server)
            deadline = loop.time() + WAIT / 4
            while (left := deadline - loop.time()) > 0:
                try:
                    data, source = await asyncio.wait_for(self.inbox.get(), left)
                except TimeoutError:
                    break
                reply = decode_message(data)
                if reply.transaction_id == tid and reply.cls is not StunClass.REQUEST:
                    return reply, source
        raise TimeoutError(f"no answer from {server}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@run_async
async def test_binding_on_loopback() -> None:
    async with await StunService.start(("127.0.0.1", 0)) as service:
        client = await Client().open()
        try:
            reply, source = await client.ask(service.addresses[0])
        finally:
            client.close()
    assert source == service.addresses[0]
    assert reply.get(XorMappedAddress) == XorMappedAddress(client.local)
    assert reply.get(OtherAddress) is None


@pytest.mark.parametrize(
    ("change_ip", "change_port", "origin_index"),
    [(False, False, 0), (False, True, 1), (True, False, 2), (True, True, 3)],
)
@run_async
async def test_change_request_with_two_loopback_ips(
    change_ip: bool, change_port: bool, origin_index: int
) -> None:
    async with await StunService.start(("127.0.0.1", 0), alt_ip="127.0.0.2") as service:
        primary = service.addresses[0]
        expected = service.addresses[origin_index]
        assert expected[0] == ("127.0.0.2" if change_ip else "127.0.0.1")
        client = await Client().open()
        try:
            reply, source = await client.ask(primary, ChangeRequest(change_ip, change_port))
        finally:
            client.close()
    assert source == expected  # the datagram really left from the other socket
    assert reply.get(ResponseOrigin) == ResponseOrigin(expected)
    assert reply.get(OtherAddress) == OtherAddress(service.addresses[3])
    assert reply.get(XorMappedAddress) == XorMappedAddress(client.local)


@run_async
async def test_flood_and_garbage_are_dropped_and_counted_while_serving() -> None:
    async with await StunService.start(("127.0.0.1", 0)) as service:
        primary = service.addresses[0]
        attacker = await Client().open("127.0.0.3")
        client = await Client().open()
        try:
            assert attacker.sock is not None
            flood = encode_message(StunMessage(StunMethod.BINDING, StunClass.REQUEST, bytes(12)))
            for n in range(600):
                if n < 300:
                    attacker.sock.send(bytes([n % 256]) * (1 + n % 40), primary)  # garbage
                else:
                    attacker.sock.send(flood, primary)  # valid, far over the rate limit
                if n % 20 == 19:
                    await asyncio.sleep(0.002)  # pace it so the kernel buffer does not drop
            reply, _ = await client.ask(primary)
            # Wait until the server has seen the whole flood (bounded).
            for _ in range(100):
                drops = service.statistics().drops
                if sum(drops.values()) >= 300 + 300 - 40:
                    break
                await asyncio.sleep(0.02)
        finally:
            attacker.close()
            client.close()
    assert reply.get(XorMappedAddress) == XorMappedAddress(client.local)
    drops = service.statistics().drops
    assert drops["stun: not a STUN message"] == 300
    # The default burst is 40: the rest of the valid flood is refused unanswered.
    assert drops["stun: rate limited"] >= 300 - 40 - 5
    assert service.statistics().responses <= 40 + 5 + 1


@run_async
async def test_dial_back_arrives_from_a_port_we_never_contacted() -> None:
    async with await StunService.start(("127.0.0.1", 0)) as service:
        asker = await Client().open()
        listener = await Client().open()
        try:
            tid = os.urandom(12)
            reply, _ = await asker.ask(service.addresses[0], DialBack(listener.local[1]), tid=tid)
            data, source = await asyncio.wait_for(listener.inbox.get(), WAIT)
        finally:
            asker.close()
            listener.close()
    probe = decode_message(data)
    assert probe.cls is StunClass.REQUEST and probe.transaction_id == tid
    assert source not in service.addresses
    assert source[0] == "127.0.0.1"
    assert reply.get(DialBack) == DialBack(listener.local[1])
    assert reply.cls is StunClass.SUCCESS


def test_cli_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pnode",
            "stun",
            "--listen",
            "127.0.0.1:0",
            "--alt-ip",
            "127.0.0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        addresses = [a.rpartition(":") for a in line.split()[1:]]
        primary = (addresses[0][0], int(addresses[0][2]))
        assert len(addresses) == 4

        async def ask() -> StunMessage:
            client = await Client().open()
            try:
                return (await client.ask(primary, ChangeRequest(True, True)))[0]
            finally:
                client.close()

        reply = asyncio.run(ask())
        assert reply.get(ResponseOrigin) == ResponseOrigin((addresses[3][0], int(addresses[3][2])))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
