"""A phone that stops refreshing its registration is gone when its Expires runs out.

sipp (3.6.1) plays a desk phone: it registers once (401, MD5 digest, 200) and
exits without ever refreshing. The gateway runs as ``p2pnode run`` hosts it
(``SipService`` with a ``[sip]`` section, ``min_expires = 2`` so the test
waits two seconds, not a minute). When the binding lapses the gateway's
expiry timer (the registrar's next deadline) drops it: the registrar's
listeners hear it (presence), the status/device list no longer shows it, the
counters say so, keep-alive pings stop, and a call to the login gets 480
like any unregistered account. Below ``min_expires`` the phone gets 423.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pnode.app.sip_config import SipSection
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from tests.harness.sipp import register_scenario, sipp_register
from tests.harness.tools import require_tool

pytestmark = pytest.mark.interop

DOMAIN = "gw.test"
MIN_EXPIRES = 2


async def register_once(
    sipp: str, tmp: Path, server: tuple[str, int], password: str, expires: int, answer: int
) -> tuple[int, int]:
    """sipp registers alice once expecting ``answer``; (its exit status, its port)."""
    scenario = tmp / f"register-{expires}.xml"
    scenario.write_text(register_scenario(expires, answer, "register once"))
    return await sipp_register(sipp, scenario, server, "alice", password)


def test_a_registration_sipp_stops_refreshing_expires_on_time(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")

    async def scenario() -> None:
        store = AccountStore(tmp_path / ACCOUNTS_FILE, DOMAIN)
        _, alice_password = store.add("alice", None, randbytes=os.urandom)
        _, bob_password = store.add("bob", None, randbytes=os.urandom)
        store.close()
        section = SipSection.model_validate(
            {"enabled": True, "domain": DOMAIN, "listen": "127.0.0.1:0", "digest": ["MD5"],
             "min_expires": MIN_EXPIRES, "claim_logins": False}
        )  # fmt: skip
        service = SipService(tmp_path, section)
        await service.start()
        gateway = service.gateway
        assert gateway is not None and gateway.address is not None
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        def changed(login: str) -> None:  # what presence listens to
            if login == "alice" and not gateway.registrar.bindings(login, loop.time()):
                gone.set()

        gateway.registrar.listeners.append(changed)
        bob = SipUserAgent("bob", bob_password, DOMAIN, gateway.address)
        await bob.start()
        try:
            brief = MIN_EXPIRES - 1
            too_brief = await register_once(
                sipp, tmp_path, gateway.address, alice_password, brief, 423
            )
            assert too_brief[0] == 0  # 423 Interval Too Brief, as the scenario expects
            assert not gateway.registrar.bindings("alice", loop.time())
            status, port = await register_once(
                sipp, tmp_path, gateway.address, alice_password, MIN_EXPIRES, 200
            )
            assert status == 0
            rows = service.status(loop.time()).registrations
            assert [(r.login, r.source) for r in rows] == [("alice", f"127.0.0.1:{port}")]
            assert gateway.statistics().registered_accounts == 1
            assert len(gateway.pinger.keepalive) == 1
            gone.clear()  # sipp never refreshes: the binding lapses by itself
            await asyncio.wait_for(gone.wait(), 10 * MIN_EXPIRES)
            assert service.status(loop.time()).registrations == ()
            statistics = gateway.statistics()
            assert statistics.registered_accounts == 0 and statistics.bindings_expired == 1
            assert len(gateway.pinger.keepalive) == 0  # no OPTIONS to a phone that left
            with pytest.raises(UaError) as refused:
                await bob.call("alice")
            assert refused.value.status == 480
        finally:
            await bob.close()
            await service.stop()

    asyncio.run(scenario())
