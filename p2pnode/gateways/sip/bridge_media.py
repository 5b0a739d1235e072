"""Sans-IO media bridge between a phone's plain RTP leg and a WebRTC leg.

Two directions, each a small core fed with decoded values and ``now``:

* **phone -> peer** (:class:`PhoneReceiver`): datagrams from the phone's RTP
  socket are decoded (total: bad bytes are counted, never raised), RFC 4733
  telephone-events go to a :class:`DtmfExtractor` that yields each digit once,
  in order, and audio goes to a :class:`JitterBuffer`. The WebRTC track pulls
  one frame every ``ptime`` from the buffer; a missing packet becomes a
  :class:`Loss` slot (the track fills it with silence) so the peer's clock never
  stalls and never bunches.
* **peer -> phone** (:class:`PhoneSender`): encoded frames from the peer are
  queued (bounded) and released one per ``ptime`` with our own SSRC and a
  continuous sequence and timestamp, whatever the peer's packets looked like:
  the phone sees one steady stream across WebRTC re-negotiations, hold and
  resume (RFC 3550 §8.2 lets a translator pick its own SSRC).

:func:`choose_media_path` (re-exported from
:mod:`~p2pnode.gateways.sip.bridge_codecs`) decides passthrough: when the
phone's leg and the WebRTC leg negotiated the same codec, RTP payloads travel
untouched (the WebRTC track hands ``av.Packet`` to aiortc); otherwise audio is
decoded and re-encoded.

Invariants: nothing here reads a clock or a socket; every buffer a phone can
fill is bounded by a named constant; sequence numbers are compared after
unwrapping to 32+ bits relative to the highest seen (RFC 3550 A.1).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from p2pnode.gateways.sip.bridge_codecs import BridgeCodec, MediaPath, choose_media_path
from p2pnode.gateways.sip.rtp import RtpDecodeError, RtpPacket, TelephoneEvent, dtmf_schedule

__all__ = [
    "DTMF_DIGITS",
    "JITTER_MAX_PACKETS",
    "SEND_DIGITS_MAX",
    "SEND_QUEUE_MAX",
    "Audio",
    "BridgeCodec",
    "DropReason",
    "DtmfDigit",
    "DtmfExtractor",
    "JitterBuffer",
    "Loss",
    "MediaPath",
    "PhoneReceiver",
    "PhoneSender",
    "ReceiverStatistics",
    "choose_media_path",
]

# Bounds: a phone can make us hold at most this many packets (2 s at 20 ms).
JITTER_MAX_PACKETS = 100
SEND_QUEUE_MAX = 25  # peer -> phone: 500 ms; older frames are dropped first
SEND_DIGITS_MAX = 32  # peer -> phone RFC 4733 digits waiting; more are refused
# A packet this far ahead of the playout point means the phone restarted its
# sequence (new SSRC, re-INVITE): resynchronise instead of waiting for a gap.
RESYNC_DISTANCE = 3 * JITTER_MAX_PACKETS
DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2 events 0..15
DTMF_TIMEOUT_S = 1.0  # an event with no end packet for this long is over


class DropReason(enum.Enum):
    MALFORMED = "malformed"
    UNKNOWN_PAYLOAD_TYPE = "unknown_payload_type"
    LATE = "late"
    DUPLICATE = "duplicate"
    OVERFLOW = "overflow"
    BAD_DTMF = "bad_dtmf"


@dataclass(frozen=True, slots=True)
class Audio:
    """One frame to play: the phone's payload and the RTP timestamp it carried."""

    sequence: int  # unwrapped
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Loss:
    """A playout slot whose packet never came (or came too late): play silence."""

    sequence: int


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A digit the phone sent as an RFC 4733 event, reported once."""

    digit: str
    duration_ms: int
    at: float  # ``now`` when the digit was recognised


def _unwrap(sequence: int, reference: int) -> int:
    """The 16-bit ``sequence`` as the extended number closest to ``reference``."""
    candidate = (reference & ~0xFFFF) | sequence
    if candidate - reference > 0x8000:
        candidate -= 0x10000
    elif reference - candidate > 0x8000:
        candidate += 0x10000
    return candidate


class JitterBuffer:
    """Reorders the phone's audio and releases one slot per ``pop``.

    Playout starts once the first packet has waited ``delay`` seconds, which
    absorbs that much arrival jitter; from then on the consumer calls
    :meth:`pop` at its own steady pace (the WebRTC track, every 20 ms). A
    packet behind the playout point is late and dropped; a gap is a
    :class:`Loss`.
    """

    def __init__(self, *, delay: float = 0.06, max_packets: int = JITTER_MAX_PACKETS) -> None:
        if delay < 0 or max_packets < 1:
            raise ValueError("delay must be >= 0 and max_packets >= 1")
        self._delay = delay
        self._max = max_packets
        self._packets: dict[int, Audio] = {}
        self._highest: int | None = None
        self._first: int | None = None  # the first packet's sequence (RTCP's base, A.1)
        self._next: int | None = None  # the sequence the next pop plays
        self._start_at: float | None = None

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def sequence_range(self) -> tuple[int, int] | None:
        """(first, highest) extended sequence numbers seen, for RTCP's "expected" (RFC 3550 A.3)."""
        if self._first is None or self._highest is None:
            return None
        return self._first, self._highest

    @property
    def ready_at(self) -> float | None:
        """When playout may begin (None before the first packet)."""
        return self._start_at

    def push(self, packet: RtpPacket, now: float) -> DropReason | None:
        """Store an audio packet; the reason when it is dropped instead."""
        if self._highest is None:
            extended = packet.sequence
            self._highest = extended
            self._first = extended
            self._next = extended
            self._start_at = now + self._delay
        else:
            extended = _unwrap(packet.sequence, self._highest)
        assert self._next is not None
        if extended - self._next >= RESYNC_DISTANCE:
            # The phone's stream restarted: play from here on.
            self._packets.clear()
            self._next = extended
            self._highest = extended
        if extended < self._next:
            return DropReason.LATE
        if extended in self._packets:
            return DropReason.DUPLICATE
        if len(self._packets) >= self._max:
            return DropReason.OVERFLOW
        self._packets[extended] = Audio(extended, packet.timestamp, packet.payload)
        self._highest = max(self._highest, extended)
        return None

    def pop(self, now: float) -> Audio | Loss | None:
        """The next slot to play, or None while buffering (or when there is nothing at all)."""
        if self._next is None or self._start_at is None or now < self._start_at:
            return None
        if not self._packets:
            return None  # underrun: the stream paused (hold, or the phone stopped)
        audio = self._packets.pop(self._next, None)
        sequence = self._next
        self._next += 1
        return audio if audio is not None else Loss(sequence)


class DtmfExtractor:
    """RFC 4733 events -> digits, each exactly once, in the order they began.

    An event is identified by its RTP timestamp (§2.5.1.1: all packets of one
    event share it). It is reported at its first end packet (§2.5.1.4 sends
    three), or, when the end packets were all lost, when the next event starts
    or :data:`DTMF_TIMEOUT_S` passes (§2.5.2.2).
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        self._clock_rate = clock_rate
        self._open: tuple[int, int, int, float] | None = None  # (timestamp, event, duration, last)
        self._done: deque[int] = deque(maxlen=8)  # timestamps already reported

    def feed(self, packet: RtpPacket, now: float) -> list[DtmfDigit]:
        """Digits completed by this packet; RtpDecodeError for a bad payload."""
        event = TelephoneEvent.decode(packet.payload)
        if event.event >= len(DTMF_DIGITS):
            raise RtpDecodeError("telephone-event is not a DTMF digit")
        out: list[DtmfDigit] = []
        if packet.timestamp in self._done:
            return out  # a repeated end packet of a reported digit
        if self._open is not None and self._open[0] != packet.timestamp:
            out.append(self._finish(now))
        if event.end:
            self._open = (packet.timestamp, event.event, event.duration, now)
            out.append(self._finish(now))
        else:
            self._open = (packet.timestamp, event.event, event.duration, now)
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        """Digits whose end packets never came."""
        if self._open is not None and now - self._open[3] >= DTMF_TIMEOUT_S:
            return [self._finish(now)]
        return []

    def next_deadline(self) -> float | None:
        return None if self._open is None else self._open[3] + DTMF_TIMEOUT_S

    def _finish(self, now: float) -> DtmfDigit:
        assert self._open is not None
        timestamp, event, duration, _ = self._open
        self._open = None
        self._done.append(timestamp)
        return DtmfDigit(DTMF_DIGITS[event], duration * 1000 // self._clock_rate, now)


@dataclass(frozen=True, slots=True)
class ReceiverStatistics:
    """A snapshot of the phone -> peer direction for the call's events and metrics."""

    received: int
    lost: int
    jitter_ms: float
    digits: int
    dropped: tuple[tuple[DropReason, int], ...]

    @property
    def loss_fraction(self) -> float:
        total = self.received + self.lost
        return self.lost / total if total else 0.0


class PhoneReceiver:
    """The phone's RTP datagrams in; audio slots and DTMF digits out.

    ``audio_type`` and ``dtmf_type`` are the payload types the phone's SDP
    negotiated; anything else is counted and dropped.
    """

    def __init__(
        self,
        *,
        audio_type: int,
        clock_rate: int,
        dtmf_type: int | None = None,
        delay: float = 0.06,
    ) -> None:
        self._audio_type = audio_type
        self._dtmf_type = dtmf_type
        self._clock_rate = clock_rate
        self.buffer = JitterBuffer(delay=delay)
        self._dtmf = DtmfExtractor(clock_rate if dtmf_type is not None else 8000)
        self._received = 0
        self._lost = 0
        self._digits = 0
        self._accepted = 0  # audio and telephone-event packets that decoded
        self._dropped = {reason: 0 for reason in DropReason}
        # RFC 3550 A.8 interarrival jitter, in timestamp units.
        self._jitter = 0.0
        self._transit: float | None = None
        self.ssrc: int | None = None  # the phone's latest SSRC (what our RTCP reports on)

    def set_format(self, *, audio_type: int, clock_rate: int, dtmf_type: int | None) -> None:
        """The offer/answer settled the phone's codec: its payload type and RTP clock.

        Called before media flows (the leg is opened before the SDP is known).
        """
        self._audio_type = audio_type
        self._dtmf_type = dtmf_type
        self._clock_rate = clock_rate

    def datagram(self, data: bytes, now: float) -> list[DtmfDigit]:
        """Feed one datagram from the phone; the digits it completed."""
        try:
            packet = RtpPacket.decode(data)
        except RtpDecodeError:
            self._dropped[DropReason.MALFORMED] += 1
            return []
        if self._dtmf_type is not None and packet.payload_type == self._dtmf_type:
            try:
                digits = self._dtmf.feed(packet, now)
            except RtpDecodeError:
                self._dropped[DropReason.BAD_DTMF] += 1
                return []
            self._accepted += 1
            self._digits += len(digits)
            return digits
        if packet.payload_type != self._audio_type:
            self._dropped[DropReason.UNKNOWN_PAYLOAD_TYPE] += 1
            return []
        reason = self.buffer.push(packet, now)
        if reason is not None:
            self._dropped[reason] += 1
            return []
        self._received += 1
        self._accepted += 1
        self.ssrc = packet.ssrc
        transit = now * self._clock_rate - packet.timestamp
        if self._transit is not None:
            # Modular difference: timestamps wrap at 2^32.
            delta = (transit - self._transit + 2**31) % 2**32 - 2**31
            self._jitter += (abs(delta) - self._jitter) / 16
        self._transit = transit
        return []

    @property
    def accepted(self) -> int:
        """Packets that were valid media of this call (what symmetric RTP may latch on)."""
        return self._accepted

    def pop(self, now: float) -> Audio | Loss | None:
        slot = self.buffer.pop(now)
        if isinstance(slot, Loss):
            self._lost += 1
        return slot

    def poll(self, now: float) -> list[DtmfDigit]:
        digits = self._dtmf.poll(now)
        self._digits += len(digits)
        return digits

    def next_deadline(self) -> float | None:
        return self._dtmf.next_deadline()

    @property
    def received(self) -> int:
        """Audio packets taken into the jitter buffer."""
        return self._received

    @property
    def jitter(self) -> float:
        """RFC 3550 A.8 interarrival jitter, in the phone's timestamp units."""
        return self._jitter

    def statistics(self) -> ReceiverStatistics:
        return ReceiverStatistics(
            received=self._received,
            lost=self._lost,
            jitter_ms=self._jitter * 1000 / self._clock_rate,
            digits=self._digits,
            dropped=tuple((reason, count) for reason, count in self._dropped.items() if count),
        )


class PhoneSender:
    """Encoded frames from the peer out to the phone: one packet per ``ptime``.

    Our own SSRC, a sequence that increases by one per packet and a timestamp
    that advances by the frame's samples, plus the silence skipped while
    nothing came (RFC 3550 §5.1: the timestamp follows the sampling clock; the
    marker bit flags the first packet after a pause, RFC 3551 §4.1).
    """

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        first_sequence: int,
        first_timestamp: int,
        samples_per_frame: int = 160,
        ptime: float = 0.02,
        max_queue: int = SEND_QUEUE_MAX,
    ) -> None:
        self._ssrc = ssrc & 0xFFFFFFFF
        self._payload_type = payload_type
        self._sequence = first_sequence & 0xFFFF
        self._timestamp = first_timestamp & 0xFFFFFFFF
        self._samples = samples_per_frame
        self._ptime = ptime
        self._queue: deque[bytes] = deque()
        self._max = max_queue
        self._next_send: float | None = None
        self._sent = 0
        self._octets = 0  # payload octets of the audio packets sent (RTCP SR)
        self._overflow = 0
        self._paused = True
        self._digits: deque[tuple[str, int, int]] = deque()  # (digit, payload type, ms)
        self._event: deque[RtpPacket] = deque()  # the digit being sent, one packet a slot
        self._event_slots = 0
        self._event_timestamp = 0
        self.events_sent = 0  # RFC 4733 packets
        self.audio_replaced = 0  # audio frames whose slot a digit took

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def octets(self) -> int:
        return self._octets

    def rtp_timestamp_at(self, now: float) -> int:
        """Our stream's RTP time at ``now`` (RFC 3550 §6.4.1: an SR's RTP timestamp)."""
        if self._next_send is None:
            return self._timestamp
        ahead = round((self._next_send - now) / self._ptime * self._samples)
        return (self._timestamp - ahead) & 0xFFFFFFFF

    def set_format(self, *, payload_type: int, samples_per_frame: int) -> None:
        """The phone's negotiated payload type and timestamp step (before media flows)."""
        self._payload_type = payload_type
        self._samples = samples_per_frame

    def push_digit(self, digit: str, payload_type: int, now: float, duration_ms: int = 100) -> bool:
        """Queue one RFC 4733 event (0-9 * #); False when refused (bad digit, queue full).

        Its packets take the next ``ptime`` slots (the audio of those slots is
        dropped: the tone replaces the voice), sharing our SSRC and sequence;
        the timestamp then moves on by the slots used, so the clock stays whole.
        """
        if len(self._digits) >= SEND_DIGITS_MAX or not 40 <= duration_ms <= 5000:
            return False
        try:
            dtmf_schedule(digit, payload_type=payload_type, ssrc=0, first_sequence=0, timestamp=0)
        except ValueError:
            return False
        if self._next_send is None:
            self._next_send = now
        elif not self._busy():
            self._skip_silence(now)
        self._digits.append((digit, payload_type, duration_ms))
        return True

    def _busy(self) -> bool:
        return bool(self._queue or self._digits or self._event)

    def _next_event_packet(self) -> bytes:
        if not self._event:
            digit, payload_type, duration_ms = self._digits.popleft()
            schedule = dtmf_schedule(
                digit,
                payload_type=payload_type,
                ssrc=self._ssrc,
                first_sequence=self._sequence,
                timestamp=self._timestamp,
                duration_ms=duration_ms,
                ptime_ms=round(self._ptime * 1000),
            )
            self._event.extend(packet for _, packet in schedule)
            self._event_slots = len(schedule)
            self._event_timestamp = self._timestamp
        packet = self._event.popleft()
        if self._queue:
            self._queue.popleft()
            self.audio_replaced += 1
        self.events_sent += 1
        self._sequence = (packet.sequence + 1) & 0xFFFF
        if not self._event:  # the event is over: its slots pass on the sampling clock
            slots = self._event_slots * self._samples
            self._timestamp = (self._event_timestamp + slots) & 0xFFFFFFFF
            self._paused = True
        return packet.encode()

    @property
    def overflow(self) -> int:
        return self._overflow

    def push(self, payload: bytes, now: float) -> None:
        """Queue one encoded frame; the oldest is dropped when the queue is full."""
        if self._next_send is None:
            self._next_send = now
        elif not self._queue:
            self._skip_silence(now)
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self._overflow += 1
        self._queue.append(payload)

    def next_deadline(self) -> float | None:
        return self._next_send if self._busy() else None

    def _skip_silence(self, now: float) -> None:
        """Nothing was sent for a while: the clock kept running (RFC 3550 §5.1)."""
        assert self._next_send is not None
        if now >= self._next_send + self._ptime:
            missed = int((now - self._next_send) / self._ptime)
            self._timestamp = (self._timestamp + missed * self._samples) & 0xFFFFFFFF
            self._next_send += missed * self._ptime
            self._paused = True  # the next packet carries the marker

    def poll(self, now: float) -> list[bytes]:
        """Datagrams due at ``now`` (at most one per elapsed ``ptime``)."""
        out: list[bytes] = []
        if self._next_send is None:
            return out
        if not self._busy():
            self._skip_silence(now)
            return out
        while self._busy() and now >= self._next_send:
            if self._event or self._digits:
                out.append(self._next_event_packet())
                self._next_send += self._ptime
                continue
            payload = self._queue.popleft()
            packet = RtpPacket(
                self._payload_type,
                self._sequence,
                self._timestamp,
                self._ssrc,
                payload,
                marker=self._paused,
            )
            out.append(packet.encode())
            self._paused = False
            self._sent += 1
            self._octets += len(payload)
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._timestamp = (self._timestamp + self._samples) & 0xFFFFFFFF
            self._next_send += self._ptime
        if now - self._next_send > 5 * self._ptime:
            self._next_send = now  # far behind (the loop stalled): do not burst to catch up
        return out
