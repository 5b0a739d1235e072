"""The call signal codec: one case table both ways, byte-by-byte truncation, trailing data, fuzz."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.sessions.call_signal import (
    MAX_SDP_BYTES,
    CallSignal,
    CallSignalDecodeError,
    DeclineReason,
    Dtmf,
    RelayedCaller,
    SignalKind,
    decode_signal,
    encode_signal,
)

CALL_ID = bytes(range(16))
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

CASES = [
    CallSignal(SignalKind.INVITE, CALL_ID, 0, SDP),
    CallSignal(SignalKind.RINGING, CALL_ID),
    CallSignal(SignalKind.ANSWER, CALL_ID, 0, SDP),
    CallSignal(SignalKind.DECLINE, CALL_ID, reason=DeclineReason.DECLINED),
    CallSignal(SignalKind.DECLINE, CALL_ID, reason=DeclineReason.NO_ANSWER),
    CallSignal(SignalKind.DECLINE, CALL_ID, reason=DeclineReason.REFUSED),
    CallSignal(SignalKind.BUSY, CALL_ID),
    CallSignal(SignalKind.CANCEL, CALL_ID),
    CallSignal(SignalKind.HANGUP, CALL_ID),
    CallSignal(SignalKind.REOFFER, CALL_ID, 3, SDP),
    CallSignal(SignalKind.REANSWER, CALL_ID, 3, SDP),
    CallSignal(SignalKind.DTMF, CALL_ID, 3, dtmf=Dtmf(0, "5", 120)),
    CallSignal(SignalKind.DTMF, CALL_ID, 0, dtmf=Dtmf(0xFFFFFFFF, "#", 0)),
    CallSignal(SignalKind.CALLER, CALL_ID, caller=RelayedCaller("sip:c@other.example", False)),
    CallSignal(SignalKind.CALLER, CALL_ID, caller=RelayedCaller("x" * 256, True)),
]


@pytest.mark.parametrize("signal", CASES, ids=lambda s: s.kind.name)
def test_round_trip(signal: CallSignal) -> None:
    data = encode_signal(signal)
    assert decode_signal(data) == signal
    for cut in range(len(data)):
        with pytest.raises(CallSignalDecodeError):
            decode_signal(data[:cut])
    with pytest.raises(CallSignalDecodeError):
        decode_signal(data + b"\x00")


def test_the_wire_layout_is_a_six_field_array() -> None:
    fields = msgpack.unpackb(encode_signal(CASES[3]), raw=False)
    assert fields == [1, 4, CALL_ID, 0, None, 1]


def test_only_dtmf_and_caller_add_a_seventh_field() -> None:
    signal = CallSignal(SignalKind.DTMF, CALL_ID, 0, dtmf=Dtmf(7, "D", 80))
    assert msgpack.unpackb(encode_signal(signal), raw=False) == [
        1,
        10,
        CALL_ID,
        0,
        None,
        None,
        [7, "D", 80],
    ]
    for other in CASES[:11]:
        assert len(msgpack.unpackb(encode_signal(other), raw=False)) == 6


@pytest.mark.parametrize("uri", ["", "x" * 257, "sip:\u00e9@x", "sip:a@b\r\nEvil: 1"])
def test_a_relayed_caller_is_short_printable_ascii(uri: str) -> None:
    with pytest.raises(ValueError, match="relayed caller"):
        RelayedCaller(uri, False)


@pytest.mark.parametrize("digit", ["", "55", "E", "x", "\u0665"])
def test_dtmf_digits_are_the_sixteen_rfc4733_events(digit: str) -> None:
    with pytest.raises(ValueError, match="digit"):
        Dtmf(0, digit, 100)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([2, 1, CALL_ID, 0, SDP, None], "version"),
        ([1, 99, CALL_ID, 0, SDP, None], "unknown kind"),
        ([1, 1, CALL_ID[:15], 0, SDP, None], "16 bytes"),
        ([1, 1, CALL_ID, 0, None, None], "sdp"),
        ([1, 2, CALL_ID, 0, SDP, None], "sdp"),
        ([1, 4, CALL_ID, 0, None, None], "reason"),
        ([1, 5, CALL_ID, 0, None, 1], "reason"),
        ([1, 4, CALL_ID, 0, None, 9], "decline reason"),
        ([1, 1, CALL_ID, -1, SDP, None], "generation"),
        ([1, 1, CALL_ID, 1 << 16, SDP, None], "generation"),
        ([1, True, CALL_ID, 0, SDP, None], "integer"),
        ([1, 1, "text-not-bytes", 0, SDP, None], "bytes"),
        ([1, 1, CALL_ID, 0, b"sdp", None], "text"),
        ([1, 1, CALL_ID, 0, SDP], "six"),
        ([1, 10, CALL_ID, 0, None, None], "dtmf"),
        ([1, 7, CALL_ID, 0, None, None, [0, "1", 100]], "dtmf"),
        ([1, 10, CALL_ID, 0, None, None, [0, "1"]], "three"),
        ([1, 10, CALL_ID, 0, None, None, "1"], "three"),
        ([1, 10, CALL_ID, 0, None, None, [0, 1, 100]], "digit is not text"),
        ([1, 10, CALL_ID, 0, None, None, [0, "E", 100]], "digit"),
        ([1, 10, CALL_ID, 0, None, None, [-1, "1", 100]], "sequence"),
        ([1, 10, CALL_ID, 0, None, None, [1 << 32, "1", 100]], "sequence"),
        ([1, 10, CALL_ID, 0, None, None, [0, "1", 1 << 16]], "duration"),
        ([1, 10, CALL_ID, 0, None, None, [0, "1", True]], "integer"),
        ([1, 1, CALL_ID, 0, SDP, None, None, None], "six"),
        ([1, 11, CALL_ID, 0, None, None], "caller"),
        ([1, 11, CALL_ID, 0, None, None, ["sip:a@b"]], "two-field"),
        ([1, 11, CALL_ID, 0, None, None, ["sip:a@b", 1]], "boolean"),
        ([1, 11, CALL_ID, 0, None, None, [b"sip:a@b", True]], "boolean"),
        ([1, 11, CALL_ID, 0, None, None, ["", True]], "length"),
        ([1, 11, CALL_ID, 0, None, None, ["a\x00b", True]], "printable"),
        ([1, 10, CALL_ID, 0, None, None, ["sip:a@b", True]], "three"),
        ({"kind": 1}, "msgpack"),
    ],
)
def test_invalid_fields_are_one_error_naming_the_reason(fields: object, reason: str) -> None:
    with pytest.raises(CallSignalDecodeError, match=reason):
        decode_signal(msgpack.packb(fields, use_bin_type=True))


def test_oversized_sdp_is_refused_both_ways() -> None:
    big = "a" * (MAX_SDP_BYTES + 1)
    with pytest.raises(ValueError, match="too long"):
        CallSignal(SignalKind.INVITE, CALL_ID, 0, big)
    data = msgpack.packb([1, 1, CALL_ID, 0, big, None], use_bin_type=True)
    with pytest.raises(CallSignalDecodeError):
        decode_signal(data)


def test_errors_never_echo_the_attackers_bytes() -> None:
    with pytest.raises(CallSignalDecodeError) as caught:
        decode_signal(msgpack.packb([1, 1, b"EVIL" * 4, 0, "x", "EVIL-REASON"]))
    assert "EVIL" not in str(caught.value)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_the_decode_error(data: bytes) -> None:
    with contextlib.suppress(CallSignalDecodeError):
        decode_signal(data)


@given(
    st.lists(
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.binary(max_size=20), st.text(max_size=20)
        ),
        max_size=8,
    )
)
def test_any_msgpack_array_decodes_or_raises_the_decode_error(fields: list[object]) -> None:
    try:
        data = msgpack.packb(fields, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    with contextlib.suppress(CallSignalDecodeError):
        decode_signal(data)
