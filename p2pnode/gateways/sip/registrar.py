"""A sans-IO SIP registrar (RFC 3261 §10.3) with digest authentication.

``Registrar.handle(request, source, now)`` returns the response to send and
what happened (for the fail2ban-style log line and the counters); the caller
runs it inside a server transaction. Bindings keep the address the REGISTER
really came from (``source``, after RFC 3581 stamping) as the contact's path:
a phone behind NAT registers a private Contact, and the gateway reaches it at
its public address and port over the same transport.

Bounded: ``max_contacts`` per account (a further one is refused with 503, the
way Kamailio's registrar does), Expires clamped to ``max_expires``, below
``min_expires`` refused with 423 and Min-Expires (§10.3 step 7). Removal with
``Expires: 0`` per contact or ``Contact: *`` (§10.2.2). An unknown user and
a wrong password get the same 401, so a scanner learns no account names.

Expiry is the caller's timer: ``next_expiry()`` says when the earliest binding
lapses and ``expire(now)`` drops what has (telling ``listeners``, as any
other change). A heap of (deadline, login) keeps both cheap with thousands of
phones: an entry per change of a login's bindings, stale ones skipped and the
heap rebuilt when they outnumber the logins.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, replace

from p2pnode.gateways.sip.digest import DigestServer, Lookup, VerdictKind
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import NameAddress, Param, SipUri, Uri, parse_uri
from p2pnode.gateways.sip.message import SipRequest, SipResponse, build_response
from p2pnode.gateways.sip.transaction import Address

__all__ = [
    "MAX_USER_AGENT",
    "Binding",
    "RegisterOutcome",
    "Registrar",
    "RegistrarConfig",
    "RegistrationResult",
]

_SUPPORTED_OPTIONS = frozenset({"path", "outbound", "gruu"})


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    domain: str
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an account."""

    contact: Uri
    call_id: str
    cseq: int
    expires_at: float
    source: Address  # where the REGISTER came from: the path back to the device
    reliable: bool
    q: str | None = None
    user_agent: str = ""  # the device's User-Agent, printable and cut to MAX_USER_AGENT

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class RegistrationResult(enum.Enum):
    REGISTERED = "registered"  # bindings added, refreshed or removed
    QUERIED = "queried"  # no Contact: the bindings were listed
    CHALLENGED = "challenged"  # no credentials yet (or stale): 401 sent
    AUTH_FAILED = "auth failed"  # wrong credentials: log it with the source IP
    REFUSED = "refused"  # 400/403/404/420/423/500/503


_Refuse = Callable[..., "RegisterOutcome"]


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    response: SipResponse
    result: RegistrationResult
    username: str | None = None
    reason: str = ""


def _same_uri(first: Uri, second: Uri) -> bool:
    """Contact comparison (RFC 3261 §19.1.4, simplified: case-insensitive scheme/host)."""
    if isinstance(first, SipUri) and isinstance(second, SipUri):
        return (
            first.scheme == second.scheme
            and first.user == second.user
            and first.host.lower() == second.host.lower()
            and first.effective_port == second.effective_port
        )
    return str(first) == str(second)


class Registrar:
    """Accounts' bindings, authenticated by digest, expiring in the caller's clock."""

    def __init__(self, config: RegistrarConfig, digest: DigestServer, lookup: Lookup) -> None:
        self.config = config
        self._digest = digest
        self._lookup = lookup
        self._bindings: dict[str, tuple[Binding, ...]] = {}
        self._deadlines: list[tuple[float, str]] = []  # (a login's earliest expiry, login)
        # Called with the username whenever its bindings change (added, refreshed,
        # removed, expired); no I/O in them: they only note it (e.g. presence).
        self.listeners: list[Callable[[str], None]] = []

    def bindings(self, username: str, now: float) -> tuple[Binding, ...]:
        return tuple(b for b in self._bindings.get(username, ()) if b.expires_at > now)

    def registered_accounts(self) -> int:
        return len(self._bindings)

    def next_expiry(self) -> float | None:
        """When the earliest binding lapses (the caller's timer calls ``expire`` then)."""
        heap = self._deadlines
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _current(self, entry: tuple[float, str]) -> bool:
        bindings = self._bindings.get(entry[1], ())
        return bool(bindings) and min(b.expires_at for b in bindings) == entry[0]

    def expire(self, now: float) -> list[tuple[str, Binding]]:
        """Drop bindings whose time is up; returns them (e.g. to withdraw presence)."""
        gone: list[tuple[str, Binding]] = []
        due: set[str] = set()
        while self._deadlines and self._deadlines[0][0] <= now:
            due.add(heapq.heappop(self._deadlines)[1])
        for username in sorted(due):
            bindings = self._bindings.get(username, ())
            gone += [(username, b) for b in bindings if b.expires_at <= now]
            self._store(username, tuple(b for b in bindings if b.expires_at > now))
        return gone

    def remove(self, username: str, contact: Uri) -> bool:
        """Drop one binding (e.g. a device silent to keep-alives); True if it existed."""
        current = self._bindings.get(username, ())
        kept = tuple(b for b in current if not _same_uri(b.contact, contact))
        self._store(username, kept)
        return len(kept) != len(current)

    def _store(self, username: str, bindings: tuple[Binding, ...]) -> None:
        before = self._bindings.get(username, ())
        if bindings:
            self._bindings[username] = bindings
        else:
            self._bindings.pop(username, None)
        if bindings != before:
            if bindings:
                self._deadline(username, bindings)
            for listener in self.listeners:
                listener(username)

    def _deadline(self, username: str, bindings: tuple[Binding, ...]) -> None:
        heapq.heappush(self._deadlines, (min(b.expires_at for b in bindings), username))
        if len(self._deadlines) > 2 * len(self._bindings) + 64:  # mostly stale: rebuild
            self._deadlines = [
                (min(b.expires_at for b in live), login) for login, live in self._bindings.items()
            ]
            heapq.heapify(self._deadlines)

    # -- REGISTER --------------------------------------------------------------------------
    def handle(
        self, request: SipRequest, source: Address, now: float, *, reliable: bool = False
    ) -> RegisterOutcome:
        def refuse(status: int, reason: str, *extra: tuple[str, str]) -> RegisterOutcome:
            response = build_response(request, status, reason, *extra, to_tag=_tag(request))
            return RegisterOutcome(response, RegistrationResult.REFUSED, reason=reason)

        if request.method != "REGISTER":
            raise ValueError("the registrar handles REGISTER only")
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or to_uri.user is None:
            return refuse(404, "Not Found")
        if to_uri.host.lower() != self.config.domain.lower():
            return refuse(404, "Not Found")  # §10.3 step 1: not our domain
        unsupported = [t for t in request.option_tags("Require") if t not in _SUPPORTED_OPTIONS]
        if unsupported:
            return refuse(420, "Bad Extension", ("Unsupported", ", ".join(unsupported)))
        # §10.3 steps 3-5: authenticate, then the user may only register its own AOR.
        try:
            offered = request.auth_headers("Authorization")
        except SipDecodeError:
            return refuse(400, "Bad Request")
        credentials = [
            auth
            for auth in offered
            if auth.scheme.lower() == "digest" and auth.get("realm") == self._digest.realm
        ]
        if not credentials:
            return self._challenge(request, now, stale=False, result=RegistrationResult.CHALLENGED)
        # RFC 7616 §3.4.6: the digest-uri names the Request-URI. Compared as URIs
        # (scheme and host case-insensitive), so "SIP:GW.test" matches "sip:gw.test".
        digest_uri = credentials[0].get("uri")
        if digest_uri is None or not _same_target(digest_uri, request.uri):
            outcome = self._challenge(
                request, now, stale=False, result=RegistrationResult.AUTH_FAILED
            )
            return replace(outcome, username=credentials[0].get("username"), reason="uri mismatch")
        verdict = self._digest.verify(
            credentials[0], method="REGISTER", lookup=self._lookup, now=now
        )
        if verdict.kind is VerdictKind.STALE:
            return self._challenge(request, now, stale=True, result=RegistrationResult.CHALLENGED)
        if verdict.kind is VerdictKind.FAILED:
            outcome = self._challenge(
                request, now, stale=False, result=RegistrationResult.AUTH_FAILED
            )
            return replace(outcome, username=verdict.username, reason=verdict.reason)
        username = verdict.username or ""
        if username != to_uri.user:
            return refuse(403, "Forbidden")
        return self._update(request, username, source, now, reliable, refuse)

    def _challenge(
        self, request: SipRequest, now: float, *, stale: bool, result: RegistrationResult
    ) -> RegisterOutcome:
        challenges = tuple(
            ("WWW-Authenticate", c) for c in self._digest.challenges(now, stale=stale)
        )
        response = build_response(request, 401, "Unauthorized", *challenges, to_tag=_tag(request))
        return RegisterOutcome(response, result)

    def _update(
        self,
        request: SipRequest,
        username: str,
        source: Address,
        now: float,
        reliable: bool,
        refuse: _Refuse,
    ) -> RegisterOutcome:
        config = self.config
        try:
            header_expires = request.expires()
        except SipDecodeError:
            return refuse(400, "Bad Request")
        current = list(self.bindings(username, now))
        if request.contact_star:
            # §10.3 step 6: "*" only with Expires: 0, alone.
            if header_expires != 0:
                return refuse(400, "Bad Request")
            self._store(username, ())
            return self._ok(request, username, (), now)
        for contact in request.contacts:
            expires = _contact_expires(contact, header_expires, config.default_expires)
            if expires is None:
                return refuse(400, "Bad Request")
            if 0 < expires < config.min_expires:
                return refuse(423, "Interval Too Brief", ("Min-Expires", str(config.min_expires)))
            expires = min(expires, config.max_expires)
            existing = next((b for b in current if _same_uri(b.contact, contact.uri)), None)
            if existing is not None:
                if existing.call_id == request.call_id and request.cseq.number <= existing.cseq:
                    return refuse(500, "Server Internal Error")  # §10.3 step 7: out of order
                current.remove(existing)
            if expires == 0:
                continue
            current.append(
                Binding(
                    contact=contact.uri,
                    call_id=request.call_id,
                    cseq=request.cseq.number,
                    expires_at=now + expires,
                    source=source,
                    reliable=reliable,
                    q=contact.param("q"),
                    user_agent=_shown_user_agent(request.header("User-Agent")),
                )
            )
            if len(current) > config.max_contacts:
                return refuse(503, "Too Many Registered Contacts")
        self._store(username, tuple(current))
        return self._ok(request, username, tuple(current), now)

    def _ok(
        self, request: SipRequest, username: str, bindings: tuple[Binding, ...], now: float
    ) -> RegisterOutcome:
        contacts = tuple(
            (
                "Contact",
                str(NameAddress(b.contact, None, (Param("expires", str(b.remaining(now))),))),
            )
            for b in bindings
        )
        response = build_response(request, 200, "OK", *contacts, to_tag=_tag(request))
        result = (
            RegistrationResult.REGISTERED
            if request.contacts or request.contact_star
            else (RegistrationResult.QUERIED)
        )
        return RegisterOutcome(response, result, username=username)


def _tag(request: SipRequest) -> str:
    """A stable To tag for the registrar's answers (derived, not random: stateless)."""
    digest = hashlib.sha256(f"{request.call_id}|{request.from_.tag}".encode("utf-8", "replace"))
    return "r" + digest.hexdigest()[:12]


def _same_target(digest_uri: str, request_uri: Uri) -> bool:
    try:
        parsed = parse_uri(digest_uri)
    except SipDecodeError:
        return False
    if isinstance(parsed, SipUri) and isinstance(request_uri, SipUri):
        return _same_uri(parsed, request_uri) and parsed.params == request_uri.params
    return parsed == request_uri


def _contact_expires(contact: NameAddress, header: int | None, default: int) -> int | None:
    value = contact.param("expires")
    if value is None:
        return header if header is not None else default
    if not value.isascii() or not value.isdecimal() or len(value) > 10:
        return None
    return int(value)


MAX_USER_AGENT = 128  # characters of a device's User-Agent kept for the owner to see


def _shown_user_agent(value: str | None) -> str:
    """A device's User-Agent as the account's owner may see it: printable, bounded."""
    if not value:
        return ""
    return "".join(c if c.isprintable() else "?" for c in value[:MAX_USER_AGENT])
