"""The mailbox core in virtual time: authorisation, quotas with their codes, expiry, restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pnode.identity import Identity
from p2pnode.sessions.chat_message import MAX_ENVELOPE_BYTES, Envelope, encode_envelope, envelope_id
from p2pnode.sessions.crypto import RatchetHeader
from p2pnode.sessions.mailbox import MailboxCore, MailboxLimits
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_wire import (
    RegisterRequest,
    Status,
    sign_ack,
    sign_deposit,
    sign_fetch,
)

NOW = 1_800_000_000.0
MAILBOX = Identity.generate(bytes(32))
ALICE = Identity.generate(bytes([1]) * 32)
BOB = Identity.generate(bytes([2]) * 32)


def envelope(sender: Identity, recipient: Identity, size: int = 50) -> bytes:
    header = RatchetHeader(os.urandom(32), 0, 0)
    return encode_envelope(
        Envelope(sender.public_key, recipient.public_key, None, header, os.urandom(size))
    )


def register(core: MailboxCore, who: Identity, now: float = NOW, seq: int = 1) -> Status:
    entries = (
        MailboxEntry(MAILBOX.public_key, "127.0.0.1", 1),
        MailboxEntry(os.urandom(32), "127.0.0.1", 2),
        MailboxEntry(os.urandom(32), "127.0.0.1", 3),
    )
    record = mailbox_list_record(who, entries, seq=seq, now=now)
    return core.handle(RegisterRequest(1, record.encoded), now).status


def deposit(core: MailboxCore, items: tuple[bytes, ...], now: float = NOW) -> tuple[Status, ...]:
    request = sign_deposit(ALICE, MAILBOX.public_key, 2, BOB.public_key, items, int(now))
    return core.handle(request, now).statuses


@pytest.fixture
def core(tmp_path: Path) -> MailboxCore:
    return MailboxCore(
        MAILBOX.public_key,
        tmp_path / "mail.db",
        MailboxLimits(
            recipient_count=5, recipient_bytes=10_000, sender_count=4, sender_bytes=1_000_000
        ),
    )


def test_refuses_recipients_that_never_asked(core: MailboxCore) -> None:
    request = sign_deposit(
        ALICE, MAILBOX.public_key, 2, BOB.public_key, (envelope(ALICE, BOB),), int(NOW)
    )
    assert core.handle(request, NOW).status is Status.NOT_MAILBOX
    # a list that does not name this mailbox is no authorisation
    record = mailbox_list_record(
        BOB, (MailboxEntry(os.urandom(32), "127.0.0.1", 9),), seq=1, now=NOW
    )
    assert core.handle(RegisterRequest(1, record.encoded), NOW).status is Status.BAD_RECORD
    assert core.handle(RegisterRequest(1, b"junk"), NOW).status is Status.BAD_RECORD
    assert core.handle(request, NOW).status is Status.NOT_MAILBOX
    assert core.held_for(BOB.public_key) == 0


def test_deposit_fetch_ack_cycle(core: MailboxCore) -> None:
    assert register(core, BOB) is Status.OK
    items = (envelope(ALICE, BOB), envelope(ALICE, BOB))
    assert deposit(core, items) == (Status.OK, Status.OK)
    assert deposit(core, items[:1]) == (Status.DUPLICATE,)
    fetched = core.handle(sign_fetch(BOB, MAILBOX.public_key, 3, int(NOW), 10), NOW)
    assert [i.envelope for i in fetched.items] == list(items)
    ids = tuple(i.item_id for i in fetched.items)
    assert ids == tuple(envelope_id(i) for i in items)
    assert core.handle(sign_ack(BOB, MAILBOX.public_key, 4, int(NOW), ids), NOW).status is Status.OK
    assert core.held_for(BOB.public_key) == 0
    # only the recipient may fetch or delete
    forged = sign_fetch(ALICE, MAILBOX.public_key, 3, int(NOW), 10)
    forged = type(forged)(forged.rid, BOB.public_key, forged.ts, forged.limit, forged.signature)
    assert core.handle(forged, NOW).status is Status.BAD_SIGNATURE


def test_stale_and_forged_deposits_refused(core: MailboxCore) -> None:
    register(core, BOB)
    stale = sign_deposit(
        ALICE, MAILBOX.public_key, 2, BOB.public_key, (envelope(ALICE, BOB),), int(NOW) - 3600
    )
    assert core.handle(stale, NOW).status is Status.STALE
    wrong_sender = envelope(BOB, BOB)  # envelope claims another sender than the signer
    assert deposit(core, (wrong_sender,)) == (Status.MALFORMED,)
    assert deposit(core, (b"junk",)) == (Status.MALFORMED,)


def test_quotas_refuse_with_their_code_and_free_up_on_ack(core: MailboxCore) -> None:
    register(core, BOB)
    statuses = deposit(core, tuple(envelope(ALICE, BOB) for _ in range(6)))
    assert statuses == (Status.OK,) * 4 + (Status.SENDER_FULL_COUNT,) * 2
    fetched = core.handle(sign_fetch(BOB, MAILBOX.public_key, 3, int(NOW), 1), NOW)
    assert fetched.more
    core.handle(sign_ack(BOB, MAILBOX.public_key, 4, int(NOW), (fetched.items[0].item_id,)), NOW)
    assert deposit(core, (envelope(ALICE, BOB),)) == (Status.OK,)
    assert deposit(core, (envelope(ALICE, BOB, 12_000),)) == (Status.RECIPIENT_FULL_BYTES,)
    assert deposit(core, (bytes(MAX_ENVELOPE_BYTES + 1),)) == (Status.TOO_LARGE,)


def test_recipient_count_quota(tmp_path: Path) -> None:
    core = MailboxCore(MAILBOX.public_key, tmp_path / "m.db", MailboxLimits(recipient_count=2))
    register(core, BOB)
    assert (
        deposit(core, tuple(envelope(ALICE, BOB) for _ in range(3)))[-1]
        is Status.RECIPIENT_FULL_COUNT
    )
    assert core.statistics().refused == 1


def test_kept_thirty_days_then_expired_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    core = MailboxCore(MAILBOX.public_key, path)
    register(core, BOB)
    deposit(core, (envelope(ALICE, BOB),))
    core.close()
    core = MailboxCore(MAILBOX.public_key, path)  # restart
    assert core.expire(NOW + 29 * 86400) == 0
    assert core.held_for(BOB.public_key) == 1
    assert core.expire(NOW + 30 * 86400 + 1) == 1
    assert core.held_for(BOB.public_key) == 0
    assert core.statistics().bytes == 0


def test_older_registration_cannot_roll_back(core: MailboxCore) -> None:
    assert register(core, BOB, seq=5) is Status.OK
    assert register(core, BOB, seq=4) is Status.BAD_RECORD


def test_grants_are_bounded(tmp_path: Path) -> None:
    core = MailboxCore(MAILBOX.public_key, tmp_path / "m.db", MailboxLimits(max_recipients=1))
    assert register(core, BOB) is Status.OK
    assert register(core, ALICE) is Status.BUSY
    assert register(core, BOB, seq=2) is Status.OK  # a known recipient renews


def test_quota_usage_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    limits = MailboxLimits(recipient_count=2)
    core = MailboxCore(MAILBOX.public_key, path, limits)
    register(core, BOB)
    assert deposit(core, (envelope(ALICE, BOB), envelope(ALICE, BOB))) == (Status.OK, Status.OK)
    core.close()
    core = MailboxCore(MAILBOX.public_key, path, limits)  # usage and grant rebuilt from the DB
    assert deposit(core, (envelope(ALICE, BOB),)) == (Status.RECIPIENT_FULL_COUNT,)
    fetched = core.handle(sign_fetch(BOB, MAILBOX.public_key, 3, int(NOW), 1), NOW)
    held = fetched.items[0].envelope
    assert deposit(core, (held,)) == (Status.DUPLICATE,)  # full, but that one is held
    core.handle(sign_ack(BOB, MAILBOX.public_key, 4, int(NOW), (fetched.items[0].item_id,)), NOW)
    assert deposit(core, (envelope(ALICE, BOB),)) == (Status.OK,)
