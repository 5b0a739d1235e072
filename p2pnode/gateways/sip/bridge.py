"""The SIP <-> P2P bridge controller: a P2P call to a hosted identity rings its phones.

Composition, no hooks in the gateway or the calls service:

* The bridge's P2P side is a :class:`BridgedCallService` (a
  :class:`~p2pnode.sessions.calls.CallService` for the hosted identity) whose
  received audio is also teed to the phone leg, and whose microphone is a
  :class:`PhoneSource` reading the phone's jitter buffer.
* The bridge's SIP side is a :class:`BridgeUserAgent`, our own small UA with an
  account at the gateway. To ring ``alice`` it INVITEs ``alice@domain`` through
  the gateway, which forks to every registered device of alice (first answer
  wins, the others get CANCEL - the gateway's B2BUA does that) and anchors the
  media. The RTP it receives goes to a
  :class:`~p2pnode.gateways.sip.bridge_tracks.PhoneRtpLeg` (jitter buffer, RFC
  4733 digits, rewriting, 20 ms pacing).

End reasons cross the bridge: a phone that answers 486 makes the P2P caller
see a decline (busy), 408/480/no answer likewise; a phone that hangs up ends
the P2P call, a P2P hang-up sends BYE to the phone.

Through the calls service the audio is decoded on the bridge (its track API
takes PCM); G.711 passthrough needs the track-level path of
:mod:`bridge_tracks` (see docs/sip-bridge.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from p2pnode.gateways.sip.bridge_media import (
    BridgeCodec,
    DtmfDigit,
    PhoneReceiver,
    PhoneSender,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneRtpLeg
from p2pnode.gateways.sip.useragent import SipUserAgent, UaCall, UaError, _Rtp, mulaw_decode
from p2pnode.sessions.call import CallDirection, CallState
from p2pnode.sessions.calls import CallMedia, CallService, CallUpdate

__all__ = [
    "BRIDGE_QUEUE_FRAMES",
    "BridgeEvent",
    "BridgeUserAgent",
    "BridgedCallService",
    "PhoneSource",
    "SipP2pBridge",
]

_LOG = logging.getLogger(__name__)
BRIDGE_QUEUE_FRAMES = 25  # peer -> phone frames held between the tee and the RTP leg
PT_PCMU = 0
PT_DTMF = 101  # what our UA's offer names telephone-event
_TERMINAL = {
    CallState.DECLINED,
    CallState.BUSY,
    CallState.NO_ANSWER,
    CallState.CANCELLED,
    CallState.HUNG_UP,
    CallState.REFUSED,
    CallState.FAILED,
}
Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    """One per-call observation for the control API and metrics."""

    call_id: bytes
    what: str  # "ringing-phones", "phone-answered", "phone-refused", "digit", "ended"
    detail: str = ""


class PhoneSource:
    """The phone's audio as a calls-service microphone: one jitter-buffer slot per read.

    The calls service reads 20 ms at 48 kHz; each read pops one 20 ms G.711
    slot and interpolates it up (a lost slot or an empty buffer is silence).
    """

    def __init__(self, receiver: PhoneReceiver, clock: Callable[[], float]) -> None:
        self._receiver = receiver
        self._clock = clock

    def read(self, count: int) -> Samples:
        slot = self._receiver.pop(self._clock())
        payload = getattr(slot, "payload", b"")
        if not payload:
            return np.zeros(count, dtype=np.int16)
        narrow = mulaw_decode(payload).astype(np.float64)
        positions = np.linspace(0, narrow.size - 1, count)
        wide: Samples = np.interp(positions, np.arange(narrow.size), narrow).astype(np.int16)
        return wide


class _FrameQueueTrack(MediaStreamTrack):
    """Frames teed from the calls service, handed to the phone leg's pump (bounded)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(BRIDGE_QUEUE_FRAMES)

    def offer(self, frame: av.AudioFrame | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # drop the oldest: latency beats completeness
        self.queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        return frame


class _TeeTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, inner: MediaStreamTrack, sink: Callable[[av.AudioFrame], None]) -> None:
        super().__init__()
        self._inner = inner
        self._sink = sink

    async def recv(self) -> av.AudioFrame:
        frame = await self._inner.recv()
        assert isinstance(frame, av.AudioFrame)
        self._sink(frame)
        return frame


class BridgedCallService(CallService):
    """A calls service whose received audio is also offered to a per-call sink."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sinks: dict[bytes, Callable[[av.AudioFrame], None]] = {}

    async def _receive(self, session: object, leg: object, track: MediaStreamTrack) -> None:
        call_id = getattr(session, "call_id", b"")

        def sink(frame: av.AudioFrame) -> None:
            target = self.sinks.get(call_id)
            if target is not None:
                target(frame)

        tee = _TeeTrack(track, sink) if track.kind == "audio" else track
        await super()._receive(session, leg, tee)  # type: ignore[arg-type]


class BridgeUserAgent(SipUserAgent):
    """Our UA with every call's RTP going to a bridge leg instead of a recorder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.legs: dict[int, PhoneRtpLeg] = {}
        self.on_digit: Callable[[int, DtmfDigit], None] | None = None

    async def _open_rtp(self) -> tuple[asyncio.DatagramTransport, _Rtp]:
        receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
        sender = PhoneSender(
            ssrc=int.from_bytes(self.randbytes(4), "big"),
            payload_type=PT_PCMU,
            first_sequence=int.from_bytes(self.randbytes(2), "big"),
            first_timestamp=int.from_bytes(self.randbytes(4), "big"),
        )
        leg = PhoneRtpLeg(receiver, sender, BridgeCodec.PCMU)
        _, port = await leg.open(self.host)
        self.legs[port] = leg

        def digit(found: DtmfDigit) -> None:
            if self.on_digit is not None:
                self.on_digit(port, found)

        leg.on_digit = digit
        transport = leg.transport
        assert transport is not None
        return transport, _Rtp()  # the recorder protocol stays detached


class SipP2pBridge:
    """Rings the hosted login's phones for every P2P call to the hosted identity."""

    def __init__(
        self,
        calls: BridgedCallService,
        ua: BridgeUserAgent,
        hosted_login: str,
        *,
        ring_timeout: float = 30.0,
    ) -> None:
        self.calls = calls
        self.ua = ua
        self.hosted_login = hosted_login
        self.ring_timeout = ring_timeout
        self.events: asyncio.Queue[BridgeEvent] = asyncio.Queue(maxsize=1024)
        self.digits: dict[bytes, list[DtmfDigit]] = {}
        self._phone_calls: dict[bytes, UaCall] = {}
        self._ended: dict[bytes, asyncio.Event] = {}

    def _event(self, call_id: bytes, what: str, detail: str = "") -> None:
        if not self.events.full():
            self.events.put_nowait(BridgeEvent(call_id, what, detail))

    async def run(self) -> None:
        """Serve until cancelled; every bridged call is a task of this group."""
        async with asyncio.TaskGroup() as group:
            while True:
                update = await self.calls.wait_update()
                if (
                    update.direction is CallDirection.INCOMING
                    and update.state is CallState.RINGING_LOCAL
                    and update.call_id not in self._ended
                ):
                    self._ended[update.call_id] = asyncio.Event()
                    group.create_task(self._bridge_incoming(update))
                elif update.state in _TERMINAL and update.call_id in self._ended:
                    self._ended[update.call_id].set()

    async def _bridge_incoming(self, update: CallUpdate) -> None:
        call_id = update.call_id
        self._event(call_id, "ringing-phones", self.hosted_login)
        try:
            async with asyncio.timeout(self.ring_timeout):
                phone = await self.ua.call(self.hosted_login)
        except (UaError, TimeoutError) as error:
            status = error.status if isinstance(error, UaError) else 408
            self._event(call_id, "phone-refused", str(status))
            # SIP 486/600/603/408/480 -> the P2P caller sees the call declined.
            with contextlib.suppress(Exception):
                await self.calls.decline(call_id)
            return
        port = int(phone.rtp.get_extra_info("sockname")[1])
        leg = self.ua.legs[port]
        if phone.remote_media is not None:
            leg.set_remote(phone.remote_media)
        self.digits[call_id] = []
        self.ua.on_digit = lambda p, digit: self._digit(p, port, call_id, digit)
        queue_track = _FrameQueueTrack()
        self.calls.sinks[call_id] = queue_track.offer
        self._phone_calls[call_id] = phone
        loop = asyncio.get_running_loop()
        await self.calls.answer(call_id, CallMedia(source=PhoneSource(leg.receiver, loop.time)))
        self._event(call_id, "phone-answered", "PCMU transcoded")
        async with asyncio.TaskGroup() as group:
            media = group.create_task(leg.run(queue_track))
            ended = group.create_task(self._ended[call_id].wait())
            phone_gone = group.create_task(phone.ended.wait())
            done, _ = await asyncio.wait({ended, phone_gone}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            phone_gone.cancel()
            if ended in done:
                with contextlib.suppress(UaError, TimeoutError):
                    async with asyncio.timeout(5):
                        await phone.hangup()  # the P2P side hung up: BYE to the phone
            else:
                with contextlib.suppress(Exception):
                    await self.calls.hangup(call_id)  # the phone hung up
            self.calls.sinks.pop(call_id, None)
            queue_track.offer(None)
            leg.close()
            await media
        stats = leg.receiver.statistics()
        self._event(
            call_id,
            "ended",
            f"received={stats.received} lost={stats.lost} jitter_ms={stats.jitter_ms:.1f} "
            f"to_phone={leg.sender.sent}",
        )

    def _digit(self, port: int, expected: int, call_id: bytes, digit: DtmfDigit) -> None:
        if port == expected:
            self.digits[call_id].append(digit)
            self._event(call_id, "digit", digit.digit)
