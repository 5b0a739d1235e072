"""DirectRtp and its in-place coroutine stepping, without a network.

The sender and transport here are stand-ins with aiortc's attribute names
(the real ones are driven end to end in
tests/integration/bridge/test_bridge_fastpath_loopback.py); what is checked
is ours: the RTP header we build (RFC 3550 §5.1; the MID extension of RFC
8843 when negotiated), pacing by the frame source, nothing sent before the
transport is connected or after retiring, and that a send which does wait
still completes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from p2pnode.gateways.sip.bridge_direct import DirectRtp, step

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


@dataclass
class Frames:
    """A frame source: ``due`` frames at 160 bytes (20 ms of G.711)."""

    due_count: int = 0
    taken: int = 0

    def due(self, now: float, slack: float = 0.005) -> bool:
        return self.due_count > 0

    def take(self, now: float) -> tuple[bytes, int]:
        self.due_count -= 1
        pts = self.taken * 160
        self.taken += 1
        return bytes([self.taken]) * 160, pts


@dataclass
class Transport:
    state: str = "connected"
    sent: list[bytes] = field(default_factory=list)

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


class Sender:
    def __init__(self, transport: Transport, *, mid: str | None, started: bool = True) -> None:
        self.transport = transport
        self._ssrc = 0xABCDEF01
        mapping = HeaderExtensionsMap()
        mapping.configure(
            RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(1, MID_URI)])
        )
        self._RTCRtpSender__rtp_header_extensions_map = mapping
        self._RTCRtpSender__mid = mid
        self._RTCRtpSender__started = started


def test_packets_carry_our_header_the_mid_and_the_source_s_pacing() -> None:
    transport = Transport()
    frames = Frames(due_count=3)
    direct = DirectRtp(frames, Sender(transport, mid="0"), payload_type=0)
    direct.tick(1.0)
    assert frames.due_count == 0 and direct.sent == 3
    packets = [RtpPacket.parse(data, _mid_map()) for data in transport.sent]
    assert [p.payload_type for p in packets] == [0, 0, 0]
    assert [p.ssrc for p in packets] == [0xABCDEF01] * 3
    assert [p.marker for p in packets] == [1, 0, 0]  # the first packet of the stream
    assert [p.extensions.mid for p in packets] == ["0", "0", "0"]
    first = packets[0]
    assert [(p.sequence_number - first.sequence_number) & 0xFFFF for p in packets] == [0, 1, 2]
    assert [(p.timestamp - first.timestamp) & 0xFFFFFFFF for p in packets] == [0, 160, 320]
    assert [p.payload for p in packets] == [bytes([n]) * 160 for n in (1, 2, 3)]
    # aiortc's sender reports read these counters.
    assert direct._sender._RTCRtpSender__packet_count == 3


def test_no_mid_negotiated_gives_a_plain_header() -> None:
    transport = Transport()
    DirectRtp(Frames(due_count=1), Sender(transport, mid=None), payload_type=8).tick(1.0)
    (data,) = transport.sent
    first, second = struct.unpack_from("!BB", data)
    assert first == 0x80 and second == 0x80 | 8  # version 2, no extension; marker, PCMA
    assert len(data) == 12 + 160


def test_nothing_goes_before_dtls_or_before_aiortc_started_the_sender_or_after_retiring() -> None:
    transport = Transport(state="connecting")
    frames = Frames(due_count=2)
    direct = DirectRtp(frames, Sender(transport, mid="0"), payload_type=0)
    direct.tick(1.0)
    assert transport.sent == [] and frames.due_count == 2  # the jitter buffer keeps them
    transport.state = "connected"
    unstarted = DirectRtp(frames, Sender(transport, mid="0", started=False), payload_type=0)
    unstarted.tick(1.0)
    assert transport.sent == [] and frames.due_count == 2
    direct.retire()
    direct.tick(1.0)
    assert transport.sent == [] and frames.due_count == 2


def test_step_runs_in_place_and_resumes_a_send_that_waits() -> None:
    async def run() -> tuple[list[str], list[str], list[BaseException]]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        done: list[str] = []
        errors: list[BaseException] = []

        async def at_once() -> None:
            done.append("at once")

        async def waits() -> None:
            await gate
            done.append("after the wait")

        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise ConnectionError

        step(at_once(), errors.append)
        before = list(done)  # no loop pass yet: it ran in place
        step(waits(), errors.append)
        step(fails_later(), errors.append)
        gate.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)
        return before, done, errors

    before, done, errors = asyncio.run(run())
    assert before == ["at once"]
    assert done == ["at once", "after the wait"]
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)


def _mid_map() -> HeaderExtensionsMap:
    mapping = HeaderExtensionsMap()
    mapping.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(1, MID_URI)])
    )
    return mapping
