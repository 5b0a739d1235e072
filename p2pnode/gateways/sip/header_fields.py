"""Single-field SIP header values: CSeq, Call-ID, delta-seconds, credentials.

Split from :mod:`headers` (which re-exports all of this): these values have
no URI, address or parameter structure, only the RFC 3261 §25 tokens, and
each parser is total (a value or ``SipDecodeError(400)``). Bounds: CSeq
numbers below 2**31 (§8.1.1.5), delta-seconds at most 2**32-1 (no
wrap-around), at most 32 auth-params per credentials, none twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.grammar import CALLID_RE, METHOD_RE, TOKEN_RE, Cursor

__all__ = [
    "MAX_CSEQ",
    "MAX_DELTA_SECONDS",
    "AuthHeader",
    "CSeq",
    "parse_auth",
    "parse_call_id",
    "parse_cseq",
    "parse_delta_seconds",
]

# RFC 3261 §8.1.1.5: the CSeq sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1
# RFC 3261 §20.19 (Expires) / §10.2.1.1: delta-seconds above 2**32-1 mean 2**32-1.
MAX_DELTA_SECONDS = 2**32 - 1


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq = 1*DIGIT LWS Method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# CSeq = 1*DIGIT LWS Method  (LWS after unfolding: SP / HTAB)
_CSEQ_RE = re.compile(r"([0-9]{1,12})[ \t]+(\S+)")


def parse_cseq(value: str) -> CSeq:
    found = _CSEQ_RE.fullmatch(value)
    if found is None:
        raise SipDecodeError(400, "malformed CSeq")
    number = int(found.group(1))
    method = found.group(2)
    if number > MAX_CSEQ or METHOD_RE.fullmatch(method) is None:
        raise SipDecodeError(400, "malformed CSeq")
    return CSeq(number, method)


def parse_call_id(value: str) -> str:
    if CALLID_RE.fullmatch(value) is None:
        raise SipDecodeError(400, "malformed Call-ID")
    return value


def parse_delta_seconds(value: str, what: str, *, limit: int = MAX_DELTA_SECONDS) -> int:
    """delta-seconds = 1*DIGIT; values above ``limit`` are refused (no 2**32 wrap-arounds)."""
    if not value.isdigit() or not value.isascii() or len(value) > 10 or int(value) > limit:
        raise SipDecodeError(400, f"malformed {what}")
    return int(value)


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """credentials / challenge = auth-scheme LWS auth-param *(COMMA auth-param).

    ``params`` holds lower-cased names and unquoted values, in order.
    """

    scheme: str
    params: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


_MAX_AUTH_PARAMS = 32


def parse_auth(value: str) -> AuthHeader:
    """Authorization, Proxy-Authorization, WWW-Authenticate, Proxy-Authenticate values."""
    cursor = Cursor(value)
    cursor.sws()
    scheme = cursor.expect(TOKEN_RE, "credentials")
    params: list[tuple[str, str]] = []
    cursor.sws()
    while not cursor.at_end():
        # auth-param = auth-param-name EQUAL ( token / quoted-string )
        name = cursor.expect(TOKEN_RE, "credentials").lower()
        if not cursor.separator("="):
            raise cursor.fail("credentials")
        if cursor.peek() == '"':
            param_value = cursor.quoted_string("credentials")
        else:
            param_value = cursor.expect(TOKEN_RE, "credentials")
        params.append((name, param_value))
        if len(params) > _MAX_AUTH_PARAMS or any(key == name for key, _ in params[:-1]):
            raise SipDecodeError(400, "malformed credentials")
        if not cursor.separator(","):
            cursor.sws()
            if not cursor.at_end():
                raise cursor.fail("credentials")
    return AuthHeader(scheme, tuple(params))
