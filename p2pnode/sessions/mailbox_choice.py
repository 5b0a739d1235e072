"""Which supernodes hold our offline mail: chosen by us, kept stable, replaced when gone.

Pure functions over a health record (successes and failures with their times,
fed by the service's drains and registrations). A mailbox is *gone* once it has
failed for ``GONE_AFTER`` seconds without a success in between; only then is it
replaced, so a supernode restarting or a short outage never reshuffles the list
(every change costs senders a stale list until they re-resolve). A dropped
mailbox stays *former* for ``FORMER_KEPT`` seconds (its retention): we keep
draining it in case it comes back holding mail. Pinned mailboxes (those the
operator named in the config) are never dropped and always come first: the
operator's word beats our health record.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

from p2pnode.sessions.mailbox_list import MAX_MAILBOXES, MIN_MAILBOXES, MailboxEntry

__all__ = [
    "FORMER_KEPT",
    "GONE_AFTER",
    "MailboxChoice",
    "MailboxHealth",
    "choose_mailboxes",
    "record_failure",
    "record_success",
]

GONE_AFTER = 24 * 3600.0
FORMER_KEPT = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class MailboxHealth:
    failing_since: float | None = None  # first failure after the last success
    last_success: float | None = None

    def gone(self, now: float) -> bool:
        return self.failing_since is not None and now - self.failing_since >= GONE_AFTER


def record_success(health: MailboxHealth, now: float) -> MailboxHealth:
    return MailboxHealth(failing_since=None, last_success=now)


def record_failure(health: MailboxHealth, now: float) -> MailboxHealth:
    if health.failing_since is not None:
        return health
    return replace(health, failing_since=now)


@dataclass(frozen=True, slots=True)
class MailboxChoice:
    mailboxes: tuple[MailboxEntry, ...]  # to name in our MAILBOX_LIST record
    dropped: tuple[MailboxEntry, ...]  # gone now: drain as former ones
    changed: bool


def choose_mailboxes(
    current: tuple[MailboxEntry, ...],
    candidates: tuple[MailboxEntry, ...],
    health: Mapping[bytes, MailboxHealth],
    now: float,
    rng: random.Random,
    want: int = MIN_MAILBOXES,
    pinned: tuple[MailboxEntry, ...] = (),
) -> MailboxChoice:
    """Keep every current mailbox that is not gone; fill up to ``want`` from candidates.

    ``pinned`` come first whatever their health. Candidates already known to be
    gone are never picked; among the rest the pick is random (``rng``), so peers
    spread over the supernodes they can find.
    """
    if not MIN_MAILBOXES <= want <= MAX_MAILBOXES:
        raise ValueError(f"want {MIN_MAILBOXES}..{MAX_MAILBOXES} mailboxes")
    default = MailboxHealth()
    pinned_keys = {m.key for m in pinned}
    kept = pinned + tuple(
        m for m in current if m.key not in pinned_keys and not health.get(m.key, default).gone(now)
    )
    dropped = tuple(m for m in current if m.key not in {k.key for k in kept})
    known = {m.key for m in current} | pinned_keys
    pool = [
        c for c in candidates if c.key not in known and not health.get(c.key, default).gone(now)
    ]
    rng.shuffle(pool)
    chosen = (kept + tuple(pool[: max(0, want - len(kept))]))[:MAX_MAILBOXES]
    return MailboxChoice(chosen, dropped, chosen != current)
