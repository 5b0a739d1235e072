"""The P2P identities the gateway hosts for its SIP accounts.

M1's promise is that a desk phone's login is a full peer of the network: the
gateway holds an Ed25519 key per account (its seed is in the account store)
and, while a device of the account is registered, claims the login in the DHT
with that key (a ``NAME_CLAIM`` record through the directory), so P2P users
resolve ``alice`` to the identity the gateway answers for.

Sans-IO decisions (``due``), an injected claimer (``Directory.claim_name``
conforms): a login is claimed on registration at most once per
``CLAIM_INTERVAL`` (records carry their own TTL; the directory's republisher
keeps them alive), with at most ``MAX_TRACKED`` logins remembered.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from p2pnode.gateways.sip.accounts import Account
from p2pnode.identity import Identity

__all__ = ["CLAIM_INTERVAL", "MAX_TRACKED", "HostedIdentities", "LoginClaimer", "identity_of"]

CLAIM_INTERVAL = 3600.0
MAX_TRACKED = 100_000


class LoginClaimer(Protocol):
    """What the gateway needs of the directory."""

    async def claim_name(self, identity: Identity, login: str) -> object: ...


def identity_of(account: Account) -> Identity:
    """The identity the gateway holds for ``account`` (deterministic from its stored seed)."""
    return Identity.generate(account.identity_seed)


class HostedIdentities:
    """When each hosted login was last claimed; which claims are due."""

    def __init__(self, *, interval: float = CLAIM_INTERVAL, max_tracked: int = MAX_TRACKED) -> None:
        self.interval = interval
        self.max_tracked = max_tracked
        self._claimed: OrderedDict[str, float] = OrderedDict()
        self.claims = 0
        self.failures = 0

    def due(self, login: str, now: float) -> bool:
        """True when ``login`` should be claimed now (and records that it is being claimed)."""
        last = self._claimed.get(login)
        if last is not None and now - last < self.interval:
            return False
        self._claimed.pop(login, None)
        self._claimed[login] = now
        while len(self._claimed) > self.max_tracked:
            self._claimed.popitem(last=False)
        return True

    def failed(self, login: str) -> None:
        """A claim did not reach the network: the next registration tries again."""
        self._claimed.pop(login, None)
        self.failures += 1
