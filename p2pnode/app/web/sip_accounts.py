"""The SIP equipment view's backend: the gateway's accounts in the home: read, added,
their limits changed (calls to numbers, concurrent calls), removed.

Why here and not in the control API: the accounts live in ``<home>/sip-accounts.sqlite``
(``p2pnode sip account add`` writes it; the gateway reads it), not in the
running node, and a new account's password is shown exactly once, to the
person at the app. Only digest hashes are stored, so an existing account's
password cannot be shown again: a reset makes a new one (shown once), and the
devices still holding the old one fail their next challenge. Registered devices
live in the running gateway's registrar: the page reads them from the control
API's ``/api/sip`` and drops one there (``DELETE /api/sip/registrations/{login}``).
Removing an account deletes it from the file and then drops its registrations on
the running gateway (the server route does both), so its phones stop ringing at
once and cannot register again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from p2pnode.gateways.sip.accounts import AccountError, AccountStore
from p2pnode.gateways.sip.hosted import identity_of

__all__ = [
    "ACCOUNTS_FILE",
    "NewAccount",
    "SipAccountView",
    "add_account",
    "list_accounts",
    "remove_account",
    "reset_password",
    "set_limits",
]

ACCOUNTS_FILE = "sip-accounts.sqlite"  # the same file as ``p2pnode sip account``


@dataclass(frozen=True)
class SipAccountView:
    login: str
    server: str
    peer_id: str
    e164: bool
    max_calls: int


@dataclass(frozen=True)
class NewAccount:
    login: str
    password: str  # shown once
    server: str
    peer_id: str


def list_accounts(home: Path) -> tuple[str | None, tuple[SipAccountView, ...]]:
    """The SIP domain (None: no accounts file yet) and every account."""
    path = home / ACCOUNTS_FILE
    if not path.exists():
        return None, ()
    try:
        store = AccountStore.open(path, None)
    except AccountError:
        return None, ()
    try:
        accounts = [store.get(login) for login in store.logins()]
    finally:
        store.close()
    views = tuple(
        SipAccountView(a.login, a.realm, identity_of(a).peer_id, a.allow_e164, a.max_calls)
        for a in accounts
        if a is not None
    )
    return store.realm, views


def add_account(home: Path, login: str, domain: str | None) -> NewAccount:
    """A new account with a generated password; ``AccountError`` says why not."""
    store = AccountStore.open(home / ACCOUNTS_FILE, domain)
    try:
        account, password = store.add(login, None, randbytes=os.urandom)
    finally:
        store.close()
    return NewAccount(account.login, password, account.realm, identity_of(account).peer_id)


def reset_password(home: Path, login: str) -> NewAccount:
    """A new generated password for ``login`` (shown once); ``AccountError`` says why not."""
    path = home / ACCOUNTS_FILE
    if not path.exists():
        raise AccountError("no such account")
    store = AccountStore.open(path, None)
    try:
        password = store.reset_password(login, None, randbytes=os.urandom)
        account = store.get(login)
    finally:
        store.close()
    assert account is not None
    return NewAccount(account.login, password, account.realm, identity_of(account).peer_id)


def set_limits(home: Path, login: str, allow_e164: bool, max_calls: int) -> SipAccountView:
    """Change ``login``'s limits in the home's accounts (the running gateway reads them on
    its next look-up); ``AccountError`` for an unknown login or a limit out of range."""
    path = home / ACCOUNTS_FILE
    if not path.exists():
        raise AccountError("no such account")
    store = AccountStore.open(path, None)
    try:
        a = store.set_limits(login, allow_e164=allow_e164, max_calls=max_calls)
    finally:
        store.close()
    return SipAccountView(a.login, a.realm, identity_of(a).peer_id, a.allow_e164, a.max_calls)


def remove_account(home: Path, login: str) -> None:
    """Delete ``login`` from the home's accounts; ``AccountError`` when there is none."""
    path = home / ACCOUNTS_FILE
    if not path.exists():
        raise AccountError("no such account")
    store = AccountStore.open(path, None)
    try:
        if not store.remove(login):
            raise AccountError("no such account")
    finally:
        store.close()
