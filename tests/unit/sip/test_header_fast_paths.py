"""The header fast paths build exactly what the general scanners build from the same text.

``headers`` parses the common spellings of Via, name-addr and header parameters
with one regex each (the gateway's call set-up rate depends on it) and leaves
everything else to the RFC 3261 scanners. A fast result that differed from the
scanner's, or a fast accept of text the scanner refuses, would change what the
gateway accepts: hypothesis generates text in the fast forms (and near them) and
compares both ways.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.gateways.sip import headers
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.grammar import Cursor
from p2pnode.gateways.sip.headers import NameAddress, Param, Via

# Characters that matter to these grammars, so random text often comes close.
_ALPHABET = "sipSIPUDPtagbrnchz9K.-_:;=,<>\"\\ \t@[]/2013abcf!%*+`'~é?"
_NEAR = st.text(alphabet=_ALPHABET, max_size=60)


def _outcome_scan_via(value: str) -> tuple[Via, ...] | str:
    try:
        return headers._scan_via_value(value)
    except SipDecodeError as error:
        return f"error {error}"


def _outcome_scan_name(value: str) -> tuple[NameAddress, ...] | str:
    try:
        return headers._scan_name_addresses(value, "From", True, False)
    except SipDecodeError as error:
        return f"error {error}"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.from_regex(headers._FAST_VIA_RE, fullmatch=True), _NEAR))
def test_fast_via_equals_the_scanner(value: str) -> None:
    fast = headers._via_fast(value)
    if fast is not None:
        assert _outcome_scan_via(value) == (fast,)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.from_regex(headers._FAST_NAME_ADDR_RE, fullmatch=True), _NEAR))
def test_fast_name_address_equals_the_scanner(value: str) -> None:
    fast = headers._name_address_fast(value)
    if fast is not None:
        assert _outcome_scan_name(value) == (fast,)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.from_regex(headers._FAST_PARAMS_RE, fullmatch=True), _NEAR),
    st.sampled_from(["", ",", " ", ";", "=", '"x"', ", next", " ;a=b", "x"]),
)
def test_fast_parameters_equal_the_scanner(params: str, after: str) -> None:
    text = params + after
    fast_cursor, scan_cursor = Cursor(text), Cursor(text)
    try:
        expected: tuple[Param, ...] | str = headers._scan_params(scan_cursor, "Via")
    except SipDecodeError as error:
        expected = f"error {error}"
    try:
        got: tuple[Param, ...] | str = headers._header_params(fast_cursor, "Via")
    except SipDecodeError as error:
        got = f"error {error}"
    assert got == expected
    if not isinstance(expected, str):
        assert fast_cursor.pos == scan_cursor.pos


def test_the_fast_paths_take_what_phones_send_and_leave_the_rest() -> None:
    """sipp's and our own spellings go fast; LWS, escapes and lists go to the scanner."""
    assert headers._via_fast("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport") is not None
    assert headers._via_fast("SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::9") is not None
    assert headers._via_fast("SIP / 2.0 / UDP host") is None
    assert headers._via_fast("SIP/2.0/UDP a, SIP/2.0/UDP b") is None
    assert headers._via_fast("SIP/2.0/UDP 1.2.3.4:99999") is None  # the scanner refuses it
    assert headers._name_address_fast("sipp <sip:sipp@127.0.0.1:5061>;tag=1") is not None
    assert headers._name_address_fast('"Bob" <sip:bob@gw.test>') is not None
    assert headers._name_address_fast('"B\\"ob" <sip:bob@gw.test>') is None
    assert headers._name_address_fast("<sip:a@b>, <sip:c@d>") is None
    assert headers._name_address_fast("<sip:a@b> ;tag=1") is None
    assert headers._name_address_fast("<bad uri>") is None  # the scanner's error, not ours
