"""RFC 3261 §25 grammar: the ABNF quoted above each regex, and a scanning cursor.

Only lexical rules live here (tokens, quoting, escapes, URI character
classes, hosts, header names and their compact forms, line folding); the
header productions built from them are in ``headers``. Every regex is used
with ``fullmatch`` or anchored at a cursor position, so a rule never matches
"most of" a field. ABNF string literals are case-insensitive (RFC 5234 §2.3),
which is why ``SIP/2.0`` and header names compare case-folded.

Text is handled as ``str`` decoded from UTF-8 with ``surrogateescape``: a
non-UTF-8 byte survives a parse/serialize round trip instead of crashing the
decoder, and the rules below simply do not match it where it is not allowed.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from p2pnode.gateways.sip.errors import SipDecodeError

__all__ = [
    "CALLID_RE",
    "COMPACT_FORMS",
    "HEADER_NAME_RE",
    "HOSTNAME_RE",
    "METHOD_RE",
    "PARAM_VALUE_RE",
    "REASON_PHRASE_RE",
    "RFC1123_DATE_RE",
    "SCHEME_RE",
    "SIP_VERSION_RE",
    "TOKEN_RE",
    "Cursor",
    "canonical_header_name",
    "is_valid_host",
    "quote",
    "unfold",
]

# alphanum = ALPHA / DIGIT
# token    = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_TKN_SET = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{_TKN_SET}]+")

# Method           = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method = token
METHOD_RE = TOKEN_RE

# header-name = token
HEADER_NAME_RE = TOKEN_RE

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/([0-9]+)\.([0-9]+)")

# Status-Code   = 3DIGIT  (with the classes 1xx-6xx named; extension-code = 3DIGIT)
STATUS_CODE_RE = re.compile(r"[1-6][0-9]{2}")

# Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
# i.e. anything printable; no control characters other than HTAB.
REASON_PHRASE_RE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")

# word   = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#          "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
# callid = word [ "@" word ]
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALLID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")

# unreserved = alphanum / mark
# mark       = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# escaped    = "%" HEXDIG HEXDIG
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"

# user           = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")

# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")

# pname / pvalue = 1*paramchar
# paramchar       = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
URI_PARAM_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")

# hname  = 1*( hnv-unreserved / unreserved / escaped )
# hvalue = *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
URI_HNAME_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})+")
URI_HVALUE_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# opaque-part / hier-part of absoluteURI: uric = reserved / unreserved / escaped
# reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
URIC_RE = re.compile(rf"(?:[{_UNRESERVED};/?:@&=+$,]|{_ESCAPED})+")

# hostname    = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel    = ALPHA / ALPHA *( alphanum / "-" ) alphanum
HOSTNAME_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
)
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
# IPv6reference = "[" IPv6address "]"   (IPv6address checked by ``ipaddress``;
# RFC 5118 §4.10: the three-colon form allowed by RFC 3261's ABNF bug is refused)
IPV6_REFERENCE_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")

# generic-param = token [ EQUAL gen-value ]
# gen-value     = token / host / quoted-string
# (host covers IPv4 and "[" IPv6 "]"; RFC 5118 §4.5 also lets received= carry a bare IPv6)
PARAM_VALUE_RE = re.compile(rf"[{_TKN_SET}:\[\]]+")

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"
# date1 = 2DIGIT SP month SP 4DIGIT ; time = 2DIGIT ":" 2DIGIT ":" 2DIGIT
RFC1123_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

# SWS = [LWS] (after unfolding only SP and HTAB remain); always matches
_SWS_RE = re.compile(r"[ \t]*")

# qdtext      = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QDTEXT_RE = re.compile(r"[^\"\\\x00-\x08\x0a-\x1f\x7f]+")

# Compact forms (RFC 3261 §7.3.3 and the extensions that registered one).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization",
    "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route",
    "Reply-To", "Require", "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp",
    "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "RSeq", "RAck",
    "Event", "Allow-Events", "Subscription-State", "Refer-To", "Referred-By", "Session-Expires",
    "Min-SE", "P-Asserted-Identity", "Privacy", "Path", "Identity",
)  # fmt: skip
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
_CANONICAL.update({short: long for short, long in COMPACT_FORMS.items()})


def canonical_header_name(name: str) -> str:
    """The long, conventionally cased form of a header name (compact forms expanded).

    Unknown extension headers keep their spelling: they are forwarded as received.
    """
    return _CANONICAL.get(name.lower(), name)


def unfold(lines: list[str]) -> str:
    """Join a header's physical lines: RFC 3261 §7.3.1, LWS across CRLF becomes one SP."""
    if len(lines) == 1:
        return lines[0].strip(" \t")
    return " ".join(part.strip(" \t") for part in lines).strip(" \t")


def is_valid_host(host: str) -> bool:
    """host = hostname / IPv4address / IPv6reference (RFC 3261 §25.1).

    Every Via, URI and Contact asks, and the same few hosts repeat in every
    message of a call: answers for short hosts are cached (bounded LRU).
    """
    if len(host) > _CACHED_HOST_LENGTH:
        return _is_valid_host(host)
    return _is_valid_host_cached(host)


_CACHED_HOST_LENGTH = 64


def _is_valid_host(host: str) -> bool:
    if host.startswith("["):
        if IPV6_REFERENCE_RE.fullmatch(host) is None:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if IPV4_RE.fullmatch(host) is not None:
        return all(int(octet) <= 255 for octet in host.split("."))
    return HOSTNAME_RE.fullmatch(host) is not None


_is_valid_host_cached = functools.lru_cache(maxsize=1024)(_is_valid_host)


def quote(text: str) -> str:
    """A quoted-string holding ``text`` (DQUOTE and backslash escaped as quoted-pairs)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Cursor:
    """A position in one unfolded header value; every failure raises ``SipDecodeError(400)``.

    The separators follow §25.1: ``SEMI = SWS ";" SWS`` and friends, where SWS
    is optional whitespace (after unfolding, only SP and HTAB remain).
    """

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> SipDecodeError:
        return SipDecodeError(400, f"malformed {what}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def sws(self) -> None:
        found = _SWS_RE.match(self.text, self.pos)
        assert found is not None  # [ \t]* matches everywhere
        self.pos = found.end()

    def separator(self, char: str) -> bool:
        """SWS char SWS (SEMI, COMMA, EQUAL, SLASH, COLON): consume it if present."""
        start = self.pos
        self.sws()
        if self.peek() == char:
            self.pos += 1
            self.sws()
            return True
        self.pos = start
        return False

    def match(self, regex: re.Pattern[str]) -> str | None:
        found = regex.match(self.text, self.pos)
        if found is None or found.end() == self.pos:
            return None
        self.pos = found.end()
        return found.group()

    def expect(self, regex: re.Pattern[str], what: str) -> str:
        value = self.match(regex)
        if value is None:
            raise self.fail(what)
        return value

    def quoted_string(self, what: str) -> str:
        """quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE, unescaped."""
        self.sws()
        if self.peek() != '"':
            raise self.fail(what)
        self.pos += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.fail(what)  # unterminated (RFC 4475 §3.1.2.6)
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                if self.pos + 1 >= len(text):
                    raise self.fail(what)
                escaped = text[self.pos + 1]
                if escaped in "\r\n" or ord(escaped) > 0x7F:
                    raise self.fail(what)
                out.append(escaped)
                self.pos += 2
                continue
            run = _QDTEXT_RE.match(text, self.pos)
            if run is None:
                raise self.fail(what)
            out.append(run.group())
            self.pos = run.end()
