"""The bridge across NATs: a P2P peer behind one NAT and baresip behind another call each other.

Topology (netns lab, root): the gateway + bridge process on a public host
(in-process SipGateway with MD5 digest, the bridge's UA registered as ``bob``,
a calls service for alice's P2P identity); baresip ``alice`` behind a
port-restricted NAT (registers its private Contact, auto-answers, 440 Hz
sine, records); the P2P peer behind a full-cone NAT (a calls service, 660 Hz,
records). The two calls services exchange call signals over one TCP
connection the peer opens to the bridge host (a stand-in for the signalling
service: what crosses it is the calls service's own signal bytes). ICE finds
the peer's NATed address by peer-reflexive candidates; the phone's RTP goes
through the gateway's anchor, which latches its NAT binding.

Both recordings must hold the other side's tone (FFT), and PCMU must pass the
bridge untouched. Then the reverse: a second baresip of alice (same NAT)
dials ``bob``, the login the bridge stands for; the bridge calls the peer,
which answers with 550 Hz; the phone's hang-up ends the P2P call.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.harness.audio import read_wav, spectrum
from tests.harness.baresip import finished_recording, wait_registered, write_baresip_config
from tests.harness.netns import Lab, NatType, read_line
from tests.harness.tools import require_tool
from tests.lab.conftest import require_lab_tools

pytestmark = [pytest.mark.lab, pytest.mark.interop, pytest.mark.slow]

DOMAIN = "gw.test"

_COMMON = """
import asyncio, json, sys

async def read_frames(reader, deliver):
    while True:
        line = await reader.readline()
        if not line:
            return
        frame = json.loads(line)
        await deliver(frame["from"], bytes.fromhex(frame["payload"]))

def writer_sender(me, writer):
    async def send(peer, payload):
        writer.write((json.dumps({"from": me, "payload": payload.hex()}) + "\\n").encode())
        await writer.drain()
    return send
"""

BRIDGE = (
    _COMMON
    + """
import os, tempfile
from pathlib import Path
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.sessions.calls import CallConfig

async def main(host, home):
    store = AccountStore(Path(home) / "node.sqlite", "gw.test")
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(
        GatewayConfig("gw.test", host=host, digest_algorithms=(Algorithm.MD5,)), store
    )
    await gateway.start()
    ua = BridgeUserAgent("bob", bob_password, "gw.test", gateway.address, host=host)
    await ua.start()
    await ua.register()
    connected = asyncio.Event()
    links = {}

    async def serve(reader, writer):
        links["writer"] = writer
        connected.set()
        await read_frames(reader, hosted.handle_signal)

    async def send(peer, payload):
        await connected.wait()
        await writer_sender("alice-id", links["writer"])(peer, payload)

    server = await asyncio.start_server(serve, host, 0)
    hosted = BridgedCallService("alice-id", CallConfig(audio_codecs=("PCMU",)), send)
    async with hosted:
        bridge = SipP2pBridge(hosted, ua, "alice", peers={"bob": "peer-id"}.get)
        task = asyncio.ensure_future(bridge.run())
        print("READY", f"{gateway.address[0]}:{gateway.address[1]}",
              server.sockets[0].getsockname()[1], alice_password, flush=True)
        while True:
            event = await bridge.events.get()
            print(json.dumps({"what": event.what, "detail": event.detail}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
)

PEER = (
    _COMMON
    + """
from pathlib import Path
from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService
from p2pnode.sessions.media import ToneSource

async def main(host, port, record, mode):
    reader, writer = await asyncio.open_connection(host, int(port))
    media = lambda: CallMedia(ToneSource(550.0), Path(record))
    config = CallConfig(audio_codecs=("PCMU",), auto_answer=mode == "answer")
    peer = CallService("peer-id", config, writer_sender("peer-id", writer), answer_media=media)
    async with peer:
        pump = asyncio.ensure_future(read_frames(reader, peer.handle_signal))
        print("CONNECTED", flush=True)
        if mode == "dial":
            call_id = await peer.dial("alice-id", CallMedia(ToneSource(660.0), Path(record)))
        else:
            update = await asyncio.wait_for(peer.wait_state(None, {CallState.ANSWERED}), 40)
            call_id = update.call_id
        await asyncio.wait_for(peer.wait_state(call_id, {CallState.ANSWERED}), 30)
        await asyncio.wait_for(peer.wait_first_frame(call_id), 30)
        print("PATH", peer.path(call_id), flush=True)
        if mode == "dial":
            await asyncio.sleep(3.0)
            await peer.hangup(call_id)
        else:  # the phone hangs up; the bridge ends the P2P call
            await asyncio.wait_for(peer.wait_state(call_id, {CallState.HUNG_UP}), 40)
        await asyncio.sleep(0.5)
        pump.cancel()
    print("DONE", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""
)


def baresip_config(directory: Path, ip: str, password: str, server: str, port: int) -> Path:
    return write_baresip_config(
        directory,
        listen=f"{ip}:{port}",
        account=f"alice@{DOMAIN}",
        password=password,
        outbound=server,
    )


def assert_tone(path: Path, expected_hz: float) -> None:
    samples, rate = read_wav(path)
    assert samples.size > rate, f"recording too short: {samples.size / rate:.2f} s"
    found = spectrum(samples[int(0.4 * rate) :], rate)
    assert abs(found.dominant_hz - expected_hz) < 8, found
    assert found.dominance > 10, found


def test_peer_behind_nat_calls_baresip_behind_nat_through_the_bridge() -> None:
    require_lab_tools()
    baresip = require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        home = Path(tmp)
        (home / "bridge.py").write_text(BRIDGE)
        (home / "peer.py").write_text(PEER)
        gw = lab.public_host("gw")
        phone_host = lab.private_host("alice", NatType.PORT_RESTRICTED)
        peer_host = lab.private_host("peer", NatType.FULL_CONE)
        bridge = gw.popen(gw.python(str(home / "bridge.py"), gw.addresses[0], str(home)))
        ready = read_line(bridge, 40).split()
        assert ready[:1] == ["READY"], ready
        sip_server, signal_port, alice_password = ready[1], ready[2], ready[3]
        records = baresip_config(
            home / "baresip", phone_host.addresses[0], alice_password, sip_server, 5060
        )
        phone = phone_host.popen(
            [baresip, "-f", str(home / "baresip"), "-t", "60"], stdin=subprocess.DEVNULL
        )
        wait_registered(phone)
        peer = peer_host.popen(
            peer_host.python(
                str(home / "peer.py"),
                gw.addresses[0],
                signal_port,
                str(home / "peer.wav"),
                "dial",
            )
        )
        lines = [read_line(peer, 60) for _ in range(3)]
        assert lines[-1] == "DONE", lines
        assert lines[1].startswith("PATH direct"), lines  # host/prflx pair through the NAT
        events: list[dict[str, str]] = []
        while not any(e.get("what") == "ended" for e in events):
            events.append(json.loads(read_line(bridge, 20)))
        assert_tone(home / "peer.wav", 440.0)  # the peer heard the phone across both NATs
        assert_tone(finished_recording(records), 660.0)  # the phone heard the peer
        ended = next(e for e in events if e["what"] == "ended")
        counts = dict(item.split("=") for item in ended["detail"].split())
        assert int(counts["passthrough"]) > 50 and int(counts["transcoded"]) == 0, ended
        phone.terminate()
        phone.communicate(timeout=10)

        # The reverse: a second baresip of alice dials bob, the P2P login; the peer answers.
        back = baresip_config(
            home / "baresip2", phone_host.addresses[0], alice_password, sip_server, 5062
        )
        answerer = peer_host.popen(
            peer_host.python(
                str(home / "peer.py"), gw.addresses[0], signal_port, str(home / "peer2.wav"),
                "answer",
            )
        )  # fmt: skip
        assert read_line(answerer, 30) == "CONNECTED"
        caller = phone_host.popen(
            [baresip, "-f", str(home / "baresip2"), "-t", "7", "-e", f"/dial sip:bob@{DOMAIN}"],
            stdin=subprocess.DEVNULL,
        )
        lines = [read_line(answerer, 60) for _ in range(2)]
        assert lines[-1] == "DONE", lines
        caller.communicate(timeout=20)
        assert_tone(home / "peer2.wav", 440.0)  # the peer heard the calling phone
        assert_tone(finished_recording(back), 550.0)  # the phone heard the peer it dialled
