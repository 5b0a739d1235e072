"""Where a new call goes, and whether the caller may place it (sans-IO).

The rules (issue 14), in the order they are applied:
1. ``login@our-domain`` (or at our address): anyone may call it, from any SIP
   network; it rings every registered device of the login (404 for no such
   login, 480 when none is registered, 486 over its concurrent-call limit).
2. A number (``+49...`` or digits) that is a DID: routed to its account, its
   registration trunk's PBX (DID in To and, per trunk, the Request-URI) or its
   IP trunk. Only authenticated accounts and IP trunks may call DIDs; an
   anonymous caller gets 403 (DIDs are reached from carriers' trunks).
3. Any other number: an outbound E.164 call, only for accounts allowed to make
   them (toll fraud guard: 403 otherwise). A number in national form is first
   normalised to E.164 with the gateway's ``default_country``. With a number
   directory (``enum_first``) the route is a :class:`NumberLookup`: the
   gateway looks the number up in our verifier-trusted ENUM, and
   :meth:`Router.after_enum` rings its owner when a verified record points into
   this gateway's domain (a login hosted here rings its devices; any other
   login or peer id goes to the P2P bridge); only otherwise does the call
   take the fallback: the configured upstream trunk (without one: the bridge,
   else 404). An unverified or toll-free record is never followed.
4. Any foreign domain: 403 for anonymous callers (never an open relay); for
   accounts and trunks a :class:`Foreign` target the gateway locates with
   RFC 3263 (:mod:`locate`).

With a ``p2p_login`` (the account the SIP <-> P2P bridge registers as), what
would be a 404 here goes to the bridge instead, To naming what was dialled:
a login not hosted here (from any SIP network: it may live elsewhere in the
P2P network), a DID configured for a login not hosted here, and a number with
no upstream trunk (after the toll-fraud guard). The bridge resolves it in the
directory and refuses (404) what names no peer; the bridge account's
``max_calls`` bounds how many such calls run at once.

Devices are reached at the REGISTER's source (the NAT path) when their Contact
is private, a name, or reached over a stream; otherwise at the Contact itself
(a third-party registration of a PBX or test agent names its own address).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.directory.e164 import E164Error, normalise_e164
from p2pnode.directory.trust import Route
from p2pnode.gateways.sip.accounts import Account
from p2pnode.gateways.sip.b2bua import Contact, Target
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import NameAddress, SipUri, Uri, parse_name_addresses, parse_uri
from p2pnode.gateways.sip.media import is_private
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.registrar import Binding
from p2pnode.gateways.sip.transaction import Address
from p2pnode.gateways.sip.trunks import DidRoute, IpTrunk, TrunkTable, digits

__all__ = ["Caller", "CallerKind", "Foreign", "NumberLookup", "Refusal", "Router", "contact_for"]


class CallerKind(enum.Enum):
    ANONYMOUS = "anonymous"  # any SIP network, not authenticated
    ACCOUNT = "account"  # digest-authenticated login
    TRUNK = "trunk"  # an IP trunk by its source address


@dataclass(frozen=True, slots=True)
class Caller:
    kind: CallerKind
    login: str | None = None
    trunk: IpTrunk | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Foreign:
    """A call for another domain: the gateway locates its server (RFC 3263) first."""

    uri: SipUri
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NumberLookup:
    """An outbound number: our trusted ENUM first (the gateway's lookup), else ``fallback``."""

    number: str  # +<digits>
    fallback: Target | Refusal


def contact_for(binding: Binding) -> Contact:
    """Where to send requests for ``binding``: the NAT path or the Contact (see module doc)."""
    uri = binding.contact
    if binding.reliable or not isinstance(uri, SipUri):
        return Contact(uri, binding.source, binding.reliable)
    host = uri.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return Contact(uri, binding.source, binding.reliable)
    if is_private(host) and host != binding.source[0]:
        return Contact(uri, binding.source, binding.reliable)
    return Contact(uri, (host, uri.effective_port), binding.reliable)


class Router:
    """The routing decision for a new INVITE (no I/O: lookups are injected)."""

    def __init__(
        self,
        *,
        domain: str,
        local_hosts: Callable[[], frozenset[str]],
        account: Callable[[str], Account | None],
        bindings: Callable[[str, float], tuple[Binding, ...]],
        trunks: TrunkTable,
        upstream: Address | None = None,
        p2p_login: str | None = None,
        enum_first: bool = False,
        default_country: str | None = None,
    ) -> None:
        """``enum_first``: the gateway can look numbers up in the directory (see rule 3);
        ``default_country``: ISO 3166 code for dialled national numbers (``DE``)."""
        self.upstream = upstream
        self.enum_first = enum_first
        self.default_country = default_country
        self.p2p_login = p2p_login
        self.down_trunks: set[str] = set()  # IP trunks whose OPTIONS pings go unanswered
        self.domain = domain
        self._local_hosts = local_hosts
        self._account = account
        self._bindings = bindings
        self.trunks = trunks

    def local_user(self, uri: Uri) -> str | None:
        """The user part of ``uri`` when it names this gateway, else None."""
        if not isinstance(uri, SipUri) or uri.user is None:
            return None
        host = uri.host.lower()
        return uri.user if host == self.domain.lower() or host in self._local_hosts() else None

    def caller_id(self, request: SipRequest, caller: Caller) -> NameAddress:
        """The identity shown to the callee: a trusted trunk's PAI, else the From (no tag)."""
        if caller.kind is CallerKind.TRUNK and caller.trunk is not None and caller.trunk.trust_pai:
            asserted = request.header("P-Asserted-Identity")
            if asserted is not None:
                try:
                    first = parse_name_addresses(asserted, "P-Asserted-Identity", single=False)[0]
                except (SipDecodeError, IndexError):
                    first = None
                if first is not None:
                    return NameAddress(first.uri, first.display_name, ())
        from_ = request.from_
        return NameAddress(from_.uri, from_.display_name, ())

    def route(
        self, request: SipRequest, caller: Caller, now: float
    ) -> Target | Refusal | Foreign | NumberLookup:
        user = self.local_user(request.uri)
        if user is None:
            if caller.kind is CallerKind.ANONYMOUS:
                return Refusal(403, "Forbidden")  # never an open relay
            if not isinstance(request.uri, SipUri):
                return Refusal(416, "Unsupported URI Scheme")
            return Foreign(request.uri, self._caller_accounts(caller))
        number = digits(user) if not user[:1].isalpha() else None
        if number is None:
            return self._login(user, caller, now)
        route = self.trunks.did(number)
        if route is not None:
            if caller.kind is CallerKind.ANONYMOUS:
                return Refusal(403, "Forbidden")
            return self._did(route, caller, now)
        if caller.kind is CallerKind.ACCOUNT:
            account = self._account(caller.login or "")
            if account is None or not account.allow_e164:
                return Refusal(403, "Forbidden")
        elif caller.kind is CallerKind.ANONYMOUS:
            return Refusal(403, "Forbidden")
        e164 = self._e164(user, number)
        if e164 is None:
            return Refusal(484, "Address Incomplete")
        fallback = self._outbound(e164, caller, now)
        return NumberLookup(e164, fallback) if self.enum_first else fallback

    def _e164(self, dialled: str, number: str) -> str | None:
        """``+<digits>``: as dialled when it starts with ``+`` or without a default
        country, else the national form read in ``default_country`` (None: invalid)."""
        if dialled.startswith("+") or self.default_country is None:
            return f"+{number}"
        try:
            return normalise_e164(number, self.default_country)
        except E164Error:
            return None

    def _outbound(self, number: str, caller: Caller, now: float) -> Target | Refusal:
        """Where a number goes that our ENUM does not route: the upstream trunk."""
        aor = SipUri("sip", number, None, self.domain, None)
        if self.upstream is None:
            return self._to_p2p(aor, caller, now) or Refusal(404, "Not Found")
        # The configured upstream trunk carries the number (E.164 with its '+').
        uri = SipUri("sip", number, None, self.upstream[0], self.upstream[1])
        return Target(aor, (Contact(uri, self.upstream, False),), self._caller_accounts(caller))

    def after_enum(
        self, lookup: NumberLookup, route: Route | None, caller: Caller, now: float
    ) -> Target | Refusal:
        """Rule 3 once the directory answered: the number's owner here or in the P2P
        network when a verified record says so, else the lookup's fallback."""
        if route is None or route.source != "verified":
            return lookup.fallback
        for directive in route.directives:
            user = self._own_user(directive.uri_for(lookup.number))
            if user is None:
                continue  # a URI elsewhere: a phone number we do not carry
            aor = SipUri("sip", user, None, self.domain, None)
            if self._account(user) is not None:
                return self._ring(user, aor, caller, None, now)
            return self._to_p2p(aor, caller, now) or lookup.fallback
        return lookup.fallback

    def _own_user(self, uri_text: str | None) -> str | None:
        """The user of ``sip:user@<our domain>`` (a login or peer id), else None."""
        if uri_text is None:
            return None
        try:
            uri = parse_uri(uri_text)
        except SipDecodeError:
            return None
        user = self.local_user(uri)
        # A number again (a DID, another record) is not followed: one indirection only.
        return None if user is None or digits(user) is not None else user

    def _caller_accounts(self, caller: Caller) -> tuple[str, ...]:
        return (caller.login,) if caller.login is not None else ()

    def _login(self, login: str, caller: Caller, now: float) -> Target | Refusal:
        account = self._account(login)
        aor = SipUri("sip", login, None, self.domain, None)
        if account is None:
            return self._to_p2p(aor, caller, now) or Refusal(404, "Not Found")
        return self._ring(login, aor, caller, None, now)

    def _to_p2p(self, aor: SipUri, caller: Caller, now: float) -> Target | None:
        """Ring the bridge's devices for ``aor`` (To keeps it), if a bridge account is set."""
        if self.p2p_login is None or self._account(self.p2p_login) is None:
            return None
        ring = self._ring(self.p2p_login, aor, caller, None, now)
        return ring if isinstance(ring, Target) else None

    def _ring(
        self, login: str, aor: SipUri, caller: Caller, request_uri_user: str | None, now: float
    ) -> Target | Refusal:
        contacts = tuple(contact_for(b) for b in self._bindings(login, now))
        accounts = tuple(dict.fromkeys((*self._caller_accounts(caller), login)))
        return Target(aor, contacts, accounts, request_uri_user)

    def _did(self, route: DidRoute, caller: Caller, now: float) -> Target | Refusal:
        aor = SipUri("sip", route.did, None, self.domain, None)
        if route.account is not None:
            if self._account(route.account) is None:
                p2p_aor = SipUri("sip", route.account, None, self.domain, None)
                return self._to_p2p(p2p_aor, caller, now) or Refusal(404, "Not Found")
            return self._ring(route.account, aor, caller, None, now)
        if route.registration_trunk is not None:
            trunk = route.registration_trunk
            user = route.did if trunk.did_in_request_uri else None
            return self._ring(trunk.login, aor, caller, user, now)
        trunk_ip = route.ip_trunk
        if trunk_ip is None or trunk_ip.target is None or trunk_ip.name in self.down_trunks:
            return Refusal(480, "Temporarily Unavailable")
        uri = SipUri("sip", route.did, None, trunk_ip.target[0], trunk_ip.target[1])
        contact = Contact(uri, trunk_ip.target, False)
        return Target(aor, (contact,), self._caller_accounts(caller))
