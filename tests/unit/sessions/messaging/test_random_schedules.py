"""Random schedules in virtual time: sends, mailbox outages, lost receipts, crashes, any order.

Hypothesis draws a schedule of actions (alice writes; alice's outbox runs with
some mailboxes down and each deposit lost with 30 % odds; bob drains some
mailboxes; receipts are lost or late; alice or bob crash). Then everything
comes up and time runs until the outbox is empty. Whatever the schedule, bob
shows every text exactly once, in order, and no mailbox holds anything for him.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.sessions.chat import ChatCore
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_wire import RegisterRequest, sign_ack, sign_deposit, sign_fetch
from p2pnode.sessions.outbox import MIN_COPIES, OutboxInput
from p2pnode.sessions.prekeys import bundle_from_record
from p2pnode.sessions.store import ChatStore

T0 = 1_800_000_000.0
ALICE_SEED, BOB_SEED = bytes([5]) * 32, bytes([6]) * 32
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["write", "deposit", "drain", "receipts", "lose", "crash-a", "crash-b"]),
        st.sets(st.integers(0, 2)),
    ),
    max_size=25,
)


class Side:
    def __init__(self, seed: bytes, path: Path, rng: random.Random) -> None:
        self.seed, self.path, self.rng = seed, path, rng
        self.identity = Identity.generate(seed)
        self.core = ChatCore(self.identity, seed, ChatStore(path), rng)

    def crash(self) -> None:
        self.core.store.close()
        self.core = ChatCore(self.identity, self.seed, ChatStore(self.path), self.rng)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(ACTIONS, st.integers(0, 2**32))
def test_any_schedule_delivers_everything_once_in_order(
    actions: list[tuple[str, set[int]]], seed: int
) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rng = random.Random(seed)
        alice = Side(ALICE_SEED, tmp / "a.db", rng)
        bob = Side(BOB_SEED, tmp / "b.db", rng)
        boxes = [
            MailboxCore(Identity.generate(bytes([40 + i]) * 32).public_key, tmp / f"m{i}.db")
            for i in range(3)
        ]
        entries = tuple(MailboxEntry(b.own_key, "127.0.0.1", 1 + i) for i, b in enumerate(boxes))
        record = mailbox_list_record(bob.identity, entries, seq=1, now=T0)
        for box in boxes:
            box.handle(RegisterRequest(1, record.encoded), T0)
        bundle = bundle_from_record(bob.core.prekey_record(T0))
        bob_key = bob.identity.public_key
        texts: list[str] = []
        shown: list[str] = []
        in_flight: list[bytes] = []  # receipts on their way back to alice
        now = T0

        def deposit(up: set[int]) -> None:
            for row in alice.core.due(now):
                copies = 0
                # each row meets its own outage (a flaky link drops some deposits), so
                # mailboxes end up holding different subsets, in different orders
                reached = {i for i in up if rng.random() < 0.7}
                for index in sorted(reached):
                    request = sign_deposit(
                        alice.identity, boxes[index].own_key, 1, bob_key, (row.envelope,), int(now)
                    )
                    if boxes[index].handle(request, now).statuses[0].stored:
                        copies += 1
                event = (
                    OutboxInput.DEPOSITED if copies >= MIN_COPIES else OutboxInput.ATTEMPT_FAILED
                )
                alice.core.attempted(row, event, copies, now)

        def drain(up: set[int]) -> None:
            for index in sorted(up):
                box = boxes[index]
                fetched = box.handle(sign_fetch(bob.identity, box.own_key, 1, int(now), 256), now)
                result = bob.core.receive([i.envelope for i in fetched.items], now)
                shown.extend(m.text for m in result.shown)
                in_flight.extend(o.envelope for o in result.replies)
                ids = tuple(i.item_id for i in fetched.items)
                box.handle(sign_ack(bob.identity, box.own_key, 2, int(now), ids), now)

        for action, up in actions:
            now += rng.uniform(0, 30)
            if action == "write":
                text = f"m{len(texts)}"
                texts.append(text)
                alice.core.compose(bob_key, text, now, bundle)
            elif action == "deposit":
                deposit(up)
            elif action == "drain":
                drain(up)
            elif action == "receipts":
                alice.core.receive(in_flight, now)
                in_flight.clear()
            elif action == "lose":
                in_flight.clear()
            elif action == "crash-a":
                alice.crash()
            else:
                bob.crash()
        for _ in range(60):  # everything up: the outbox's retries must finish the job
            deadline = alice.core.outbox_deadline()
            if deadline is None:
                break
            now = max(now, deadline)
            deposit({0, 1, 2})
            drain({0, 1, 2})
            alice.core.receive(in_flight, now)
            in_flight.clear()
        drain({0, 1, 2})  # copies deposited before the last receipts
        assert shown == texts
        assert alice.core.store.outbox_size() == 0
        assert all(box.held_for(bob_key) == 0 for box in boxes)
        for side in (alice, bob):
            side.core.store.close()
        for box in boxes:
            box.close()
