"""The SIP <-> P2P bridge as ``p2pnode run`` hosts it: nodes configured by TOML files only.

Three nodes: H, a serving home; A, the SIP gateway with ``[sip] bridge_hosted
= ["alice"]`` (foreign calls allowed from ``carrier.example`` only), which
either attaches to H (as behind NAT) or serves as its own home (public): the
test runs both; B, a peer attached to H that claims the login ``bob``
(countersigned by a verifier A trusts in ``[enum] trust``) and answers every
call with 660 Hz, recording. Nothing is wired by hand: the bridge service,
its signalling for alice's hosted identity, its calls service and its user
agent are what ``assemble`` builds from the files.

What must hold: alice's phone (our UA, registered at A's gateway) dials
``bob``; B's recording has the phone's 440 Hz and the phone's has B's 660 Hz
(FFT), and the phone's RFC 4733 digit is counted. carol, an account with no
bridge of her own, reaches bob as the gateway's identity and bob's events
name her, verified by the gateway. B calls the login ``alice`` back: it
resolves to the identity the gateway hosts for alice, her phone rings and
answers, and again each side hears the other (550 Hz from B, 440 Hz from the
phone). A stranger's INVITE from another domain is refused 403. Then ``GET
/api/sip/bridge``, the WebSocket stream and ``/metrics`` show the calls by
direction and mode with their codecs, jitter and loss, and the refusal by its
reason. Last, the gateway restarts (a new port): the bridge service follows
it (the node restarts it), the phone reaches bob again, and the totals count
on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.app.config import load_config
from p2pnode.app.homefiles import TOKEN_FILE
from p2pnode.app.peer_calls import CALLS_DIR, CallsNodeService
from p2pnode.app.peer_services import PeerApp
from p2pnode.app.runtime import Assembly, assemble
from p2pnode.app.services import directory_of
from p2pnode.app.sip_bridge import SipBridgeService
from p2pnode.app.sip_service import ACCOUNTS_FILE, SipService
from p2pnode.connectivity.signalling import SignallingService, fetch_contact
from p2pnode.directory.verifiers import countersign
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from p2pnode.identity import Identity
from p2pnode.records import RecordKind
from p2pnode.sessions.call_config import CallMedia, CallUpdate
from p2pnode.sessions.media import ToneSource
from tests.harness.audio import read_wav
from tests.integration.bridge.test_bridge_call_loopback import assert_tone, loopback_ice

pytestmark = pytest.mark.slow

WAIT = 30.0  # a bound on every wait, never a speed assertion
DOMAIN = "gw.test"
T = TypeVar("T")


HOME_TOML = """
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
"""


def gateway_toml(verifier: str, bootstrap: str, home: str, role: str) -> str:
    """The gateway attaches to a home (as behind NAT) or serves as its own (public);
    the bridges' signalling attaches where the node does."""
    homes = f'homes = ["{home}"]' if role == "attach" else ""
    return f"""
[node]
listen = "127.0.0.1:0"
bootstrap = ["{bootstrap}"]

[supernode]
enabled = false
relay_search = false

[control]
port = 0

[metrics]
listen = "127.0.0.1:0"

[enum]
trust = ["{verifier}"]

[presence]
enabled = true
listen = "127.0.0.1:0"
home = "{role}"
{homes}

[sip]
enabled = true
domain = "{DOMAIN}"
listen = "127.0.0.1:0"
digest = ["MD5"]
bridge_hosted = ["alice"]
foreign_domains = ["carrier.example"]
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

[calls]
enabled = true
auto_answer = true
answer_tone = 660.0
record = true
"""


async def until(check: Any, what: str) -> None:
    """Poll ``check()`` (sync or async) until true, bounded by WAIT."""
    async with asyncio.timeout(WAIT):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(home: Path, toml: str) -> AsyncIterator[Assembly]:
    """A node assembled from ``<home>/p2pnode.toml`` alone, running until the block ends."""
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


async def events_of(socket: aiohttp.ClientWebSocketResponse, into: list[dict[str, Any]]) -> None:
    async for message in socket:
        if message.type is aiohttp.WSMsgType.TEXT:
            event = message.json()
            if event["type"] == "SipBridgeEvent":
                into.append(event)


async def relayed_callers(node: Assembly, into: list[CallUpdate]) -> None:
    """The call updates of ``node`` that name a caller relayed by a gateway."""
    with node.node.subscribe() as queue:
        while True:
            event = await queue.get()
            if isinstance(event, CallUpdate) and event.relayed_caller is not None:
                into.append(event)


def hostport(assembly: Assembly) -> str:
    host, port = assembly.dht.address
    return f"{host}:{port}"


def ready(service: SipBridgeService) -> bool:
    built = service.statistics().bridges
    return len(built) == 2 and all(bridge.homes for bridge in built)


def restarts(assembly: Assembly, name: str) -> int:
    return next(s.restarts for s in assembly.node.status() if s.name == name)


async def has_home(assembly: Assembly, key: bytes) -> bool:
    contact = await fetch_contact(assembly.dht.node, key)
    return contact is not None and len(contact.homes) >= 1


def newest_wav(home: Path, after: set[Path]) -> Path:
    fresh = sorted(set((home / CALLS_DIR).glob("*.wav")) - after)
    assert len(fresh) == 1, fresh
    return fresh[0]


async def scenario(root: Path, role: str) -> None:
    verifier = Identity.generate()
    a_home, b_home = root / "a", root / "b"
    a_home.mkdir()
    b_home.mkdir()
    store = AccountStore.open(a_home / ACCOUNTS_FILE, DOMAIN)  # as `p2pnode sip account add`
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, carol_password = store.add("carol", None, randbytes=os.urandom)  # no bridge of her own
    alice_account = store.get("alice")
    assert alice_account is not None
    store.close()
    alice_hosted = identity_of(alice_account).peer_id

    h_home = root / "h"
    h_home.mkdir()
    async with (
        running(h_home, HOME_TOML) as h,
        running(a_home, gateway_toml(verifier.peer_id, hostport(h), h.identity.peer_id, role)) as a,
        running(b_home, peer_toml(hostport(h), h.identity.peer_id)) as b,
    ):
        sip = service(a, "sip", SipService)
        bridges = service(a, "sip-bridge", SipBridgeService)
        assert sip.gateway is not None and sip.gateway.address is not None
        b_signalling = service(b, "signalling", SignallingService)
        await until(b_signalling.homes, "b attached")
        await until(lambda: ready(bridges), "bridges attached")
        for key in (b.identity.public_key, identity_of(alice_account).public_key):
            await until(lambda k=key: has_home(h, k), "contact published with its home")
        # bob's login, countersigned by the verifier node A trusts.
        b_peer = service(b, "peer", PeerApp)
        directory = directory_of(b.dht, frozenset())
        vouched = countersign(
            verifier, RecordKind.NAME_CLAIM, "bob", b.identity.public_key, now=time.time()
        )
        await directory.claim_name(b.identity, "bob", add=[vouched])

        token = (a_home / TOKEN_FILE).read_text().strip()
        assert a.control is not None and a.metrics is not None
        phone = SipUserAgent("alice", alice_password, DOMAIN, sip.gateway.address)
        stranger = SipUserAgent("mallory", "unused", "elsewhere.example", sip.gateway.address)
        carol = SipUserAgent("carol", carol_password, DOMAIN, sip.gateway.address)
        shown: list[CallUpdate] = []  # bob's call updates that name a relayed caller
        seen: list[dict[str, Any]] = []
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{a.control.url}/api/events?token={token}") as socket,
            asyncio.TaskGroup() as tasks,
        ):
            reader = tasks.create_task(events_of(socket, seen))
            watcher = tasks.create_task(relayed_callers(b, shown))
            try:
                for ua in (phone, stranger, carol):
                    await ua.start()
                await phone.register()  # the gateway claims "alice" for her hosted identity
                await carol.register()

                # 1. alice's phone dials the P2P login bob.
                before = set((b_home / CALLS_DIR).glob("*.wav"))
                async with asyncio.timeout(WAIT):
                    outgoing = await phone.call("bob")
                await outgoing.play_tone(440.0, 2.5)  # the P2P leg may still be connecting
                await outgoing.send_dtmf("7")  # RFC 4733, carried to bob as a DTMF signal
                await until(
                    lambda: bridges.statistics().bridges[0].statistics.digits_from_phone,
                    "digit",
                )
                await outgoing.hangup()
                calls_b = service(b, "calls", CallsNodeService)
                await until(lambda: calls_b.statistics().live == 0, "b's call ended")
                heard_by_b = newest_wav(b_home, before)

                # 1b. carol has no bridge of her own: she reaches bob as the gateway, and
                # bob is told it was her, verified by the gateway.
                async with asyncio.timeout(WAIT):
                    by_carol = await carol.call("bob")
                await until(lambda: shown, "carol shown to bob")
                await by_carol.hangup()
                await until(lambda: calls_b.statistics().live == 0, "b's call ended")

                # 2. bob calls the login alice back: her phone rings through the bridge.
                resolved = await b_peer.resolve("alice")
                call_id = await calls_b.service().dial(
                    resolved, CallMedia(ToneSource(550.0), root / "b-dialled.wav")
                )
                async with asyncio.timeout(WAIT):
                    ringing = await phone.incoming.get()
                await ringing.play_tone(440.0, 2.5)
                await calls_b.service().hangup(call_id)
                async with asyncio.timeout(WAIT):
                    await ringing.ended.wait()  # the bridge sent BYE to the phone

                # 3. another network, not on the allow-list.
                with pytest.raises(UaError) as refused:
                    async with asyncio.timeout(WAIT):
                        await stranger.call(f"sip:bob@{DOMAIN}")

                await until(lambda: len(bridges.statistics().recent) == 3, "3 calls ended")
                await until(lambda: sum(e["what"] == "ended" for e in seen) == 3, "ended events")
                auth = {"Authorization": f"Bearer {token}"}
                async with http.get(f"{a.control.url}/api/sip/bridge", headers=auth) as got:
                    assert got.status == 200
                    answer = await got.json()
                async with http.get(f"{a.control.url}/api/openapi.json", headers=auth) as doc:
                    assert "/api/sip/bridge" in (await doc.json())["paths"]
                async with http.get(a.metrics.url) as scraped:
                    metrics = await scraped.text()
                # The operator's view of the same: `p2pnode sip bridge` on the gateway's home.
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "p2pnode", "sip", "bridge", "--home", str(a_home),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                printed, complaint = await asyncio.wait_for(cli.communicate(), 60)
                assert cli.returncode == 0, complaint.decode()
                streamed = list(seen)

                # 5. The gateway restarts (a crash as the node sees it): the bridges follow
                # it, the phone registers again and reaches bob; the totals carry over.
                await sip.stop()
                await sip.start()
                await until(lambda: restarts(a, "sip-bridge") >= 1, "bridge restarted")
                await until(lambda: ready(bridges), "bridges back")
                assert sip.gateway is not None and sip.gateway.address is not None
                phone.server = sip.gateway.address  # listen port 0: a new port
                await phone.register()
                async with asyncio.timeout(WAIT):
                    again = await phone.call("bob")
                await again.play_tone(440.0, 0.3)
                await again.hangup()
                await until(lambda: len(bridges.statistics().recent) == 4, "fourth call")
                after = bridges.statistics()
            finally:
                for ua in (phone, stranger, carol):
                    await ua.close()
                await socket.close()
                await reader
                watcher.cancel()

    assert resolved == alice_hosted  # the login the gateway claims is its hosted identity
    samples, rate = read_wav(heard_by_b)
    assert_tone(samples, rate, 440.0)  # bob heard alice's phone
    assert_tone(outgoing.recording().astype(np.float64) / 32768.0, 8000, 660.0)
    samples, rate = read_wav(root / "b-dialled.wav")
    assert_tone(samples, rate, 440.0)  # bob, calling back, heard the phone
    assert_tone(ringing.recording().astype(np.float64) / 32768.0, 8000, 550.0)
    assert refused.value.status == 403

    gateway_id = answer["bridges"][1]["peer_id"]  # the bridge account's hosted identity
    assert [(u.peer, u.relayed_caller, u.detail) for u in shown[:1]] == [
        (gateway_id, f"sip:carol@{DOMAIN}", "verified by the gateway")
    ]
    # The control API: the calls, each with its direction, codecs, mode, jitter and loss.
    recent = {(call["bridge"], call["direction"]): call for call in answer["recent"]}
    assert set(recent) == {("alice", "from-phone"), ("p2p", "from-phone"), ("alice", "to-phone")}
    for call in recent.values():
        assert call["peer"] == b.identity.peer_id
        assert call["phone_codec"] == "PCMU"
        frames = call["passthrough_frames"] + call["transcoded_frames"]
        if call["bridge"] == "alice":  # the calls where the phone played 2.5 s
            assert frames > 50 and call["packets_from_phone"] > 50, call
            assert call["packets_to_phone"] > 50, call
        mode = "passthrough" if call["webrtc_codec"] == "PCMU" else "transcoded"
        assert call["mode"] == mode, call
        assert call[f"{mode}_frames"] == frames, call
        assert call["lost"] >= 0 and call["jitter_ms"] >= 0.0
    assert answer["refusals"] == {"foreign-domain": 1}, answer
    table = printed.decode()
    assert "bridge account: p2p" in table and "refused: foreign-domain 1" in table, table
    assert table.count(f" {b.identity.peer_id[:24]} ") == 3, table  # the three calls, listed
    assert answer["digits_from_phone"] == 1 and answer["digits_dropped"] == 0, answer
    assert [(b["login"], b["callers"]) for b in answer["bridges"]] == [
        ("alice", "hosted"),
        ("p2p", "others"),
    ]
    assert answer["bridges"][0]["peer_id"] == alice_hosted
    # The WebSocket stream: the same calls, as they happened.
    kinds = [event["what"] for event in streamed]
    for what in ("dialling-peer", "peer-answered", "ringing-phones", "phone-answered"):
        assert what in kinds, kinds
    ended = [event for event in streamed if event["what"] == "ended"]
    assert sorted(event["summary"]["direction"] for event in ended) == [
        "from-phone",
        "from-phone",
        "to-phone",
    ]
    # /metrics: the same numbers as Prometheus families.
    samples_by_name: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            samples_by_name[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    counted: dict[tuple[tuple[str, str], ...], float] = {}
    for call in recent.values():
        series: tuple[tuple[str, str], ...] = (
            ("direction", call["direction"]),
            ("mode", call["mode"]),
        )
        counted[series] = counted.get(series, 0.0) + 1.0
    for series, count in counted.items():
        assert samples_by_name[("p2pnode_sip_bridge_calls_total", series)] == count
    total = sum(
        value
        for (name, labels), value in samples_by_name.items()
        if name == "p2pnode_sip_bridge_calls_total"
    )
    assert total == 3.0
    reason = (("reason", "foreign-domain"),)
    assert samples_by_name[("p2pnode_sip_bridge_refusals_total", reason)] == 1.0
    frames = sum(c["passthrough_frames"] for c in recent.values())
    mode_label = (("mode", "passthrough"),)
    assert samples_by_name[("p2pnode_sip_bridge_frames_total", mode_label)] == frames
    assert samples_by_name[("p2pnode_sip_bridge_active_calls", ())] == 0.0
    # RTCP and texts: the API's counts are the counters; no phone leg is in progress now.
    assert answer["rtcp_sent"] == sum(call["rtcp_sent"] for call in recent.values())
    assert answer["rtcp_received"] == sum(call["rtcp_received"] for call in recent.values())
    for what in ("sent", "received"):
        series = (("what", what),)
        value = samples_by_name[("p2pnode_sip_bridge_rtcp_reports_total", series)]
        assert value == answer[f"rtcp_{what}"]
    assert answer["active"] == []
    for path in ("mux", "separate", "none"):
        assert samples_by_name[("p2pnode_sip_bridge_rtcp_calls", (("path", path),))] == 0.0
    assert samples_by_name[("p2pnode_sip_bridge_round_trip_seconds_gcount", ())] == 0.0
    assert set(answer["texts"]) == {"to-chat", "to-phones", "refused", "failed"}, answer
    for what, count in answer["texts"].items():
        assert samples_by_name[("p2pnode_sip_bridge_texts_total", (("what", what),))] == count
    # After the gateway's restart: counted on top of the first two calls (monotonic).
    assert sum(n for d, _, n in after.calls if d.value == "from-phone") == 3
    assert sum(n for _, _, n in after.calls) == 4
    assert samples_by_name[("p2pnode_sip_bridge_digits_total", (("what", "from-phone"),))] == 1.0


@pytest.mark.parametrize("role", ["attach", "serve"])
def test_a_phone_and_a_peer_call_each_other_through_the_bridge_p2pnode_run_builds(
    tmp_path: Path, role: str
) -> None:
    with loopback_ice():
        asyncio.run(scenario(tmp_path, role))
