"""Routing to the SIP <-> P2P bridge: what would be a 404 rings the bridge's account instead."""

from __future__ import annotations

import random

from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.b2bua import Target
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.routing import Caller, CallerKind, Refusal, Router
from p2pnode.gateways.sip.trunks import IpTrunk, TrunkTable
from tests.unit.sip.test_routing import binding, invite

ANONYMOUS = Caller(CallerKind.ANONYMOUS)
BRIDGE = ("198.51.100.7", 41000)


def router(p2p_login: str | None, *, with_bridge_account: bool = True) -> Router:
    store = AccountStore(":memory:", "gw.test")
    rb = random.Random(2).randbytes
    store.add("alice", None, randbytes=rb, allow_e164=True)
    store.add("bob", None, randbytes=rb)
    if with_bridge_account:
        store.add("p2p", None, randbytes=rb)
    bindings = {
        "bob": (binding("sip:bob@10.0.0.5:5062", ("198.51.100.5", 40000)),),
        "p2p": (binding("sip:p2p@198.51.100.7:41000", BRIDGE),),
    }
    carrier = IpTrunk("carrier", ("203.0.113.0/28",), target=("203.0.113.1", 5060))
    trunks = TrunkTable(
        registration=(),
        ip=(carrier,),
        account_dids=(("4930555", "bob"), ("4930556", "carol")),  # carol: a P2P login
    )
    return Router(
        domain="gw.test",
        local_hosts=lambda: frozenset({"192.0.2.1"}),
        account=store.get,
        bindings=lambda login, now: bindings.get(login, ()),
        trunks=trunks,
        p2p_login=p2p_login,
    )


def bridge_target(decision: Target | Refusal | object, aor: str) -> Target:
    assert isinstance(decision, Target), decision
    (contact,) = decision.contacts
    assert contact.destination == BRIDGE
    assert decision.aor == SipUri("sip", aor, None, "gw.test", None)  # To: what was dialled
    assert decision.accounts[-1] == "p2p"  # the bridge account's call limit applies
    return decision


def test_a_login_not_hosted_here_rings_the_bridge_from_any_network() -> None:
    with_bridge = router("p2p")
    bridge_target(with_bridge.route(invite("sip:carol@gw.test"), ANONYMOUS, 0.0), "carol")
    alice = Caller(CallerKind.ACCOUNT, login="alice")
    target = bridge_target(with_bridge.route(invite("sip:carol@gw.test"), alice, 0.0), "carol")
    assert target.accounts == ("alice", "p2p")
    # hosted logins still ring their own devices
    hosted = with_bridge.route(invite("sip:bob@gw.test"), ANONYMOUS, 0.0)
    assert isinstance(hosted, Target) and hosted.accounts == ("bob",)
    # no bridge configured, or its account missing: 404 as before
    assert router(None).route(invite("sip:carol@gw.test"), ANONYMOUS, 0.0) == Refusal(
        404, "Not Found"
    )
    missing = router("p2p", with_bridge_account=False)
    assert missing.route(invite("sip:carol@gw.test"), ANONYMOUS, 0.0) == Refusal(404, "Not Found")


def test_a_did_for_a_p2p_login_rings_the_bridge_with_the_login_in_to() -> None:
    with_bridge = router("p2p")
    carrier = Caller(CallerKind.TRUNK, trunk=with_bridge.trunks.ip[0])
    bridge_target(with_bridge.route(invite("sip:+4930556@gw.test"), carrier, 0.0), "carol")
    to_bob = with_bridge.route(invite("sip:+4930555@gw.test"), carrier, 0.0)
    assert isinstance(to_bob, Target) and to_bob.accounts == ("bob",)
    assert with_bridge.route(invite("sip:4930556@gw.test"), ANONYMOUS, 0.0) == Refusal(
        403, "Forbidden"
    )  # DIDs are still reached from trunks and accounts only
    assert router(None).route(invite("sip:+4930556@gw.test"), carrier, 0.0) == Refusal(
        404, "Not Found"
    )


def test_numbers_without_upstream_go_to_the_bridge_after_the_toll_fraud_guard() -> None:
    with_bridge = router("p2p")
    alice = Caller(CallerKind.ACCOUNT, login="alice")
    bridge_target(with_bridge.route(invite("sip:+15550100@gw.test"), alice, 0.0), "+15550100")
    bob = Caller(CallerKind.ACCOUNT, login="bob")  # not allowed E.164
    assert with_bridge.route(invite("sip:+15550100@gw.test"), bob, 0.0) == Refusal(403, "Forbidden")
    assert with_bridge.route(invite("sip:+15550100@gw.test"), ANONYMOUS, 0.0) == Refusal(
        403, "Forbidden"
    )
