"""The phone is offered the P2P peer's codecs first: peer_codecs and offer_order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.bridge_codecs import BridgeCodec, peer_codecs
from p2pnode.gateways.sip.bridge_ua import BridgeUserAgent, offer_order

# An aiortc-style offer: PCMA first, an unknown codec, opus, telephone-event.
OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 4000 UDP/TLS/RTP/SAVPF 8 99 96 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:99 iLBC/8000",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        "",
    ]
)


def test_peer_codecs_keeps_the_peer_s_order_of_known_codecs() -> None:
    assert peer_codecs(OFFER) == (BridgeCodec.PCMA, BridgeCodec.OPUS)


def test_peer_codecs_of_no_or_bad_sdp_is_empty() -> None:
    assert peer_codecs(None) == ()
    assert peer_codecs("") == ()
    assert peer_codecs("v=0\r\nm=audio x\r\n") == ()
    assert peer_codecs(OFFER.replace("opus/48000", "opus/8000").replace("PCMA", "X")) == ()


def test_offer_order_puts_the_peer_s_codecs_first_and_keeps_the_rest() -> None:
    codecs = [codec for codec, _ in offer_order((BridgeCodec.PCMA, BridgeCodec.OPUS))]
    assert codecs == [BridgeCodec.PCMA, BridgeCodec.OPUS, BridgeCodec.PCMU, BridgeCodec.G722]
    default = [codec for codec, _ in offer_order(())]
    assert default == [BridgeCodec.PCMU, BridgeCodec.PCMA, BridgeCodec.G722, BridgeCodec.OPUS]


def test_the_phone_s_invite_lists_the_peer_s_order() -> None:
    ua = BridgeUserAgent("bob", "pw", "gw.test", ("127.0.0.1", 5060))
    ua.offers[4000] = offer_order((BridgeCodec.OPUS, BridgeCodec.PCMA))
    m_line = next(line for line in ua._sdp(4000).decode().split("\r\n") if line.startswith("m="))
    assert m_line.split()[3:] == ["111", "8", "0", "9", "101"]


@given(st.text(max_size=400))
def test_peer_codecs_is_total(text: str) -> None:
    assert all(isinstance(codec, BridgeCodec) for codec in peer_codecs(text))
