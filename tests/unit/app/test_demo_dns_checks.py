"""The demo's DNS check accepts only the owner's one terminal E2U+sip rule, and only a real
negative answer as NXDOMAIN: answers built with dnspython, no network."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rrset

from p2pnode.demo.enumdns import DnsExchange, enum_name

NUMBER = "+18005550199"
ALICE = "sip:alice@example.net"
SOA = "localhost. hostmaster.invalid. 1 3600 600 86400 30"


def exchange(
    *rules: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, soa: bool = False
) -> DnsExchange:
    name = enum_name(NUMBER)
    answer = (dns.rrset.from_text(name, 60, "IN", "NAPTR", *rules),) if rules else ()
    authority = (dns.rrset.from_text("e164.arpa.", 30, "IN", "SOA", SOA),) if soa else ()
    return DnsExchange("udp", name, rcode, answer, authority)


def test_the_enum_name_is_the_reversed_digits_under_e164_arpa() -> None:
    assert enum_name(NUMBER) == dns.name.from_text("9.9.1.0.5.5.5.0.0.8.1.e164.arpa.")


def test_only_the_owners_single_terminal_sip_rule_passes() -> None:
    good = '100 10 "u" "E2U+sip" "!^.*$!sip:alice@example.net!" .'
    assert exchange(good).routes_only_to(ALICE)
    assert exchange(good).lines() == [f"9.9.1.0.5.5.5.0.0.8.1.e164.arpa. 60 IN NAPTR {good}"]
    squatter = '100 10 "u" "E2U+sip" "!^.*$!sip:mallory@example.org!" .'
    assert not exchange(squatter).routes_only_to(ALICE)
    assert not exchange(good, squatter).routes_only_to(ALICE)  # never both
    assert not exchange('100 10 "" "E2U+sip" "!^.*$!sip:alice@example.net!" .').routes_only_to(
        ALICE
    )
    assert not exchange('100 10 "u" "E2U+tel" "!^.*$!sip:alice@example.net!" .').routes_only_to(
        ALICE
    )
    assert not exchange(good, rcode=dns.rcode.SERVFAIL).routes_only_to(ALICE)
    assert not exchange().routes_only_to(ALICE)


def test_nxdomain_counts_only_with_the_zones_soa() -> None:
    assert exchange(rcode=dns.rcode.NXDOMAIN, soa=True).nxdomain_with_soa
    assert not exchange(rcode=dns.rcode.NXDOMAIN).nxdomain_with_soa
    assert not exchange(rcode=dns.rcode.SERVFAIL, soa=True).nxdomain_with_soa
    assert not exchange(rcode=dns.rcode.NOERROR, soa=True).nxdomain_with_soa
