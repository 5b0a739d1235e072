"""Outbound numbers: our verifier-trusted ENUM first, the upstream trunk only otherwise.

The router is sans-IO: it answers a :class:`NumberLookup` for an outbound
number, and :meth:`Router.after_enum` decides once the directory answered.
Real accounts (in-memory SQLite) and real NAPTR directives; no network.
"""

from __future__ import annotations

import random

import pytest

from p2pnode.directory.naptr import sip_directive
from p2pnode.directory.trust import Route
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.b2bua import Target
from p2pnode.gateways.sip.headers import SipUri, parse_uri
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.parser import parse_datagram
from p2pnode.gateways.sip.registrar import Binding
from p2pnode.gateways.sip.routing import Caller, CallerKind, NumberLookup, Refusal, Router
from p2pnode.gateways.sip.trunks import TrunkTable
from p2pnode.identity import Identity

UPSTREAM = ("203.0.113.1", 5060)
ALICE = Caller(CallerKind.ACCOUNT, login="alice")
NUMBER = "+442079460018"


def invite(uri: str) -> SipRequest:
    lines = [
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1",
        "From: <sip:alice@gw.test>;tag=1",
        f"To: <{uri}>",
        "Call-ID: x",
        "CSeq: 1 INVITE",
    ]
    message = parse_datagram(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


def make_router(*, enum_first: bool = True, default_country: str | None = None) -> Router:
    store = AccountStore(":memory:", "gw.test")
    randbytes = random.Random(1).randbytes
    store.add("alice", None, randbytes=randbytes, allow_e164=True)
    store.add("bob", None, randbytes=randbytes)
    store.add("p2p", None, randbytes=randbytes)

    def device(login: str, host: str) -> tuple[Binding, ...]:
        return (Binding(parse_uri(f"sip:{login}@{host}"), "c", 1, 1e9, (host, 5060), False),)

    devices = {"bob": device("bob", "198.51.100.5"), "p2p": device("p2p", "198.51.100.7")}
    return Router(
        domain="gw.test",
        local_hosts=frozenset,
        account=store.get,
        bindings=lambda login, now: devices.get(login, ()),
        trunks=TrunkTable(),
        upstream=UPSTREAM,
        p2p_login="p2p",
        enum_first=enum_first,
        default_country=default_country,
    )


def verified(*uris: str, source: str = "verified") -> Route:
    return Route(NUMBER, tuple(sip_directive(uri) for uri in uris), source)


def lookup(router: Router, dialled: str = NUMBER) -> NumberLookup:
    decision = router.route(invite(f"sip:{dialled}@gw.test"), ALICE, 0.0)
    assert isinstance(decision, NumberLookup)
    return decision


def test_a_number_becomes_a_lookup_whose_fallback_is_the_trunk() -> None:
    router = make_router()
    found = lookup(router)
    assert found.number == NUMBER
    assert isinstance(found.fallback, Target)
    assert found.fallback.contacts[0].destination == UPSTREAM
    # Without a number directory the trunk is the route at once, as before.
    assert isinstance(
        make_router(enum_first=False).route(invite(f"sip:{NUMBER}@gw.test"), ALICE, 0), Target
    )
    # The toll-fraud guard still comes first.
    anonymous = Caller(CallerKind.ANONYMOUS)
    assert make_router().route(invite(f"sip:{NUMBER}@gw.test"), anonymous, 0) == Refusal(
        403, "Forbidden"
    )


def test_a_verified_record_for_a_login_hosted_here_rings_its_devices() -> None:
    router = make_router()
    target = router.after_enum(lookup(router), verified("sip:bob@gw.test"), ALICE, 0.0)
    assert isinstance(target, Target)
    assert target.aor == SipUri("sip", "bob", None, "gw.test", None)
    assert [c.destination for c in target.contacts] == [("198.51.100.5", 5060)]
    assert target.accounts == ("alice", "bob")  # both logins' call limits apply


@pytest.mark.parametrize("user", ["carol", Identity.generate().peer_id])
def test_a_verified_record_for_a_p2p_login_or_peer_goes_to_the_bridge(user: str) -> None:
    router = make_router()
    target = router.after_enum(lookup(router), verified(f"sip:{user}@gw.test"), ALICE, 0.0)
    assert isinstance(target, Target)
    assert target.aor == SipUri("sip", user, None, "gw.test", None)  # the bridge resolves it
    assert [c.destination for c in target.contacts] == [("198.51.100.7", 5060)]


@pytest.mark.parametrize(
    "route",
    [
        None,  # no record
        verified("sip:carol@gw.test", source="tollfree"),  # never followed
        verified("sip:someone@other.example"),  # a URI elsewhere: not ours to carry
        verified(f"sip:{NUMBER}@gw.test"),  # a number again: no second indirection
    ],
)
def test_anything_else_goes_out_the_trunk(route: Route | None) -> None:
    router = make_router()
    found = lookup(router)
    assert router.after_enum(found, route, ALICE, 0.0) == found.fallback


def test_the_first_directive_into_our_domain_decides() -> None:
    router = make_router()
    route = verified("sip:x@other.example", "sip:bob@gw.test", "sip:carol@gw.test")
    target = router.after_enum(lookup(router), route, ALICE, 0.0)
    assert isinstance(target, Target) and target.aor.user == "bob"  # type: ignore[union-attr]


def test_a_national_number_is_read_in_the_default_country() -> None:
    found = lookup(make_router(default_country="GB"), "02079460018")
    assert found.number == NUMBER
    assert lookup(make_router(), "02079460018").number == "+02079460018"  # no country: as dialled
    refused = make_router(default_country="GB").route(invite("sip:000@gw.test"), ALICE, 0.0)
    assert refused == Refusal(484, "Address Incomplete")
