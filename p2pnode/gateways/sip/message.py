"""The SIP message model: frozen requests and responses with typed core headers.

A message is its start line, its header fields in order (unfolded, names in
their long canonical form) and its body bytes. The headers every transaction
and dialog needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length,
Contact, Route, Record-Route) are parsed once, when the message is built, into
:class:`CoreHeaders`: a message that exists is one whose core headers are
valid (RFC 3261 §8.1.1, RFC 4475 §3.1.2 and §3.3.1, §3.3.8, §3.3.9). Other
headers are parsed on demand by typed accessors that raise ``SipDecodeError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.grammar import (
    RFC1123_DATE_RE,
    TOKEN_RE,
    canonical_header_name,
)
from p2pnode.gateways.sip.headers import (
    AuthHeader,
    CSeq,
    NameAddress,
    Param,
    SipUri,
    Uri,
    Via,
    parse_auth,
    parse_call_id,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addresses,
    parse_vias,
)

__all__ = [
    "KNOWN_METHODS",
    "MAX_MAX_FORWARDS",
    "CoreHeaders",
    "Header",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "build_response",
    "error_response",
    "stamp_received",
]

# Methods this core knows by name (RFC 3261 plus the extensions phones send).
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
# RFC 3261 §20.22: Max-Forwards is an integer in the range 0-255.
MAX_MAX_FORWARDS = 255
_SINGLE_VALUED = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Expires")


@dataclass(frozen=True, slots=True)
class Header:
    """One header field: canonical name, unfolded value."""

    name: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


@dataclass(frozen=True, slots=True)
class CoreHeaders:
    """The typed headers every valid message has (or may have, for the optional ones)."""

    vias: tuple[Via, ...]
    from_: NameAddress
    to: NameAddress
    call_id: str
    cseq: CSeq
    max_forwards: int | None
    content_length: int | None
    contacts: tuple[NameAddress, ...]
    contact_star: bool
    routes: tuple[NameAddress, ...]
    record_routes: tuple[NameAddress, ...]


_Grouped = dict[str, list[str]]
_CORE_NAMES = frozenset(
    {"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Expires"}
    | {"Contact", "Route", "Record-Route", "Date"}
)


_SINGLE_SET = frozenset(_SINGLE_VALUED)


def _single(grouped: _Grouped, name: str, *, required: bool) -> str | None:
    """The value of a single-valued header (duplicates were refused while grouping)."""
    values = grouped.get(name)
    if values is None:
        if required:
            raise SipDecodeError(400, f"missing {name}")
        return None
    return values[0]


def parse_core_headers(headers: tuple[Header, ...]) -> CoreHeaders:
    """Validate and type the core headers; ``SipDecodeError(400)`` names what is wrong."""
    grouped: _Grouped = {}
    for header in headers:  # one pass: the core headers by name, in order
        name = header.name
        if name in _CORE_NAMES:
            values = grouped.get(name)
            if values is None:
                grouped[name] = [header.value]
            elif name in _SINGLE_SET:
                # RFC 4475 §3.3.8 / §3.3.9: one value only.
                raise SipDecodeError(400, f"more than one {name}")
            else:
                values.append(header.value)
    via_values = grouped.get("Via", [])
    if not via_values:
        raise SipDecodeError(400, "missing Via")
    vias = parse_vias(via_values)
    from_text = _single(grouped, "From", required=True)
    to_text = _single(grouped, "To", required=True)
    call_id_text = _single(grouped, "Call-ID", required=True)
    cseq_text = _single(grouped, "CSeq", required=True)
    assert from_text is not None and to_text is not None  # required above
    assert call_id_text is not None and cseq_text is not None
    (from_,) = parse_name_addresses(from_text, "From", single=True)
    (to,) = parse_name_addresses(to_text, "To", single=True)
    max_forwards_text = _single(grouped, "Max-Forwards", required=False)
    max_forwards = None
    if max_forwards_text is not None:
        max_forwards = parse_delta_seconds(
            max_forwards_text, "Max-Forwards", limit=MAX_MAX_FORWARDS
        )
    length_text = _single(grouped, "Content-Length", required=False)
    content_length = None
    if length_text is not None:
        content_length = parse_delta_seconds(length_text, "Content-Length")
    contacts: list[NameAddress] = []
    star = False
    for value in grouped.get("Contact", []):
        if value == "*":
            star = True
            continue
        contacts.extend(parse_name_addresses(value, "Contact", single=False))
    if star and contacts:
        raise SipDecodeError(400, "Contact * mixed with addresses")
    routes = tuple(
        address
        for value in grouped.get("Route", [])
        for address in parse_name_addresses(value, "Route", single=False, require_brackets=True)
    )
    record_routes = tuple(
        address
        for value in grouped.get("Record-Route", [])
        for address in parse_name_addresses(
            value, "Record-Route", single=False, require_brackets=True
        )
    )
    for value in grouped.get("Date", []):
        # RFC 4475 §3.1.2.12: the only time zone a SIP-date may name is GMT.
        if RFC1123_DATE_RE.fullmatch(value) is None:
            raise SipDecodeError(400, "malformed Date")
    return CoreHeaders(
        vias=vias,
        from_=from_,
        to=to,
        call_id=parse_call_id(call_id_text),
        cseq=parse_cseq(cseq_text),
        max_forwards=max_forwards,
        content_length=content_length,
        contacts=tuple(contacts),
        contact_star=star,
        routes=routes,
        record_routes=record_routes,
    )


class _HeaderAccess:
    """Header accessors shared by requests and responses."""

    headers: tuple[Header, ...]
    body: bytes
    core: CoreHeaders

    # -- generic header access -------------------------------------------------
    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling or compact form), None if absent."""
        wanted = canonical_header_name(name)
        for header in self.headers:
            if header.name == wanted:
                return header.value
        return None

    def header_values(self, name: str) -> tuple[str, ...]:
        wanted = canonical_header_name(name)
        return tuple(header.value for header in self.headers if header.name == wanted)

    # -- typed core headers ----------------------------------------------------
    @property
    def vias(self) -> tuple[Via, ...]:
        return self.core.vias

    @property
    def top_via(self) -> Via:
        return self.core.vias[0]

    @property
    def from_(self) -> NameAddress:
        return self.core.from_

    @property
    def to(self) -> NameAddress:
        return self.core.to

    @property
    def call_id(self) -> str:
        return self.core.call_id

    @property
    def cseq(self) -> CSeq:
        return self.core.cseq

    @property
    def max_forwards(self) -> int | None:
        return self.core.max_forwards

    @property
    def contacts(self) -> tuple[NameAddress, ...]:
        return self.core.contacts

    @property
    def contact_star(self) -> bool:
        return self.core.contact_star

    @property
    def routes(self) -> tuple[NameAddress, ...]:
        return self.core.routes

    @property
    def record_routes(self) -> tuple[NameAddress, ...]:
        return self.core.record_routes

    # -- typed optional headers (parsed on demand) -----------------------------
    def expires(self) -> int | None:
        """Expires as delta-seconds (RFC 3261 §20.19), None if absent."""
        value = self.header("Expires")
        return None if value is None else parse_delta_seconds(value, "Expires")

    def min_expires(self) -> int | None:
        value = self.header("Min-Expires")
        return None if value is None else parse_delta_seconds(value, "Min-Expires")

    def auth_headers(self, name: str) -> tuple[AuthHeader, ...]:
        """Authorization, Proxy-Authorization, WWW-Authenticate or Proxy-Authenticate values."""
        return tuple(parse_auth(value) for value in self.header_values(name))

    def option_tags(self, name: str) -> tuple[str, ...]:
        """Require, Proxy-Require, Supported, Unsupported: comma-separated option tags."""
        return tuple(
            tag.strip(" \t")
            for value in self.header_values(name)
            for tag in value.split(",")
            if tag.strip(" \t")
        )


@dataclass(frozen=True)
class SipRequest(_HeaderAccess):
    """Request-Line = Method SP Request-URI SP SIP-Version CRLF, plus headers and body."""

    method: str
    uri: Uri
    headers: tuple[Header, ...]
    body: bytes
    core: CoreHeaders = field(repr=False, compare=False)

    @staticmethod
    def build(method: str, uri: Uri, headers: tuple[Header, ...], body: bytes) -> SipRequest:
        """Validate and build a request (the same checks as the parser applies)."""
        core = parse_core_headers(headers)
        _check_request(method, uri, core)
        return SipRequest(method, uri, headers, body, core)

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass(frozen=True)
class SipResponse(_HeaderAccess):
    """Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF, plus headers and body."""

    status: int
    reason: str
    headers: tuple[Header, ...]
    body: bytes
    core: CoreHeaders = field(repr=False, compare=False)

    @staticmethod
    def build(status: int, reason: str, headers: tuple[Header, ...], body: bytes) -> SipResponse:
        if not 100 <= status <= 699:
            raise SipDecodeError(400, "malformed status code")
        core = parse_core_headers(headers)
        return SipResponse(status, reason, headers, body, core)

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


SipMessage = SipRequest | SipResponse


def _check_request(method: str, uri: Uri, core: CoreHeaders) -> None:
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.5 / RFC 4475 §3.1.2.11: no escaped headers in a Request-URI.
        raise SipDecodeError(400, "headers in Request-URI")
    if core.cseq.method != method:
        # RFC 4475 §3.1.2.17-18: a mismatch is refused; for a method we do not
        # implement 501 is the better answer (§3.1.2.18).
        raise SipDecodeError(501 if method not in KNOWN_METHODS else 400, "CSeq method mismatch")


_COPIED_TO_RESPONSES = ("Via", "From", "Call-ID", "CSeq")


def build_response(
    request: SipRequest,
    status: int,
    reason: str,
    *extra: tuple[str, str],
    to_tag: str | None = None,
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` (RFC 3261 §8.2.6.2): Via, From, Call-ID, CSeq copied,
    To copied with ``to_tag`` added when it has none, then ``extra`` headers and
    Content-Length."""
    to_value = request.header("To") or ""
    if to_tag is not None and request.to.tag is None:
        to_value = f"{to_value};tag={to_tag}"
    headers = [header for header in request.headers if header.name == "Via"]
    headers.append(Header("To", to_value))
    for name in _COPIED_TO_RESPONSES[1:]:
        headers += [header for header in request.headers if header.name == name]
    headers += [Header(name, value) for name, value in extra]
    headers.append(Header("Content-Length", str(len(body))))
    core = _response_core(request, to_tag, extra, len(body))
    if core is None:
        return SipResponse.build(status, reason, tuple(headers), body)
    if not 100 <= status <= 699:
        raise SipDecodeError(400, "malformed status code")
    return SipResponse(status, reason, tuple(headers), body, core)


# Extra headers whose typed form a response's core holds and build_response derives;
# any other core name among the extras sends it through the full parse.
_DERIVED_EXTRAS = frozenset({"Contact", "Record-Route"})


def _response_core(
    request: SipRequest, to_tag: str | None, extra: tuple[tuple[str, str], ...], length: int
) -> CoreHeaders | None:
    """The core headers of a response built from ``request``, from the request's own
    (already validated) core instead of parsing the copies again; None when the
    extras hold core headers this does not derive (then the caller parses).

    Equal to ``parse_core_headers`` of the response's headers: Via, From, Call-ID and
    CSeq are the request's values; To gains ``tag`` as the parser would read it;
    Contact and Record-Route are parsed from the extras as the parser would.
    """
    core = request.core
    to = core.to
    if to_tag is not None and to.tag is None:
        if TOKEN_RE.fullmatch(to_tag) is None:
            return None
        to = NameAddress(to.uri, to.display_name, (*to.params, Param("tag", to_tag)))
    contacts: list[NameAddress] = []
    record_routes: list[NameAddress] = []
    for name, value in extra:
        if name in _CORE_NAMES:
            if name not in _DERIVED_EXTRAS or value == "*":
                return None
            if name == "Contact":
                contacts.extend(parse_name_addresses(value, "Contact", single=False))
            else:
                record_routes.extend(
                    parse_name_addresses(value, name, single=False, require_brackets=True)
                )
    return CoreHeaders(
        vias=core.vias,
        from_=core.from_,
        to=to,
        call_id=core.call_id,
        cseq=core.cseq,
        max_forwards=None,
        content_length=length,
        contacts=tuple(contacts),
        contact_star=False,
        routes=(),
        record_routes=tuple(record_routes),
    )


def stamp_received(request: SipRequest, source: tuple[str, int]) -> SipRequest:
    """RFC 3261 §18.2.1 + RFC 3581 §4: note where the request really came from.

    ``received`` is added when the top Via's host is not the source IP (or the
    client asked for rport), and an empty ``rport`` is filled with the source
    port. Phones behind NAT are then answered, and later reached, at their
    public address instead of the private one they wrote.
    """
    top = request.top_via
    source_host = f"[{source[0]}]" if ":" in source[0] else source[0]
    params = list(top.params)
    changed = False
    if top.has_rport and top.param("rport") == "":
        params = [
            Param("rport", str(source[1])) if p.name.lower() == "rport" else p for p in params
        ]
        changed = True
    if top.host.lower() != source_host.lower() or top.has_rport:
        params = [p for p in params if p.name.lower() != "received"]
        params.append(Param("received", source[0]))
        changed = True
    if not changed:
        return request
    stamped = Via(top.transport, top.host, top.port, tuple(params))
    headers = list(request.headers)
    index = next(i for i, header in enumerate(headers) if header.name == "Via")
    first = parse_vias([headers[index].value])  # the first Via header's values (cached)
    value = ", ".join(str(via) for via in (stamped, *first[1:]))
    headers[index] = Header("Via", value)
    # Only the first Via header changed: parse it again (the stamped value must be
    # one the parser accepts) and keep the rest of the request's validated core,
    # instead of parsing every core header again (equal: tests/unit/sip/test_rport.py).
    vias = (*parse_vias([value]), *request.core.vias[len(first) :])
    core = CoreHeaders(
        vias=vias,
        from_=request.core.from_,
        to=request.core.to,
        call_id=request.core.call_id,
        cseq=request.core.cseq,
        max_forwards=request.core.max_forwards,
        content_length=request.core.content_length,
        contacts=request.core.contacts,
        contact_star=request.core.contact_star,
        routes=request.core.routes,
        record_routes=request.core.record_routes,
    )
    return SipRequest(request.method, request.uri, tuple(headers), request.body, core)


def error_response(
    request_headers: tuple[tuple[str, str], ...], status: int, reason: str
) -> SipResponse | None:
    """A response to a request that failed to parse, from its raw headers, or None.

    Only possible when Via, From, To, Call-ID and CSeq are themselves valid;
    otherwise the request cannot be answered and is dropped.
    """
    wanted = ("Via", "From", "To", "Call-ID", "CSeq")
    headers = [Header(name, value) for name, value in request_headers if name in wanted]
    headers.append(Header("Content-Length", "0"))
    try:
        return SipResponse.build(status, reason, tuple(headers), b"")
    except SipDecodeError:
        return None
