"""The peer's side of the one-time prekey RPC: take one for a new session, top ours up.

Thin async steps over ``MailboxClient`` (the decisions are in ``ChatCore`` and the
mailbox's ``mailbox_prekeys``); ``messaging.py`` calls them and keeps the counts.

Invariants:
- A taken key is used only if its owner's signature verifies: a mailbox cannot
  slip in a key of its own.
- Our new keys are committed (private halves and where they go) before the
  upload leaves; keys a mailbox holds that are not ours there are retired in the
  same request, so no initiator is handed a key that opens nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from p2pnode.identity import Identity
from p2pnode.sessions.chat import ChatCore
from p2pnode.sessions.mailbox_list import MailboxEntry
from p2pnode.sessions.mailbox_service import MailboxClient, MailboxUnavailableError
from p2pnode.sessions.mailbox_wire import Status, sign_take_prekey, sign_upload_prekeys
from p2pnode.sessions.one_time_prekeys import (
    OPK_BATCH,
    OPK_LOW_WATER,
    OneTimePrekey,
    one_time_prekey_valid,
)

__all__ = ["take", "top_up"]


async def take(
    identity: Identity,
    peer: bytes,
    entries: Sequence[MailboxEntry],
    client_for: Callable[[MailboxEntry], MailboxClient],
    next_rid: Callable[[], int],
    clock: Callable[[], float],
) -> bytes | str:
    """A verified one-time prekey of ``peer`` from the first of ``entries`` that has one,
    else why not (the last mailbox's reason: ``no-mailbox``, ``unreachable``, a status
    name such as ``no_prekeys`` or ``rate_limited``, ``bad-signature``)."""
    reason = "no-mailbox"
    for entry in entries:
        request = sign_take_prekey(identity, entry.key, next_rid(), peer, int(clock()))
        try:
            response = await client_for(entry).request(request)
        except MailboxUnavailableError:
            reason = "unreachable"
            continue
        if response.status is not Status.OK:
            reason = response.status.name.lower()
            continue
        if len(response.prekeys) != 1 or not one_time_prekey_valid(peer, response.prekeys[0]):
            reason = "bad-signature"  # a key its owner never signed: not used
            continue
        return response.prekeys[0].public
    return reason


async def top_up(
    core: ChatCore,
    client: MailboxClient,
    mailbox: bytes,
    next_rid: Callable[[], int],
    clock: Callable[[], float],
) -> int:
    """Ask ``mailbox`` which of our keys it holds; retire the ones not ours there; below
    ``OPK_LOW_WATER`` upload new ones up to ``OPK_BATCH``. Keys the mailbox accepted."""
    identity = core.identity
    try:
        response = await client.request(
            sign_upload_prekeys(identity, mailbox, next_rid(), int(clock()), ())
        )
        if response.status is not Status.OK:
            return 0  # not registered there (yet): the next attach registers
        held = {p.public for p in response.prekeys}
        count, retired = core.one_time_prekeys_held(mailbox, held, clock())
        fresh: tuple[OneTimePrekey, ...] = ()
        if count < OPK_LOW_WATER:
            fresh = core.new_one_time_prekeys(mailbox, OPK_BATCH - count, clock())
        if not fresh and not retired:
            return 0
        response = await client.request(
            sign_upload_prekeys(identity, mailbox, next_rid(), int(clock()), fresh, retired)
        )
    except MailboxUnavailableError:
        return 0
    return sum(1 for status in response.statuses if status is Status.OK)
