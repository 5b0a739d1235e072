"""The relay's idle pool on loopback: an ended call's port pair serves a later call
only after its quarantine, and nothing of the old call (queued packets, latching)
reaches the new one; the pool is bounded and closed with the relay."""

from __future__ import annotations

import asyncio
import socket

from p2pnode.gateways.sip.media import MediaRelay, Side


class _Clock:
    """The relay's clock, moved by the test (the sockets are real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()
    return str(host), int(port)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _received(sock: socket.socket, wait: float = 0.3) -> list[bytes]:
    """Every datagram that reaches ``sock`` within ``wait`` seconds."""
    await asyncio.sleep(wait)
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return got


def test_a_pair_is_reused_after_its_quarantine_with_nothing_of_the_old_call() -> None:
    asyncio.run(_reused_pair())


async def _reused_pair() -> None:
    clock = _Clock()
    relay = MediaRelay("127.0.0.1", max_idle=4, quarantine=0.5, clock=clock)
    # The old call's phones at 127.0.0.2, the new call's at 127.0.0.3.
    old_a, old_b, new_a, new_b = _udp("127.0.0.2"), _udp("127.0.0.2"), _udp("127.0.0.3"), _udp()
    try:
        first = relay.open()
        first.expect(Side.A, _address(old_a))
        first.expect(Side.B, _address(old_b))
        ports = (first.port(Side.A), first.port(Side.B))
        old_a.sendto(b"old call", ("127.0.0.1", ports[0]))
        assert await _received(old_b) == [b"old call"]
        first.close()
        # The old caller keeps sending after the call ended: read and dropped.
        old_a.sendto(b"after the end", ("127.0.0.1", ports[0]))
        await asyncio.sleep(0.1)
        clock.now += 0.4
        early = relay.open()  # still in quarantine: a fresh pair
        assert early.port(Side.A) not in ports
        clock.now += 0.2
        second = relay.open()
        assert (second.port(Side.A), second.port(Side.B)) == ports  # the pooled pair
        second.expect(Side.A, _address(new_a))
        second.expect(Side.B, _address(new_b))
        old_a.sendto(b"stale", ("127.0.0.1", ports[0]))  # not the new call's signalled IP
        new_a.sendto(b"new call", ("127.0.0.1", ports[0]))
        assert await _received(new_b) == [b"new call"]
        assert await _received(old_b, 0.0) == []
        statistics = relay.statistics()
        dropped = dict(statistics.dropped)
        assert dropped.get("idle port", 0) >= 1
        assert dropped.get("source not the signalled address", 0) >= 1
        assert statistics.relays == 2 and statistics.forwarded == 2
    finally:
        relay.close()
        for sock in (old_a, old_b, new_a, new_b):
            sock.close()


def test_the_idle_pool_is_bounded_and_closed_with_the_relay() -> None:
    asyncio.run(_bounded_pool())


async def _bounded_pool() -> None:
    clock = _Clock()
    relay = MediaRelay("127.0.0.1", max_idle=1, quarantine=0.5, clock=clock)
    handles = [relay.open() for _ in range(3)]
    ports = [handle.port(Side.A) for handle in handles]
    for handle in handles:
        handle.close()
    # One pair kept (the first closed); the other two closed, their ports free again.
    assert [_port_free(port) for port in ports] == [False, True, True]
    clock.now += 1.0
    assert relay.open().port(Side.A) == ports[0]
    relay.close()
    assert _port_free(ports[0])
    assert relay.statistics().relays == 0
