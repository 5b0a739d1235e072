"""Logins: the grammar of a claimable login, and the peer id that is always a login too.

Invariants:
- A login is 3-32 characters of lowercase ASCII letters, digits, ``-`` and
  ``.``; all-digit logins are allowed (phone-style logins). Case is folded
  before checking, so ``Alice`` and ``alice`` are one login, never two.
- A 52-character peer id names its key directly; it never needs a claim or a
  verifier, and a claim cannot shadow it (claims of peer-id-shaped logins are
  refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from p2pnode.identity import public_key_from_peer_id

__all__ = [
    "MAX_LOGIN_CHARS",
    "MIN_LOGIN_CHARS",
    "ClaimedLogin",
    "LoginError",
    "PeerIdLogin",
    "normalise_login",
    "parse_login_or_peer_id",
]

MIN_LOGIN_CHARS = 3
MAX_LOGIN_CHARS = 32
# login = 3*32( %x61-7A / DIGIT / "-" / "." )     ; a-z 0-9 - .
_LOGIN = re.compile(r"[a-z0-9.\-]{3,32}")


class LoginError(ValueError):
    """The text is not a login anyone can claim."""


@dataclass(frozen=True, slots=True)
class ClaimedLogin:
    """A login resolved through name-claim records and verifiers."""

    login: str


@dataclass(frozen=True, slots=True)
class PeerIdLogin:
    """A peer id used as a login: it names the key itself, no lookup needed."""

    peer_id: str
    public_key: bytes


def _is_peer_id(text: str) -> bool:
    try:
        public_key_from_peer_id(text)
    except ValueError:
        return False
    return True


def normalise_login(text: str) -> str:
    """The canonical (lowercase) login, or ``LoginError`` saying what is wrong."""
    login = text.strip().lower()
    if not login.isascii():
        raise LoginError(f"{text!r}: a login uses ASCII letters, digits, '-' and '.' only")
    if not MIN_LOGIN_CHARS <= len(login) <= MAX_LOGIN_CHARS:
        raise LoginError(
            f"{text!r}: a login has {MIN_LOGIN_CHARS}-{MAX_LOGIN_CHARS} characters, "
            f"not {len(login)}"
        )
    if _LOGIN.fullmatch(login) is None:
        raise LoginError(f"{text!r}: a login uses letters, digits, '-' and '.' only")
    return login


def parse_login_or_peer_id(text: str) -> ClaimedLogin | PeerIdLogin:
    """What a user typed to reach someone: a peer id (direct) or a login (needs a lookup)."""
    stripped = text.strip()
    if len(stripped) > MAX_LOGIN_CHARS and _is_peer_id(stripped):
        key = public_key_from_peer_id(stripped)
        return PeerIdLogin(peer_id=stripped.lower(), public_key=key)
    return ClaimedLogin(normalise_login(stripped))
