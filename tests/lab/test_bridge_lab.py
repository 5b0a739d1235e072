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

The transcoded variant shares the topology (one module-scoped lab, gateway
and bridge): the bridge's calls service takes PCMU or opus, the peer offers
or answers opus only, so the P2P leg is opus while the phone leg stays PCMU;
both directions again, tones by FFT, the phone's audio counted as
transcoded and never passed through.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.audio import read_wav, spectrum
from tests.harness.baresip import finished_recording, wait_registered, write_baresip_config
from tests.harness.netns import Host, Lab, NatType, read_line
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
import dataclasses, os, tempfile
from pathlib import Path
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.bridge import BridgedCallService, BridgeUserAgent, SipP2pBridge
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.sessions.calls import CallConfig

async def offer_lines(hosted):
    # 'OFFER opus,PCMU' on stdin: the codecs, in order, of the calls the bridge places.
    while line := await asyncio.to_thread(sys.stdin.readline):
        codecs = tuple(line.split()[1].split(","))
        hosted.config = dataclasses.replace(hosted.config, audio_codecs=codecs)
        print(json.dumps({"call": "", "what": "offering", "detail": ",".join(codecs)}), flush=True)

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
    # PCMU first (what the bridge offers when it dials); opus when the peer offers only that.
    hosted = BridgedCallService("alice-id", CallConfig(audio_codecs=("PCMU", "opus")), send)
    async with hosted:
        bridge = SipP2pBridge(hosted, ua, "alice", peers={"bob": "peer-id"}.get)
        task = asyncio.ensure_future(bridge.run())
        offers = asyncio.ensure_future(offer_lines(hosted))
        print("READY", f"{gateway.address[0]}:{gateway.address[1]}",
              server.sockets[0].getsockname()[1], alice_password, flush=True)
        while True:
            event = await bridge.events.get()
            print(json.dumps({"call": event.call_id.hex(), "what": event.what,
                              "detail": event.detail}), flush=True)

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

async def main(host, port, record, mode, codec):
    reader, writer = await asyncio.open_connection(host, int(port))
    media = lambda: CallMedia(ToneSource(550.0), Path(record))
    config = CallConfig(audio_codecs=(codec,), auto_answer=mode == "answer")
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
        print("PATH", peer.path(call_id), "CALL", call_id.hex(), flush=True)
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


@dataclass(frozen=True)
class Topology:
    """One lab for the module: the gateway + bridge process and the two NATed hosts."""

    home: Path
    gw: Host
    phone_host: Host
    peer_host: Host
    bridge: subprocess.Popen[str]
    sip_server: str
    signal_port: str
    alice_password: str


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    require_lab_tools()
    require_tool("baresip")
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        home = Path(tmp)
        (home / "bridge.py").write_text(BRIDGE)
        (home / "peer.py").write_text(PEER)
        gw = lab.public_host("gw")
        phone_host = lab.private_host("alice", NatType.PORT_RESTRICTED)
        peer_host = lab.private_host("peer", NatType.FULL_CONE)
        bridge = gw.popen(
            gw.python(str(home / "bridge.py"), gw.addresses[0], str(home)), stdin=subprocess.PIPE
        )
        ready = read_line(bridge, 40).split()
        assert ready[:1] == ["READY"], ready
        yield Topology(home, gw, phone_host, peer_host, bridge, ready[1], ready[2], ready[3])


def bridge_event(topology: Topology, call: str, what: str) -> dict[str, str]:
    """The bridge's next ``what`` event of ``call`` (events of earlier calls are skipped)."""
    while True:
        event: dict[str, str] = json.loads(read_line(topology.bridge, 20))
        if event.get("call") == call and event.get("what") == what:
            return event


def offer_codecs(topology: Topology, codecs: str) -> None:
    """The codecs (in order) the bridge offers when it dials a peer; the answer takes the first."""
    assert topology.bridge.stdin is not None
    topology.bridge.stdin.write(f"OFFER {codecs}\n")
    topology.bridge.stdin.flush()
    assert bridge_event(topology, "", "offering")["detail"] == codecs


def call_id_of(path_line: str) -> str:
    words = path_line.split()
    assert words[:1] == ["PATH"] and "CALL" in words, path_line
    return words[words.index("CALL") + 1]


def counts_of(ended: dict[str, str]) -> dict[str, int]:
    return {k: int(float(v)) for k, v in (item.split("=") for item in ended["detail"].split())}


def peer_calls_phone(topology: Topology, name: str, port: int, codec: str) -> dict[str, int]:
    """The peer dials alice (660 Hz), her baresip answers (440 Hz); both tones checked."""
    home, baresip = topology.home, require_tool("baresip")
    records = baresip_config(
        home / name, topology.phone_host.addresses[0], topology.alice_password,
        topology.sip_server, port,
    )  # fmt: skip
    phone = topology.phone_host.popen(
        [baresip, "-f", str(home / name), "-t", "60"], stdin=subprocess.DEVNULL
    )
    wait_registered(phone)
    peer = topology.peer_host.popen(
        topology.peer_host.python(
            str(home / "peer.py"), topology.gw.addresses[0], topology.signal_port,
            str(home / f"{name}-peer.wav"), "dial", codec,
        )
    )  # fmt: skip
    lines = [read_line(peer, 60) for _ in range(3)]
    assert lines[-1] == "DONE", lines
    assert lines[1].startswith("PATH direct"), lines  # host/prflx pair through the NAT
    ended = bridge_event(topology, call_id_of(lines[1]), "ended")
    assert_tone(home / f"{name}-peer.wav", 440.0)  # the peer heard the phone across both NATs
    assert_tone(finished_recording(records), 660.0)  # the phone heard the peer
    phone.terminate()
    phone.communicate(timeout=10)
    return counts_of(ended)


def phone_calls_peer(topology: Topology, name: str, port: int, codec: str) -> dict[str, int]:
    """A baresip of alice dials bob; the peer answers (550 Hz); the phone's hang-up ends it."""
    home, baresip = topology.home, require_tool("baresip")
    records = baresip_config(
        home / name, topology.phone_host.addresses[0], topology.alice_password,
        topology.sip_server, port,
    )  # fmt: skip
    answerer = topology.peer_host.popen(
        topology.peer_host.python(
            str(home / "peer.py"), topology.gw.addresses[0], topology.signal_port,
            str(home / f"{name}-peer.wav"), "answer", codec,
        )
    )  # fmt: skip
    assert read_line(answerer, 30) == "CONNECTED"
    caller = topology.phone_host.popen(
        [baresip, "-f", str(home / name), "-t", "7", "-e", f"/dial sip:bob@{DOMAIN}"],
        stdin=subprocess.DEVNULL,
    )
    lines = [read_line(answerer, 60) for _ in range(2)]
    assert lines[-1] == "DONE", lines
    ended = bridge_event(topology, call_id_of(lines[0]), "ended")
    caller.communicate(timeout=20)
    assert_tone(home / f"{name}-peer.wav", 440.0)  # the peer heard the calling phone
    assert_tone(finished_recording(records), 550.0)  # the phone heard the peer it dialled
    return counts_of(ended)


def test_peer_behind_nat_calls_baresip_behind_nat_through_the_bridge(
    topology: Topology,
) -> None:
    counts = peer_calls_phone(topology, "baresip", 5060, "PCMU")
    assert counts["passthrough"] > 50 and counts["transcoded"] == 0, counts
    # The reverse: a second baresip of alice dials bob, the P2P login; the peer answers.
    counts = phone_calls_peer(topology, "baresip2", 5062, "PCMU")
    assert counts["passthrough"] > 50 and counts["transcoded"] == 0, counts


def test_opus_p2p_leg_is_transcoded_to_the_pcmu_phone_across_nats_both_ways(
    topology: Topology,
) -> None:
    counts = peer_calls_phone(topology, "baresip3", 5064, "opus")  # the peer offers opus only
    assert counts["transcoded"] > 50 and counts["passthrough"] == 0, counts
    # The bridge dials offering opus only (it would put the phone's PCMU first if listed).
    offer_codecs(topology, "opus")
    try:
        counts = phone_calls_peer(topology, "baresip4", 5066, "opus")
    finally:
        offer_codecs(topology, "PCMU,opus")
    assert counts["transcoded"] > 50 and counts["passthrough"] == 0, counts
