"""Mailbox offers (a supernode's signed "I keep mailboxes at HOST:PORT") and pinned
mailboxes in the choice: the config's come first and are never replaced."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.records.codec import sign_record
from p2pnode.records.kinds import RecordKind
from p2pnode.sessions.mailbox_choice import GONE_AFTER, MailboxHealth, choose_mailboxes
from p2pnode.sessions.mailbox_list import (
    MAILBOX_LIST_SUBJECT,
    MAILBOX_OFFER_SUBJECT,
    MAILBOX_OFFER_TTL,
    MailboxEntry,
    MailboxListDecodeError,
    encode_mailbox_list,
    mailbox_list_record,
    mailbox_offer_record,
    mailboxes_from_record,
    offer_from_record,
)

SUPERNODE = Identity.generate(bytes([5]) * 32)
OTHER = Identity.generate(bytes([6]) * 32)
BOXES = tuple(MailboxEntry(bytes([i]) * 32, "203.0.113.9", 1000 + i) for i in range(8))
T0 = 1_000_000.0


def test_offer_round_trip_names_its_signer() -> None:
    record = mailbox_offer_record(SUPERNODE, "198.51.100.7", 4040, now=T0)
    assert record.subject == MAILBOX_OFFER_SUBJECT
    assert record.expires_at == int(T0) + MAILBOX_OFFER_TTL
    assert offer_from_record(record) == MailboxEntry(SUPERNODE.public_key, "198.51.100.7", 4040)


def test_an_offer_is_never_a_peer_list_and_a_list_never_an_offer() -> None:
    offer = mailbox_offer_record(SUPERNODE, "198.51.100.7", 4040, now=T0)
    with pytest.raises(MailboxListDecodeError):
        mailboxes_from_record(offer)  # a mailbox never takes it as a registration
    listing = mailbox_list_record(OTHER, BOXES[:3], seq=1, now=T0)
    with pytest.raises(MailboxListDecodeError):
        offer_from_record(listing)


@pytest.mark.parametrize(
    "entries",
    [
        (MailboxEntry(OTHER.public_key, "198.51.100.7", 4040),),  # names someone else
        (MailboxEntry(SUPERNODE.public_key, "198.51.100.7", 4040), BOXES[0]),  # two
    ],
)
def test_an_offer_names_exactly_its_signer(entries: tuple[MailboxEntry, ...]) -> None:
    record = sign_record(
        SUPERNODE,
        RecordKind.MAILBOX_LIST,
        MAILBOX_OFFER_SUBJECT,
        encode_mailbox_list(entries),
        seq=1,
        now=T0,
        ttl=60,
    )
    with pytest.raises(MailboxListDecodeError):
        offer_from_record(record)


@given(st.binary(max_size=200))
def test_offer_decoding_raises_only_its_error(payload: bytes) -> None:
    for subject in (MAILBOX_OFFER_SUBJECT, MAILBOX_LIST_SUBJECT):
        record = sign_record(
            SUPERNODE, RecordKind.MAILBOX_LIST, subject, payload, seq=1, now=T0, ttl=60
        )
        with contextlib.suppress(MailboxListDecodeError):
            offer_from_record(record)


def test_pinned_come_first_and_stay_even_when_gone() -> None:
    pinned = (BOXES[5],)
    health = {BOXES[5].key: MailboxHealth(failing_since=T0)}
    choice = choose_mailboxes(
        (BOXES[5], BOXES[1]), BOXES, health, T0 + 2 * GONE_AFTER, random.Random(3), pinned=pinned
    )
    assert choice.mailboxes[:2] == (BOXES[5], BOXES[1])
    assert len(choice.mailboxes) == 3 and choice.dropped == ()
    # a pinned mailbox added to the config later goes in front of the chosen ones
    again = choose_mailboxes(
        choice.mailboxes, BOXES, {}, T0, random.Random(4), pinned=(BOXES[7], BOXES[5])
    )
    assert again.mailboxes[:2] == (BOXES[7], BOXES[5]) and again.changed
    assert set(choice.mailboxes) <= set(again.mailboxes)


@given(st.sets(st.integers(0, 7), max_size=4), st.sets(st.integers(0, 7)), st.integers(0, 99))
def test_pinned_always_kept_in_order(pins: set[int], gone: set[int], seed: int) -> None:
    pinned = tuple(BOXES[i] for i in sorted(pins))
    health = {BOXES[i].key: MailboxHealth(failing_since=T0) for i in gone}
    choice = choose_mailboxes(
        BOXES[:3], BOXES, health, T0 + GONE_AFTER, random.Random(seed), pinned=pinned
    )
    assert choice.mailboxes[: len(pinned)] == pinned
    assert all(m not in choice.dropped for m in pinned)
    chosen = choice.mailboxes[len(pinned) :]
    assert all(m.key not in health for m in chosen)
    assert len({m.key for m in choice.mailboxes}) == len(choice.mailboxes)
