"""The sans-IO ENUM DNS core: query bytes + client + ``now`` in, response bytes out.

Answers NAPTR queries for E.164 numbers under the configured zones in the shape
FreeSWITCH mod_enum, Asterisk ENUMLOOKUP and Kamailio's enum module accept::

    5.3.9.9.5.3.9.0.0.8.1.e164.arpa. 60 IN NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:a@pbx!" .

Invariants:
- The wire format is dnspython's; this module only copies bytes between a
  query and a cached response built by dnspython (id, RD bit, question case).
- Hot path: a query of one question, alone or with one EDNS OPT record (as
  resolvers and forwarders send them), whose answer was built in the last
  ``cache_ttl`` seconds is answered by patching the cached bytes, without
  building any dnspython object. The cache key is the question (name case
  folded) plus the OPT record's exact bytes, so payload size, DO bit and
  options that could change the answer never share an entry.
- UDP answers are never larger than ``amplification_factor`` times the query
  (nor than the client's payload size): larger ones are sent truncated (TC)
  so the client retries over TCP. Rate-limited clients get nothing, or every
  ``slip``-th time a query-sized TC answer.
- A query that is itself a response is never answered (no reflection loops).
- A number whose route is still being fetched yields ``NeedsRoute``; the
  adapter waits a bounded time and asks again with ``final=True``, which turns
  a still-missing route into SERVFAIL (never cached, never NXDOMAIN).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.NAPTR
import dns.rrset

from nat.drops import DropCounter
from nat.ratelimit import TokenBuckets
from p2pnode.directory.e164 import MAX_E164_DIGITS, E164Error, digits_from_enum_labels, parse_e164
from p2pnode.directory.trust import Route
from p2pnode.gateways.enumdns.config import GatewayConfig
from p2pnode.gateways.enumdns.routes import RouteStatus

__all__ = ["Answer", "EnumDnsCore", "GatewayStatistics", "NeedsRoute", "Transport"]

_log = logging.getLogger(__name__)
MAX_QUEUED_LIMITED = 256  # rate-limited clients kept for the adapter's log between drains

_HEADER = 12
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QDCOUNT=1, AN/NS/AR=0: no EDNS
_EDNS_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QDCOUNT=1, ARCOUNT=1: the OPT record
_OPT_START = b"\x00\x00\x29"  # root owner name, TYPE 41 (RFC 6891 §6.1.2)
_MIN_QUERY = _HEADER + 1 + 4  # root name + QTYPE + QCLASS
_CLASSIC_UDP = 512  # RFC 1035 §4.2.1, without EDNS
_MAX_TCP = 65535


def _edns_question_end(query: bytes) -> int | None:
    """Where the question of a one-question query ends, if an OPT record follows it.

    ``None`` for anything unusual (a compression pointer or bad label in the
    question, no OPT record right after it): such a query takes the full path.
    """
    offset = _HEADER
    size = len(query)
    while offset < size:
        length = query[offset]
        if length == 0:
            end = offset + 5  # the root label, QTYPE, QCLASS
            return end if query[end : end + 3] == _OPT_START else None
        if length > 63:
            return None  # a pointer or a reserved label type
        offset += 1 + length
    return None


class Transport(enum.Enum):
    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class NeedsRoute:
    """The route for ``number`` is being fetched: wait (bounded), then ask again, final."""

    number: str


Answer = bytes


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    queries: int
    cache_hits: int
    answers: int
    truncated: int
    rate_limited: int
    servfail: int
    dropped: int


RouteNowait = Callable[[str, float], Route | RouteStatus]


class EnumDnsCore:
    """One gateway's query handling; pure apart from its caches and counters."""

    def __init__(
        self,
        config: GatewayConfig,
        routes: RouteNowait,
        *,
        drops: DropCounter | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._routes = routes
        self._zones = sorted(config.zones, key=len, reverse=True)  # longest match first
        self._drops = drops or DropCounter(_log, clock or (lambda: 0.0))
        self._limiter = (
            TokenBuckets[str](config.rate_limit, config.rate_burst, max_sources=config.max_clients)
            if config.rate_limit > 0
            else None
        )
        self._cache: dict[Transport, dict[bytes, tuple[float, bytes]]] = {
            Transport.UDP: {},
            Transport.TCP: {},
        }
        self._limited = 0
        # Clients refused by the rate limit, for the adapter's fail2ban-style refusal log
        # (``nat.logsafe.RefusalLog``); bounded, the oldest go first.
        self.limited_clients: deque[str] = deque(maxlen=MAX_QUEUED_LIMITED)
        self._queries = 0
        self._hits = 0
        self._answers = 0
        self._truncated = 0
        self._servfail = 0

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(
            queries=self._queries,
            cache_hits=self._hits,
            answers=self._answers + self._hits,
            truncated=self._truncated,
            rate_limited=self._limited,
            servfail=self._servfail,
            dropped=self._drops.total,
        )

    def handle(
        self,
        query: bytes,
        client: str,
        now: float,
        transport: Transport = Transport.UDP,
        *,
        final: bool = False,
    ) -> Answer | NeedsRoute | None:
        """The response to ``query`` from ``client`` (an IP), ``NeedsRoute``, or ``None`` (drop)."""
        self._queries += 1
        # where the question ends: a cache key (and patch point) for plain and EDNS queries
        plain = False
        question_end: int | None = None
        if len(query) >= _MIN_QUERY and not query[2] & 0xFE:
            counts = query[4:12]
            if counts == _PLAIN_COUNTS:
                plain = True
                question_end = len(query)
            elif counts == _EDNS_COUNTS:
                question_end = _edns_question_end(query)
        if (
            transport is Transport.UDP
            and not final  # the first pass already paid for this query
            and self._limiter is not None
            and not self._limiter.allow(client, now)
        ):
            self.limited_clients.append(client)
            return self._rate_limited(query, plain)
        key = None
        if question_end is not None:
            # the question with the name's ASCII case folded (RFC 4343), QTYPE/QCLASS and
            # the OPT record as they are
            key = query[_HEADER : question_end - 4].lower() + query[question_end - 4 :]
            hit = self._cache[transport].get(key)
            if hit is not None and hit[0] > now:
                self._hits += 1
                cached = hit[1]
                # id from the query, RD copied (RFC 1035 §4.1.1), the question as asked
                flags = bytes(((cached[2] & 0xFE) | (query[2] & 0x01),))
                return (
                    query[:2]
                    + flags
                    + cached[3:_HEADER]
                    + query[_HEADER:question_end]
                    + cached[question_end:]
                )
        answer = self._answer(query, now, transport, final)
        if isinstance(answer, tuple):
            data, cacheable = answer
            self._answers += 1
            if key is not None and cacheable:
                cache = self._cache[transport]
                if len(cache) >= self.config.max_cached_answers:
                    cache.clear()  # bounded; rebuilt from routes on the next queries
                cache[key] = (now + self.config.cache_ttl, data)
            return data
        return answer

    def _rate_limited(self, query: bytes, plain: bool) -> Answer | None:
        self._limited += 1
        if not plain or self.config.slip <= 0 or self._limited % self.config.slip:
            return None
        # RRL "slip": a query-sized TC=1 answer, so a real client retries over TCP.
        self._truncated += 1
        return query[:2] + bytes((0x80 | 0x02 | (query[2] & 0x01), 0)) + query[4:]

    def _answer(
        self, query: bytes, now: float, transport: Transport, final: bool
    ) -> tuple[bytes, bool] | NeedsRoute | None:
        try:
            message = dns.message.from_wire(query)
        except dns.message.ShortHeader:
            self._drops.drop("short-header")
            return None
        except (dns.exception.DNSException, ValueError, UnicodeError) as error:
            if len(query) >= _HEADER and not query[2] & 0x80:
                self._drops.drop("malformed-query", type(error).__name__)
                return self._formerr(query), False
            self._drops.drop("malformed-response")
            return None
        if message.flags & dns.flags.QR:
            self._drops.drop("response-as-query")
            return None
        response = dns.message.make_response(message, our_payload=self.config.max_udp_payload)
        response.flags |= dns.flags.AA
        if message.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return self._encode(message, response, query, transport), False
        if len(message.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return self._encode(message, response, query, transport), False
        question = message.question[0]
        zone = self._zone_of(question.name)
        if zone is None or question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)  # not ours, and we do not recurse
            return self._encode(message, response, query, transport), True
        result = self._fill(response, question.name, question.rdtype, zone, now, final)
        if isinstance(result, NeedsRoute):
            return result
        return self._encode(message, response, query, transport), result

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        for zone in self._zones:
            if name.is_subdomain(zone):
                return zone
        return None

    def _fill(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: int,
        zone: dns.name.Name,
        now: float,
        final: bool,
    ) -> bool | NeedsRoute:
        """Fill answer/authority; ``True`` if the response may be cached."""
        if qname == zone:
            if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
                response.answer.append(self._soa(zone, self.config.answer_ttl))
            if qtype in (dns.rdatatype.NS, dns.rdatatype.ANY):
                ns = dns.rdtypes.ANY.NS.NS(  # type: ignore[no-untyped-call]
                    dns.rdataclass.IN, dns.rdatatype.NS, self.config.ns_name
                )
                response.answer.append(dns.rrset.from_rdata(zone, self.config.answer_ttl, ns))
            if not response.answer:
                response.authority.append(self._soa(zone, self.config.negative_ttl))  # NODATA
            return True
        labels = tuple(label.decode("ascii", "replace") for label in qname.relativize(zone).labels)
        number = digits_from_enum_labels(labels)
        if number is None:
            return self._negative(response, zone, dns.rcode.NXDOMAIN)
        try:
            parse_e164(number)
        except E164Error:
            if len(labels) > 1 and len(labels) < MAX_E164_DIGITS:
                # maybe an empty non-terminal above a longer number (RFC 8020 forbids
                # NXDOMAIN there: a minimising resolver would give up on the subtree)
                return self._negative(response, zone, dns.rcode.NOERROR)
            return self._negative(response, zone, dns.rcode.NXDOMAIN)
        state = self._routes(number, now)
        if state is RouteStatus.PENDING and not final:
            return NeedsRoute(number)
        if state is RouteStatus.PENDING or state is RouteStatus.FAILED:
            self._servfail += 1
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL)
            return False
        if state is RouteStatus.ABSENT:
            return self._negative(response, zone, dns.rcode.NXDOMAIN)
        assert isinstance(state, Route)
        if qtype not in (dns.rdatatype.NAPTR, dns.rdatatype.ANY):
            return self._negative(response, zone, dns.rcode.NOERROR)  # NODATA
        rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.NAPTR)
        for directive in sorted(state.directives, key=lambda d: (d.order, d.preference)):
            rrset.add(
                dns.rdtypes.IN.NAPTR.NAPTR(  # type: ignore[no-untyped-call]
                    dns.rdataclass.IN,
                    dns.rdatatype.NAPTR,
                    directive.order,
                    directive.preference,
                    directive.flags.encode("ascii"),
                    directive.service.encode("ascii"),
                    directive.regexp.encode("utf-8"),
                    dns.name.root,  # RFC 6116 §2.4: terminal rule, replacement "."
                ),
                self.config.answer_ttl,
            )
        response.answer.append(rrset)
        return True

    def _negative(self, response: dns.message.Message, zone: dns.name.Name, rcode: int) -> bool:
        # RFC 2308 §3: the SOA in the authority section, TTL = min(SOA TTL, MINIMUM)
        response.set_rcode(dns.rcode.Rcode(rcode))
        response.authority.append(self._soa(zone, self.config.negative_ttl))
        return True

    def _soa(self, zone: dns.name.Name, ttl: int) -> dns.rrset.RRset:
        soa = dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            self.config.ns_name,
            self.config.hostmaster,
            self.config.serial,
            3600,
            600,
            86400,
            self.config.negative_ttl,
        )
        return dns.rrset.from_rdata(zone, ttl, soa)

    def _encode(
        self,
        query: dns.message.Message,
        response: dns.message.Message,
        raw_query: bytes,
        transport: Transport,
    ) -> bytes:
        if transport is Transport.TCP:
            return response.to_wire(max_size=_MAX_TCP)
        payload = max(_CLASSIC_UDP, min(query.payload, self.config.max_udp_payload))
        if query.edns < 0:
            payload = _CLASSIC_UDP
        limit = min(payload, self.config.amplification_factor * len(raw_query))
        data: bytes = response.to_wire(max_size=_MAX_TCP)
        if len(data) <= limit:
            return data
        # RFC 2181 §9 / RFC 7766: signal truncation; the client retries over TCP
        self._truncated += 1
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=_MAX_TCP)

    def _formerr(self, query: bytes) -> bytes:
        response = dns.message.Message(id=int.from_bytes(query[:2], "big"))
        response.flags = dns.flags.QR | (int.from_bytes(query[2:4], "big") & dns.flags.RD)
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
