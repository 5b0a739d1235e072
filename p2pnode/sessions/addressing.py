"""Who a message is for: a peer id, a contact's local alias, or a login.

Order matters and is fixed: a peer id names a key by itself (nothing to trust);
an alias is what this user chose locally; only then is the text a login, which
an injected resolver answers through the directory and the verifiers the user
trusts (``directory.lookup`` in the app). A login that resolves to nothing is an
error, never a guess.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from p2pnode.identity import public_key_from_peer_id
from p2pnode.sessions.store import ChatStore

__all__ = ["RecipientNotFoundError", "ResolveLogin", "resolve_recipient"]

ResolveLogin = Callable[[str], Awaitable[bytes | None]]


class RecipientNotFoundError(LookupError):
    """The text is no peer id, no alias of ours, and no login the directory vouches for."""


async def resolve_recipient(text: str, store: ChatStore, resolve_login: ResolveLogin) -> bytes:
    """The Ed25519 key ``text`` names (peer id, then alias, then login)."""
    try:
        return public_key_from_peer_id(text)
    except ValueError:
        pass
    alias = store.contact_by_alias(text)
    if alias is not None:
        return alias
    key = await resolve_login(text)
    if key is None:
        raise RecipientNotFoundError("no peer id, contact alias or trusted login by that name")
    return key
