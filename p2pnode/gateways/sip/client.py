"""A sans-IO registration client: what a phone does with login, password and server.

Used by the project's own test user agent (the demo and ``p2pnode sip
try-call`` register devices without Debian packages) and by anything that
must register upstream. It builds REGISTER requests, answers 401/407 with
digest credentials (reusing the last challenge with a growing nc for
refreshes, RFC 7616 §3.4.5), honours 423 Min-Expires, and says when to
refresh (at 80 % of the granted time). Branches and cnonces come from the
caller: no randomness or clock inside.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pnode.gateways.sip.digest import Algorithm, authorization
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import AuthHeader, NameAddress, SipUri
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse
from p2pnode.gateways.sip.transaction import MAGIC_COOKIE

__all__ = [
    "REFRESH_FRACTION",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationState",
]

REFRESH_FRACTION = 0.8
_MAX_AUTH_ROUNDS = 2  # a challenge, and one stale=true re-challenge


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    registrar: SipUri  # the Request-URI, e.g. sip:gw.example.org
    aor: SipUri  # sip:login@domain
    username: str
    password: str
    contact: SipUri
    via: str  # "SIP/2.0/UDP host:port"
    expires: int = 3600


class RegistrationClient:
    """One account's registration, driven by responses and the caller's clock."""

    def __init__(self, config: RegistrationConfig, *, call_id: str, tag: str) -> None:
        self.config = config
        self.call_id = call_id
        self.tag = tag
        self.state = RegistrationState.UNREGISTERED
        self.granted: int | None = None
        self.failure: str | None = None
        self._cseq = 0
        self._expires = config.expires
        self._challenge: AuthHeader | None = None
        self._nc = 0
        self._rounds = 0
        self._refresh_at: float | None = None

    def next_refresh(self) -> float | None:
        return self._refresh_at if self.state is RegistrationState.REGISTERED else None

    def register(self, *, branch_id: str, cnonce: str) -> SipRequest:
        """A REGISTER (first or refresh), with credentials when a challenge is known."""
        self.state = RegistrationState.REGISTERING
        self._rounds = 0
        return self._request(self._expires, branch_id, cnonce)

    def unregister(self, *, branch_id: str, cnonce: str) -> SipRequest:
        self.state = RegistrationState.REGISTERING
        self._rounds = 0
        self._expires = 0
        return self._request(0, branch_id, cnonce)

    def on_response(
        self, response: SipResponse, now: float, *, branch_id: str, cnonce: str
    ) -> SipRequest | None:
        """Handle the final response to our last REGISTER; a request to send next, or None."""
        status = response.status
        if status < 200:
            return None
        if status in (401, 407):
            return self._on_challenge(response, branch_id, cnonce)
        if status == 423:
            try:
                minimum = response.min_expires()
            except SipDecodeError:
                minimum = None
            if minimum is None or minimum <= self._expires:
                self._fail("423 without a usable Min-Expires")
                return None
            self._expires = minimum
            return self._request(self._expires, branch_id, cnonce)
        if 200 <= status < 300:
            if self._expires == 0:
                self.state = RegistrationState.UNREGISTERED
                self.granted = None
                return None
            self.granted = self._granted(response)
            self.state = RegistrationState.REGISTERED
            self._refresh_at = now + REFRESH_FRACTION * self.granted
            return None
        self._fail(f"registrar answered {status}")
        return None

    # -- internals ----------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        self.state = RegistrationState.FAILED
        self.failure = reason

    def _on_challenge(
        self, response: SipResponse, branch_id: str, cnonce: str
    ) -> SipRequest | None:
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        try:
            offered = response.auth_headers(name)
        except SipDecodeError:
            self._fail("malformed challenge")
            return None
        usable = [
            challenge
            for challenge in offered
            if challenge.scheme.lower() == "digest"
            and (challenge.get("algorithm") or "MD5") in {a.value for a in Algorithm}
        ]
        if not usable:
            self._fail("no digest challenge we can answer")
            return None
        stale = usable[0].get("stale") == "true"
        self._rounds += 1
        if self._rounds > _MAX_AUTH_ROUNDS or (self._rounds > 1 and not stale):
            # Our credentials were refused: the password is wrong (RFC 3261 §22.2).
            self._fail("credentials refused")
            return None
        self._challenge = usable[0]  # the registrar's most preferred one we support
        self._nc = 0
        return self._request(self._expires, branch_id, cnonce)

    def _granted(self, response: SipResponse) -> int:
        """The expiry granted to our contact (its ;expires=, else Expires, else ours)."""
        for contact in response.contacts:
            if contact.uri == self.config.contact:
                value = contact.param("expires")
                if value is not None and value.isascii() and value.isdecimal():
                    return int(value)
        try:
            header = response.expires()
        except SipDecodeError:
            header = None
        return header if header is not None else self._expires

    def _request(self, expires: int, branch_id: str, cnonce: str) -> SipRequest:
        config = self.config
        self._cseq += 1
        headers = [
            Header("Via", f"{config.via};branch={MAGIC_COOKIE}{branch_id};rport"),
            Header("Max-Forwards", "70"),
            Header("From", f"{NameAddress(config.aor)};tag={self.tag}"),
            Header("To", str(NameAddress(config.aor))),
            Header("Call-ID", self.call_id),
            Header("CSeq", f"{self._cseq} REGISTER"),
            Header("Contact", str(NameAddress(config.contact))),
            Header("Expires", str(expires)),
        ]
        if self._challenge is not None:
            self._nc += 1
            headers.append(
                Header(
                    "Authorization",
                    authorization(
                        self._challenge,
                        method="REGISTER",
                        uri=str(config.registrar),
                        username=config.username,
                        password=config.password,
                        cnonce=cnonce,
                        nc=self._nc,
                    ),
                )
            )
        headers.append(Header("Content-Length", "0"))
        return SipRequest.build("REGISTER", config.registrar, tuple(headers), b"")
