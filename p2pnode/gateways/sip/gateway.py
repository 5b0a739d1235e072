"""The SIP gateway service: transport + security + registrar + routing + B2BUA + relay.

Thin asyncio glue around sans-IO parts. Every request first passes the
:class:`security.Guard` (scanners, bans, density: dropped without an answer);
REGISTER goes to the registrar, new INVITEs through routing to the B2BUA, the
rest to the B2BUA's dialog handling or a fixed answer (OPTIONS 200, SUBSCRIBE
489, unknown methods 501). Each failed authentication writes one line

    sip auth failed source=IP user=LOGIN method=M reason=R

(fail2ban style, names cleaned by ``nat.logsafe.clean``), and the line every
other refusal writes, ``refused what=sip-auth reason=R source=IP count=N``, at
most once per source and interval (``nat.logsafe.RefusalLog``), so one filter
``refused .* source=<HOST>`` covers SIP too. No Server or User-Agent header is
ever sent (no version banner).

Routing rules (issue 14): a caller whose From names our domain must
authenticate (407, digest with the account's HA1s), so nobody places calls
as one of our users; calls to ``login@our-domain`` (or at our address) from
anyone reach that login's registered contacts; a foreign destination is
refused with 403 to an unauthenticated caller (never an open relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import replace

from nat.logsafe import RefusalLog, clean
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
from p2pnode.gateways.sip.callers import CallerCheck
from p2pnode.gateways.sip.delivery import MessageDelivery
from p2pnode.gateways.sip.digest import DigestServer
from p2pnode.gateways.sip.errors import SipDecodeError
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.hosted import HostedIdentities, LoginClaimer, identity_of
from p2pnode.gateways.sip.keepalive import NatKeepalive, PingTarget
from p2pnode.gateways.sip.locate import locate
from p2pnode.gateways.sip.lookups import (
    MAX_LOCATING,
    Locator,
    NumberDirectory,
    PendingLookups,
    foreign_target,
    invite_key_of,
    number_route,
)
from p2pnode.gateways.sip.media import MediaRelay, MediaRelayFullError
from p2pnode.gateways.sip.message import SipRequest, build_response
from p2pnode.gateways.sip.messages import MessageQueue, QueuedMessage
from p2pnode.gateways.sip.pinger import Pinger
from p2pnode.gateways.sip.registrar import (
    Registrar,
    RegistrarConfig,
    RegistrationResult,
)
from p2pnode.gateways.sip.routing import (
    Caller,
    CallerKind,
    Foreign,
    NumberLookup,
    Refusal,
    Router,
    contact_for,
)
from p2pnode.gateways.sip.security import Decision, Guard
from p2pnode.gateways.sip.settings import GatewayConfig, GatewayStatistics
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
from p2pnode.gateways.sip.transaction_layer import TransactionLayer
from p2pnode.gateways.sip.transport import SipStack
from p2pnode.gateways.sip.trunks import TrunkTable
from p2pnode.gateways.sip.uas import UasPolicy, options_response, precheck

__all__ = [
    "ALLOW",
    "GC_THRESHOLDS",
    "GatewayConfig",
    "GatewayStatistics",
    "NumberDirectory",
    "SipGateway",
    "relax_collector",
]

_log = logging.getLogger(__name__)

_POLICY = UasPolicy(
    allowed_methods=frozenset(
        {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE"}
        | {"NOTIFY", "SUBSCRIBE"}
    ),
    supported_options=frozenset({"timer", "path"}),
    forwarding=True,
)
ALLOW = _POLICY.allow
CLAIM_TIMEOUT = 20.0
# CPython's collector thresholds while a gateway runs (only ever raised). A call set-up
# allocates thousands of tracked objects and RFC 3261 keeps its finished transactions
# ~32 s (Timers J/K/D), so with the default (700, 10, 10) full collections over the live
# call state took ~15 % of the gateway's CPU (benchmarks/sip_gateway.py, docs/sip-gateway.md).
GC_THRESHOLDS = (10_000, 10, 10)
_IN_DIALOG = frozenset({"INVITE", "BYE", "INFO", "UPDATE", "MESSAGE", "OPTIONS", "NOTIFY"})


def relax_collector() -> None:
    """Raise the garbage collector's thresholds to ``GC_THRESHOLDS`` (never lower them,
    never re-enable a collector someone disabled): fewer collections over the call state."""
    current = gc.get_threshold()
    if gc.isenabled() and current[0] > 0:
        raised = (max(now, wanted) for now, wanted in zip(current, GC_THRESHOLDS, strict=True))
        gc.set_threshold(*raised)


class SipGateway:
    """The running gateway; ``name``/``start``/``stop``/``statistics`` follow the Service shape."""

    name = "sip"

    def __init__(
        self,
        config: GatewayConfig,
        accounts: AccountStore,
        *,
        randbytes: Callable[[int], bytes] = os.urandom,
        directory: LoginClaimer | None = None,
        p2p_login: str | None = None,
        numbers: NumberDirectory | None = None,
        locator: Locator = locate,
    ) -> None:
        """``p2p_login``: the bridge's account; calls to logins and numbers not hosted here
        ring it (see :mod:`routing`). ``numbers``: our verifier-trusted ENUM (a
        ``directory.lookup.Directory`` with the operator's verifiers), asked first for
        every outbound number. ``locator``: RFC 3263 server location for other domains."""
        self.config = config
        self.directory = directory
        self.numbers = numbers
        self.hosted = HostedIdentities()
        self._claiming: set[asyncio.Task[None]] = set()
        self.accounts = accounts
        self._randbytes = randbytes
        algorithms = config.digest_algorithms
        self.digest = DigestServer(
            accounts.realm, randbytes(32), randbytes=randbytes, algorithms=algorithms
        )
        self.registrar = Registrar(
            RegistrarConfig(config.domain, min_expires=config.min_expires),
            self.digest,
            accounts.credentials,
        )
        self._expiry: asyncio.TimerHandle | None = None  # at the registrar's next deadline
        self.bindings_expired = 0
        self.guard = Guard(config.guard)
        # the shared fail2ban line (``refused what=sip-auth ...``), once per source and interval
        self.refusal_log = RefusalLog(_log, self._now)
        self.stack = SipStack(
            self._on_event,
            layer=TransactionLayer(timers=config.timers, max_transactions=config.max_transactions),
        )
        self.relay = MediaRelay(config.media_host or config.host)
        self.b2bua: B2bua | None = None
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self._calls_per_account: dict[str, int] = {}
        self.trunks = TrunkTable(
            registration=config.registration_trunks,
            ip=config.ip_trunks,
            account_dids=config.account_dids,
        )
        self.router = Router(
            domain=config.domain,
            local_hosts=self._local_hosts,
            account=accounts.get,
            bindings=self.registrar.bindings,
            trunks=self.trunks,
            upstream=config.upstream,
            p2p_login=p2p_login,
            enum_first=numbers is not None,
            default_country=config.default_country,
        )
        self._locator = locator
        self.lookups = PendingLookups(limit=MAX_LOCATING)
        self._ticker: asyncio.Task[None] | None = None
        self.queue = MessageQueue()
        # Called with the login after each successful REGISTER (no I/O: they only wake).
        self.registration_listeners: list[Callable[[str], None]] = []
        self.delivery = MessageDelivery(
            stack=self.stack, queue=self.queue, randbytes=randbytes, respond=self._respond
        )
        self.callers = CallerCheck(
            trunks=self.trunks,
            router=self.router,
            digest=self.digest,
            accounts=accounts,
            guard=self.guard,
            refusal_log=self.refusal_log,
            respond=self._respond,
            clock=self._now,
        )
        self.pinger = Pinger(
            stack=self.stack,
            keepalive=NatKeepalive(interval=config.keepalive_interval),
            domain=config.domain,
            router=self.router,
            registrar=self.registrar,
            randbytes=randbytes,
            clock=self._now,
        )

    def _local_hosts(self) -> frozenset[str]:
        return frozenset() if self.address is None else frozenset({self.address[0]})

    # -- service ------------------------------------------------------------------------
    async def start(self) -> None:
        relax_collector()
        config = self.config
        self.address = await self.stack.start(config.host, config.port)
        self.pinger.address = self.delivery.address = self.address
        if config.tls_port is not None and config.tls_certificate and config.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(config.tls_certificate, config.tls_key)
            self.tls_address = await self.stack.transport.start_tls(
                config.host, config.tls_port, context
            )
        self.b2bua = B2bua(
            sip_host=self.address[0],
            sip_port=self.address[1],
            media_host=self.relay.host,
            open_media=self.relay.open,
            randbytes=self._randbytes,
            max_calls=self.config.max_calls,
            clock=self._now,
            sent_by=self.stack.transport.sent_by,
        )
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        now = self._now()
        for trunk in self.config.ip_trunks:  # OPTIONS pings toward IP trunks too
            if trunk.target is not None:
                self.pinger.watch_trunk(trunk.name, trunk.target, now)
        self.pinger.arm()

    async def _tick(self) -> None:
        """Timer C and session expiry, checked once a second (bounded work: max_calls)."""
        while True:
            await asyncio.sleep(1.0)
            if self.b2bua is not None:
                self._apply(self.b2bua.advance(self._now()))

    async def stop(self) -> None:
        for task in self._claiming:
            task.cancel()
        self.lookups.close()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        self.pinger.close()
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
            login_claims=self.hosted.claims,
            bindings_expired=self.bindings_expired,
            cancelled_lookups=self.lookups.cancelled,
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
                status = effect.response.status
                if self.pinger.owns(effect.key):
                    self.pinger.result(effect.key, answered=True)
                elif self.delivery.owns(effect.key):
                    if status >= 200:
                        self.delivery.result(effect.key, status, effect.response.reason)
                else:
                    self._apply(b2bua.response(effect.key, effect.response))
            elif isinstance(effect, StrayAck):
                if not self.guard.banned(effect.source[0], self._now()):
                    self._apply(b2bua.ack(effect.request))
            elif isinstance(effect, TimedOut) and isinstance(effect.key, ClientKey):
                if self.pinger.owns(effect.key):
                    self.pinger.result(effect.key, answered=False)
                elif self.delivery.owns(effect.key):
                    self.delivery.result(effect.key, 408)
                else:
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

    def _request(self, effect: RequestReceived, b2bua: B2bua) -> None:
        request, key, now = effect.request, effect.key, self._now()
        decision = self.guard.admit(effect.source[0], request.header("User-Agent"), now)
        if decision is not Decision.ACCEPT:
            return  # no answer at all: the transaction absorbs retransmissions
        method = request.method
        refusal = precheck(request, _POLICY)
        if refusal is not None:
            self._apply([Respond(key, refusal)])
        elif method == "REGISTER":
            self._register(effect)
        elif method == "CANCEL":
            self._cancel(key, request, b2bua)
        elif request.to.tag is not None and method in _IN_DIALOG:
            self._apply(b2bua.in_dialog(key, request))
        elif method == "INVITE":
            self._invite(effect, b2bua)
        elif method == "MESSAGE":
            self._message(effect)
        elif method == "OPTIONS":
            tag = self._randbytes(6).hex()
            self._apply([Respond(key, options_response(request, _POLICY, to_tag=tag))])
        elif method == "SUBSCRIBE":
            self._respond(key, request, 489, "Bad Event", ("Allow-Events", "talk"))
        else:  # BYE, INFO, UPDATE, NOTIFY outside any dialog we hold
            self._respond(key, request, 481, "Call/Transaction Does Not Exist")

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
            self.callers.failed(effect.source, outcome.username, "REGISTER", outcome.reason)
        self._apply([Respond(effect.key, outcome.response)])
        if outcome.result is RegistrationResult.REGISTERED and outcome.username:
            self._registered(outcome.username)
            self._arm_expiry()

    # -- registration expiry --------------------------------------------------------------
    def _arm_expiry(self) -> None:
        """One timer at the registrar's next deadline (it says when; the loop waits)."""
        deadline = self.registrar.next_expiry()
        timer = self._expiry
        if timer is not None:
            if deadline is not None and timer.when() <= deadline:
                return  # an early wake-up finds nothing due and re-arms
            timer.cancel()
            self._expiry = None
        if deadline is not None:
            self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire, deadline)

    def _expire(self, deadline: float) -> None:
        """Bindings whose Expires ran out without a refresh: dropped (routing answers 480,
        ``/api/sip`` lists them no more, presence hears the change), pings stopped."""
        self._expiry = None
        # the loop may run a timer a clock tick before its time: never re-arm for the same
        for login, binding in self.registrar.expire(max(self._now(), deadline)):
            self.bindings_expired += 1
            self.pinger.keepalive.unwatch((login, str(binding.contact)))
            _log.info("sip registration expired user=%s", clean(login))
        self._arm_expiry()

    def _invite(self, effect: RequestReceived, b2bua: B2bua) -> None:
        request, key, now = effect.request, effect.key, self._now()
        caller = self.callers.caller(effect)
        if caller is None:
            return
        decision = self.router.route(request, caller, now)
        if isinstance(decision, Refusal):
            self._respond(key, request, decision.status, decision.reason)
            return
        if isinstance(decision, Foreign | NumberLookup):
            if self.lookups.full():
                self._respond(key, request, 503, "Service Unavailable")
                return
            found = decision
            self.lookups.start(key, request, lambda: self._look_up(effect, found, caller))
            return
        self._place(effect, decision, caller, b2bua)

    async def _look_up(
        self, effect: RequestReceived, pending: Foreign | NumberLookup, caller: Caller
    ) -> None:
        """RFC 3263 for another domain, or our trusted ENUM first for a number (routing rule
        3), then place the call (100 Trying is out). A CANCEL meanwhile cancels this task
        (``lookups``), so nothing below runs for a call its caller gave up."""
        decision: Target | Refusal
        if isinstance(pending, Foreign):
            decision = await foreign_target(pending, self._locator, self._random)
        else:
            route = await number_route(self.numbers, pending.number)
            decision = self.router.after_enum(pending, route, caller, self._now())
        b2bua = self.b2bua
        if b2bua is None:
            return
        try:
            if isinstance(decision, Refusal):
                self._respond(effect.key, effect.request, decision.status, decision.reason)
            else:
                self._place(effect, decision, caller, b2bua)
        except (SipDecodeError, ValueError) as error:
            self.stack.transport.drops.drop("located call refused", type(error).__name__)

    def _cancel(self, key: ServerKey, request: SipRequest, b2bua: B2bua) -> None:
        """RFC 3261 §9.2: a CANCEL of an INVITE still being located gets 200 and the INVITE
        487 (the look-up's answer is dropped); otherwise the B2BUA's call is cancelled."""
        invite_key = invite_key_of(key)
        invite = self.lookups.cancel(invite_key)
        if invite is None:
            self._apply(b2bua.cancel(key, request))
            return
        tag = self._randbytes(6).hex()  # one To tag for both answers (§9.2)
        ok = build_response(request, 200, "OK", to_tag=tag)
        terminated = build_response(invite, 487, "Request Terminated", to_tag=tag)
        self._apply([Respond(key, ok), Respond(invite_key, terminated)])

    def _random(self) -> float:
        return int.from_bytes(self._randbytes(4), "big") / 2**32

    def _place(
        self, effect: RequestReceived, decision: Target, caller: Caller, b2bua: B2bua
    ) -> None:
        request, key = effect.request, effect.key
        for login in decision.accounts:
            if self._calls_per_account.get(login, 0) >= self._max_calls(login):
                callee = login == decision.accounts[-1]
                status, reason = (486, "Busy Here") if callee else (403, "Call Limit")
                self._respond(key, request, status, reason)
                return
        target = replace(decision, caller=self.router.caller_id(request, caller))
        try:
            actions = b2bua.invite(key, request, effect.source, effect.reliable, target)
        except MediaRelayFullError:
            self._respond(key, request, 503, "Service Unavailable")
            return
        if any(isinstance(a, StartRequest) for a in actions):
            for login in decision.accounts:
                self._calls_per_account[login] = self._calls_per_account.get(login, 0) + 1
        self._apply(actions)

    def _max_calls(self, login: str) -> int:
        account = self.accounts.get(login)
        return 0 if account is None else account.max_calls

    # -- MESSAGE ------------------------------------------------------------------------
    def _message(self, effect: RequestReceived) -> None:
        request, key, now = effect.request, effect.key, self._now()
        caller = self.callers.caller(effect)
        if caller is None:
            return
        login = self.router.local_user(request.uri)
        if login is None:
            status = 403 if caller.kind is CallerKind.ANONYMOUS else 404
            self._respond(key, request, status, "Forbidden" if status == 403 else "Not Found")
            return
        recipient = f"<sip:{login}@{self.config.domain}>"
        p2p = self.router.p2p_login
        # Texts to or from the bridge are never held here: it keeps them on disk itself.
        hold = p2p is None or caller.login != p2p
        if self.accounts.get(login) is None:
            if p2p is None or self.accounts.get(p2p) is None:
                self._respond(key, request, 404, "Not Found")
                return
            login, hold = p2p, False  # a P2P login, peer id or number: the bridge's devices
        message = QueuedMessage(
            sender=self.router.caller_id(request, caller),
            recipient=recipient,
            content_type=request.header("Content-Type") or "text/plain",
            body=request.body,
            queued_at=now,
        )
        contacts = [contact_for(b) for b in self.registrar.bindings(login, now)]
        self.delivery.deliver(key, request, login, message, contacts, hold=hold)

    def _registered(self, login: str) -> None:
        """A device registered: watch it for NAT keep-alives, deliver queued messages,
        claim the login in the DHT with the identity the gateway hosts for it."""
        now = self._now()
        if (
            self.directory is not None
            and len(self._claiming) < MAX_LOCATING
            and self.hosted.due(login, now)
        ):
            task = asyncio.get_running_loop().create_task(self._claim(login))
            self._claiming.add(task)
            task.add_done_callback(self._claiming.discard)
        bindings = self.registrar.bindings(login, now)
        for binding in bindings:
            self.pinger.watch(
                PingTarget(login, binding.contact, binding.source, binding.reliable), now
            )
        self.pinger.arm()
        self.delivery.flush(login, [contact_for(b) for b in bindings], now)
        for listener in self.registration_listeners:  # e.g. the chat bridge's held texts
            listener(login)

    async def _claim(self, login: str) -> None:
        account = self.accounts.get(login)
        if account is None or self.directory is None:
            return
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT):
                await self.directory.claim_name(identity_of(account), login)
        except (TimeoutError, OSError, ValueError) as error:
            self.hosted.failed(login)
            _log.info("sip login claim failed user=%s error=%s", clean(login), type(error).__name__)
            return
        self.hosted.claims += 1
