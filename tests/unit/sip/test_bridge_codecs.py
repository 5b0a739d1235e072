"""The phone leg's codecs: which one the bridge takes from an SDP, what it offers and answers,
and decoding G.722/opus payloads for the P2P leg (a real tone by FFT, garbage as silence)."""

from __future__ import annotations

import asyncio
import math

import av
import numpy as np
import pytest

from p2pnode.gateways.sip.bridge_media import (
    BridgeCodec,
    MediaPath,
    PhoneReceiver,
    choose_media_path,
)
from p2pnode.gateways.sip.bridge_tracks import PhoneAudioTrack
from p2pnode.gateways.sip.bridge_ua import (
    PT_OPUS,
    BridgeUserAgent,
    PhoneFormat,
    choose_phone_format,
)
from p2pnode.gateways.sip.rtp import RtpPacket
from p2pnode.gateways.sip.sdp import parse_sdp
from tests.harness.audio import spectrum

RTCP = ("192.0.2.1", 4001)  # no rtcp-mux: the phone's RTCP at RTP + 1 (RFC 3550 §11)


def offer(formats: str, *extra: str, port: int = 4000) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    lines += [f"m=audio {port} RTP/AVP {formats}", *extra, ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (offer("96 9 0 101", "a=rtpmap:96 opus/48000/2", "a=rtpmap:101 telephone-event/8000",
               "a=rtcp-mux"), PhoneFormat(BridgeCodec.OPUS, 96, 101, True)),
        (offer("18 8 0"), PhoneFormat(BridgeCodec.PCMA, 8, None, False, RTCP)),  # G.729 is not ours
        (offer("9 101", "a=rtpmap:101 telephone-event/8000"),
         PhoneFormat(BridgeCodec.G722, 9, 101, False, RTCP)),  # static type, no rtpmap (RFC 3551)
        (offer("97 0", "a=rtpmap:97 opus/8000"),
         PhoneFormat(BridgeCodec.PCMU, 0, None, False, RTCP)),
        (offer("0 100", "a=rtpmap:100 telephone-event/48000"),
         PhoneFormat(BridgeCodec.PCMU, 0, None, False, RTCP)),  # digits only at 8000
        (offer("18"), None),
        (offer("0", port=0), None),
        (b"not sdp", None),
    ],
)  # fmt: skip
def test_the_phone_s_first_codec_the_bridge_speaks_wins(
    body: bytes, expected: PhoneFormat | None
) -> None:
    assert choose_phone_format(body) == expected


def test_the_offer_names_every_codec_and_the_answer_only_the_chosen_one() -> None:
    ua = BridgeUserAgent("bob", "pw", "gw.test", ("127.0.0.1", 5060))
    sdp = parse_sdp(ua._sdp(4000))
    (audio,) = sdp.media
    names = [(c.name, c.payload_type, c.clock_rate, c.channels) for c in audio.codecs()]
    assert names == [
        ("PCMU", 0, 8000, 1),
        ("PCMA", 8, 8000, 1),
        ("G722", 9, 8000, 1),
        ("opus", PT_OPUS, 48000, 2),
        ("telephone-event", 101, 8000, 1),
    ]
    assert audio.attribute("rtcp-mux") is not None
    ua.formats[4000] = PhoneFormat(BridgeCodec.OPUS, 96, 100, False)
    (answer,) = parse_sdp(ua._sdp(4000)).media
    assert [(c.name, c.payload_type) for c in answer.codecs()] == [
        ("opus", 96),
        ("telephone-event", 100),
    ]
    assert answer.attribute("rtcp-mux") is None  # the phone did not offer it


def _g722_packets(hz: float, seconds: float) -> list[bytes]:
    encoder = av.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 16000, "mono", "s16"
    samples = (np.sin(2 * math.pi * hz * np.arange(int(16000 * seconds)) / 16000) * 12000).astype(
        np.int16
    )
    payloads = []
    for start in range(0, samples.size, 320):  # 20 ms frames
        frame = av.AudioFrame.from_ndarray(
            samples[start : start + 320].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        payloads += [bytes(packet) for packet in encoder.encode(frame)]
    return payloads


async def _decoded(codec: BridgeCodec, payload_type: int, payloads: list[bytes]) -> np.ndarray:
    receiver = PhoneReceiver(audio_type=payload_type, clock_rate=codec.clock_rate, delay=0.0)
    track = PhoneAudioTrack(receiver, MediaPath(codec, BridgeCodec.PCMU))
    now = asyncio.get_running_loop().time()
    for index, payload in enumerate(payloads):
        rtp = RtpPacket(payload_type, index, index * codec.frame_samples, 7, payload)
        receiver.datagram(rtp.encode(), now)
    out = []
    for _ in payloads:
        frame = await track.recv()
        assert isinstance(frame, av.AudioFrame)
        assert frame.format.name == "s16" and frame.layout.name == "mono"
        out.append(frame.to_ndarray().reshape(-1))
    track.stop()
    return np.concatenate(out)


def test_g722_from_the_phone_decodes_to_its_tone_at_16_khz() -> None:
    payloads = _g722_packets(440.0, 0.5)
    assert {len(payload) for payload in payloads} == {160}  # 20 ms = 160 octets
    samples = asyncio.run(_decoded(BridgeCodec.G722, 9, payloads))
    assert samples.size == 16000 * 0.5
    found = spectrum(samples[1600:].astype(np.float64), 16000)
    assert abs(found.dominant_hz - 440.0) < 8, found


def test_undecodable_opus_from_the_phone_becomes_20_ms_of_silence() -> None:
    samples = asyncio.run(_decoded(BridgeCodec.OPUS, 111, [b"\xff" * 3, b"\x03"]))
    assert samples.size == 2 * 960 and not samples.any()


@pytest.mark.parametrize(
    ("phone", "webrtc", "passthrough"),
    [
        (BridgeCodec.PCMU, BridgeCodec.PCMU, True),
        (BridgeCodec.PCMA, BridgeCodec.PCMA, True),
        (BridgeCodec.OPUS, BridgeCodec.OPUS, True),  # self-describing packets
        (BridgeCodec.G722, BridgeCodec.G722, True),  # aiortc 1.16 speaks G.722
        (BridgeCodec.G722, BridgeCodec.PCMU, False),
        (BridgeCodec.PCMA, BridgeCodec.PCMU, False),
        (BridgeCodec.OPUS, BridgeCodec.PCMU, False),
    ],
)
def test_passthrough_needs_the_same_codec_on_both_legs(
    phone: BridgeCodec, webrtc: BridgeCodec, passthrough: bool
) -> None:
    assert choose_media_path(phone, webrtc).passthrough is passthrough
