"""SIP accounts in SQLite: a login, digest hashes of its password, a hosted P2P identity.

M1's promise is three settings on a desk phone: login, password, server. The
password is never stored: only the HA1 hashes the digest needs (MD5 for the
phones that only speak it, SHA-256 per RFC 8760), so a stolen database gives
no password to replay elsewhere. Each account owns an Ed25519 identity the
gateway holds for it (the seed is stored), so the login is a full peer of the
P2P network while a phone is registered.

Generated passwords are 20 characters from a 57-symbol alphabet without
look-alikes (~117 bits): strong enough that the online guessing the security
module allows (a few per minute per source before a ban) never finds one.

Look-ups are cached in memory (two per call set-up and one per REGISTER made
SQLite a visible share of the gateway's CPU). The cache is never stale: this
store's own writes drop it at once, and every look-up first asks SQLite's
``PRAGMA data_version``, which changes whenever another connection (the CLI,
the desktop app, another process) committed to the file, so their adds,
password resets and removals take effect on the next request too.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pnode.gateways.sip.digest import StoredCredentials, stored_credentials

__all__ = [
    "GENERATED_PASSWORD_LENGTH",
    "MAX_ACCOUNTS",
    "MAX_ACCOUNT_CALLS",
    "MAX_CACHED_ACCOUNTS",
    "MIN_PASSWORD_LENGTH",
    "Account",
    "AccountError",
    "AccountStore",
    "generate_password",
    "valid_login",
]

GENERATED_PASSWORD_LENGTH = 20
MIN_PASSWORD_LENGTH = 12
MAX_ACCOUNTS = 100_000
MAX_CACHED_ACCOUNTS = 4096  # look-ups held in memory (unknown logins too); beyond, cleared
DEFAULT_MAX_CALLS = 4
MAX_ACCOUNT_CALLS = 1000  # the highest concurrent-call limit one account may be given
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # no 0/O, 1/l/I
_LOGIN_RE = re.compile(r"[a-z][a-z0-9._-]{1,31}")

_META = "CREATE TABLE IF NOT EXISTS sip_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sip_accounts (
    login TEXT PRIMARY KEY,
    realm TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    identity_seed BLOB NOT NULL,
    allow_e164 INTEGER NOT NULL DEFAULT 0,
    max_calls INTEGER NOT NULL DEFAULT 4
)
"""


class AccountError(ValueError):
    """A refused account operation (bad login, weak password, duplicate, full)."""


@dataclass(frozen=True, slots=True)
class Account:
    login: str
    realm: str
    credentials: StoredCredentials
    identity_seed: bytes  # Ed25519 seed of the identity the gateway hosts for the login
    allow_e164: bool = False  # may place calls to phone numbers (toll fraud guard)
    max_calls: int = DEFAULT_MAX_CALLS


def valid_login(login: str) -> bool:
    """Lower-case ASCII, starting with a letter, 2-32 characters: safe in URIs and logs."""
    return _LOGIN_RE.fullmatch(login) is not None


def generate_password(randbytes: Callable[[int], bytes]) -> str:
    """A password from ``_ALPHABET`` by rejection sampling (no modulo bias)."""
    chars: list[str] = []
    limit = 256 - 256 % len(_ALPHABET)
    while len(chars) < GENERATED_PASSWORD_LENGTH:
        for byte in randbytes(32):
            if byte < limit and len(chars) < GENERATED_PASSWORD_LENGTH:
                chars.append(_ALPHABET[byte % len(_ALPHABET)])
    return "".join(chars)


class AccountStore:
    """The accounts table in the node's SQLite file (or ``:memory:`` for tests)."""

    def __init__(self, path: Path | str, realm: str, *, max_accounts: int = MAX_ACCOUNTS) -> None:
        self.realm = realm
        self.max_accounts = max_accounts
        self._db = sqlite3.connect(str(path))
        self._db.execute(_SCHEMA)
        self._db.commit()
        # login -> Account (None: no such login), valid while data_version is unchanged
        self._cache: dict[str, Account | None] = {}
        self._version = self._data_version()

    @staticmethod
    def open(path: Path, domain: str | None) -> AccountStore:
        """The store at ``path`` with its domain (the digest realm) remembered in the file:
        ``domain`` is required the first time and must match afterwards (HA1s depend on it)."""
        db = sqlite3.connect(str(path))
        db.execute(_META)
        row = db.execute("SELECT value FROM sip_meta WHERE key = 'domain'").fetchone()
        if row is None:
            if domain is None:
                db.close()
                raise AccountError("no SIP domain yet: give --domain the first time")
            db.execute("INSERT INTO sip_meta VALUES ('domain', ?)", (domain,))
            db.commit()
        elif domain is not None and domain != row[0]:
            db.close()
            raise AccountError("the accounts were made for another domain (HA1s depend on it)")
        realm = str(row[0]) if row is not None else str(domain)
        db.close()
        return AccountStore(path, realm)

    def close(self) -> None:
        self._db.close()

    def add(
        self,
        login: str,
        password: str | None,
        *,
        randbytes: Callable[[int], bytes],
        allow_e164: bool = False,
        max_calls: int = DEFAULT_MAX_CALLS,
    ) -> tuple[Account, str]:
        """Create an account; returns it and the password (generated when None)."""
        if not valid_login(login):
            raise AccountError("login must be 2-32 of a-z 0-9 . _ -, starting with a letter")
        if password is None:
            password = generate_password(randbytes)
        elif len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password shorter than {MIN_PASSWORD_LENGTH} characters")
        if self.count() >= self.max_accounts:
            raise AccountError("account table full")
        credentials = stored_credentials(login, self.realm, password)
        account = Account(
            login, self.realm, credentials, randbytes(32), allow_e164, max(1, max_calls)
        )
        try:
            self._db.execute(
                "INSERT INTO sip_accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    login,
                    self.realm,
                    credentials.ha1_md5,
                    credentials.ha1_sha256,
                    account.identity_seed,
                    int(allow_e164),
                    account.max_calls,
                ),
            )
        except sqlite3.IntegrityError as error:
            raise AccountError("login already exists") from error
        self._db.commit()
        self._cache.clear()
        return account, password

    def reset_password(
        self, login: str, password: str | None, *, randbytes: Callable[[int], bytes]
    ) -> str:
        """Give ``login`` a new password (generated when None) and return it; the hosted
        identity and limits stay. Devices still using the old one fail their next
        challenge. ``AccountError`` for an unknown login or a short password."""
        if password is None:
            password = generate_password(randbytes)
        elif len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password shorter than {MIN_PASSWORD_LENGTH} characters")
        credentials = stored_credentials(login, self.realm, password)
        cursor = self._db.execute(
            "UPDATE sip_accounts SET ha1_md5 = ?, ha1_sha256 = ? WHERE login = ? AND realm = ?",
            (credentials.ha1_md5, credentials.ha1_sha256, login, self.realm),
        )
        self._db.commit()
        self._cache.clear()
        if cursor.rowcount == 0:
            raise AccountError("no such account")
        return password

    def set_limits(self, login: str, *, allow_e164: bool, max_calls: int) -> Account:
        """Change ``login``'s limits (calls to E.164 numbers, concurrent calls); a running
        gateway's next look-up sees them (``data_version``). ``AccountError`` for an
        unknown login or a call limit outside 1..``MAX_ACCOUNT_CALLS``."""
        if not 1 <= max_calls <= MAX_ACCOUNT_CALLS:
            raise AccountError(f"concurrent calls must be 1-{MAX_ACCOUNT_CALLS}")
        cursor = self._db.execute(
            "UPDATE sip_accounts SET allow_e164 = ?, max_calls = ? WHERE login = ? AND realm = ?",
            (int(allow_e164), max_calls, login, self.realm),
        )
        self._db.commit()
        self._cache.clear()
        account = self._read(login)
        if cursor.rowcount == 0 or account is None:
            raise AccountError("no such account")
        return account

    def remove(self, login: str) -> bool:
        cursor = self._db.execute("DELETE FROM sip_accounts WHERE login = ?", (login,))
        self._db.commit()
        self._cache.clear()
        return cursor.rowcount > 0

    def count(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM sip_accounts").fetchone()
        return int(count)

    def _data_version(self) -> int:
        """SQLite's counter of commits by *other* connections to this file."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    def get(self, login: str) -> Account | None:
        """The account of ``login`` (None when unknown), from the cache while no other
        connection has committed since it was filled."""
        version = self._data_version()
        cache = self._cache
        if version != self._version:
            cache.clear()
            self._version = version
        elif login in cache:
            return cache[login]
        account = self._read(login)
        if len(cache) >= MAX_CACHED_ACCOUNTS:
            cache.clear()  # bounded: a scan of made-up logins cannot grow it
        cache[login] = account
        return account

    def _read(self, login: str) -> Account | None:
        row = self._db.execute(
            "SELECT login, realm, ha1_md5, ha1_sha256, identity_seed, allow_e164, max_calls "
            "FROM sip_accounts WHERE login = ? AND realm = ?",
            (login, self.realm),
        ).fetchone()
        return None if row is None else _account(row)

    def logins(self) -> tuple[str, ...]:
        rows = self._db.execute("SELECT login FROM sip_accounts ORDER BY login").fetchall()
        return tuple(str(row[0]) for row in rows)

    def credentials(self, login: str) -> StoredCredentials | None:
        """The digest lookup: HA1s of ``login``, None for an unknown login."""
        account = self.get(login)
        return None if account is None else account.credentials


def _account(row: tuple[object, ...]) -> Account:
    login, realm, md5, sha256, seed, allow, max_calls = row
    credentials = StoredCredentials(str(login), str(realm), str(md5), str(sha256))
    assert isinstance(seed, bytes)
    return Account(str(login), str(realm), credentials, seed, bool(allow), int(str(max_calls)))
