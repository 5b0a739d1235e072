"""Mailbox choice: stable through short outages, replaced when gone, gone ones never picked."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.sessions.mailbox_choice import (
    GONE_AFTER,
    MailboxHealth,
    choose_mailboxes,
    record_failure,
    record_success,
)
from p2pnode.sessions.mailbox_list import MailboxEntry

BOXES = tuple(MailboxEntry(bytes([i]) * 32, "203.0.113.9", 1000 + i) for i in range(8))
T0 = 1_000_000.0


def test_fills_up_to_three_then_stays_put() -> None:
    first = choose_mailboxes((), BOXES, {}, T0, random.Random(1))
    assert len(first.mailboxes) == 3 and first.changed
    again = choose_mailboxes(first.mailboxes, BOXES, {}, T0 + 10, random.Random(2))
    assert again.mailboxes == first.mailboxes and not again.changed


def test_a_short_outage_keeps_the_list_a_long_one_replaces() -> None:
    current = BOXES[:3]
    health = {BOXES[1].key: record_failure(MailboxHealth(), T0)}
    short = choose_mailboxes(current, BOXES, health, T0 + GONE_AFTER - 1, random.Random(1))
    assert short.mailboxes == current
    long = choose_mailboxes(current, BOXES, health, T0 + GONE_AFTER, random.Random(1))
    assert BOXES[1] not in long.mailboxes and long.dropped == (BOXES[1],)
    assert len(long.mailboxes) == 3 and long.mailboxes[:2] == (BOXES[0], BOXES[2])
    # it came back: a success clears the failure
    health[BOXES[1].key] = record_success(health[BOXES[1].key], T0 + GONE_AFTER + 5)
    assert not health[BOXES[1].key].gone(T0 + 3 * GONE_AFTER)


def test_failures_keep_their_first_time() -> None:
    health = record_failure(record_failure(MailboxHealth(), T0), T0 + 500)
    assert health.failing_since == T0


@given(st.sets(st.integers(0, 7)), st.integers(0, 2**32))
def test_gone_candidates_are_never_chosen(gone: set[int], seed: int) -> None:
    health = {BOXES[i].key: MailboxHealth(failing_since=T0) for i in gone}
    choice = choose_mailboxes(BOXES[:3], BOXES, health, T0 + GONE_AFTER, random.Random(seed))
    assert all(m.key not in health for m in choice.mailboxes)
    assert len(choice.mailboxes) == min(3, 8 - len(gone))
    assert len({m.key for m in choice.mailboxes}) == len(choice.mailboxes)
