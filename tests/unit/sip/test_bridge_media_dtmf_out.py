"""Peer -> phone digits: RFC 4733 events in the sender's stream, one packet per 20 ms slot."""

from __future__ import annotations

import itertools

from p2pnode.gateways.sip.bridge_media import SEND_DIGITS_MAX, PhoneReceiver, PhoneSender
from p2pnode.gateways.sip.rtp import RtpPacket, TelephoneEvent

PT_PCMU = 0
PT_DTMF = 101


def run(
    sender: PhoneSender, until: float, audio_every: float | None, start: float = 0.0
) -> list[tuple[float, RtpPacket]]:
    """Virtual time: audio arrives every ``audio_every`` s; every datagram with its send time."""
    out: list[tuple[float, RtpPacket]] = []
    now = start
    next_audio = start if audio_every is not None else None
    while now <= until:
        if next_audio is not None and now >= next_audio:
            sender.push(b"\xff" * 160, now)
            next_audio += audio_every or 0.0
        out += [(now, RtpPacket.decode(d)) for d in sender.poll(now)]
        deadlines = [d for d in (sender.next_deadline(), next_audio) if d is not None]
        if not deadlines:
            break
        now = max(now + 1e-6, min(deadlines))
    return out


def test_a_digit_takes_the_audio_slots_in_the_same_stream_and_the_clock_moves_on() -> None:
    sender = PhoneSender(ssrc=0x5151, payload_type=PT_PCMU, first_sequence=65530, first_timestamp=0)
    sender.push(b"\xff" * 160, 0.0)
    sent = [(0.0, RtpPacket.decode(d)) for d in sender.poll(0.0)]  # talking already
    assert sender.push_digit("5", PT_DTMF, 0.01, duration_ms=100)
    sent += run(sender, 0.5, audio_every=0.02, start=0.02)
    packets = [packet for _, packet in sent]
    assert {p.ssrc for p in packets} == {0x5151}
    sequences = [p.sequence for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
    times = [round(at, 3) for at, _ in sent]
    assert times == [round(0.02 * i, 3) for i in range(len(times))]  # one per 20 ms slot
    kinds = [p.payload_type for p in packets]
    first = kinds.index(PT_DTMF)
    events = packets[first : first + kinds.count(PT_DTMF)]
    assert all(p.payload_type == PT_DTMF for p in events)  # one run, no audio inside
    decoded = [TelephoneEvent.decode(p.payload) for p in events]
    assert {e.event for e in decoded} == {5}
    assert [e.end for e in decoded][-3:] == [True] * 3 and not any(e.end for e in decoded[:-3])
    durations = [e.duration for e in decoded]
    assert durations == sorted(durations) and durations[-1] == 800  # 100 ms at 8 kHz
    assert {p.timestamp for p in events} == {packets[first - 1].timestamp + 160}
    assert events[0].marker
    after = packets[first + len(events)]
    assert after.payload_type == PT_PCMU and after.marker
    assert after.timestamp == events[0].timestamp + 160 * len(events)  # the slots passed
    assert sender.audio_replaced > 0 and sender.events_sent == len(events)


def test_digits_reach_a_receiver_once_each_in_order() -> None:
    sender = PhoneSender(ssrc=9, payload_type=PT_PCMU, first_sequence=1, first_timestamp=1)
    for digit in "93#0*":
        assert sender.push_digit(digit, PT_DTMF, 0.0)
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
    found = []
    for at, packet in run(sender, 3.0, audio_every=None):
        found += receiver.datagram(packet.encode(), at)
    assert "".join(d.digit for d in found) == "93#0*"


def test_bad_digits_and_a_full_queue_are_refused() -> None:
    sender = PhoneSender(ssrc=9, payload_type=PT_PCMU, first_sequence=1, first_timestamp=1)
    assert not sender.push_digit("E", PT_DTMF, 0.0)
    assert not sender.push_digit("5", PT_DTMF, 0.0, duration_ms=10)
    assert not sender.push_digit("5", PT_DTMF, 0.0, duration_ms=60_000)
    assert all(sender.push_digit("1", PT_DTMF, 0.0) for _ in range(SEND_DIGITS_MAX))
    assert not sender.push_digit("1", PT_DTMF, 0.0)
