"""The SIP gateway writes the shared fail2ban line (``refused what=sip-auth``).

Loopback, real sockets: two user agents with a wrong password, on 127.0.0.2 and
127.0.0.3, each try to REGISTER twice (below the guard's ban threshold); each
source gets exactly one ``refused what=sip-auth ... source=IP count=1`` line in
the interval, and the right password from 127.0.0.4 gets none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import pytest

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError

DOMAIN = "gw.test"
TRIES = 2  # wrong REGISTERs per source (the guard bans at 5)
LINE = re.compile(r"^refused what=(\S+) reason=(\S+) source=(\S+) count=(\d+)$")


def test_one_refusal_line_per_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_scenario(tmp_path, caplog))


async def _scenario(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="p2pnode.gateways.sip.gateway")
    store = AccountStore(tmp_path / "node.sqlite", DOMAIN)
    _, password = store.add("alice", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig(DOMAIN), store)
    await gateway.start()
    assert gateway.address is not None
    agents = [
        SipUserAgent("alice", "not-the-password", DOMAIN, gateway.address, host=host)
        for host in ("127.0.0.2", "127.0.0.3")
    ]
    agents.append(SipUserAgent("alice", password, DOMAIN, gateway.address, host="127.0.0.4"))
    try:
        for agent in agents:
            await agent.start()
        for agent in agents[:2]:
            for _ in range(TRIES):
                with pytest.raises(UaError) as refused:
                    await agent.register()
                assert refused.value.status == 401
        await agents[2].register()
        assert gateway.statistics().auth_failures == 2 * TRIES
    finally:
        for agent in agents:
            await agent.close()
        await gateway.stop()
    lines = [
        match.groups()
        for record in caplog.records
        if (match := LINE.match(record.getMessage())) is not None
    ]
    assert sorted((what, source, count) for what, _, source, count in lines) == [
        ("sip-auth", "127.0.0.2", "1"),
        ("sip-auth", "127.0.0.3", "1"),
    ]
    assert gateway.refusal_log.total == 2 * TRIES
