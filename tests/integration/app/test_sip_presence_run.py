"""A hosted identity's presence follows its phones' registrations, as ``p2pnode run`` builds it.

Two nodes configured by TOML files only: A, the SIP gateway serving as its
own home, with the accounts ``alice`` (``bridge_hosted``: a bridge with its own
signalling speaks as her hosted identity) and ``dave`` (no bridge); B, a peer
attached to A. Our SIP user agent registers as dave: B's DHT lookup of dave's
hosted identity's PRESENCE record says online; it unregisters (Expires: 0):
offline, with a higher seq; it registers again: online, higher again. alice's
phone is not registered yet and B, watching her hosted identity through its
home, is told "offline"; it registers: "online", live; it unregisters:
"offline" again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from p2pnode.app.config import load_config
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.connectivity.contact import PRESENCE_SUBJECT, PresenceStatus
from p2pnode.connectivity.resolve import fetch_presence
from p2pnode.connectivity.signalling import SignallingService
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import SipUserAgent
from p2pnode.identity import Identity
from p2pnode.records import RecordKind, record_key
from tests.integration.bridge.test_bridge_call_loopback import loopback_ice

pytestmark = pytest.mark.slow

WAIT = 30.0  # a bound on every wait, never a speed assertion
DOMAIN = "gw.test"
T = TypeVar("T")

GATEWAY_TOML = f"""
[node]
listen = "127.0.0.1:0"

[supernode]
enabled = false
relay_search = false

[control]
enabled = false

[presence]
enabled = true
listen = "127.0.0.1:0"
home = "serve"

[sip]
enabled = true
domain = "{DOMAIN}"
listen = "127.0.0.1:0"
digest = ["MD5"]
bridge_hosted = ["alice"]
"""


def peer_toml(bootstrap: str, home: str) -> str:
    return f"""
[node]
listen = "127.0.0.1:0"
bootstrap = ["{bootstrap}"]

[supernode]
enabled = false
relay_search = false

[control]
enabled = false

[presence]
enabled = true
listen = "127.0.0.1:0"
home = "attach"
homes = ["{home}"]
"""


async def until(check: Any, what: str) -> Any:
    """Poll ``check()`` (sync or async) until truthy, bounded by WAIT; returns its value."""
    async with asyncio.timeout(WAIT):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running(home: Path, toml: str) -> AsyncIterator[Assembly]:
    path = home / "p2pnode.toml"
    path.write_text(toml)
    assembly = assemble(home, load_config(path), Identity.load_or_create(home))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(assembly.node.run(stop))
        try:
            async with asyncio.timeout(WAIT):
                await assembly.node.ready.wait()
            yield assembly
        finally:
            stop.set()


def service(assembly: Assembly, name: str, kind: type[T]) -> T:
    found = assembly.node.service(name)
    assert isinstance(found, kind), name
    return found


def hostport(assembly: Assembly) -> str:
    host, port = assembly.dht.address
    return f"{host}:{port}"


async def newest_seq(node: Assembly, key: bytes) -> int:
    result = await node.dht.node.get(record_key(RecordKind.PRESENCE, key, PRESENCE_SUBJECT))
    return max((r.seq for r in result.records if r.owner == key), default=-1)


async def scenario(root: Path) -> None:
    a_home, b_home = root / "a", root / "b"
    a_home.mkdir()
    b_home.mkdir()
    store = AccountStore.open(a_home / ACCOUNTS_FILE, DOMAIN)  # as `p2pnode sip account add`
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, dave_password = store.add("dave", None, randbytes=os.urandom)
    alice, dave = store.get("alice"), store.get("dave")
    assert alice is not None and dave is not None
    store.close()
    alice_key, dave_key = identity_of(alice).public_key, identity_of(dave).public_key

    async with (
        running(a_home, GATEWAY_TOML) as a,
        running(b_home, peer_toml(hostport(a), a.identity.peer_id)) as b,
    ):
        sip = service(a, "sip", SipService)
        assert sip.gateway is not None and sip.gateway.address is not None
        b_signalling = service(b, "signalling", SignallingService)
        await until(b_signalling.homes, "b attached")

        # dave: no bridge, the DHT record alone.
        phone = SipUserAgent("dave", dave_password, DOMAIN, sip.gateway.address)
        await phone.start()
        try:
            assert await fetch_presence(b.dht.node, dave_key) is None  # nothing published yet
            assert (await phone.register(expires=300)).status == 200
            await until(lambda: _is(dave_key, b, PresenceStatus.ONLINE), "dave online")
            online_seq = await newest_seq(b, dave_key)
            assert (await phone.register(expires=0)).status == 200  # the last binding goes
            await until(lambda: _is(dave_key, b, PresenceStatus.OFFLINE), "dave offline")
            offline_seq = await newest_seq(b, dave_key)
            assert offline_seq > online_seq
            assert (await phone.register(expires=300)).status == 200
            await until(lambda: _is(dave_key, b, PresenceStatus.ONLINE), "dave online again")
            assert await newest_seq(b, dave_key) > offline_seq
        finally:
            await phone.close()

        # alice: her bridge's signalling tells B, watching her hosted identity, live.
        await until(lambda: b_signalling.watch(alice_key), "alice's CONTACT found")
        # no phone yet: offline (not the default "online" of an attached identity)
        await until(lambda: _watched(b_signalling, alice_key) == "offline", "alice offline")
        phone = SipUserAgent("alice", alice_password, DOMAIN, sip.gateway.address)
        await phone.start()
        try:
            assert (await phone.register(expires=300)).status == 200
            await until(lambda: _watched(b_signalling, alice_key) == "online", "alice online")
            assert (await phone.register(expires=0)).status == 200
            await until(lambda: _watched(b_signalling, alice_key) == "offline", "alice gone")
        finally:
            await phone.close()


async def _is(key: bytes, node: Assembly, status: PresenceStatus) -> bool:
    presence = await fetch_presence(node.dht.node, key)
    return presence is not None and presence.status is status


def _watched(signalling: SignallingService, key: bytes) -> str:
    report = signalling.presence_of(key)
    return "" if report is None else report.status


def test_a_hosted_identity_is_online_while_a_phone_is_registered(tmp_path: Path) -> None:
    with loopback_ice():
        asyncio.run(scenario(tmp_path))
