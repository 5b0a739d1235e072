"""Presence and signalling latency through home supernodes on loopback.

Three public supernodes (their own homes, CONTACT in the DHT) and two peers
attached to two of them each; all real sockets on 127.0.0.1, one process.

- ``status_p50_ms``/``status_p95_ms``: a peer changes its status
  (``set_presence``) -> its watcher's ``PresenceChanged`` (the issue: < 2 s p95);
- ``detach_offline_ms``: a peer stops gracefully -> the watcher sees it offline;
- ``crash_offline_s``: a peer's socket is closed without a word -> the watcher
  sees it offline; ``crash_bound_s`` is keepalive + the home's grace + one
  sweep second, the bound the home promises (the issue: keepalive timeout + 2 s);
- ``signal_p50_ms``/``signal_p95_ms``: ``send_signal`` (sealed, through the
  recipient's home, acknowledged by the recipient) round trip;
- anchor: ``udp_rtt_p50_ms``, a plain UDP ping-pong between two sockets of the
  same loop (the floor a two-hop exchange cannot beat).

Bounded: ``--changes`` status changes and signals (at most 1000), every wait
capped. On a shared 2-core machine the figures are indicative. The last line is
one JSON object.

    python benchmarks/presence.py [--changes 50 --keepalive 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import percentile, print_final_json, print_table, ratio  # noqa: E402
from p2pnode.connectivity.attach import HomeConfig  # noqa: E402
from p2pnode.connectivity.contact import HomeEntry, PresenceStatus  # noqa: E402
from p2pnode.connectivity.homes import PeerConfig  # noqa: E402
from p2pnode.connectivity.signalling import (  # noqa: E402
    PresenceChanged,
    SignallingService,
    contact_homes,
    fetch_contact,
)
from p2pnode.dht import DhtConfig, DhtNode  # noqa: E402
from p2pnode.identity import Identity  # noqa: E402

WAIT = 30.0
LOOPBACK = DhtConfig().sharing_ip(8)


async def wait_for(condition: Callable[[], bool], limit: float = WAIT) -> float:
    """Seconds until ``condition()`` holds (polled every millisecond)."""
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - state changed by many callbacks
            await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def udp_rtts(count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            received.put_nowait(data)

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    rtts = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            client.sendto(b"p" * 100, echo.get_extra_info("sockname"))
            await asyncio.wait_for(received.get(), WAIT)
            rtts.append(time.perf_counter() - started)
    finally:
        echo.close()
        client.close()
    return rtts


async def measure(changes: int, keepalive: float, grace: float) -> dict[str, object]:
    home_config = HomeConfig(grace=grace, min_keepalive=0.5)
    peer_config = PeerConfig(keepalive=keepalive)
    dhts: list[DhtNode] = []
    services: list[SignallingService] = []
    try:
        for _ in range(3):
            dht = DhtNode(
                Identity.generate(), bootstrap=[dhts[0].address] if dhts else [], config=LOOPBACK
            )
            await dht.start()
            dhts.append(dht)
            supernode = SignallingService(dht.identity, dht, public=True, home_config=home_config)
            await supernode.start()
            services.append(supernode)
        keys = [s.identity.public_key for s in services]
        await asyncio.sleep(0.5)  # the supernodes' CONTACT puts

        async def peer(events: list[object]) -> SignallingService:
            identity = Identity.generate()
            dht = DhtNode(identity, bootstrap=[dhts[0].address], config=LOOPBACK, client_mode=True)
            await dht.start()
            dhts.append(dht)

            async def find() -> list[HomeEntry]:
                return await contact_homes(dht, keys)

            service = SignallingService(
                identity,
                dht,
                find_homes=find,
                peer_config=peer_config,
                emit=events.append,
            )
            await service.start()
            services.append(service)
            await wait_for(lambda: len(service.homes()) == 2)
            async with asyncio.timeout(WAIT):
                while True:
                    contact = await fetch_contact(dhts[0], identity.public_key)
                    if contact is not None and len(contact.homes) == 2:
                        break
                    await asyncio.sleep(0.01)
            return service

        watcher_events: list[object] = []
        watcher = await peer(watcher_events)
        target = await peer([])

        def latest() -> PresenceChanged:
            found = [e for e in watcher_events if isinstance(e, PresenceChanged)]
            return found[-1] if found else PresenceChanged("", False, "", "")

        def online(peer_id: str) -> bool:
            report = watcher.presence_of(peer_id)
            return report is not None and report.online

        assert await watcher.watch(target.identity.peer_id)
        await wait_for(lambda: online(target.identity.peer_id))

        status_times = []
        for index in range(changes):
            note = f"change {index}"
            target.set_presence(PresenceStatus.AWAY if index % 2 else PresenceStatus.BUSY, note)
            status_times.append(await wait_for(lambda note=note: latest().note == note))  # type: ignore[misc]

        signal_times = []
        for _ in range(changes):
            started = time.perf_counter()
            await watcher.send_signal(target.identity.peer_id, os.urandom(1500))
            signal_times.append(time.perf_counter() - started)
            await target.receive()

        started = time.perf_counter()  # stop() sends DETACH; the homes notify at once
        await target.stop()
        services.remove(target)
        await wait_for(lambda: not online(target.identity.peer_id))
        detach = time.perf_counter() - started

        crashed = await peer([])
        assert await watcher.watch(crashed.identity.peer_id)
        crashed_id = crashed.identity.peer_id
        await wait_for(lambda: online(crashed_id))
        crashed.abort()
        crash = await wait_for(lambda: not online(crashed_id))
        rtts = await udp_rtts(changes)
    finally:
        for service in services:
            await service.stop()
        for dht in dhts:
            await dht.close()
    ms = 1000.0
    return {
        "changes": changes,
        "keepalive_s": keepalive,
        "grace_s": grace,
        "status_p50_ms": round(percentile(status_times, 50) * ms, 2),  # type: ignore[operator]
        "status_p95_ms": round(percentile(status_times, 95) * ms, 2),  # type: ignore[operator]
        "detach_offline_ms": round(detach * ms, 2),
        "crash_offline_s": round(crash, 2),
        "crash_bound_s": keepalive + grace + 1.0,
        "signal_p50_ms": round(percentile(signal_times, 50) * ms, 2),  # type: ignore[operator]
        "signal_p95_ms": round(percentile(signal_times, 95) * ms, 2),  # type: ignore[operator]
        "udp_rtt_p50_ms": round(percentile(rtts, 50) * ms, 3),  # type: ignore[operator]
        "ratio_signal_p50_vs_udp_rtt": ratio(percentile(signal_times, 50), percentile(rtts, 50)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--keepalive", type=float, default=2.0, help="peers' keepalive, seconds")
    parser.add_argument("--grace", type=float, default=5.0, help="homes' grace, seconds")
    args = parser.parse_args()
    result = asyncio.run(
        measure(max(1, min(args.changes, 1000)), max(0.5, args.keepalive), max(0.5, args.grace))
    )
    print_table(
        ["figure", "value"],
        [[key, value] for key, value in result.items() if key != "changes"],
    )
    print_final_json(result)


if __name__ == "__main__":
    main()
