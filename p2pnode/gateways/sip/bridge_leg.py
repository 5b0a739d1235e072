"""The phone's RTP socket of a bridged call: :class:`PhoneRtpLeg`.

aiortc speaks only DTLS-SRTP, so the phone's plain RTP leg is our own UDP
socket (one socket, one ``DatagramProtocol``, no task or coroutine per
packet). Its datagrams feed a
:class:`~p2pnode.gateways.sip.bridge_media.PhoneReceiver`; the peer's audio,
already in the phone's codec or encoded here (:meth:`PhoneRtpLeg.encode`,
aiortc's encoders), goes out through a
:class:`~p2pnode.gateways.sip.bridge_media.PhoneSender` on the shared
:class:`~p2pnode.gateways.sip.bridge_clock.MediaClock`. With rtcp-mux
negotiated the same socket carries RTCP (RFC 5761), handled by a
:class:`~p2pnode.gateways.sip.bridge_rtcp.RtcpSession`; without it the
leg's :class:`~p2pnode.gateways.sip.bridge_rtcp_port.RtcpPort` (RTP + 1,
announced in ``a=rtcp``) carries it to the same session.

Split from bridge_tracks.py (the WebRTC side), which re-exports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import av
from aiortc.codecs.base import Encoder
from aiortc.codecs.g711 import PcmaEncoder, PcmuEncoder
from aiortc.codecs.g722 import G722Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from p2pnode.gateways.sip.bridge_clock import MediaClock
from p2pnode.gateways.sip.bridge_media import BridgeCodec, DtmfDigit, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.bridge_rtcp import ReceptionCounts, RtcpSession, SendingCounts
from p2pnode.gateways.sip.bridge_rtcp_port import RtcpPort

__all__ = ["PhoneRtpLeg"]

_LOG = logging.getLogger(__name__)
# aiortc's encoders to the phone's codec (each resamples the peer's audio, 20 ms packets).
_ENCODER: dict[BridgeCodec, Callable[[], Encoder]] = {
    BridgeCodec.PCMU: PcmuEncoder,
    BridgeCodec.PCMA: PcmaEncoder,
    BridgeCodec.G722: G722Encoder,
    BridgeCodec.OPUS: OpusEncoder,
}
_RTCP_LOG_INTERVAL = 60.0  # each refused-RTCP reason is logged at most this often per leg


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: PhoneRtpLeg) -> None:
        self._leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._leg.datagram_received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leg.close()  # the UA closed the RTP socket (call over): the RTCP one goes too


class PhoneRtpLeg:
    """The phone's RTP socket: datagrams in to the receiver, the sender's packets out.

    Symmetric RTP (RFC 4961): once the phone's first valid packet arrives we
    send to its source address, which gets through a NAT in front of the
    phone; until then we send where its SDP said.

    Audio for the phone arrives encoded in its law (:meth:`from_peer`) and is
    sent at once when its 20 ms slot is due; otherwise the shared
    :class:`MediaClock` sends it at its slot (and times out DTMF events).
    """

    def __init__(
        self,
        receiver: PhoneReceiver,
        sender: PhoneSender,
        codec: BridgeCodec,
        *,
        remote: tuple[str, int] | None = None,
        on_digit: Callable[[DtmfDigit], None] | None = None,
    ) -> None:
        self.receiver = receiver
        self.sender = sender
        self.codec = codec
        self._remote = remote
        self._latched = False
        self.on_digit = on_digit
        self._encoder = _ENCODER[codec]()
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None
        self.frames_from_peer = 0
        self.held = False  # the phone put us on hold: the peer's audio is not sent
        # RTCP (RFC 5761 rtcp-mux on this socket) once the SDP settled it; else none.
        self.rtcp: RtcpSession | None = None
        self.rtcp_port: RtcpPort | None = None  # RTCP's own socket (no rtcp-mux), from open()
        self._rtcp_logged: dict[str, float] = {}

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self._transport

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def is_closed(self) -> bool:
        """Closed here, or its socket closed by its owner (the UA ends the call)."""
        if self._closed is not None and self._closed.done():
            return True
        return self._transport is not None and self._transport.is_closing()

    async def open(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), local_addr=(host, port)
        )
        self._transport = transport
        self._loop = loop
        self._closed = loop.create_future()
        self.rtcp_port = RtcpPort(self._separate_rtcp)
        await self.rtcp_port.open(host, self.local_address[1])
        MediaClock.of(loop).add(self)
        return self.local_address

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self.rtcp_port is not None:
            self.rtcp_port.close()
        if self._loop is not None:
            MediaClock.of(self._loop).discard(self)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Until :meth:`close` (the call ended on either side)."""
        assert self._closed is not None, "open() first"
        await asyncio.shield(self._closed)

    def set_codec(self, codec: BridgeCodec, payload_type: int, dtmf_type: int | None) -> None:
        """The phone's offer/answer chose ``codec`` as ``payload_type`` (before media flows)."""
        self.codec = codec
        self._encoder = _ENCODER[codec]()
        self.receiver.set_format(
            audio_type=payload_type, clock_rate=codec.clock_rate, dtmf_type=dtmf_type
        )
        self.sender.set_format(payload_type=payload_type, samples_per_frame=codec.frame_samples)

    def enable_rtcp(
        self, cname: str, spread: Callable[[], float], separate: tuple[str, int] | None = None
    ) -> None:
        """Reports every ~5 s, the phone's read: on this socket (rtcp-mux negotiated), or
        on :attr:`rtcp_port` to ``separate`` (the phone's ``a=rtcp`` or RTP + 1)."""
        assert self._loop is not None, "open() first"
        if self.rtcp_port is not None:
            if separate is None:
                self.rtcp_port.close()  # muxed: the separate socket is not needed
                self.rtcp_port = None
            else:
                self.rtcp_port.set_remote(separate)
        self.rtcp = RtcpSession(
            ssrc=self.sender.ssrc,
            cname=cname,
            clock_rate=self.codec.clock_rate,
            spread=spread,
        )

    def set_remote(self, remote: tuple[str, int]) -> None:
        """A re-INVITE moved the phone's media (resume from hold to a new port)."""
        self._remote = remote
        self._latched = False

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        assert self._loop is not None
        rtcp = self.rtcp
        if rtcp is not None and len(data) > 1 and 191 < data[1] < 224:  # RFC 5761 §4
            self._rtcp_received(rtcp, data)
            return
        receiver = self.receiver
        before = receiver.accepted
        digits = receiver.datagram(data, self._loop.time())
        if not self._latched and receiver.accepted > before:
            self._remote = (str(addr[0]), int(str(addr[1])))  # RFC 4961: latch the source
            self._latched = True
        if digits:
            self._report(digits)

    def _separate_rtcp(self, data: bytes) -> None:
        if self.rtcp is not None:
            self._rtcp_received(self.rtcp, data)

    def _rtcp_received(self, rtcp: RtcpSession, data: bytes) -> None:
        assert self._loop is not None
        now = self._loop.time()
        reason = rtcp.receive(data, now, time.time())
        if reason is not None and now - self._rtcp_logged.get(reason.value, -1e9) > (
            _RTCP_LOG_INTERVAL
        ):
            self._rtcp_logged[reason.value] = now
            _LOG.info("phone leg: RTCP refused (%s)", reason.value)

    def _send_rtcp(self, rtcp: RtcpSession, now: float) -> None:
        """Our SR/RR from the leg's counters, to where the RTP goes (rtcp-mux) or the RTCP port."""
        sender, receiver = self.sender, self.receiver
        span = receiver.buffer.sequence_range
        first, highest = span if span is not None else (0, 0)
        data = rtcp.report(
            now,
            time.time(),
            SendingCounts(sender.sent, sender.octets, sender.rtp_timestamp_at(now)),
            ReceptionCounts(receiver.ssrc, first, highest, receiver.received, receiver.jitter),
        )
        if self.rtcp_port is not None:
            self.rtcp_port.send(data)
            return
        transport, remote = self._transport, self._remote
        if transport is not None and not transport.is_closing() and remote is not None:
            transport.sendto(data, remote)

    def _report(self, digits: list[DtmfDigit]) -> None:
        if self.on_digit is not None:
            for digit in digits:
                self.on_digit(digit)

    def from_peer(self, payload: bytes) -> None:
        """One frame of the peer's audio, already in the phone's law: queue it, send if due."""
        if self.held or self._loop is None or self.is_closed or not payload:
            return
        self.frames_from_peer += 1
        now = self._loop.time()
        self.sender.push(payload, now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        transport, remote = self._transport, self._remote
        if transport is None or transport.is_closing():
            self.close()  # the socket went with the call: stop ticking for it
            return
        for datagram in self.sender.poll(now):
            if remote is not None:
                transport.sendto(datagram, remote)

    def tick(self, now: float) -> None:
        """The media clock's tick: packets whose slot came, DTMF events that timed out."""
        due = self.sender.next_deadline()
        if due is not None and due <= now:
            self._flush(now)
        due = self.receiver.next_deadline()
        if due is not None and due <= now:
            self._report(self.receiver.poll(now))
        rtcp = self.rtcp
        if rtcp is not None:
            if not rtcp.started and self.sender.sent and self._remote is not None:
                rtcp.begin(now)  # our first audio went out: reports from now on
            elif rtcp.next_deadline() <= now:
                self._send_rtcp(rtcp, now)

    def send_digit(self, digit: str, payload_type: int, duration_ms: int = 100) -> bool:
        """An RFC 4733 digit to the phone, paced with the audio; False if refused or on hold."""
        if self.held or self._loop is None:
            return False
        now = self._loop.time()
        queued = self.sender.push_digit(digit, payload_type, now, duration_ms)
        self._flush(now)
        return queued

    def encode(self, frame: av.AudioFrame) -> list[bytes]:
        """A decoded frame from the peer in the phone's law (20 ms payloads, resampled)."""
        payloads, _ = self._encoder.encode(frame)
        return payloads

    async def run(self, peer_track: MediaStreamTrack) -> None:
        """Carry the peer's decoded audio to the phone until the track ends or ``close``."""
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(self._pump(peer_track))
            await self.wait_closed()
            pump.cancel()

    async def _pump(self, peer_track: MediaStreamTrack) -> None:
        while not self.is_closed:
            try:
                frame = await peer_track.recv()
            except MediaStreamError:
                break
            if isinstance(frame, av.AudioFrame):
                for payload in self.encode(frame):
                    self.from_peer(payload)
        self.close()
