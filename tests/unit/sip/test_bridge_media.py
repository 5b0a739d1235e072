"""The media bridge's sans-IO cores in virtual time: reorder, loss, rewriting, DTMF, pacing."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.bridge_media import (
    JITTER_MAX_PACKETS,
    Audio,
    BridgeCodec,
    DropReason,
    DtmfExtractor,
    JitterBuffer,
    Loss,
    PhoneReceiver,
    PhoneSender,
    choose_media_path,
)
from p2pnode.gateways.sip.rtp import RtpPacket, dtmf_schedule

PT_PCMU = 0
PT_DTMF = 101


def audio(sequence: int, ssrc: int = 7) -> RtpPacket:
    return RtpPacket(
        PT_PCMU,
        sequence & 0xFFFF,
        (sequence * 160) & 0xFFFFFFFF,
        ssrc,
        bytes([sequence & 0xFF]) * 160,
    )


def drain(buffer: JitterBuffer | PhoneReceiver, start: float, count: int) -> list[Audio | Loss]:
    out: list[Audio | Loss] = []
    for index in range(count):
        slot = buffer.pop(start + 0.02 * index)
        if slot is not None:
            out.append(slot)
    return out


def test_jitter_buffer_reorders_within_its_delay() -> None:
    buffer = JitterBuffer(delay=0.06)
    order = [0, 2, 1, 4, 3, 5]
    for index, sequence in enumerate(order):
        assert buffer.push(audio(sequence), 0.005 * index) is None
    assert buffer.pop(0.0) is None  # still buffering
    slots = drain(buffer, 0.06, 10)
    assert [slot.sequence for slot in slots] == [0, 1, 2, 3, 4, 5]
    assert all(isinstance(slot, Audio) for slot in slots)
    assert [slot.payload[0] for slot in slots if isinstance(slot, Audio)] == [0, 1, 2, 3, 4, 5]


def test_jitter_buffer_reports_a_gap_as_loss_and_drops_the_late_packet() -> None:
    buffer = JitterBuffer(delay=0.0)
    for sequence in (10, 11, 13, 14):
        buffer.push(audio(sequence), 0.0)
    slots = drain(buffer, 0.0, 4)
    assert [type(slot).__name__ for slot in slots] == ["Audio", "Audio", "Loss", "Audio"]
    assert slots[2] == Loss(12)
    assert buffer.push(audio(12), 0.1) is DropReason.LATE
    assert buffer.push(audio(13), 0.1) is DropReason.LATE
    assert buffer.push(audio(14), 0.1) is DropReason.DUPLICATE  # still waiting to play


def test_jitter_buffer_unwraps_the_sequence_across_65535() -> None:
    buffer = JitterBuffer(delay=0.0)
    for sequence in (65534, 0, 65535, 1):  # reordered across the wrap
        assert buffer.push(audio(sequence), 0.0) is None
    slots = drain(buffer, 0.0, 4)
    assert [slot.sequence & 0xFFFF for slot in slots] == [65534, 65535, 0, 1]
    assert all(isinstance(slot, Audio) for slot in slots)


def test_jitter_buffer_is_bounded_and_resynchronises_on_a_restart() -> None:
    buffer = JitterBuffer(delay=1.0)
    reasons = [buffer.push(audio(sequence), 0.0) for sequence in range(JITTER_MAX_PACKETS + 5)]
    assert reasons.count(DropReason.OVERFLOW) == 5
    assert len(buffer) == JITTER_MAX_PACKETS
    # A new stream far ahead (the phone restarted its sequence): play from there.
    assert buffer.push(audio(30_000), 0.5) is None
    assert len(buffer) == 1
    slot = buffer.pop(1.0)
    assert isinstance(slot, Audio) and slot.sequence == 30_000


def test_receiver_under_seeded_reorder_and_loss_plays_every_slot_once() -> None:
    rng = random.Random(4)
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, delay=0.08)
    sent = list(range(200))
    dropped = set(rng.sample(sent, 10))
    arrivals = sorted((0.02 * s + rng.uniform(0, 0.05), s) for s in sent if s not in dropped)
    slots: list[Audio | Loss] = []
    tick = 0.0
    for at, sequence in arrivals:
        while tick + 0.02 <= at:
            slot = receiver.pop(tick)
            if slot is not None:
                slots.append(slot)
            tick += 0.02
        receiver.datagram(audio(sequence).encode(), at)
    slots += drain(receiver, tick, 20)
    assert [slot.sequence for slot in slots] == sent[: len(slots)]
    lost = {slot.sequence for slot in slots if isinstance(slot, Loss)}
    assert lost == {s for s in dropped if s < len(slots)}
    stats = receiver.statistics()
    assert stats.received == len(arrivals)
    assert stats.lost == len(lost)
    assert 0 < stats.jitter_ms < 50  # arrival jitter up to 50 ms, RFC 3550 A.8 smoothing


def test_receiver_counts_bad_input_by_reason() -> None:
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
    receiver.datagram(b"\x00junk", 0.0)
    receiver.datagram(RtpPacket(8, 1, 160, 7, b"x" * 160).encode(), 0.0)
    receiver.datagram(RtpPacket(PT_DTMF, 2, 160, 7, b"\x01\x02").encode(), 0.0)
    receiver.datagram(RtpPacket(PT_DTMF, 3, 160, 7, b"\x11\x80\x03\x20").encode(), 0.0)
    assert dict(receiver.statistics().dropped) == {
        DropReason.MALFORMED: 1,
        DropReason.UNKNOWN_PAYLOAD_TYPE: 1,
        DropReason.BAD_DTMF: 2,
    }


def dtmf_packets(digits: str, *, start_sequence: int = 100) -> list[RtpPacket]:
    packets: list[RtpPacket] = []
    sequence = start_sequence
    for index, digit in enumerate(digits):
        schedule = dtmf_schedule(
            digit,
            payload_type=PT_DTMF,
            ssrc=7,
            first_sequence=sequence,
            timestamp=10_000 + 8000 * index,
        )
        packets += [packet for _, packet in schedule]
        sequence += len(schedule)
    return packets


def test_dtmf_digits_come_out_once_each_in_order() -> None:
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
    digits = []
    for index, packet in enumerate(dtmf_packets("19*#A0")):
        digits += receiver.datagram(packet.encode(), 0.02 * index)
    assert "".join(d.digit for d in digits) == "19*#A0"
    assert {d.duration_ms for d in digits} == {100}
    assert receiver.statistics().digits == 6


def test_dtmf_with_every_end_packet_lost_is_reported_by_the_next_event_or_timeout() -> None:
    extractor = DtmfExtractor()
    packets = [p for p in dtmf_packets("58") if not p.payload[1] & 0x80]
    found = []
    for index, packet in enumerate(packets):
        found += extractor.feed(packet, 0.02 * index)
    assert [d.digit for d in found] == ["5"]
    deadline = extractor.next_deadline()
    assert deadline is not None
    assert extractor.poll(deadline - 0.01) == []
    assert [d.digit for d in extractor.poll(deadline)] == ["8"]
    assert extractor.next_deadline() is None


def test_dtmf_reordered_end_packets_do_not_repeat_a_digit() -> None:
    extractor = DtmfExtractor()
    packets = dtmf_packets("7")
    packets = [*packets[:-3], packets[-1], packets[-3], packets[-2]]
    found = [d for p in packets for d in extractor.feed(p, 0.0)]
    assert [d.digit for d in found] == ["7"]


def test_sender_rewrites_ssrc_sequence_timestamp_and_paces_bursts() -> None:
    sender = PhoneSender(ssrc=0xABCD, payload_type=PT_PCMU, first_sequence=65534, first_timestamp=5)
    for index in range(5):  # a burst of five frames at once
        sender.push(bytes([index]) * 160, 0.0)
    times: list[tuple[float, RtpPacket]] = []
    now = 0.0
    while (deadline := sender.next_deadline()) is not None:
        now = max(now, deadline)
        times += [(now, RtpPacket.decode(d)) for d in sender.poll(now)]
    assert [round(at, 3) for at, _ in times] == [0.0, 0.02, 0.04, 0.06, 0.08]
    packets = [packet for _, packet in times]
    assert {p.ssrc for p in packets} == {0xABCD}
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2]
    assert [p.timestamp for p in packets] == [5, 165, 325, 485, 645]
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert [p.payload[0] for p in packets] == [0, 1, 2, 3, 4]


def test_sender_timestamp_spans_a_pause_and_marks_the_restart() -> None:
    sender = PhoneSender(ssrc=1, payload_type=PT_PCMU, first_sequence=0, first_timestamp=0)
    sender.push(b"a" * 160, 0.0)
    [first] = sender.poll(0.0)
    sender.push(b"b" * 160, 1.0)  # the peer went on hold for a second
    [second] = sender.poll(1.0)
    one, two = RtpPacket.decode(first), RtpPacket.decode(second)
    assert two.sequence == one.sequence + 1
    assert two.timestamp - one.timestamp == 8000
    assert two.marker


def test_sender_queue_is_bounded_dropping_the_oldest() -> None:
    sender = PhoneSender(
        ssrc=1, payload_type=PT_PCMU, first_sequence=0, first_timestamp=0, max_queue=3
    )
    for index in range(5):
        sender.push(bytes([index]), 0.0)
    assert sender.overflow == 2
    out = [RtpPacket.decode(d).payload for t in (0.0, 0.02, 0.04) for d in sender.poll(t)]
    assert out == [b"\x02", b"\x03", b"\x04"]


def test_passthrough_only_for_the_same_codec() -> None:
    assert choose_media_path(BridgeCodec.PCMU, BridgeCodec.PCMU).passthrough
    assert choose_media_path(BridgeCodec.PCMA, BridgeCodec.PCMA).passthrough
    assert not choose_media_path(BridgeCodec.PCMU, BridgeCodec.PCMA).passthrough
    assert not choose_media_path(BridgeCodec.PCMU, BridgeCodec.OPUS).passthrough
    assert choose_media_path(BridgeCodec.G722, BridgeCodec.G722).passthrough
    assert not choose_media_path(BridgeCodec.G722, BridgeCodec.PCMU).passthrough
    assert BridgeCodec.from_name("pcmu") is BridgeCodec.PCMU
    assert BridgeCodec.from_name("iLBC") is None


@given(st.lists(st.binary(max_size=80), max_size=40))
def test_fuzz_receiver_never_raises_and_stays_bounded(datagrams: list[bytes]) -> None:
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF)
    for index, data in enumerate(datagrams):
        receiver.datagram(data, 0.01 * index)
        receiver.pop(0.01 * index)
        receiver.poll(0.01 * index)
    assert len(receiver.buffer) <= JITTER_MAX_PACKETS
    stats = receiver.statistics()
    assert stats.received + sum(count for _, count in stats.dropped) <= len(datagrams)


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.booleans()),
        max_size=60,
    )
)
def test_fuzz_rtp_fields_keep_the_buffer_ordered(packets: list[tuple[int, bool]]) -> None:
    receiver = PhoneReceiver(audio_type=PT_PCMU, clock_rate=8000, dtmf_type=PT_DTMF, delay=0.0)
    played: list[int] = []
    for index, (sequence, pop) in enumerate(packets):
        receiver.datagram(audio(sequence).encode(), 0.01 * index)
        if pop:
            slot = receiver.pop(0.01 * index)
            if slot is not None:
                played.append(slot.sequence)
    # Slots come out strictly increasing except across a resynchronisation jump forward.
    assert all(b > a for a, b in itertools.pairwise(played))
