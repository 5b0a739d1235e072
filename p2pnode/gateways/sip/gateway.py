"""The SIP gateway service: transport + security + registrar + routing + B2BUA + relay.

Thin asyncio glue around sans-IO parts. Every request first passes the
:class:`security.Guard` (scanners, bans, density: dropped without an answer);
REGISTER goes to the registrar, new INVITEs through routing to the B2BUA, the
rest to the B2BUA's dialog handling or a fixed answer (OPTIONS 200, SUBSCRIBE
489, unknown methods 501). Each failed authentication writes one line

    sip auth failed source=IP user=LOGIN method=M reason=R

(fail2ban style, names cleaned by ``nat.logsafe.clean``). No Server or
User-Agent header is ever sent (no version banner).

Routing rules (issue 14): a caller whose From names our domain must
authenticate (407, digest with the account's HA1s), so nobody places calls
as one of our users; calls to ``login@our-domain`` (or at our address) from
anyone reach that login's registered contacts; a foreign destination is
refused with 403 to an unauthenticated caller (never an open relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from nat.logsafe import clean
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.b2bua import (
    Action,
    B2bua,
    CallEnded,
    Respond,
    SendDirect,
    StartRequest,
    Target,
)
from p2pnode.gateways.sip.digest import Algorithm, DigestServer, VerdictKind
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.media import MediaRelay, MediaRelayFullError
from p2pnode.gateways.sip.message import KNOWN_METHODS, SipRequest, build_response
from p2pnode.gateways.sip.registrar import Registrar, RegistrarConfig, RegistrationResult
from p2pnode.gateways.sip.security import Decision, Guard, GuardConfig
from p2pnode.gateways.sip.transaction import (
    ClientKey,
    Effect,
    RequestReceived,
    ResponseReceived,
    ServerKey,
    StrayAck,
    TimedOut,
    TransactionStateError,
)
from p2pnode.gateways.sip.transport import SipStack

__all__ = ["ALLOW", "GatewayConfig", "GatewayStatistics", "SipGateway"]

_log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE"
_IN_DIALOG = frozenset({"INVITE", "BYE", "INFO", "UPDATE", "MESSAGE", "OPTIONS", "NOTIFY"})


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    domain: str
    host: str = "127.0.0.1"
    port: int = 0
    media_host: str | None = None  # default: host
    # sipp and many legacy phones answer only the first challenge and only MD5.
    md5_first: bool = True
    guard: GuardConfig = field(default_factory=GuardConfig)
    max_calls: int = 1024


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    registered_accounts: int
    active_calls: int
    calls_started: int
    calls_answered: int
    rtp_forwarded: int
    rtp_dropped: tuple[tuple[str, int], ...]
    auth_failures: int
    banned_sources: int
    dropped_requests: tuple[tuple[str, int], ...]


class SipGateway:
    """The running gateway; ``name``/``start``/``stop``/``statistics`` follow the Service shape."""

    name = "sip"

    def __init__(
        self,
        config: GatewayConfig,
        accounts: AccountStore,
        *,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self._randbytes = randbytes
        algorithms = (
            (Algorithm.MD5, Algorithm.SHA256)
            if config.md5_first
            else (Algorithm.SHA256, Algorithm.MD5)
        )
        self.digest = DigestServer(
            accounts.realm, randbytes(32), randbytes=randbytes, algorithms=algorithms
        )
        self.registrar = Registrar(
            RegistrarConfig(config.domain), self.digest, accounts.credentials
        )
        self.guard = Guard(config.guard)
        self.stack = SipStack(self._on_event)
        self.relay = MediaRelay(config.media_host or config.host)
        self.b2bua: B2bua | None = None
        self.address: tuple[str, int] | None = None
        self._calls_per_account: dict[str, int] = {}

    # -- service ------------------------------------------------------------------------
    async def start(self) -> None:
        self.address = await self.stack.start(self.config.host, self.config.port)
        self.b2bua = B2bua(
            sip_host=self.address[0],
            sip_port=self.address[1],
            media_host=self.relay.host,
            open_media=self.relay.open,
            randbytes=self._randbytes,
            max_calls=self.config.max_calls,
        )

    async def stop(self) -> None:
        self.relay.close()
        await self.stack.close()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def statistics(self) -> GatewayStatistics:
        relay = self.relay.statistics()
        guard = self.guard.statistics(self._now())
        b2bua = self.b2bua
        return GatewayStatistics(
            registered_accounts=self.registrar.registered_accounts(),
            active_calls=0 if b2bua is None else b2bua.active_calls(),
            calls_started=0 if b2bua is None else b2bua.calls_started,
            calls_answered=0 if b2bua is None else b2bua.calls_answered,
            rtp_forwarded=relay.forwarded,
            rtp_dropped=relay.dropped,
            auth_failures=guard.auth_failures,
            banned_sources=guard.banned_sources,
            dropped_requests=guard.dropped,
        )

    # -- events -----------------------------------------------------------------------
    def _on_event(self, stack: SipStack, effect: Effect) -> None:
        b2bua = self.b2bua
        if b2bua is None:
            return
        try:
            if isinstance(effect, RequestReceived):
                self._request(effect, b2bua)
            elif isinstance(effect, ResponseReceived):
                self._apply(b2bua.response(effect.key, effect.response))
            elif isinstance(effect, StrayAck):
                if not self.guard.banned(effect.source[0], self._now()):
                    self._apply(b2bua.ack(effect.request))
            elif isinstance(effect, TimedOut) and isinstance(effect.key, ClientKey):
                self._apply(b2bua.timed_out(effect.key))
        except (SipDecodeError, ValueError) as error:
            # A peer's malformed optional header (or a call state it cannot be in).
            self.stack.transport.drops.drop("request handling refused", type(error).__name__)

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                # The transaction may have ended already (a late retransmission).
                with contextlib.suppress(TransactionStateError):
                    self.stack.respond(action.key, action.response)
            elif isinstance(action, StartRequest):
                self.stack.send_request(
                    action.request, action.destination, reliable=action.reliable
                )
            elif isinstance(action, SendDirect):
                self.stack.transport.send(
                    action.message, action.destination, reliable=action.reliable
                )
            elif isinstance(action, CallEnded):
                for login in action.accounts:
                    left = self._calls_per_account.get(login, 1) - 1
                    if left > 0:
                        self._calls_per_account[login] = left
                    else:
                        self._calls_per_account.pop(login, None)

    def _respond(
        self, key: ServerKey, request: SipRequest, status: int, reason: str, *extra: tuple[str, str]
    ) -> None:
        self._apply(
            [
                Respond(
                    key,
                    build_response(
                        request, status, reason, *extra, to_tag=self._randbytes(6).hex()
                    ),
                )
            ]
        )

    def _auth_failed(
        self, source: tuple[str, int], user: str | None, method: str, reason: str
    ) -> None:
        _log.warning(
            "sip auth failed source=%s user=%s method=%s reason=%s",
            clean(source[0]), clean(user or "-"), clean(method), clean(reason),
        )  # fmt: skip
        if self.guard.auth_failed(source[0], user, self._now()):
            _log.warning("sip source banned source=%s", clean(source[0]))

    def _request(self, effect: RequestReceived, b2bua: B2bua) -> None:
        request, key, now = effect.request, effect.key, self._now()
        decision = self.guard.admit(effect.source[0], request.header("User-Agent"), now)
        if decision is not Decision.ACCEPT:
            return  # no answer at all: the transaction absorbs retransmissions
        method = request.method
        if method == "REGISTER":
            self._register(effect)
        elif method == "CANCEL":
            self._apply(b2bua.cancel(key, request))
        elif request.to.tag is not None and method in _IN_DIALOG:
            self._apply(b2bua.in_dialog(key, request))
        elif request.max_forwards == 0 and method != "OPTIONS":
            self._respond(key, request, 483, "Too Many Hops")
        elif method == "INVITE":
            self._invite(effect, b2bua)
        elif method == "OPTIONS":
            self._respond(key, request, 200, "OK", ("Allow", ALLOW), ("Accept", "application/sdp"))
        elif method == "SUBSCRIBE":
            self._respond(key, request, 489, "Bad Event", ("Allow-Events", ""))
        elif method in ("BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"):
            self._respond(key, request, 481, "Call/Transaction Does Not Exist")
        elif method in KNOWN_METHODS:
            self._respond(key, request, 405, "Method Not Allowed", ("Allow", ALLOW))
        else:
            self._respond(key, request, 501, "Not Implemented", ("Allow", ALLOW))

    def _register(self, effect: RequestReceived) -> None:
        now = self._now()
        request = effect.request
        user = request.to.uri.user if isinstance(request.to.uri, SipUri) else None
        if user is not None and self.guard.account_locked(user, now):
            challenges = tuple(("WWW-Authenticate", c) for c in self.digest.challenges(now))
            self._respond(effect.key, request, 401, "Unauthorized", *challenges)
            return
        outcome = self.registrar.handle(request, effect.source, now, reliable=effect.reliable)
        if outcome.result is RegistrationResult.AUTH_FAILED:
            self._auth_failed(effect.source, outcome.username, "REGISTER", outcome.reason)
        self._apply([Respond(effect.key, outcome.response)])

    def _local_user(self, uri: object) -> str | None:
        """The login a SIP URI names on this gateway, or None when it is not ours."""
        if not isinstance(uri, SipUri) or uri.user is None:
            return None
        host = uri.host.lower()
        ours = {self.config.domain.lower()}
        if self.address is not None:
            ours.add(self.address[0])
        return uri.user if host in ours else None

    def _invite(self, effect: RequestReceived, b2bua: B2bua) -> None:
        request, key, now = effect.request, effect.key, self._now()
        unsupported = [t for t in request.option_tags("Require") if t != "timer"]
        if unsupported:
            self._respond(
                key, request, 420, "Bad Extension", ("Unsupported", ", ".join(unsupported))
            )
            return
        caller = self._local_user(request.from_.uri)
        if caller is not None:
            verdict = self._authenticate(effect)
            if verdict is None:
                return
            if verdict != caller:
                self._respond(key, request, 403, "Forbidden")
                return
        callee = self._local_user(request.uri)
        if callee is None:
            # Foreign destinations (RFC 3263, ENUM, trunks) are not routed yet: never relay.
            self._respond(key, request, 403, "Forbidden")
            return
        account = self.accounts.get(callee)
        if account is None:
            self._respond(key, request, 404, "Not Found")
            return
        involved = tuple(dict.fromkeys(login for login in (caller, callee) if login is not None))
        for login in involved:
            limit = account.max_calls if login == callee else self._max_calls(login)
            if self._calls_per_account.get(login, 0) >= limit:
                status, reason = (486, "Busy Here") if login == callee else (403, "Call Limit")
                self._respond(key, request, status, reason)
                return
        bindings = self.registrar.bindings(callee, now)
        aor = SipUri("sip", callee, None, self.config.domain, None)
        try:
            actions = b2bua.invite(
                key, request, effect.source, effect.reliable, Target(aor, bindings, involved)
            )
        except MediaRelayFullError:
            self._respond(key, request, 503, "Service Unavailable")
            return
        if any(isinstance(a, StartRequest) for a in actions):
            for login in involved:
                self._calls_per_account[login] = self._calls_per_account.get(login, 0) + 1
        self._apply(actions)

    def _max_calls(self, login: str) -> int:
        account = self.accounts.get(login)
        return 0 if account is None else account.max_calls

    def _authenticate(self, effect: RequestReceived) -> str | None:
        """The authenticated login of an INVITE, or None after answering 407/403."""
        request, now = effect.request, self._now()
        credentials = [
            auth
            for auth in request.auth_headers("Proxy-Authorization")
            if auth.scheme.lower() == "digest" and auth.get("realm") == self.digest.realm
        ]
        stale = False
        if credentials:
            verdict = self.digest.verify(
                credentials[0],
                method=request.method,
                lookup=self.accounts.credentials,
                now=now,
                request_uri=str(request.uri),
            )
            user = verdict.username
            if verdict.kind is VerdictKind.OK and user and not self.guard.account_locked(user, now):
                return user
            stale = verdict.kind is VerdictKind.STALE
            if verdict.kind is VerdictKind.FAILED:
                self._auth_failed(effect.source, user, request.method, verdict.reason)
        challenges = tuple(
            ("Proxy-Authenticate", c) for c in self.digest.challenges(now, stale=stale)
        )
        self._respond(effect.key, request, 407, "Proxy Authentication Required", *challenges)
        return None
