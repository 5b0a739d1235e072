"""RFC 3261 §12 dialogs: creation on both sides, route sets, CSeq rules, target refresh."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pnode.gateways.sip.dialog import Dialog, DialogError, DialogState, DialogTable
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.parser import parse_datagram, serialize

INVITE = SipRequest.build(
    "INVITE",
    SipUri("sip", "bob", None, "example.com", None),
    (
        Header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv;rport"),
        Header("Max-Forwards", "70"),
        Header("From", '"Alice" <sip:alice@example.com>;tag=alice1'),
        Header("To", "<sip:bob@example.com>"),
        Header("Call-ID", "dialog-1@192.0.2.1"),
        Header("CSeq", "10 INVITE"),
        Header("Contact", "<sip:alice@192.0.2.1:5060>"),
        Header("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"),
        Header("Content-Length", "0"),
    ),
    b"",
)


def response(status: int, *, contact: str = "<sip:bob@198.51.100.2:5062>") -> SipResponse:
    record_route = ("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    return build_response(
        INVITE, status, "Reason", ("Contact", contact), record_route, to_tag="bob9"
    )


def test_uac_dialog_early_then_confirmed_and_bye_routed_by_the_reversed_record_route() -> None:
    early = Dialog.from_uac(INVITE, response(180))
    assert early.state is DialogState.EARLY
    assert (early.id.local_tag, early.id.remote_tag) == ("alice1", "bob9")
    confirmed = early.on_response(INVITE, response(200))
    assert confirmed.state is DialogState.CONFIRMED
    assert str(confirmed.remote_target) == "sip:bob@198.51.100.2:5062"
    assert [str(route.uri) for route in confirmed.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    after, bye = confirmed.create_request("BYE", via="SIP/2.0/UDP 192.0.2.1:5060", branch_id="bye1")
    assert after.local_seq == 11 and bye.cseq.number == 11 and bye.cseq.method == "BYE"
    assert str(bye.uri) == "sip:bob@198.51.100.2:5062"
    assert [str(route.uri) for route in bye.routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert (bye.from_.tag, bye.to.tag, bye.call_id) == ("alice1", "bob9", INVITE.call_id)
    assert bye.top_via.branch == "z9hG4bKbye1"
    assert parse_datagram(serialize(bye)) == bye
    _, ack = confirmed.create_request(
        "ACK", via="SIP/2.0/UDP 192.0.2.1:5060", branch_id="ack1", cseq=10
    )
    assert ack.cseq.number == 10


def test_strict_route_becomes_the_request_uri() -> None:
    strict = build_response(
        INVITE,
        200,
        "OK",
        ("Contact", "<sip:bob@198.51.100.2>"),
        ("Record-Route", "<sip:strict.example.com>"),
        to_tag="b",
    )
    dialog = Dialog.from_uac(INVITE, strict)
    _, bye = dialog.create_request("BYE", via="SIP/2.0/UDP h", branch_id="s")
    assert str(bye.uri) == "sip:strict.example.com"
    assert [str(route.uri) for route in bye.routes] == ["sip:bob@198.51.100.2"]


def test_uas_dialog_cseq_rules_target_refresh_and_bye() -> None:
    uas = Dialog.from_uas(INVITE, "bob9", confirmed=True)
    uac = Dialog.from_uac(INVITE, response(200))
    assert (uas.id.local_tag, uas.id.remote_tag) == (uac.id.remote_tag, uac.id.local_tag)
    assert [str(route.uri) for route in uas.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    assert uas.local_uri.tag == "bob9"
    uac, reinvite = uac.create_request(
        "INVITE",
        via="SIP/2.0/UDP 192.0.2.1:5060",
        branch_id="re",
        extra=(Header("Contact", "<sip:alice@203.0.113.5:7000>"),),
    )
    uas, refused = uas.on_request(reinvite)
    assert refused is None and uas.remote_seq == 11
    assert str(uas.remote_target) == "sip:alice@203.0.113.5:7000"
    _, old = uas.on_request(INVITE)  # CSeq 10 after 11: §12.2.2
    assert old == 500
    _, bye = uac.create_request("BYE", via="SIP/2.0/UDP 192.0.2.1:5060", branch_id="b")
    uas, refused = uas.on_request(bye)
    assert refused is None and uas.state is DialogState.TERMINATED
    with pytest.raises(DialogError):
        uas.terminated_by_bye()


def test_failure_ends_an_early_dialog_and_table_is_bounded() -> None:
    early = Dialog.from_uac(INVITE, response(183))
    ended = early.on_response(INVITE, response(486))
    assert ended.state is DialogState.TERMINATED
    with pytest.raises(DialogError):
        ended.create_request("BYE", via="SIP/2.0/UDP h", branch_id="x")
    table = DialogTable(max_dialogs=1)
    confirmed = early.on_response(INVITE, response(200))
    assert table.put(confirmed)
    assert table.find_for_response(response(200)) == confirmed
    other = Dialog.from_uas(INVITE, "another", confirmed=True)
    assert not table.put(other)  # full
    assert table.put(confirmed.terminated_by_bye()) and len(table) == 0
    assert table.put(other)
    _, bye = Dialog.from_uac(
        INVITE, build_response(INVITE, 200, "OK", ("Contact", "<sip:b@h>"), to_tag="another")
    ).create_request("BYE", via="SIP/2.0/UDP h", branch_id="q")
    assert table.find_for_request(bye) == other  # the UAS view: its To tag is ours


def test_a_dialog_needs_tags_and_contact() -> None:
    no_tag = build_response(INVITE, 180, "Ringing", ("Contact", "<sip:b@h>"))
    with pytest.raises(DialogError):
        Dialog.from_uac(INVITE, no_tag)
    no_contact = build_response(INVITE, 200, "OK", to_tag="t")
    with pytest.raises(DialogError):
        Dialog.from_uac(INVITE, no_contact)


def test_every_state_event_pair_is_defined_or_refused() -> None:
    """Walk the dialog table: a defined pair moves, an undefined one raises DialogError."""
    from p2pnode.gateways.sip.dialog import _TRANSITIONS, _Event

    base = Dialog.from_uac(INVITE, response(180))
    for state in DialogState:
        for event in _Event:
            dialog = replace(base, state=state)
            if (state, event) in _TRANSITIONS:
                assert dialog._move(event) is _TRANSITIONS[(state, event)]
            else:
                with pytest.raises(DialogError):
                    dialog._move(event)
    assert not any(state is DialogState.TERMINATED for state, _ in _TRANSITIONS)
