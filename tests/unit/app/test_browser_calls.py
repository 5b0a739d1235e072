"""The browser leg's pure parts: the page's ICE servers are exactly the node's plan, and
the codec a page's SDP names is read without trusting it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.app.browser_calls import PageIceServer, page_ice_servers, sdp_codec
from p2pnode.connectivity.credentials import TurnCredentials
from p2pnode.connectivity.ice_servers import IcePlan, TurnTransport

CHROMIUM_OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
)


def test_a_relay_plan_gives_the_page_our_stun_and_turn_with_this_identitys_credentials() -> None:
    credentials = TurnCredentials("1700000000:alice-id", "pw", "p2pnode", 1_700_000_000)
    plan = IcePlan(
        stun=("192.0.2.7", 3478),
        turn=("192.0.2.7", 3478),
        turn_transport=TurnTransport.UDP,
        credentials=credentials,
        relay_id="relay-peer",
    )
    assert page_ice_servers(plan) == (
        PageIceServer("stun:192.0.2.7:3478"),
        PageIceServer("turn:192.0.2.7:3478?transport=udp", "1700000000:alice-id", "pw"),
    )


def test_no_relay_means_host_candidates_only_never_a_public_server() -> None:
    assert page_ice_servers(IcePlan()) == ()


def test_the_codec_of_a_page_sdp() -> None:
    assert sdp_codec(CHROMIUM_OFFER) == "audio/opus"


SDP_LINES = st.sampled_from(
    ["v=0", "m=audio 9 RTP/AVP 0", "m=audio x", "a=rtpmap:0 PCMU/8000", "a=rtpmap:0", "c=IN"]
)


@given(st.lists(st.one_of(SDP_LINES, st.text(max_size=40)), max_size=12))
def test_any_text_as_sdp_gives_an_audio_codec_or_none(lines: list[str]) -> None:
    codec = sdp_codec("\r\n".join(lines))
    assert codec is None or codec.startswith("audio/")
