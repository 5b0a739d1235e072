"""The ENUM NAPTR grammar: enumservices, the RFC 3402 substitution expression, U-directives.

One module holds every ENUM grammar rule, with the RFC's ABNF above its regex.
Invariants:
- ``NaptrDirective`` only exists valid: a terminal ``u`` rule (RFC 6116 §2.4),
  an ``E2U+...`` service, and a ``!``-delimited regexp whose back-references
  name groups that exist. That is the shape FreeSWITCH mod_enum, Asterisk
  ENUMLOOKUP and Kamailio's enum module accept, and the only one we publish.
- Regexps come from untrusted records, so they are bounded (255 octets, one
  DNS character-string) and applied only to an E.164 string of at most 16
  characters; POSIX ERE is translated to Python ``re`` conservatively and any
  construct outside the ERE subset is refused rather than guessed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_ORDER",
    "DEFAULT_PREFERENCE",
    "KNOWN_ENUMSERVICES",
    "MAX_REGEXP_OCTETS",
    "NaptrDirective",
    "NaptrError",
    "SubstitutionExpression",
    "format_enumer_directive",
    "parse_enumer_directive",
    "parse_service",
    "parse_substitution",
    "sip_directive",
]

MAX_REGEXP_OCTETS = 255  # RFC 1035 §3.3 <character-string>: one length octet
DEFAULT_ORDER = 100
DEFAULT_PREFERENCE = 10
# IANA "Enumservice Registrations" (RFC 6117 registry), the ones PBXs use.
KNOWN_ENUMSERVICES = frozenset(
    {
        "sip",
        "tel",
        "voice:sip",
        "voice:tel",
        "video:sip",
        "sms:tel",
        "sms:mailto",
        "email:mailto",
        "web:http",
        "web:https",
        "h323",
        "iax",
        "xmpp",
        "pres",
        "mms:tel",
        "mms:mailto",
    }
)


class NaptrError(ValueError):
    """An ENUM NAPTR field that does not follow the grammar (or our published subset)."""


# RFC 3761 §2.4.2 (kept by RFC 6116 §3.4.3):
#   service-field = "E2U" 1*(servicespec)
#   servicespec   = "+" enumservice
#   enumservice   = type 0*(subtypespec)
#   subtypespec   = ":" subtype
#   type          = 1*32(ALPHA / DIGIT / "-")
#   subtype       = 1*32(ALPHA / DIGIT / "-")
_TYPE = r"[A-Za-z0-9\-]{1,32}"
_ENUMSERVICE = rf"{_TYPE}(?::{_TYPE})*"
_SERVICE_FIELD = re.compile(rf"[Ee]2[Uu](?:\+{_ENUMSERVICE})+")


def parse_service(text: str) -> str:
    """Canonical service field: ``E2U`` upper case, enumservices lower case (RFC 6116 §3.4.3)."""
    if _SERVICE_FIELD.fullmatch(text) is None:
        raise NaptrError(f"{text!r} is not an ENUM service field (E2U+type[:subtype])")
    return "E2U" + text[3:].lower()


# RFC 3402 §3.2:
#   subst-expr   = delim-char  ere  delim-char  repl  delim-char  *flags
#   delim-char   = "/" / "!" / <Any octet not in 'POS-DIGIT' or 'flags'>
#                    ; All occurrences of a delim_char in a subst_expr
#                    ; must be escaped
#   repl         = *(string / backref)
#   string       = *(anychar / escapeddelim)
#   anychar      = <any character other than delim-char>
#   backref      = "\" POS-DIGIT
#   flags        = "i"
#   POS-DIGIT    = %x31-39                 ; 0 is not an allowed backref
# Our published subset: delim-char is "!" (what every PBX ENUM client expects).
_DELIM = "!"
_SUBST_SHAPE = re.compile(r"!((?:[^!\\]|\\.)*)!((?:[^!\\]|\\.)*)!(i?)", re.DOTALL)
_POSIX_CLASSES = {
    "digit": "0-9",
    "alpha": "A-Za-z",
    "alnum": "A-Za-z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "xdigit": "0-9A-Fa-f",
    "space": " \\t\\n\\r\\f\\v",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}
_ERE_SPECIAL_OUTSIDE = set(".^$*+?(){}|")


def _ere_to_python(ere: str) -> str:
    """Translate POSIX ERE (IEEE 1003.1 §9.4) to Python ``re``; refuse anything else."""
    out: list[str] = []
    i = 0
    n = len(ere)
    while i < n:
        char = ere[i]
        if char == "\\":
            if i + 1 >= n:
                raise NaptrError("regexp ends in a lone backslash")
            nxt = ere[i + 1]
            if nxt == "d":  # not POSIX, but common in ENUM data (ENUMER's own examples)
                out.append("[0-9]")
            elif nxt.isalnum():
                raise NaptrError(f"regexp escape \\{nxt} is outside the ERE subset")
            else:
                out.append(re.escape(nxt))
            i += 2
        elif char == "[":
            i = _bracket(ere, i, out)
        elif char == "(" and ere.startswith("(?", i):
            raise NaptrError("regexp '(?' extensions are not ERE")
        elif char in _ERE_SPECIAL_OUTSIDE:
            out.append(char)
            i += 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _bracket(ere: str, start: int, out: list[str]) -> int:
    """Copy one bracket expression; inside it POSIX backslash is literal. Returns next index."""
    i = start + 1
    parts = ["["]
    if i < len(ere) and ere[i] == "^":
        parts.append("^")
        i += 1
    first = True
    while i < len(ere):
        char = ere[i]
        if char == "]" and not first:
            parts.append("]")
            out.append("".join(parts))
            return i + 1
        first = False
        if ere.startswith("[:", i):
            end = ere.find(":]", i + 2)
            if end < 0:
                raise NaptrError("unterminated character class in regexp")
            name = ere[i + 2 : end]
            if name not in _POSIX_CLASSES:
                raise NaptrError(f"unknown character class [:{name}:] in regexp")
            parts.append(_POSIX_CLASSES[name])
            i = end + 2
        elif char == "-":
            parts.append("-")
            i += 1
        else:
            parts.append(re.escape(char))
            i += 1
    raise NaptrError("unterminated bracket expression in regexp")


_BACKREF = re.compile(r"\\([1-9])")


@dataclass(frozen=True, slots=True)
class SubstitutionExpression:
    """A parsed ``!ere!repl!flags`` (RFC 3402 §3.2) ready to apply to an E.164 string."""

    text: str
    pattern: re.Pattern[str] = field(compare=False, repr=False)
    replacement: tuple[str | int, ...] = field(compare=False, repr=False)

    def apply(self, aus: str) -> str | None:
        """RFC 3402 §3.2: substitute the first match; ``None`` if the ERE does not match."""
        match = self.pattern.search(aus)
        if match is None:
            return None
        pieces: list[str] = []
        for piece in self.replacement:
            if isinstance(piece, int):
                pieces.append(match.group(piece) or "")  # a group that did not take part: empty
            else:
                pieces.append(piece)
        return aus[: match.start()] + "".join(pieces) + aus[match.end() :]


def parse_substitution(text: str) -> SubstitutionExpression:
    """Parse a ``!``-delimited RFC 3402 substitution expression (our published subset)."""
    if len(text.encode("utf-8")) > MAX_REGEXP_OCTETS:
        raise NaptrError(f"regexp longer than {MAX_REGEXP_OCTETS} octets")
    if not text.startswith(_DELIM):
        raise NaptrError(f"regexp {text!r} must use '!' as its delimiter (!^(.*)$!sip:\\1@h!)")
    shape = _SUBST_SHAPE.fullmatch(text)
    if shape is None:
        raise NaptrError(f"regexp {text!r} is not !ere!replacement!flags")
    ere, repl, flags = shape.group(1), shape.group(2), shape.group(3)
    if not ere:
        raise NaptrError("regexp has an empty ERE")
    try:
        pattern = re.compile(_ere_to_python(ere), re.ASCII | (re.IGNORECASE if flags else 0))
    except re.error as error:
        raise NaptrError(f"regexp {ere!r} does not compile: {error}") from None
    replacement: list[str | int] = []
    literal: list[str] = []
    i = 0
    while i < len(repl):
        char = repl[i]
        if char == "\\":
            nxt = repl[i + 1]  # the shape regex guarantees a following character
            if nxt in "123456789":
                group = int(nxt)
                if group > pattern.groups:
                    raise NaptrError(
                        f"regexp uses \\{group} but the ERE has {pattern.groups} groups"
                    )
                if literal:
                    replacement.append("".join(literal))
                    literal = []
                replacement.append(group)
            elif nxt in ("\\", _DELIM):  # RFC 3402 §3.2: escapeddelim, and the escaped escape
                literal.append(nxt)
            else:
                raise NaptrError(f"replacement escape \\{nxt} is not a back-reference \\1-\\9")
            i += 2
        else:
            literal.append(char)
            i += 1
    if literal:
        replacement.append("".join(literal))
    if not replacement:
        raise NaptrError("regexp has an empty replacement")
    return SubstitutionExpression(text=text, pattern=pattern, replacement=tuple(replacement))


# Directives are checked at construction; applying them again must not re-parse.
_parse_cached = functools.lru_cache(maxsize=4096)(parse_substitution)

_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:.+", re.DOTALL)


@dataclass(frozen=True, slots=True)
class NaptrDirective:
    """One ENUM U-directive: a terminal NAPTR rule (RFC 6116 §2.4, RFC 3403 §4.1).

    The replacement field is always ``.`` (terminal regexp rule), so it is not stored.
    """

    order: int
    preference: int
    flags: str
    service: str
    regexp: str

    def __post_init__(self) -> None:
        for name, value in (("order", self.order), ("preference", self.preference)):
            if not 0 <= value <= 0xFFFF:
                raise NaptrError(f"{name} {value} is outside 0-65535 (RFC 3403 §4.1)")
        # RFC 6116 §2.4: "u" is the terminal flag; ENUM U-directives carry exactly it.
        if self.flags != "u":
            raise NaptrError(f"flags {self.flags!r}: ENUM U-directives use the 'u' flag")
        if parse_service(self.service) != self.service:
            raise NaptrError(f"service {self.service!r} is not canonical (E2U upper, rest lower)")
        parse_substitution(self.regexp)

    @property
    def expression(self) -> SubstitutionExpression:
        return _parse_cached(self.regexp)

    @property
    def enumservices(self) -> tuple[str, ...]:
        """The service field's enumservices, e.g. ``("voice:sip",)`` for ``E2U+voice:sip``."""
        return tuple(self.service.split("+")[1:])

    def uri_for(self, number: str) -> str | None:
        """The URI this rule gives for ``number`` (``+<digits>``), ``None`` if it does not apply."""
        result = self.expression.apply(number)
        if result is None or _URI_SCHEME.fullmatch(result) is None:
            return None
        return result


def sip_directive(
    uri: str, *, order: int = DEFAULT_ORDER, preference: int = DEFAULT_PREFERENCE
) -> NaptrDirective:
    """The usual ``E2U+sip`` rule that maps the whole number to one fixed SIP URI."""
    if not uri.lower().startswith(("sip:", "sips:")):
        raise NaptrError(f"{uri!r} is not a sip: or sips: URI")
    escaped = uri.replace("\\", "\\\\").replace("!", "\\!")
    return NaptrDirective(order, preference, "u", "E2U+sip", f"!^.*$!{escaped}!")


# ENUMER's value line (the seed article): Service=Order|Preference|Regexp, e.g.
#   E2U+sip=100|10|!^(.*)$!sip:\1@in.callcentric.com!
_ENUMER_LINE = re.compile(
    r"(?P<service>[^=|\s]+)=(?P<order>[0-9]{1,5})\|(?P<pref>[0-9]{1,5})\|(?P<regexp>!.*)"
)


def parse_enumer_directive(line: str) -> NaptrDirective:
    """A directive in ENUMER's ``E2U+sip=100|10|!^(.*)$!sip:\\1@host!`` line form."""
    match = _ENUMER_LINE.fullmatch(line.strip())
    if match is None:
        raise NaptrError(f"{line!r} is not SERVICE=ORDER|PREFERENCE|!regexp! (ENUMER form)")
    return NaptrDirective(
        order=int(match["order"]),
        preference=int(match["pref"]),
        flags="u",
        service=parse_service(match["service"]),
        regexp=match["regexp"],
    )


def format_enumer_directive(directive: NaptrDirective) -> str:
    """Inverse of ``parse_enumer_directive``."""
    return f"{directive.service}={directive.order}|{directive.preference}|{directive.regexp}"
