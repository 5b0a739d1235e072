"""The shared datagram driver (nat.driver) on loopback with a toy core: dispatch, the one
timer at the core's deadline, refused and early datagrams counted, send-only sockets."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from nat.driver import DatagramDriver

Address = tuple[str, int]


@dataclass(frozen=True)
class Send:
    data: bytes
    remote: Address
    local: Address | None


class EchoCore:
    """Echoes datagrams; b"later" is answered by the timer 50 ms on; b"bad" raises."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Send]] = []
        self.timer_calls = 0

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> list[Send]:
        if data == b"bad":
            raise ValueError("undecodable")
        if data == b"later":
            self.due.append((now + 0.05, Send(b"timer:" + data, source, local)))
            return []
        if data == b"default":
            return [Send(b"from default", source, None)]
        return [Send(b"echo:" + data, source, local)]

    def handle_timer(self, now: float) -> list[Send]:
        self.timer_calls += 1
        ready = [send for when, send in self.due if when <= now]
        self.due = [(when, send) for when, send in self.due if when > now]
        return ready

    def next_deadline(self) -> float | None:
        return min((when for when, _ in self.due), default=None)


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


async def _recv(sock: socket.socket) -> tuple[bytes, Address]:
    data, source = await asyncio.to_thread(sock.recvfrom, 2048)
    return data, (source[0], source[1])


async def _counted(driver: DatagramDriver, reason: str) -> int:
    """The drop count for ``reason`` once it is non-zero (bounded wait: 5 s)."""
    for _ in range(500):
        if driver.drops().get(reason):
            break
        await asyncio.sleep(0.01)
    return driver.drops().get(reason, 0)


def test_driver_runs_a_core() -> None:
    async def scenario() -> None:
        driver = DatagramDriver()
        local = await driver.open(("127.0.0.1", 0))
        default = await driver.open(("127.0.0.1", 0), receive=False, default=True)
        client = _client()
        try:
            client.sendto(b"early", local)  # before start: dropped, counted
            assert await _counted(driver, "datagram before start") == 1
            core = EchoCore()
            driver.start(core)
            client.sendto(b"hello", local)
            assert await _recv(client) == (b"echo:hello", local)
            client.sendto(b"bad", local)
            client.sendto(b"later", local)
            assert await _recv(client) == (b"timer:later", local)  # sent by the timer
            assert core.timer_calls >= 1 and core.due == []
            assert driver.drops().get("core refused datagram") == 1
            client.sendto(b"default", local)
            assert await _recv(client) == (b"from default", default)
            client.sendto(b"x", default)  # to the send-only socket: dropped, counted
            assert await _counted(driver, "datagram on a send-only socket") == 1
            client.sendto(b"again", local)
            assert await _recv(client) == (b"echo:again", local)
            assert driver.addresses == (local,)
            assert driver.received == 5 and driver.sent == 4
        finally:
            client.close()
            driver.close()

    asyncio.run(scenario())
