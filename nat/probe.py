"""``binding_rtt``: one STUN Binding health check over UDP, on the shared datagram driver.

The asyncio side of ``nat.stun.probe.BindingProbe``: an ephemeral socket of the
server's address family, the loop's monotonic clock, and nothing else; the
retransmission schedule and the answer check are the core's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from nat.driver import DatagramDriver, Outgoing
from nat.stun.attributes import Address
from nat.stun.probe import BindingProbe
from nat.stun.transaction import RetransmitPolicy

__all__ = ["binding_rtt"]


class _Watched:
    """The probe, plus a future set as soon as it is answered or has timed out."""

    def __init__(self, probe: BindingProbe, finished: asyncio.Future[None]) -> None:
        self._probe = probe
        self._finished = finished

    def handle_datagram(
        self, data: bytes, source: Address, local: Address, now: float
    ) -> Sequence[Outgoing]:
        try:
            return self._probe.handle_datagram(data, source, local, now)
        finally:
            self._check()

    def handle_timer(self, now: float) -> Sequence[Outgoing]:
        outgoing = self._probe.handle_timer(now)
        self._check()
        return outgoing

    def next_deadline(self) -> float | None:
        return self._probe.next_deadline()

    def _check(self) -> None:
        if self._probe.done and not self._finished.done():
            self._finished.set_result(None)


async def binding_rtt(server: Address, policy: RetransmitPolicy) -> float | None:
    """Seconds from the first Binding request to its answer, None if none came in time.

    Bounded by ``policy.timeout`` (the core's own give-up time); socket errors
    (e.g. no route) propagate as ``OSError``.
    """
    loop = asyncio.get_running_loop()
    driver = DatagramDriver()
    try:
        await driver.open(("::" if ":" in server[0] else "0.0.0.0", 0), default=True)
        probe = BindingProbe(server, os.urandom(12), policy, loop.time())
        finished: asyncio.Future[None] = loop.create_future()
        driver.start(_Watched(probe, finished))
        driver.send(probe.first())
        # The core times itself out; the margin only covers a late timer callback.
        await asyncio.wait_for(finished, policy.timeout + 1.0)
        return probe.rtt
    finally:
        driver.close()
