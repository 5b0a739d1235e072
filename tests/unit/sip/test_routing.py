"""Routing: who may call what, DIDs, trunks, PAI trust, contact vs NAT path; MESSAGE queue."""

from __future__ import annotations

import random

import pytest

from p2pnode.gateways.sip.accounts import Account, AccountStore
from p2pnode.gateways.sip.b2bua import Target
from p2pnode.gateways.sip.headers import parse_uri
from p2pnode.gateways.sip.locate import Hop, SrvRecord, literal_hop, order_srv
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.messages import MAX_BODY, MessageQueue, QueuedMessage
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.registrar import Binding
from p2pnode.gateways.sip.routing import (
    Caller,
    CallerKind,
    Foreign,
    Refusal,
    Router,
    contact_for,
)
from p2pnode.gateways.sip.trunks import IpTrunk, RegistrationTrunk, TrunkTable, digits

ANONYMOUS = Caller(CallerKind.ANONYMOUS)


def binding(contact: str, source: tuple[str, int], reliable: bool = False) -> Binding:
    return Binding(parse_uri(contact), "c", 1, 1e9, source, reliable)


def invite(uri: str, pai: str | None = None) -> SipRequest:
    lines = [
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1",
        "From: <sip:carol@other.example>;tag=1",
        f"To: <{uri}>",
        "Call-ID: x",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
    ]
    if pai:
        lines.append(f"P-Asserted-Identity: {pai}")
    message = parse_datagram(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


@pytest.fixture
def router() -> Router:
    store = AccountStore(":memory:", "gw.test")
    rb = random.Random(1).randbytes
    store.add("alice", None, randbytes=rb, allow_e164=True)
    store.add("bob", None, randbytes=rb)
    store.add("pbx", None, randbytes=rb)
    bindings = {
        "bob": (binding("sip:bob@10.0.0.5:5062", ("198.51.100.5", 40000)),),
        "pbx": (binding("sip:pbx@198.51.100.9:5070", ("198.51.100.9", 5070)),),
    }
    trunks = TrunkTable(
        registration=(RegistrationTrunk("pbx", ("+49 30 777",)),),
        ip=(
            IpTrunk(
                "carrier", ("203.0.113.0/28",), dids=("4930888",), target=("203.0.113.1", 5060)
            ),
        ),
        account_dids=(("4930555", "bob"),),
    )
    return Router(
        domain="gw.test",
        local_hosts=lambda: frozenset({"192.0.2.1"}),
        account=store.get,
        bindings=lambda login, now: bindings.get(login, ()),
        trunks=trunks,
    )


def test_anyone_may_call_a_login_and_it_rings_at_the_nat_path(router: Router) -> None:
    target = router.route(invite("sip:bob@gw.test"), ANONYMOUS, 0.0)
    assert isinstance(target, Target)
    (contact,) = target.contacts
    assert contact.destination == ("198.51.100.5", 40000)  # private Contact: the NAT path
    assert router.route(invite("sip:bob@192.0.2.1"), ANONYMOUS, 0.0) == target
    assert router.route(invite("sip:nobody@gw.test"), ANONYMOUS, 0.0) == Refusal(404, "Not Found")
    no_device = router.route(invite("sip:alice@gw.test"), ANONYMOUS, 0.0)
    assert isinstance(no_device, Target) and no_device.contacts == ()  # the B2BUA answers 480


def test_never_an_open_relay_and_no_toll_fraud(router: Router) -> None:
    assert router.route(invite("sip:x@elsewhere.example"), ANONYMOUS, 0.0) == Refusal(
        403, "Forbidden"
    )
    assert router.route(invite("sip:+4930123@gw.test"), ANONYMOUS, 0.0).status == 403  # type: ignore[union-attr]
    bob = Caller(CallerKind.ACCOUNT, login="bob")  # not allowed E.164
    assert router.route(invite("sip:+4930123@gw.test"), bob, 0.0).status == 403  # type: ignore[union-attr]
    alice = Caller(CallerKind.ACCOUNT, login="alice")
    assert router.route(invite("sip:+4930123@gw.test"), alice, 0.0).status == 404  # type: ignore[union-attr]


def test_dids_route_to_accounts_pbxs_and_ip_trunks_but_not_for_anonymous_callers(
    router: Router,
) -> None:
    carrier = Caller(CallerKind.TRUNK, trunk=router.trunks.ip[0])
    assert router.route(invite("sip:4930555@gw.test"), ANONYMOUS, 0.0).status == 403  # type: ignore[union-attr]
    to_bob = router.route(invite("sip:+4930555@gw.test"), carrier, 0.0)
    assert isinstance(to_bob, Target) and to_bob.accounts == ("bob",)
    to_pbx = router.route(invite("sip:4930777@gw.test"), carrier, 0.0)
    assert isinstance(to_pbx, Target)
    assert str(to_pbx.aor) == "sip:4930777@gw.test" and to_pbx.request_uri_user == "4930777"
    assert to_pbx.contacts[0].destination == ("198.51.100.9", 5070)  # public Contact stands
    alice = Caller(CallerKind.ACCOUNT, login="alice")
    to_trunk = router.route(invite("sip:4930888@gw.test"), alice, 0.0)
    assert isinstance(to_trunk, Target) and to_trunk.contacts[0].destination == (
        "203.0.113.1",
        5060,
    )


def test_pai_is_trusted_only_from_a_trusted_trunk(router: Router) -> None:
    request = invite("sip:bob@gw.test", pai="<sip:+4930999@carrier.example>")
    carrier = Caller(CallerKind.TRUNK, trunk=router.trunks.ip[0])
    assert str(router.caller_id(request, carrier).uri) == "sip:+4930999@carrier.example"
    assert str(router.caller_id(request, ANONYMOUS).uri) == "sip:carol@other.example"


def test_trunk_acl_and_did_normalisation() -> None:
    trunks = TrunkTable(ip=(IpTrunk("t", ("203.0.113.0/28", "2001:db8::1")),))
    assert trunks.ip_trunk_for("203.0.113.14") is not None
    assert trunks.ip_trunk_for("203.0.113.16") is None
    assert trunks.ip_trunk_for("2001:db8::1") is not None
    assert trunks.ip_trunk_for("not-an-ip") is None
    assert digits("+49 (30) 555-01.00") == "4930555010" + "0"
    assert digits("alice") is None and digits("") is None
    with pytest.raises(ValueError):
        TrunkTable(account_dids=(("4930555", "a"), ("+4930555", "b")))


def test_contact_over_a_stream_or_by_name_uses_the_connection() -> None:
    assert contact_for(binding("sip:a@198.51.100.7", ("198.51.100.8", 4000), True)).destination == (
        "198.51.100.8", 4000,
    )  # fmt: skip
    assert contact_for(binding("sip:a@phone.example", ("198.51.100.8", 4000))).destination == (
        "198.51.100.8", 4000,
    )  # fmt: skip


def test_message_queue_is_bounded_and_drops_old_messages() -> None:
    queue = MessageQueue(per_account=2, total=3)
    sender = invite("sip:bob@gw.test").from_
    message = QueuedMessage(sender, "<sip:bob@gw.test>", "text/plain", b"hi", 0.0)
    assert queue.put("bob", message) is None and queue.put("bob", message) is None
    assert queue.put("bob", message) == 486
    assert queue.put("carol", message) is None and queue.put("dave", message) == 503
    big = QueuedMessage(sender, "<sip:bob@gw.test>", "text/plain", b"x" * (MAX_BODY + 1), 0.0)
    assert queue.put("erin", big) == 413
    assert len(queue.take("bob", 10.0)) == 2 and queue.take("bob", 10.0) == []
    assert queue.take("carol", 1e9) == []  # older than MAX_AGE
    assert len(queue) == 0


def test_account_value_shape() -> None:
    store = AccountStore(":memory:", "gw.test")
    account, _ = store.add("zed", None, randbytes=random.Random(2).randbytes, max_calls=2)
    assert isinstance(account, Account) and account.max_calls == 2 and not account.allow_e164


def test_accounts_reach_foreign_domains_and_numbers_go_to_the_upstream_trunk(
    router: Router,
) -> None:
    alice = Caller(CallerKind.ACCOUNT, login="alice")
    foreign = router.route(invite("sip:x@elsewhere.example"), alice, 0.0)
    assert isinstance(foreign, Foreign) and foreign.accounts == ("alice",)
    router.upstream = ("198.51.100.99", 5070)
    out = router.route(invite("sip:+4930123@gw.test"), alice, 0.0)
    assert isinstance(out, Target)
    assert str(out.contacts[0].uri) == "sip:+4930123@198.51.100.99:5070"
    assert out.contacts[0].destination == ("198.51.100.99", 5070)
    bob = Caller(CallerKind.ACCOUNT, login="bob")  # no E.164 right: still refused
    assert router.route(invite("sip:+4930123@gw.test"), bob, 0.0) == Refusal(403, "Forbidden")


def test_rfc3263_literal_hosts_and_srv_order() -> None:
    assert literal_hop(parse_uri("sip:a@198.51.100.7")) == Hop("198.51.100.7", 5060)  # type: ignore[arg-type]
    assert literal_hop(parse_uri("sips:a@[2001:db8::1]:5081")) == Hop("2001:db8::1", 5081)  # type: ignore[arg-type]
    assert literal_hop(parse_uri("sip:a@example.org")) is None  # type: ignore[arg-type]
    records = [
        SrvRecord(20, 0, 5060, "backup"),
        SrvRecord(10, 60, 5060, "big"),
        SrvRecord(10, 20, 5060, "small"),
        SrvRecord(10, 20, 5060, "small2"),
    ]
    rng = random.Random(4)
    firsts = [order_srv(records, rng.random) for _ in range(2000)]
    assert all(order[-1].target == "backup" for order in firsts)  # priority before weight
    share = sum(order[0].target == "big" for order in firsts) / len(firsts)
    assert 0.55 < share < 0.65  # weight 60 of 100
    assert sorted(r.target for r in firsts[0]) == ["backup", "big", "small", "small2"]
