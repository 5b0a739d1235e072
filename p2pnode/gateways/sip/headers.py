"""Typed SIP header values and their parsers (RFC 3261 §20, §25; RFC 3581; RFC 5118).

URIs, name-addresses (From, To, Contact, Route) and Via live here; the
single-field values (CSeq, Call-ID, delta-seconds, credentials) are in
:mod:`header_fields` and re-exported, so importers keep one place to look.

Each parser takes one unfolded header value (or a list of them) and returns a
frozen value, or raises ``SipDecodeError(400)``. Values render back with
``str()`` in a canonical spacing that parses to an equal value, which is what
the serializer relies on. Parameter values are kept as written (a quoted
value keeps its quotes) so that forwarding never changes their meaning.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.grammar import (
    PARAM_VALUE_RE,
    PASSWORD_RE,
    SCHEME_RE,
    TOKEN_RE,
    URI_HNAME_RE,
    URI_HVALUE_RE,
    URI_PARAM_RE,
    URIC_RE,
    USER_RE,
    Cursor,
    is_valid_host,
    quote,
)
from p2pnode.gateways.sip.header_fields import (
    MAX_CSEQ,
    MAX_DELTA_SECONDS,
    AuthHeader,
    CSeq,
    parse_auth,
    parse_call_id,
    parse_cseq,
    parse_delta_seconds,
)

__all__ = [
    "MAX_CSEQ",
    "MAX_DELTA_SECONDS",
    "MAX_LIST_ITEMS",
    "AbsoluteUri",
    "AuthHeader",
    "CSeq",
    "NameAddress",
    "Param",
    "SipUri",
    "Uri",
    "Via",
    "parse_auth",
    "parse_call_id",
    "parse_cseq",
    "parse_delta_seconds",
    "parse_name_addresses",
    "parse_uri",
    "parse_vias",
    "render_params",
]

# Bound on the values one list header (Via, Contact, Route) may carry.
MAX_LIST_ITEMS = 64
_DEFAULT_SIP_PORT = 5060
_DEFAULT_SIPS_PORT = 5061  # TLS (RFC 3261 §19.1.2)


@dataclass(frozen=True, slots=True)
class Param:
    """One ``;name[=value]`` (URI or header parameter); ``value`` as written, quotes kept."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


def _find(params: tuple[Param, ...], name: str) -> Param | None:
    lowered = name.lower()
    for param in params:
        if param.name.lower() == lowered:
            return param
    return None


def render_params(params: tuple[Param, ...]) -> str:
    return "".join(f";{param}" for param in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """SIP-URI / SIPS-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]."""

    scheme: str  # "sip" or "sips", lower case
    user: str | None
    password: str | None
    host: str  # IPv6 keeps its brackets
    port: int | None
    params: tuple[Param, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` ("" for a flag like ``lr``), None if absent."""
        found = _find(self.params, name)
        if found is None:
            return None
        return found.value if found.value is not None else ""

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (5061 if self.scheme == "sips" else 5060)

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port is not None else ""
        headers = ""
        if self.headers:
            headers = "?" + "&".join(f"{name}={value}" for name, value in self.headers)
        return f"{self.scheme}:{userinfo}{self.host}{port}{render_params(self.params)}{headers}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other absoluteURI (tel:, im:, an unknown scheme): kept opaque (RFC 3261 §19.1)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def _parse_port(text: str) -> int:
    # port = 1*DIGIT
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise SipDecodeError(400, "malformed port")
    return int(text)


def _split_hostport(text: str) -> tuple[str, int | None]:
    # hostport = host [ ":" port ]
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipDecodeError(400, "malformed host")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipDecodeError(400, "malformed host")
        port = _parse_port(rest[1:]) if rest else None
    else:
        host, sep, port_text = text.partition(":")
        port = _parse_port(port_text) if sep else None
    if not is_valid_host(host):
        raise SipDecodeError(400, "malformed host")
    return host, port


# Header values repeat across the messages of a call (From, To, Contact, Route,
# Via, Request-URI): parsing is a pure function of the text into frozen values,
# so a bounded cache serves the repeats. Errors are not cached (they raise).
# Only values up to _CACHED_LENGTH characters are cached, which bounds what a
# peer sending huge distinct values can make the caches hold (~3 x 4096 x 256 B).
_PARSE_CACHE = 4096
_CACHED_LENGTH = 256


def parse_uri(text: str) -> Uri:
    """Request-URI = SIP-URI / SIPS-URI / absoluteURI; a whole string, no surrounding LWS."""
    return _parse_uri_cached(text) if len(text) <= _CACHED_LENGTH else _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    """Request-URI = SIP-URI / SIPS-URI / absoluteURI; a whole string, no surrounding LWS."""
    scheme, colon, rest = text.partition(":")
    if not colon or SCHEME_RE.fullmatch(scheme) is None or not rest:
        raise SipDecodeError(400, "malformed URI")
    lowered = scheme.lower()
    if lowered not in ("sip", "sips"):
        if URIC_RE.fullmatch(rest) is None:
            raise SipDecodeError(400, "malformed URI")
        return AbsoluteUri(lowered, rest)
    # userinfo may itself hold ";", "?" and ":", but never "@": the last "@" ends it.
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, sep, password_text = userinfo.partition(":")
        if USER_RE.fullmatch(user_text) is None:
            raise SipDecodeError(400, "malformed URI user")
        user = user_text
        if sep:
            if PASSWORD_RE.fullmatch(password_text) is None:
                raise SipDecodeError(400, "malformed URI password")
            password = password_text
    rest, qmark, header_text = rest.partition("?")
    hostport, *param_texts = rest.split(";")
    host, port = _split_hostport(hostport)
    params: list[Param] = []
    for param_text in param_texts:
        # uri-parameter = pname [ "=" pvalue ]
        name, eq, value = param_text.partition("=")
        if URI_PARAM_RE.fullmatch(name) is None or (eq and URI_PARAM_RE.fullmatch(value) is None):
            raise SipDecodeError(400, "malformed URI parameter")
        params.append(Param(name, value if eq else None))
    headers: list[tuple[str, str]] = []
    if qmark:
        # headers = "?" header *( "&" header ); header = hname "=" hvalue
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not eq or URI_HNAME_RE.fullmatch(name) is None:
                raise SipDecodeError(400, "malformed URI header")
            if URI_HVALUE_RE.fullmatch(value) is None:
                raise SipDecodeError(400, "malformed URI header")
            headers.append((name, value))
    return SipUri(lowered, user, password, host, port, tuple(params), tuple(headers))


_parse_uri_cached = functools.lru_cache(maxsize=_PARSE_CACHE)(_parse_uri)


@dataclass(frozen=True, slots=True)
class NameAddress:
    """( name-addr / addr-spec ) *( SEMI generic-param ): From, To, Contact, Route values."""

    uri: Uri
    display_name: str | None = None
    params: tuple[Param, ...] = ()

    @property
    def tag(self) -> str | None:
        found = _find(self.params, "tag")
        return None if found is None else found.value

    def param(self, name: str) -> str | None:
        found = _find(self.params, name)
        if found is None:
            return None
        return found.value if found.value is not None else ""

    def __str__(self) -> str:
        display = quote(self.display_name) + " " if self.display_name is not None else ""
        return f"{display}<{self.uri}>{render_params(self.params)}"


# The fast paths below take the forms phones and our own builders write (no LWS
# around separators, no quoted parameter values, no escapes in a display name) with
# one regex each and build exactly what the general scanners build from the same
# text; anything else (or anything they are unsure of) goes the general way.
# tests/unit/sip/test_header_fast_paths.py holds them equal to the scanners.
_FAST_PARAMS = rf"(?:;{TOKEN_RE.pattern}(?:={PARAM_VALUE_RE.pattern})?)*"
_FAST_PARAMS_RE = re.compile(_FAST_PARAMS)
# After the fast parameters, a character the general scanner could still consume
# (LWS around ";" or "=", a quoted value): the fast result would differ, so do not use it.
_PARAMS_UNSURE = frozenset(' \t;="')


def _split_params(text: str) -> tuple[Param, ...]:
    """``;a=b;c`` as matched by ``_FAST_PARAMS_RE`` (no LWS, no quotes) -> Params."""
    params: list[Param] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params.append(Param(name, value if eq else None))
    return tuple(params)


def _header_params(cursor: Cursor, what: str) -> tuple[Param, ...]:
    # *( SEMI generic-param ); generic-param = token [ EQUAL gen-value ]
    fast = _FAST_PARAMS_RE.match(cursor.text, cursor.pos)
    if fast is not None:
        end = fast.end()
        if end == len(cursor.text) or cursor.text[end] not in _PARAMS_UNSURE:
            cursor.pos = end
            return _split_params(fast.group()) if end > fast.start() else ()
    return _scan_params(cursor, what)


def _scan_params(cursor: Cursor, what: str) -> tuple[Param, ...]:
    params: list[Param] = []
    while cursor.separator(";"):
        name = cursor.expect(TOKEN_RE, what)
        if cursor.separator("="):
            if cursor.peek() == '"':
                start = cursor.pos
                cursor.quoted_string(what)
                params.append(Param(name, cursor.text[start : cursor.pos]))
            else:
                params.append(Param(name, cursor.expect(PARAM_VALUE_RE, what)))
        else:
            params.append(Param(name))
    return tuple(params)


def _name_address(cursor: Cursor, what: str, *, require_brackets: bool) -> NameAddress:
    # name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
    # display-name = *(token LWS)/ quoted-string
    # LAQUOT = SWS "<" ; RAQUOT = ">" SWS  (no whitespace inside the brackets)
    cursor.sws()
    display: str | None = None
    if cursor.peek() == '"':
        display = cursor.quoted_string(what)
        cursor.sws()
    else:
        start = cursor.pos
        words: list[str] = []
        while True:
            word = cursor.match(TOKEN_RE)
            if word is None:
                break
            words.append(word)
            cursor.sws()
        if cursor.peek() != "<":
            cursor.pos = start  # not a display name: an addr-spec follows
            words = []
        if words:
            display = " ".join(words)
    if cursor.peek() == "<":
        end = cursor.text.find(">", cursor.pos)
        if end < 0:
            raise cursor.fail(what)
        uri = parse_uri(cursor.text[cursor.pos + 1 : end])
        cursor.pos = end + 1
    else:
        if display is not None or require_brackets:
            raise cursor.fail(what)
        # addr-spec form: RFC 3261 §20.10, the URI ends at the first ";" (header
        # parameters follow) and it may contain no "," or "?" (RFC 4475 §3.1.2.13).
        start = cursor.pos
        text = cursor.text
        while cursor.pos < len(text) and text[cursor.pos] not in ";, \t":
            cursor.pos += 1
        raw = text[start : cursor.pos]
        if "?" in raw:
            raise cursor.fail(what)
        uri = parse_uri(raw)
    return NameAddress(uri, display, _header_params(cursor, what))


def parse_name_addresses(
    value: str, what: str, *, single: bool, require_brackets: bool = False
) -> tuple[NameAddress, ...]:
    """One value (From, To) or a comma-separated list (Contact, Route, Record-Route)."""
    if len(value) <= _CACHED_LENGTH:
        return _name_addresses_cached(value, what, single, require_brackets)
    return _name_addresses(value, what, single, require_brackets)


# One name-addr with brackets: [ "quoted display" SWS / token *(SP token) [SP] ] "<" uri ">"
# params. qdtext as in grammar (no DQUOTE, backslash or control characters but HTAB).
_FAST_NAME_ADDR_RE = re.compile(
    rf'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*)"[ \t]*|({TOKEN_RE.pattern}(?: {TOKEN_RE.pattern})*) ?)?'
    rf"<([^>]*)>({_FAST_PARAMS})"
)


def _name_address_fast(value: str) -> NameAddress | None:
    """One bracketed name-addr in its common spelling, or None (use the scanner)."""
    found = _FAST_NAME_ADDR_RE.fullmatch(value)
    if found is None:
        return None
    quoted, words, uri_text, params = found.groups()
    try:
        uri = parse_uri(uri_text)
    except SipDecodeError:
        return None  # the scanner raises its own error for it
    display = quoted if quoted is not None else words
    return NameAddress(uri, display, _split_params(params) if params else ())


def _name_addresses(
    value: str, what: str, single: bool, require_brackets: bool
) -> tuple[NameAddress, ...]:
    fast = _name_address_fast(value)
    if fast is not None:
        return (fast,)
    return _scan_name_addresses(value, what, single, require_brackets)


def _scan_name_addresses(
    value: str, what: str, single: bool, require_brackets: bool
) -> tuple[NameAddress, ...]:
    cursor = Cursor(value)
    found: list[NameAddress] = []
    while True:
        found.append(_name_address(cursor, what, require_brackets=require_brackets))
        if len(found) > MAX_LIST_ITEMS:
            raise SipDecodeError(400, f"too many {what} values")
        if single or not cursor.separator(","):
            break
    cursor.sws()
    if not cursor.at_end():
        raise cursor.fail(what)
    return tuple(found)


_name_addresses_cached = functools.lru_cache(maxsize=_PARSE_CACHE)(_name_addresses)


@dataclass(frozen=True, slots=True)
class Via:
    """via-parm = sent-protocol LWS sent-by *( SEMI via-params ), plus RFC 3581 rport."""

    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, ...
    host: str
    port: int | None
    params: tuple[Param, ...] = ()

    def param(self, name: str) -> str | None:
        found = _find(self.params, name)
        if found is None:
            return None
        return found.value if found.value is not None else ""

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def has_rport(self) -> bool:
        """RFC 3581 §4: the client asked for its source port (``;rport`` without a value)."""
        return _find(self.params, "rport") is not None

    @property
    def sent_by(self) -> tuple[str, int]:
        """Host and port; without a port, 5061 for TLS and 5060 otherwise (§18.2.2)."""
        if self.port is not None:
            return self.host, self.port
        return self.host, _DEFAULT_SIPS_PORT if self.transport == "TLS" else _DEFAULT_SIP_PORT

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{render_params(self.params)}"


def _via(cursor: Cursor) -> Via:
    # sent-protocol = protocol-name SLASH protocol-version SLASH transport
    cursor.sws()
    name = cursor.expect(TOKEN_RE, "Via")
    if not cursor.separator("/"):
        raise cursor.fail("Via")
    version = cursor.expect(TOKEN_RE, "Via")
    if name.upper() != "SIP" or version != "2.0":
        raise cursor.fail("Via")
    if not cursor.separator("/"):
        raise cursor.fail("Via")
    transport = cursor.expect(TOKEN_RE, "Via").upper()
    cursor.sws()
    # sent-by = host [ COLON port ]
    start = cursor.pos
    text = cursor.text
    if cursor.peek() == "[":
        end = text.find("]", start)
        if end < 0:
            raise cursor.fail("Via")
        cursor.pos = end + 1
    else:
        while cursor.pos < len(text) and text[cursor.pos] not in ":;, \t":
            cursor.pos += 1
    host = text[start : cursor.pos]
    if not is_valid_host(host):
        raise cursor.fail("Via")
    port: int | None = None
    if cursor.separator(":"):
        port_start = cursor.pos
        while cursor.pos < len(text) and text[cursor.pos].isdigit():
            cursor.pos += 1
        port = _parse_port(text[port_start : cursor.pos])
    return Via(transport, host, port, _header_params(cursor, "Via"))


# One via-parm as phones and we write it: "SIP/2.0/" transport SP host [":" port] params.
_FAST_VIA_RE = re.compile(
    rf"SIP/2\.0/({TOKEN_RE.pattern}) ([A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?"
    rf"({_FAST_PARAMS})"
)


def _via_fast(value: str) -> Via | None:
    """One via-parm in its common spelling, or None (use the scanner)."""
    found = _FAST_VIA_RE.fullmatch(value)
    if found is None:
        return None
    transport, host, port, params = found.groups()
    if not is_valid_host(host) or (port is not None and int(port) > 65535):
        return None
    return Via(
        transport.upper(),
        host,
        None if port is None else int(port),
        _split_params(params) if params else (),
    )


def _via_value(value: str) -> tuple[Via, ...]:
    """One Via header value (a response repeats its request's: cached)."""
    fast = _via_fast(value)
    if fast is not None:
        return (fast,)
    return _scan_via_value(value)


def _scan_via_value(value: str) -> tuple[Via, ...]:
    cursor = Cursor(value)
    vias: list[Via] = []
    while True:
        vias.append(_via(cursor))
        if len(vias) > MAX_LIST_ITEMS:
            raise SipDecodeError(400, "too many Via values")
        if not cursor.separator(","):
            break
    cursor.sws()
    if not cursor.at_end():
        raise cursor.fail("Via")
    return tuple(vias)


_via_value_cached = functools.lru_cache(maxsize=_PARSE_CACHE)(_via_value)


def parse_vias(values: list[str]) -> tuple[Via, ...]:
    """Every Via value in order (several headers, each possibly comma-separated)."""
    vias: list[Via] = []
    for value in values:
        vias.extend(_via_value_cached(value) if len(value) <= _CACHED_LENGTH else _via_value(value))
        if len(vias) > MAX_LIST_ITEMS:
            raise SipDecodeError(400, "too many Via values")
    return tuple(vias)
