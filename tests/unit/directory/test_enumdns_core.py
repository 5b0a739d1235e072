"""The sans-IO ENUM DNS core: answers, negative answers, cache patching, TC, rate limit."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.directory.naptr import NaptrDirective, sip_directive
from p2pnode.directory.trust import Route
from p2pnode.gateways.enumdns.config import GatewayConfig
from p2pnode.gateways.enumdns.core import EnumDnsCore, NeedsRoute, Transport
from p2pnode.gateways.enumdns.routes import RouteStatus

NUMBER = "+18009359935"
BIG = "+442079460018"
ROUTES: dict[str, Route | RouteStatus] = {
    NUMBER: Route(NUMBER, (sip_directive("sip:pbx@owner.example"),), "verified"),
    BIG: Route(
        BIG,
        tuple(
            NaptrDirective(100, p, "u", "E2U+sip", f"!^.*$!sip:route{p}@a-long-host-name.example!")
            for p in range(8)
        ),
        "verified",
    ),
    "+12125550100": RouteStatus.ABSENT,
    "+13125550100": RouteStatus.FAILED,
}


def lookup(number: str, now: float) -> Route | RouteStatus:
    return ROUTES.get(number, RouteStatus.PENDING)


def core(**overrides: object) -> EnumDnsCore:
    config = GatewayConfig(rate_limit=0, **overrides)  # type: ignore[arg-type]
    return EnumDnsCore(config, lookup)


def ask(
    gateway: EnumDnsCore,
    name: str,
    rdtype: str = "NAPTR",
    *,
    transport: Transport = Transport.UDP,
    edns: bool = False,
    now: float = 0.0,
    final: bool = False,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    raw = gateway.handle(query.to_wire(), "192.0.2.1", now, transport, final=final)
    assert isinstance(raw, bytes)
    response = dns.message.from_wire(raw)
    assert response.id == query.id
    return response


@pytest.mark.parametrize(
    "name",
    [
        "5.3.9.9.5.3.9.0.0.8.1.e164.arpa.",
        "5.3.9.9.5.3.9.0.0.8.1.enum.",
        "53995390081.enum.",
        "53995390081.e164.arpa.",
        "5.3.9.9.5.3.9.0.0.8.1.E164.ARPA.",
    ],
)
def test_naptr_answer_in_every_zone_form(name: str) -> None:
    response = ask(core(), name)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    (rrset,) = response.answer
    assert rrset.to_text().endswith(
        'IN NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:pbx@owner.example!" .'
    )
    assert rrset.name == dns.name.from_text(name)  # the question's case comes back


def test_negative_answers_carry_soa() -> None:
    gateway = core()
    unknown = ask(gateway, "0.0.1.0.5.5.5.2.1.2.1.e164.arpa.")
    assert unknown.rcode() == dns.rcode.NXDOMAIN
    assert unknown.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(gateway, "5.3.9.9.5.3.9.0.0.8.1.e164.arpa.", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    for junk in ("www.enum.", "x.5.3.9.9.5.3.9.0.0.8.1.enum.", "1234567890123456.enum."):
        assert ask(gateway, junk).rcode() == dns.rcode.NXDOMAIN
    ent = ask(gateway, "8.1.e164.arpa.")  # possible empty non-terminal: NODATA, not NXDOMAIN
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer and ent.authority
    assert ask(gateway, "example.com.").rcode() == dns.rcode.REFUSED


def test_apex_soa_and_ns() -> None:
    gateway = core()
    soa = ask(gateway, "e164.arpa.", "SOA")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA
    ns = ask(gateway, "enum.", "NS")
    assert ns.answer[0].rdtype == dns.rdatatype.NS
    nodata = ask(gateway, "enum.", "NAPTR")
    assert not nodata.answer and nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_pending_then_servfail_and_failed() -> None:
    gateway = core()
    query = dns.message.make_query("9.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.", "NAPTR", use_edns=False)
    result = gateway.handle(query.to_wire(), "192.0.2.1", 0.0, Transport.UDP)
    assert isinstance(result, NeedsRoute) and result.number.startswith("+4")
    final = ask(gateway, "9.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.", final=True)
    assert final.rcode() == dns.rcode.SERVFAIL
    assert ask(gateway, "0.0.1.0.5.5.5.2.1.3.1.e164.arpa.").rcode() == dns.rcode.SERVFAIL


def test_cache_patches_id_rd_and_case() -> None:
    gateway = core()
    first = ask(gateway, "53995390081.enum.")
    assert gateway.statistics().cache_hits == 0
    query = dns.message.make_query("53995390081.ENUM.", "NAPTR", use_edns=False)
    query.flags &= ~dns.flags.RD
    raw = gateway.handle(query.to_wire(), "192.0.2.1", 1.0, Transport.UDP)
    assert gateway.statistics().cache_hits == 1
    assert isinstance(raw, bytes)
    second = dns.message.from_wire(raw)
    assert second.id == query.id and not second.flags & dns.flags.RD
    assert second.question[0].name.to_text() == "53995390081.ENUM."
    assert second.answer[0].to_text().split(" ", 1)[1] == first.answer[0].to_text().split(" ", 1)[1]
    # the cache is keyed on the question type too, and expires
    assert ask(gateway, "53995390081.enum.", "A", now=1.0).answer == []
    ask(gateway, "53995390081.enum.", now=100.0)
    assert gateway.statistics().cache_hits == 1


def test_large_udp_answer_is_truncated_and_tcp_carries_it() -> None:
    gateway = core()
    udp = ask(gateway, "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(gateway, "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.", transport=Transport.TCP)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 8
    # amplification bound: no UDP answer is more than 10x its query
    query = dns.message.make_query("8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa.", "NAPTR", use_edns=0)
    raw = gateway.handle(query.to_wire(), "192.0.2.1", 0.0, Transport.UDP)
    assert isinstance(raw, bytes) and len(raw) <= 10 * len(query.to_wire())


def test_rate_limit_drops_and_slips() -> None:
    gateway = EnumDnsCore(GatewayConfig(rate_limit=1, rate_burst=2, slip=2), lookup)
    query = dns.message.make_query("53995390081.enum.", "NAPTR", use_edns=False).to_wire()
    results = [gateway.handle(query, "192.0.2.7", 0.0, Transport.UDP) for _ in range(6)]
    assert all(isinstance(r, bytes) for r in results[:2])
    limited = results[2:]
    assert limited.count(None) == 2
    slipped = [dns.message.from_wire(r) for r in limited if isinstance(r, bytes)]
    assert len(slipped) == 2 and all(m.flags & dns.flags.TC and not m.answer for m in slipped)
    assert all(len(r) == len(query) for r in limited if isinstance(r, bytes))
    # another client is unaffected; TCP is never rate limited
    assert isinstance(gateway.handle(query, "192.0.2.8", 0.0, Transport.UDP), bytes)
    assert isinstance(gateway.handle(query, "192.0.2.7", 0.0, Transport.TCP), bytes)
    assert gateway.statistics().rate_limited == 4


def test_responses_and_junk_are_not_answered() -> None:
    gateway = core()
    response = ask(gateway, "53995390081.enum.")
    assert gateway.handle(response.to_wire(), "192.0.2.1", 0.0, Transport.UDP) is None
    assert gateway.handle(b"\x00\x01", "192.0.2.1", 0.0, Transport.UDP) is None
    formerr = gateway.handle(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x05", "x", 0.0)
    assert isinstance(formerr, bytes)
    assert dns.message.from_wire(formerr).rcode() == dns.rcode.FORMERR


def test_edns_query_gets_edns_answer() -> None:
    response = ask(core(), "5.3.9.9.5.3.9.0.0.8.1.e164.arpa.", edns=True)
    assert response.edns == 0 and response.answer


@given(st.binary(max_size=120))
def test_core_is_total(data: bytes) -> None:
    gateway = core()
    result = gateway.handle(data, "192.0.2.1", 0.0, Transport.UDP, final=True)
    assert result is None or isinstance(result, bytes)
    if isinstance(result, bytes):
        assert len(result) <= max(512, 10 * len(data))


@given(st.binary(min_size=2, max_size=2), st.sampled_from(["53995390081.enum.", "x.enum."]))
def test_cached_answers_match_fresh_ones(qid: bytes, name: str) -> None:
    warm, cold = core(), core()
    query = bytearray(dns.message.make_query(name, "NAPTR", use_edns=False).to_wire())
    warm.handle(bytes(query), "192.0.2.1", 0.0, Transport.UDP)
    query[0:2] = qid
    assert warm.handle(bytes(query), "192.0.2.1", 0.5, Transport.UDP) == cold.handle(
        bytes(query), "192.0.2.1", 0.5, Transport.UDP
    )


def edns_query(name: str, *, payload: int = 1232, do: bool = False, cookie: bool = False) -> bytes:
    options: list[dns.edns.Option] = (
        [dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)] if cookie else []
    )
    query = dns.message.make_query(
        name, "NAPTR", use_edns=0, payload=payload, want_dnssec=do, options=options
    )
    return query.to_wire()


@pytest.mark.parametrize(
    "variant",
    [{}, {"do": True}, {"cookie": True}, {"payload": 512}],
    ids=["edns", "do-bit", "cookie", "payload-512"],
)
def test_edns_queries_are_answered_from_the_cache_like_fresh_ones(
    variant: dict[str, object],
) -> None:
    """Resolvers and forwarders ask with EDNS: those queries take the cached path too."""
    for name in ("5.3.9.9.5.3.9.0.0.8.1.e164.arpa.", "8.1.0.0.6.4.9.7.0.2.4.4.e164.arpa."):
        warm, cold = core(), core()
        query = bytearray(edns_query(name, **variant))  # type: ignore[arg-type]
        warm.handle(bytes(query), "192.0.2.1", 0.0, Transport.UDP)
        query[0:2] = b"\xbe\xef"
        query[2] &= 0xFE  # RD off
        cached = warm.handle(bytes(query), "192.0.2.1", 0.5, Transport.UDP)
        fresh = cold.handle(bytes(query), "192.0.2.1", 0.5, Transport.UDP)
        assert warm.statistics().cache_hits == 1, name
        assert isinstance(cached, bytes) and isinstance(fresh, bytes)
        assert len(cached) == len(fresh)
        # equal as DNS messages (id, flags, EDNS, sections; an RRset's order is free)
        assert dns.message.from_wire(cached) == dns.message.from_wire(fresh)


def test_edns_variants_never_share_an_answer() -> None:
    """Payload size and DO bit are part of the key: each variant has its own entry."""
    gateway = core()
    name = "5.3.9.9.5.3.9.0.0.8.1.e164.arpa."
    for variant in ({"payload": 512}, {"payload": 4096}, {"do": True}):
        gateway.handle(edns_query(name, **variant), "192.0.2.1", 0.0, Transport.UDP)
    assert gateway.statistics().cache_hits == 0
    gateway.handle(edns_query(name, payload=512), "192.0.2.1", 0.1, Transport.UDP)
    assert gateway.statistics().cache_hits == 1


def test_edns_query_with_a_compressed_question_takes_the_full_path() -> None:
    gateway = core()
    raw = bytearray(edns_query("53995390081.enum."))
    # a question name that is a compression pointer: valid DNS would not send it; never cached
    bogus = bytes(raw[:12]) + b"\xc0\x0c" + bytes(raw[12 + 19 :])
    for _ in range(2):
        result = gateway.handle(bogus, "192.0.2.1", 0.0, Transport.UDP)
        assert result is None or isinstance(result, bytes)
    assert gateway.statistics().cache_hits == 0
