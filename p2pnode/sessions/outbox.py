"""The outbox state machine: a message leaves it only when its end-to-end receipt arrives.

States and inputs are enums; ``TRANSITIONS`` is the whole machine and an
undefined (state, input) pair raises ``OutboxError``. Persistence is the
store's job (each transition is one row update, committed with whatever caused
it), so a crash at any step resumes from the last committed state: at worst an
attempt is repeated, which mailboxes and the recipient absorb (deposits are
idempotent by envelope hash; display dedupes on message id).

Retry timing is a pure function of the attempt count and injected randomness:
exponential backoff from ``FIRST_RETRY`` to ``MAX_RETRY`` with +-20 % jitter,
so a crowd of senders does not retry in lockstep. An entry that holds enough
mailbox copies still retries (slowly) until the receipt: copies can be lost
with their supernode, the receipt cannot lie.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = [
    "FIRST_RETRY",
    "HELD_RETRY",
    "MAX_RETRY",
    "MIN_COPIES",
    "TRANSITIONS",
    "OutboxError",
    "OutboxInput",
    "OutboxState",
    "RetryPolicy",
    "retry_delay",
    "transition",
]

FIRST_RETRY = 2.0  # seconds after a failed attempt
MAX_RETRY = 15 * 60.0
HELD_RETRY = 6 * 3600.0  # re-deposit a held message this often until its receipt
MIN_COPIES = 2  # mailbox acknowledgements that make a message "held"


class OutboxState(enum.IntEnum):
    QUEUED = 0  # committed, no attempt succeeded yet
    SENT_ONLINE = 1  # handed to the recipient's live node; awaiting the receipt
    HELD = 2  # >= MIN_COPIES mailboxes acknowledged storage; awaiting the receipt
    DELIVERED = 3  # the recipient's receipt arrived: the entry is deleted


class OutboxInput(enum.Enum):
    ONLINE_ACCEPTED = "online-accepted"
    DEPOSITED = "deposited"  # >= MIN_COPIES acknowledged
    ATTEMPT_FAILED = "attempt-failed"  # neither path took it (or too few copies)
    RETRY_DUE = "retry-due"  # a SENT_ONLINE/HELD entry's timer fired without a receipt
    RECEIPT = "receipt"


class OutboxError(RuntimeError):
    """An input the outbox machine does not define for the current state."""


TRANSITIONS: dict[tuple[OutboxState, OutboxInput], OutboxState] = {
    (OutboxState.QUEUED, OutboxInput.ONLINE_ACCEPTED): OutboxState.SENT_ONLINE,
    (OutboxState.QUEUED, OutboxInput.DEPOSITED): OutboxState.HELD,
    (OutboxState.QUEUED, OutboxInput.ATTEMPT_FAILED): OutboxState.QUEUED,
    (OutboxState.QUEUED, OutboxInput.RECEIPT): OutboxState.DELIVERED,
    (OutboxState.SENT_ONLINE, OutboxInput.RECEIPT): OutboxState.DELIVERED,
    (OutboxState.SENT_ONLINE, OutboxInput.RETRY_DUE): OutboxState.QUEUED,
    (OutboxState.HELD, OutboxInput.RECEIPT): OutboxState.DELIVERED,
    (OutboxState.HELD, OutboxInput.RETRY_DUE): OutboxState.QUEUED,
    (OutboxState.DELIVERED, OutboxInput.RECEIPT): OutboxState.DELIVERED,
}


def transition(state: OutboxState, event: OutboxInput) -> OutboxState:
    """The next state, or ``OutboxError`` for a pair the machine does not define."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise OutboxError(f"outbox: {event.value} undefined in state {state.name}") from None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry timing; the defaults are the product's, tests shrink them."""

    first: float = FIRST_RETRY
    ceiling: float = MAX_RETRY
    held: float = HELD_RETRY
    online: float = 8.0  # wait this long for the receipt of an online delivery


def retry_delay(
    state: OutboxState, attempts: int, rng: random.Random, policy: RetryPolicy | None = None
) -> float:
    """Seconds until the next attempt after ``attempts`` attempts, ending in ``state``.

    QUEUED backs off exponentially; SENT_ONLINE waits ``policy.online`` for the
    receipt; HELD waits ``policy.held``.
    """
    policy = policy or RetryPolicy()
    if state is OutboxState.HELD:
        base = policy.held
    elif state is OutboxState.SENT_ONLINE:
        base = policy.online
    else:
        base = min(policy.ceiling, policy.first * 2 ** min(max(attempts - 1, 0), 20))
    return base * rng.uniform(0.8, 1.2)
