"""Who places a call or MESSAGE: an IP trunk, anyone, or a proven account.

Split from :mod:`gateway` (one concept: caller authentication). A request
whose From names one of our users must prove it with digest (407; nobody calls
as our user), and the authenticated login must be that user (403), except the
bridge account, which speaks for every P2P user that is no account here. Each
failed authentication writes one line

    sip auth failed source=IP user=LOGIN method=M reason=R

(fail2ban style, names cleaned by ``nat.logsafe.clean``) and the shared
``refused what=sip-auth ...`` line, and counts toward the guard's bans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nat.logsafe import RefusalLog, clean
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.digest import DigestServer, VerdictKind
from p2pnode.gateways.sip.message import SipRequest
from p2pnode.gateways.sip.routing import Caller, CallerKind, Router
from p2pnode.gateways.sip.security import Guard
from p2pnode.gateways.sip.transaction import RequestReceived, ServerKey
from p2pnode.gateways.sip.trunks import TrunkTable

__all__ = ["CallerCheck", "Responder"]

_log = logging.getLogger("p2pnode.gateways.sip.gateway")  # the gateway's log lines, unchanged

Responder = Callable[..., None]  # (key, request, status, reason, *extra headers)


class CallerCheck:
    """Decides the :class:`routing.Caller` of a request, answering 407/403 itself."""

    def __init__(
        self,
        *,
        trunks: TrunkTable,
        router: Router,
        digest: DigestServer,
        accounts: AccountStore,
        guard: Guard,
        refusal_log: RefusalLog,
        respond: Responder,
        clock: Callable[[], float],
    ) -> None:
        self._trunks = trunks
        self._router = router
        self._digest = digest
        self._accounts = accounts
        self._guard = guard
        self._refusal_log = refusal_log
        self._respond = respond
        self._clock = clock

    def failed(self, source: tuple[str, int], user: str | None, method: str, reason: str) -> None:
        """One failed authentication: the log lines and the guard's count (maybe a ban)."""
        _log.warning(
            "sip auth failed source=%s user=%s method=%s reason=%s",
            clean(source[0]), clean(user or "-"), clean(method), clean(reason),
        )  # fmt: skip
        self._refusal_log.refused("sip-auth", reason, source)
        if self._guard.auth_failed(source[0], user, self._clock()):
            _log.warning("sip source banned source=%s", clean(source[0]))

    def caller(self, effect: RequestReceived) -> Caller | None:
        """Who places this call or MESSAGE; None after answering a 407/403 challenge."""
        request = effect.request
        trunk = self._trunks.ip_trunk_for(effect.source[0])
        if trunk is not None:
            return Caller(CallerKind.TRUNK, trunk=trunk)
        claimed = self._router.local_user(request.from_.uri)
        if claimed is None:
            return Caller(CallerKind.ANONYMOUS)
        # From names one of our users: prove it (nobody calls as our user).
        login = self._authenticate(effect)
        if login is None:
            return None
        if login != claimed and not self._bridge_speaks_for(login, claimed):
            self._respond(effect.key, request, 403, "Forbidden")
            return None
        return Caller(CallerKind.ACCOUNT, login=login)

    def _bridge_speaks_for(self, login: str, claimed: str) -> bool:
        """The bridge account stands for every P2P user (a login or peer id that is no
        account here): its texts to phones come from them, so a reply reaches them."""
        p2p = self._router.p2p_login
        return p2p is not None and login == p2p and self._accounts.get(claimed) is None

    def _authenticate(self, effect: RequestReceived) -> str | None:
        """The authenticated login of an INVITE or MESSAGE, or None after answering 407."""
        request: SipRequest = effect.request
        key: ServerKey = effect.key
        now = self._clock()
        digest = self._digest
        credentials = [
            auth
            for auth in request.auth_headers("Proxy-Authorization")
            if auth.scheme.lower() == "digest" and auth.get("realm") == digest.realm
        ]
        stale = False
        if credentials:
            verdict = digest.verify(
                credentials[0],
                method=request.method,
                lookup=self._accounts.credentials,
                now=now,
                request_uri=str(request.uri),
            )
            user = verdict.username
            if (
                verdict.kind is VerdictKind.OK
                and user
                and not self._guard.account_locked(user, now)
            ):
                return user
            stale = verdict.kind is VerdictKind.STALE
            if verdict.kind is VerdictKind.FAILED:
                self.failed(effect.source, user, request.method, verdict.reason)
        challenges = tuple(("Proxy-Authenticate", c) for c in digest.challenges(now, stale=stale))
        self._respond(key, request, 407, "Proxy Authentication Required", *challenges)
        return None
