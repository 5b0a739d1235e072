"""SIP <-> P2P bridge: concurrent bridged calls per core and set-up time, with their anchors.

Calls per core: ``--calls`` concurrent calls run for ``--seconds`` after all
are connected. The far ends (the phones' RTP sockets and the P2P peers'
aiortc connections) run in a CHILD process (``--far-end``), so this process
is the gateway alone: its CPU time (``time.process_time``, every thread) over
wall time, divided by the calls, is the CPU per call; calls per core is its
inverse. Three rows, measured in the same run on loopback:

* ``passthrough``: a plain RTP "phone" sending PCMU at 20 ms -> the bridge's
  phone leg (jitter buffer) -> RTP built on the shared media clock and sent
  through the connection's DTLS-SRTP transport (``DirectRtp``) -> the peer;
  the peer's PCMU RTP is tapped at the bridge's ``RTCRtpReceiver`` (no aiortc
  jitter buffer, decoder thread or track) -> rewritten and paced -> the phone.
  Exactly the binding ``SipP2pBridge`` gives a bridged call
  (``CallMedia(audio=PhoneCallAudio(leg))``).
* ``transcoded``: the same with opus on the WebRTC leg (decoded, resampled,
  re-encoded both ways).
* ``cross`` (only with ``--phone-codec PCMA``, ``G722`` or ``opus``): that
  phone against a PCMU WebRTC leg, transcoded both ways: what the bridge
  negotiated for such a phone before the P2P leg took the phone's codec (an
  opus phone when the peer offered PCMU first); its ``passthrough`` row is
  what it negotiates now. With ``opus`` phones there is no ``transcoded``
  row (opus on both legs is ``passthrough``).
* ``aiortc`` (the anchor): one plain aiortc PCMU call leg per call in this
  process (a tone source sending, the received track drained), the same far
  end: what a P2P node pays for one call side with no bridge.

``--breakdown`` adds two rows to split a passthrough call's CPU: ``connected``
(the connections up, no media either way: ICE consent, DTLS, RTCP, idle
tasks) and ``phone_to_peer`` (the phone talks, the peer is silent); the
differences give each direction's cost.

The far ends count what they received (frames at the peer, packets at the
phone, per second per call): the rows only count if media flowed both ways.

Set-up time (``setup_p50_ms``): the phone's INVITE (our SIP UA registered as
alice, dialling bob's login at the gateway) to the first audio frame at bob's
P2P calls service, through the real gateway and the bridge, all in this
process. The floor (``floor_ms``) is a plain P2P call between two calls
services on the same loopback: dial to the callee's first frame.

Only 2 cores are shared by 8 engineers while this runs: figures are indicative.

    flock /tmp/bench.lock .venv/bin/python benchmarks/sip_bridge.py --calls 10 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.codecs.g711 import PcmaEncoder, PcmuEncoder  # noqa: E402
from aiortc.codecs.g722 import G722Encoder  # noqa: E402
from aiortc.codecs.opus import OpusEncoder  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402

from p2pnode.gateways.sip.accounts import AccountStore  # noqa: E402
from p2pnode.gateways.sip.bridge import (  # noqa: E402
    BridgedCallService,
    BridgeUserAgent,
    SipP2pBridge,
)
from p2pnode.gateways.sip.bridge_media import (  # noqa: E402
    BridgeCodec,
    PhoneReceiver,
    PhoneSender,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneCallAudio, PhoneRtpLeg  # noqa: E402
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway  # noqa: E402
from p2pnode.gateways.sip.rtp import RtpPacket  # noqa: E402
from p2pnode.gateways.sip.useragent import SipUserAgent  # noqa: E402
from p2pnode.sessions.call import CallState  # noqa: E402
from p2pnode.sessions.call_legs import first_codec  # noqa: E402
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService  # noqa: E402
from p2pnode.sessions.media import SourceTrack, ToneSource  # noqa: E402
from tests.integration.bridge.test_bridge_media_loopback import (  # noqa: E402
    loopback_ice,
    prefer,
    tone_frame,
)

MAX_CALLS = 100
FULL_RATE = 45.0  # packets/s per call and direction below which a row's CPU is undercounted
MAX_SECONDS = 20.0
# --phone-codec: RFC 3551 static types; opus as the bridge's own offer names it (PT_OPUS)
PHONE_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9, "opus": 111}


# ------------------------------------------------------------------ far end


@dataclass
class FarEnd:
    """The child process: phones and P2P peers, as cheap as they can be.

    The peers send pre-encoded packets (PCMU or opus, a 660 Hz cycle) and count
    the RTP packets they receive at the receiver, without decoding, so the
    far end keeps up with many calls on a loaded machine.
    """

    pcs: list[RTCPeerConnection] = field(default_factory=list)
    phones: list[tuple[asyncio.DatagramTransport, tuple[str, int]]] = field(default_factory=list)
    phone_packets: list[int] = field(default_factory=lambda: [0])
    peer_packets: list[int] = field(default_factory=lambda: [0])
    payloads: list[bytes] = field(default_factory=list)
    encoded: dict[str, list[bytes]] = field(default_factory=dict)


class _Counter(asyncio.DatagramProtocol):
    def __init__(self, counter: list[int]) -> None:
        self._counter = counter

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._counter[0] += 1


class _SilentTrack(MediaStreamTrack):
    """A sending track that never yields a frame: the connection carries no media."""

    kind = "audio"

    async def recv(self) -> av.AudioFrame:
        await asyncio.get_running_loop().create_future()  # until the connection closes
        raise MediaStreamError


class _PacketTrack(MediaStreamTrack):
    """Pre-encoded audio handed to aiortc as ``av.Packet`` every 20 ms."""

    kind = "audio"

    def __init__(self, payloads: list[bytes], rate: int) -> None:
        super().__init__()
        self._payloads = payloads
        self._step = rate // 50
        self._time_base = fractions.Fraction(1, rate)
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet[Any]:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + 0.02 * self._index - loop.time()))
        packet = av.Packet(self._payloads[self._index % len(self._payloads)])
        packet.pts = self._index * self._step
        packet.time_base = self._time_base
        self._index += 1
        return packet


def _encoded_tones(hz: float = 660.0) -> dict[str, list[bytes]]:
    """One second of ``hz`` in PCMU, PCMA, G.722 (8 kHz in) and opus (48 kHz), 20 ms a payload."""
    eight = {"audio/PCMU": PcmuEncoder(), "audio/PCMA": PcmaEncoder(), "audio/G722": G722Encoder()}
    opus = OpusEncoder()
    out: dict[str, list[bytes]] = {name: [] for name in (*eight, "audio/opus")}
    for index in range(50):
        for name, encoder in eight.items():
            out[name] += encoder.encode(tone_frame(hz, index * 160, 160, 8000))[0]
        out["audio/opus"] += opus.encode(tone_frame(hz, index * 960, 960, 48_000))[0]
    return out


def _count_rtp(pc: RTCPeerConnection, counter: list[int]) -> None:
    """Count the peer's received RTP at the receiver instead of decoding it (benchmark only)."""

    async def count(packet: Any, arrival_time_ms: int = 0) -> None:
        counter[0] += 1

    for receiver in pc.getReceivers():
        receiver._handle_rtp_packet = count  # type: ignore[method-assign]


async def _drain(track: MediaStreamTrack, counter: list[int]) -> None:
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
        counter[0] += 1


async def _phones_tick(far: FarEnd, payload_type: int, step: int) -> None:
    """One 20 ms ticker sends every phone's next packet (a 440 Hz cycle, ``step`` per 20 ms)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    index = 0
    while True:
        payload = far.payloads[index % len(far.payloads)]
        for transport, target in far.phones:
            timestamp = (index * step) & 0xFFFFFFFF
            packet = RtpPacket(payload_type, index & 0xFFFF, timestamp, 0x5EED, payload)
            transport.sendto(packet.encode(), target)
        index += 1
        await asyncio.sleep(max(0.0, start + 0.02 * index - loop.time()))


async def far_end(phone_codec: str) -> None:
    """Answer the gateway's offers (one JSON line each) until told to stop; report counts."""
    loop = asyncio.get_running_loop()
    far = FarEnd(encoded=_encoded_tones())
    far.payloads = _encoded_tones(440.0)[f"audio/{phone_codec}"]  # 1 s, looped
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def counts() -> None:
        print(json.dumps({"peer": far.peer_packets[0], "phone": far.phone_packets[0]}))
        sys.stdout.flush()

    async with asyncio.TaskGroup() as group:
        step = BridgeCodec(phone_codec).frame_samples
        ticker = group.create_task(_phones_tick(far, PHONE_TYPES[phone_codec], step))
        while True:
            line = await reader.readline()
            if not line:
                break
            order = json.loads(line)
            if order["cmd"] == "count":
                counts()
                continue
            if order["cmd"] == "stop":
                ticker.cancel()
                for transport, _ in far.phones:
                    transport.close()
                for pc in far.pcs:
                    await pc.close()
                counts()
                break
            codec = first_codec(order["offer"]) or "audio/PCMU"
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            far.pcs.append(pc)
            rate = 48_000 if codec == "audio/opus" else 8000
            sends = order["peer_sends"]
            pc.addTrack(_PacketTrack(far.encoded[codec], rate) if sends else _SilentTrack())
            await pc.setRemoteDescription(RTCSessionDescription(order["offer"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            _count_rtp(pc, far.peer_packets)
            reply: dict[str, Any] = {"answer": pc.localDescription.sdp}
            if order["phone"] is not None:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Counter(far.phone_packets), local_addr=("127.0.0.1", 0)
                )
                far.phones.append((transport, tuple(order["phone"])))
                reply["phone_at"] = transport.get_extra_info("sockname")[:2]
            print(json.dumps(reply))
            sys.stdout.flush()


# ------------------------------------------------------------------ gateway


async def _ask(child: asyncio.subprocess.Process, order: dict[str, Any]) -> dict[str, Any]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write((json.dumps(order) + "\n").encode())
    await child.stdin.drain()
    line = await asyncio.wait_for(child.stdout.readline(), 30)
    reply: dict[str, Any] = json.loads(line)
    return reply


async def _bridge_leg(
    pc: RTCPeerConnection, webrtc: BridgeCodec, legs: list[PhoneRtpLeg], phone: BridgeCodec
) -> tuple[PhoneCallAudio, tuple[str, int]]:
    """What SipP2pBridge builds for one call: the phone leg and its WebRTC binding."""
    payload_type = PHONE_TYPES[phone.value]
    receiver = PhoneReceiver(audio_type=payload_type, clock_rate=phone.clock_rate)
    sender = PhoneSender(
        ssrc=1,
        payload_type=payload_type,
        first_sequence=0,
        first_timestamp=0,
        samples_per_frame=phone.frame_samples,
    )
    leg = PhoneRtpLeg(receiver, sender, phone)  # latches on the phone's first packet
    address = await leg.open()
    legs.append(leg)
    audio = PhoneCallAudio(leg)
    pc.addTrack(audio.track())
    prefer(pc, f"audio/{webrtc.value}")
    return audio, address


async def media_load(
    mode: str,
    calls: int,
    seconds: float,
    settle: float,
    phone_codec: BridgeCodec = BridgeCodec.PCMU,
) -> dict[str, float]:
    """CPU per call of this process for ``calls`` concurrent calls of ``mode``."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--far-end", "--phone-codec", phone_codec.value,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    pcs: list[RTCPeerConnection] = []
    legs: list[PhoneRtpLeg] = []
    bindings: list[PhoneCallAudio] = []
    frames = [0]
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(calls):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                phone: tuple[str, int] | None = None
                if mode == "aiortc":
                    pc.addTrack(SourceTrack(ToneSource(440.0)))
                    prefer(pc, "audio/PCMU")
                    pc.on("track", lambda t: group.create_task(_drain(t, frames)))
                elif mode == "connected":  # connections up, no media either way
                    pc.addTrack(_SilentTrack())
                    prefer(pc, "audio/PCMU")
                else:
                    webrtc = {"transcoded": BridgeCodec.OPUS, "cross": BridgeCodec.PCMU}.get(
                        mode, phone_codec
                    )
                    audio, phone = await _bridge_leg(pc, webrtc, legs, phone_codec)
                    bindings.append(audio)
                    pc.on("track", functools.partial(_bind, group, pc, audio))
                await pc.setLocalDescription(await pc.createOffer())
                order = {
                    "cmd": "call",
                    "offer": pc.localDescription.sdp,
                    "phone": phone,
                    "peer_sends": mode not in ("connected", "phone_to_peer"),
                }
                reply = await _ask(child, order)  # fmt: skip
                await pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
            await asyncio.sleep(settle)  # ICE, DTLS, first frames
            cpu0, wall0 = time.process_time(), time.monotonic()
            far0, ours0 = await _counts(child), _ours(legs, bindings)
            await asyncio.sleep(seconds)
            far1, ours1 = await _counts(child), _ours(legs, bindings)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            for leg in legs:
                leg.close()
            for pc in pcs:
                await pc.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    passthrough = sum(b.statistics().passthrough_frames for b in bindings)
    return {
        "cpu_per_call": cpu / wall / calls,
        "peer_packets_per_s_per_call": (far1["peer"] - far0["peer"]) / wall / calls,
        "phone_packets_per_s_per_call": (far1["phone"] - far0["phone"]) / wall / calls,
        "passthrough_frames": float(passthrough),
        "sent_to_peer_per_s_per_call": (ours1[0] - ours0[0]) / wall / calls,
        "sent_to_phone_per_s_per_call": (ours1[1] - ours0[1]) / wall / calls,
    }


def _full_rate(mode: str, row: dict[str, float]) -> bool:
    """Whether media flowed at ~50 packets/s each way the row sends (else CPU is undercounted)."""
    rates = [row["peer_packets_per_s_per_call"]]
    if mode not in ("aiortc", "connected"):
        rates.append(row["sent_to_peer_per_s_per_call"])
    if mode not in ("aiortc", "connected", "phone_to_peer"):
        rates.append(row["phone_packets_per_s_per_call"])
    if mode == "connected":
        return True
    return min(rates) >= FULL_RATE


def _parts(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per-call CPU of each part of a passthrough call, from the ablation rows."""
    idle = rows["connected"]["cpu_per_call"]
    one_way = rows["phone_to_peer"]["cpu_per_call"]
    full = rows["passthrough"]["cpu_per_call"]
    return {
        "connected: ICE consent, DTLS, RTCP, idle tasks": idle,
        "phone -> peer: RTP in, jitter buffer, DirectRtp, SRTP, send": one_way - idle,
        "peer -> phone: SRTP, RTP tap, rewrite, pacing, RTP out": full - one_way,
    }


def _ours(legs: list[PhoneRtpLeg], bindings: list[PhoneCallAudio]) -> tuple[int, int]:
    """(frames this process handed to the peers, packets it sent to the phones) so far."""
    to_peer = 0
    for binding in bindings:
        counts = binding.statistics()
        to_peer += counts.passthrough_frames + counts.transcoded_frames + counts.silence_frames
    return to_peer, sum(leg.sender.sent for leg in legs)


def _bind(
    group: asyncio.TaskGroup, pc: RTCPeerConnection, audio: PhoneCallAudio, track: MediaStreamTrack
) -> None:
    """What the calls service does with a bridged call's incoming track (CallMedia.audio)."""
    transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
    audio.negotiated(_codec(pc))
    group.create_task(audio.receive(track, transceiver, lambda: True))


def _codec(pc: RTCPeerConnection) -> str | None:
    description = pc.remoteDescription or pc.localDescription
    return first_codec(description.sdp) if description is not None else None


async def _counts(child: asyncio.subprocess.Process) -> dict[str, int]:
    return await _ask(child, {"cmd": "count"})


async def setup_times(runs: int, tmp: Path) -> tuple[list[float], list[float]]:
    """(bridged: phone INVITE -> peer's first frame, floor: P2P dial -> callee's first frame)."""
    store = AccountStore(tmp / "node.sqlite", "gw.test")
    _, alice_password = store.add("alice", None, randbytes=os.urandom)
    _, bob_password = store.add("bob", None, randbytes=os.urandom)
    gateway = SipGateway(GatewayConfig("gw.test"), store)
    await gateway.start()
    assert gateway.address is not None
    phone = SipUserAgent("alice", alice_password, "gw.test", gateway.address)
    bridge_ua = BridgeUserAgent("bob", bob_password, "gw.test", gateway.address)
    queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {
        name: asyncio.Queue() for name in ("alice", "peer", "floor")
    }
    services: dict[str, CallService] = {}

    def sender(me: str):  # type: ignore[no-untyped-def]
        async def send(peer: str, payload: bytes) -> None:
            queues[peer].put_nowait((me, payload))

        return send

    async def pump(me: str) -> None:
        while True:
            origin, payload = await queues[me].get()
            await services[me].handle_signal(origin, payload)

    config = CallConfig(audio_codecs=("PCMU",))
    answering = CallConfig(audio_codecs=("PCMU",), auto_answer=True)
    bridged: list[float] = []
    floor: list[float] = []
    try:
        for ua in (phone, bridge_ua):
            await ua.start()
            await ua.register()
        hosted = BridgedCallService("alice", config, sender("alice"))
        async with (
            hosted,
            CallService(
                "peer", answering, sender("peer"),
                answer_media=lambda: CallMedia(ToneSource(550.0)),
            ) as peer,
            CallService("floor", config, sender("floor")) as floor_caller,
            asyncio.TaskGroup() as group,
        ):  # fmt: skip
            services.update({"alice": hosted, "peer": peer, "floor": floor_caller})
            tasks = [group.create_task(pump(name)) for name in queues]
            bridge = SipP2pBridge(hosted, bridge_ua, "alice", peers={"bob": "peer"}.get)
            tasks.append(group.create_task(bridge.run()))
            for _ in range(runs):
                start = time.monotonic()
                call = await asyncio.wait_for(phone.call("bob"), 15)
                update = await asyncio.wait_for(peer.wait_state(None, {CallState.ANSWERED}), 15)
                first = await asyncio.wait_for(peer.wait_first_frame(update.call_id), 15)
                bridged.append((first - start) * 1000)
                await call.hangup()
                await asyncio.wait_for(peer.wait_state(update.call_id, {CallState.HUNG_UP}), 15)
                start = time.monotonic()
                call_id = await floor_caller.dial("peer", CallMedia(ToneSource(440.0)))
                await asyncio.wait_for(peer.wait_state(call_id, {CallState.ANSWERED}), 15)
                first = await asyncio.wait_for(peer.wait_first_frame(call_id), 15)
                floor.append((first - start) * 1000)
                await floor_caller.hangup(call_id)
                await asyncio.wait_for(peer.wait_state(call_id, {CallState.HUNG_UP}), 15)
            for task in tasks:
                task.cancel()
    finally:
        await phone.close()
        await bridge_ua.close()
        await gateway.stop()
    return bridged, floor


async def main(
    calls: int,
    seconds: float,
    runs: int,
    settle: float,
    breakdown: bool,
    phone_codec: BridgeCodec = BridgeCodec.PCMU,
) -> None:
    rows = {}
    modes = ["aiortc", "passthrough"]
    if phone_codec is not BridgeCodec.OPUS:
        modes.append("transcoded")
    if phone_codec is not BridgeCodec.PCMU:
        modes.append("cross")
    if breakdown:
        modes += ["connected", "phone_to_peer"]
    for mode in modes:
        rows[mode] = await media_load(mode, calls, seconds, settle, phone_codec)
    with tempfile.TemporaryDirectory() as tmp:
        bridged, floor = await setup_times(runs, Path(tmp))
    print(f"gateway process only; the phones ({phone_codec.value}) and peers in a child process")
    print(
        f"{'row':<12} {'calls':>5} {'cpu/call %':>10} {'calls/core':>10} "
        f"{'peer pkts/s':>13} {'phone pkts/s':>12} {'sent peer/s':>11} {'sent phone/s':>12}"
    )
    for mode, row in rows.items():
        per_core = 1 / row["cpu_per_call"] if row["cpu_per_call"] else float("inf")
        print(
            f"{mode:<12} {calls:>5} {100 * row['cpu_per_call']:>10.2f} {per_core:>10.1f} "
            f"{row['peer_packets_per_s_per_call']:>13.1f} "
            f"{row['phone_packets_per_s_per_call']:>12.1f} "
            f"{row['sent_to_peer_per_s_per_call']:>11.1f} "
            f"{row['sent_to_phone_per_s_per_call']:>12.1f}"
        )
    print("(peer pkts/s, phone pkts/s: counted by the far end; sent: by this process)")
    short = [mode for mode, row in rows.items() if not _full_rate(mode, row)]
    if short:
        print(f"NOT AT FULL RATE (< {FULL_RATE:.0f}/s somewhere, figure too high): {short}")
    setup_p50 = statistics.median(bridged)
    floor_p50 = statistics.median(floor)
    print(f"set-up phone INVITE -> peer first frame: p50 {setup_p50:.1f} ms over {runs} calls")
    print(f"floor (P2P dial -> callee first frame):  p50 {floor_p50:.1f} ms")
    parts = _parts(rows) if breakdown else {}
    if parts:
        print("a passthrough call's CPU by part (differences of rows, % of a core per call):")
        for label, share in parts.items():
            print(f"  {label:<58} {100 * share:5.2f} %")
    print("2 shared cores, 8 engineers: indicative figures")
    result = {
        "passthrough_calls_per_core": round(1 / rows["passthrough"]["cpu_per_call"], 1),
        "transcoded_calls_per_core": (
            round(1 / rows["transcoded"]["cpu_per_call"], 1) if "transcoded" in rows else None
        ),
        "aiortc_calls_per_core": round(1 / rows["aiortc"]["cpu_per_call"], 1),
        # Only a meaningful ratio when the anchor's media flowed at full rate.
        "passthrough_vs_aiortc": (
            round(rows["aiortc"]["cpu_per_call"] / rows["passthrough"]["cpu_per_call"], 2)
            if _full_rate("aiortc", rows["aiortc"])
            else None
        ),
        "passthrough_frames": rows["passthrough"]["passthrough_frames"],
        "passthrough_peer_packets_per_s": round(
            rows["passthrough"]["peer_packets_per_s_per_call"], 1
        ),
        "passthrough_phone_packets_per_s": round(
            rows["passthrough"]["phone_packets_per_s_per_call"], 1
        ),
        "passthrough_sent_to_phone_per_s": round(
            rows["passthrough"]["sent_to_phone_per_s_per_call"], 1
        ),
        "phone_codec": phone_codec.value,
        "cross_calls_per_core": (
            round(1 / rows["cross"]["cpu_per_call"], 1) if "cross" in rows else None
        ),
        "passthrough_vs_cross": (
            round(rows["cross"]["cpu_per_call"] / rows["passthrough"]["cpu_per_call"], 2)
            if "cross" in rows
            else None
        ),
        "full_rate": {mode: _full_rate(mode, row) for mode, row in rows.items()},
        "setup_p50_ms": round(setup_p50, 1),
        "floor_ms": round(floor_p50, 1),
        "setup_vs_floor": round(setup_p50 / floor_p50, 2),
        "calls": calls,
        "seconds": seconds,
    }
    for label, share in parts.items():
        result["part_" + label.split(":")[0].replace(" ", "_").replace("->", "to")] = round(
            100 * share, 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=1.5, help="seconds before measuring")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="two more rows (connections only; phone -> peer only): a passthrough call by part",
    )
    parser.add_argument(
        "--phone-codec",
        choices=sorted(PHONE_TYPES),
        default="PCMU",
        help="the phones' codec; not PCMU adds the 'cross' row (that phone vs a PCMU P2P leg)",
    )
    parser.add_argument("--far-end", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with loopback_ice(), contextlib.suppress(KeyboardInterrupt):
        if args.far_end:
            asyncio.run(far_end(args.phone_codec))
        else:
            asyncio.run(
                main(
                    min(args.calls, MAX_CALLS),
                    min(args.seconds, MAX_SECONDS),
                    min(args.runs, 20),
                    min(args.settle, 10.0),
                    args.breakdown,
                    BridgeCodec(args.phone_codec),
                )
            )
