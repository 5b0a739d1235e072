"""``binding_rtt`` on loopback: answered by a real StunService, unanswered by a silent socket."""

from __future__ import annotations

import asyncio
import socket

from nat.endpoint import StunService
from nat.probe import binding_rtt
from nat.stun.probe import budget_policy


def test_binding_rtt_against_stun_service_and_silence() -> None:
    async def scenario() -> None:
        async with await StunService.start(("127.0.0.1", 0)) as service:
            rtt = await binding_rtt(service.addresses[0], budget_policy(2.0, 3))
            assert rtt is not None and rtt >= 0.0
            assert service.statistics().responses >= 1
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            assert await binding_rtt(silent.getsockname(), budget_policy(0.3, 2)) is None
        finally:
            silent.close()

    asyncio.run(scenario())
