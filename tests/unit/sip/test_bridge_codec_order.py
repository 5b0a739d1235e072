"""The P2P leg's codec order for one bridged call, and what an answer lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.gateways.sip.bridge_codecs import BridgeCodec, p2p_codec_order
from p2pnode.gateways.sip.bridge_ua import PhoneFormat, choose_phone_format, phone_formats
from p2pnode.sessions.call_config import answer_codec_order

RUNTIME = ("PCMU", "PCMA", "opus")  # app/sip_bridge.py's order before G.722 was added
NAMES = st.sampled_from(["opus", "OPUS", "PCMU", "pcmu", "PCMA", "G722", "iLBC", "speex"])


@pytest.mark.parametrize(
    ("phone", "configured", "expected"),
    [
        (BridgeCodec.OPUS, RUNTIME, ("opus", "PCMU", "PCMA")),
        (BridgeCodec.PCMA, RUNTIME, ("PCMA", "PCMU", "opus")),
        (BridgeCodec.PCMU, RUNTIME, RUNTIME),
        (BridgeCodec.G722, RUNTIME, RUNTIME),  # not listed: the operator's order stays
        (BridgeCodec.G722, (*RUNTIME, "G722"), ("G722", "PCMU", "PCMA", "opus")),
        (BridgeCodec.OPUS, ("PCMU", "OPUS"), ("OPUS", "PCMU")),  # the listed spelling
        (BridgeCodec.OPUS, (), ()),
        # Every codec the phone offered, in its order, ahead of the bridge's others:
        ((BridgeCodec.G722, BridgeCodec.PCMA), RUNTIME, ("PCMA", "PCMU", "opus")),
        ((BridgeCodec.OPUS, BridgeCodec.PCMA), RUNTIME, ("opus", "PCMA", "PCMU")),
        ((BridgeCodec.PCMA, BridgeCodec.OPUS), RUNTIME, ("PCMA", "opus", "PCMU")),
        ((), RUNTIME, RUNTIME),
    ],
)
def test_the_phone_s_codec_goes_first_when_the_bridge_lists_it(
    phone: BridgeCodec | tuple[BridgeCodec, ...],
    configured: tuple[str, ...],
    expected: tuple[str, ...],
) -> None:
    assert p2p_codec_order(phone, configured) == expected


@pytest.mark.parametrize(
    ("preferred", "offered", "expected"),
    [
        (("opus",), ("PCMU", "opus", "PCMA"), ("opus",)),  # only it: aiortc offerers re-pick
        (("PCMA", "PCMU"), ("PCMU", "opus", "PCMA"), ("PCMA", "PCMU")),
        (("G722",), ("opus", "PCMU"), ("opus", "PCMU")),  # not offered: the offer's list
        (("OPUS",), ("opus",), ("opus",)),  # the offer's spelling
        ((), ("PCMU", "PCMA"), ("PCMU", "PCMA")),
        (("PCMU",), (), ()),
    ],
)
def test_an_answer_names_the_call_s_codecs_the_offer_has(
    preferred: tuple[str, ...], offered: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert answer_codec_order(preferred, offered) == expected


@given(st.lists(NAMES, max_size=6), st.lists(NAMES, max_size=6))
def test_an_answer_never_names_a_codec_the_offer_lacks(
    preferred: list[str], offered: list[str]
) -> None:
    answer = answer_codec_order(tuple(preferred), tuple(offered))
    assert set(answer) <= set(offered)
    assert len(answer) == len(set(answer))
    wanted = {name.lower() for name in preferred}
    if wanted & {name.lower() for name in offered}:
        assert answer and all(name.lower() in wanted for name in answer)
    else:
        assert answer == tuple(dict.fromkeys(offered))


@given(st.sampled_from(list(BridgeCodec)), st.lists(NAMES, max_size=6, unique=True))
def test_the_order_only_moves_the_phone_s_codec(phone: BridgeCodec, configured: list[str]) -> None:
    order = p2p_codec_order(phone, tuple(configured))
    assert sorted(order) == sorted(configured)
    rest = [name for name in configured if name.lower() != phone.value.lower()]
    assert [name for name in order if name.lower() != phone.value.lower()] == rest
    if any(name.lower() == phone.value.lower() for name in configured):
        assert order[0].lower() == phone.value.lower()


def _offer(formats: str, *extra: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    lines += [f"m=audio 4000 RTP/AVP {formats}", *extra, "a=rtcp-mux", ""]
    return "\r\n".join(lines).encode()


def test_every_codec_the_phone_offers_that_the_bridge_speaks_in_its_order() -> None:
    body = _offer(
        "9 96 18 8 0 96 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
    )
    formats = phone_formats(body)
    assert formats == (
        PhoneFormat(BridgeCodec.G722, 9, 101, True),
        PhoneFormat(BridgeCodec.OPUS, 96, 101, True),
        PhoneFormat(BridgeCodec.PCMA, 8, 101, True),  # G.729 (18) is not ours
        PhoneFormat(BridgeCodec.PCMU, 0, 101, True),  # opus once only
    )
    assert choose_phone_format(body) == formats[0]
    assert phone_formats(_offer("18")) == () and phone_formats(b"not sdp") == ()
